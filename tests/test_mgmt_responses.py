"""Management answers and their response models (``server/management/responses.py``): the
answers validate against the models with no member a model lacks, and ``/openapi.json``
documents them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from device_helpers import in_process_app
from harness import make_export, publish_export
from lumora_ota.server.management import responses as r
from lumora_ota.signing import generate_signing_identity


def _no_extras(model: BaseModel, where: str) -> None:
    assert not model.model_extra, (where, model.model_extra)
    for name in type(model).model_fields:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                _no_extras(item, f"{where}.{name}")


def _check(model: type[BaseModel], response: Any) -> Any:
    assert response.status_code < 300, response.text
    _no_extras(model.model_validate(response.json()), str(response.request.url))
    return response.json()


def test_answers_match_their_models(tmp_path: Path) -> None:
    with in_process_app(tmp_path) as (client, _ctx):
        _check(r.ProjectAnswer, client.post("/api/v1/projects", json={"name": "M", "slug": "mm"}))
        _check(r.Items[r.ProjectAnswer], client.get("/api/v1/projects"))
        _check(r.ProjectAnswer, client.get("/api/v1/projects/mm"))
        _check(r.ProjectAnswer, client.patch("/api/v1/projects/mm", json={"name": "N"}))
        channel = _check(
            r.DeploymentAnswer,
            client.post("/api/v1/deployments", json={"project": "mm", "name": "b"}),
        )
        _check(r.DeploymentAnswer, client.post(f"/api/v1/deployments/{channel['id']}/pause"))
        _check(r.DeploymentAnswer, client.post(f"/api/v1/deployments/{channel['id']}/resume"))
        _check(
            r.DeploymentAnswer,
            client.put(f"/api/v1/deployments/{channel['id']}", json={"name": "c"}),
        )
        answer, _ = publish_export(client, "mm", make_export(tmp_path / "e", seed="r"))
        update = answer["updates"][0]
        _check(r.UpdatePage, client.get("/api/v1/updates", params={"project": "mm"}))
        _check(r.UpdateAnswer, client.get(f"/api/v1/updates/{update['id']}"))
        _check(r.UpdateAnswer, client.patch(f"/api/v1/updates/{update['id']}", json={"rollout": 5}))
        promoted = _check(
            r.UpdateAnswer,
            client.post(f"/api/v1/updates/{update['id']}/promote", json={"channel": "c"}),
        )
        _check(r.GroupAnswer, client.get(f"/api/v1/groups/{update['groupId']}"))
        _check(
            r.GroupAnswer, client.patch(f"/api/v1/groups/{update['groupId']}", json={"rollout": 9})
        )
        _check(r.DeletedAnswer, client.delete(f"/api/v1/updates/{promoted['id']}"))
        _check(r.DeletedAnswer, client.delete(f"/api/v1/groups/{update['groupId']}"))
        key = _check(
            r.NewKeyAnswer, client.post("/api/v1/keys", json={"name": "k", "role": "read"})
        )
        _check(r.Items[r.KeyAnswer], client.get("/api/v1/keys"))
        _check(r.KeyAnswer, client.delete(f"/api/v1/keys/{key['id']}"))
        _check(r.SigningAnswer, client.get("/api/v1/projects/mm/signing"))
        _check(r.WhoAmIAnswer, client.get("/api/v1/whoami"))
        _check(r.Items[r.AuditAnswer], client.get("/api/v1/audit"))
        _check(
            r.MissingAnswer,
            client.post("/api/v1/assets/missing", json={"project": "mm", "hashes": ["0" * 64]}),
        )
        key_pem, cert_pem = generate_signing_identity("m")
        _check(
            r.SigningSetAnswer,
            client.put(
                "/api/v1/projects/mm/signing",
                json={
                    "keyid": "a",
                    "privateKeyPem": key_pem.decode(),
                    "certificatePem": cert_pem.decode(),
                },
            ),
        )
        _check(r.SigningAnswer, client.get("/api/v1/projects/mm/signing"))
        _check(r.SigningAnswer, client.delete("/api/v1/projects/mm/signing"))
        schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/api/v1/updates/{update_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UpdateAnswer"
    }
    assert "ProjectAnswer" in schema["components"]["schemas"]
