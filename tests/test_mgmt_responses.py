"""Management answers and their response models (``lumora_ota/api_models.py``): the answers
validate against the models with no member a model lacks, and ``/openapi.json`` gives every
JSON success answer a schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from device_helpers import in_process_app
from harness import make_export, publish_export
from lumora_ota import api_models as r
from lumora_ota.signing import generate_signing_identity, load_private_key, sign_rsa_sha256


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


# 2xx answers of /openapi.json that have no JSON schema, each with why.
NOT_JSON: dict[tuple[str, str, str], str] = {
    ("get", "/api/v1/expo/{project}/manifest", "204"): "no update: an empty body",
    ("get", "/api/v1/assets/{name}", "200"): "a file's bytes",
    ("get", "/api/v1/assets/{name}", "206"): "a byte range of a file",
}


def _schema_less(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(method, path, status) of each 2xx answer with no JSON content or a JSON content
    whose schema says nothing (none, ``{}``, or a bare object)."""
    found = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if not status.startswith("2"):
                    continue
                content = response.get("content") or {}
                json_schemas = [
                    media.get("schema") or {}
                    for kind, media in content.items()
                    if kind.endswith("json")
                ]
                described = [
                    s for s in json_schemas if {"$ref", "properties", "items", "anyOf"} & set(s)
                ]
                if not json_schemas or len(described) < len(json_schemas):
                    found.add((method, path, status))
    return found


def test_every_json_success_answer_has_a_schema(tmp_path: Path) -> None:
    """A route added without a response model fails here (with its method, path, status)."""
    with in_process_app(tmp_path) as (client, _ctx):
        document = client.get("/openapi.json").json()
    missing = _schema_less(document)
    assert missing - set(NOT_JSON) == set(), "2xx answers without a schema"
    assert set(NOT_JSON) <= missing, "allow-listed answers that now have a schema (drop them)"
    # The schemas say something: every model's members are described in components.
    schemas = document["components"]["schemas"]
    assert schemas["DeploymentListItem"]["properties"]["serving"]
    assert schemas["PlanAnswer"]["properties"]["stepSeconds"]["description"]


def test_the_remaining_answers_match_their_models(tmp_path: Path) -> None:
    """Deployments, publish, rollback, manifests, embedded, delta, plans, webhooks,
    devices, uploads, publisher signatures and health: each answer validates against its
    model with no member the model lacks."""
    with in_process_app(tmp_path, webhook_allow_private=True) as (client, _ctx):
        client.post("/api/v1/projects", json={"name": "R", "slug": "rr"}).raise_for_status()
        hook = _check(
            r.NewWebhookAnswer,
            client.post(
                "/api/v1/projects/rr/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["update.published"]},
            ),
        )
        published = _check(
            r.PublishAnswer,
            # publish_export checks the status; validate the answer it returns
            _Answer(publish_export(client, "rr", make_export(tmp_path / "e", seed="q"))[0]),
        )
        update = published["updates"][0]
        _check(r.Items[r.DeploymentListItem], client.get("/api/v1/deployments"))
        deployment = client.get("/api/v1/deployments", params={"project": "rr"}).json()
        channel_id = deployment["items"][0]["id"]
        _check(r.DeploymentDetail, client.get(f"/api/v1/deployments/{channel_id}"))
        _check(r.ExpoManifest, client.get(f"/api/v1/manifests/{update['id']}"))
        _check(r.DeltaAnswer, client.get(f"/api/v1/updates/{update['id']}/delta"))
        plan = {"steps": [10, 50], "stepSeconds": 60}
        _check(
            r.Items[r.PlanAnswer],
            client.put(f"/api/v1/updates/{update['id']}/rollout-plan", json=plan),
        )
        _check(r.Items[r.PlanAnswer], client.get(f"/api/v1/updates/{update['id']}/rollout-plan"))
        _check(r.ClearedAnswer, client.delete(f"/api/v1/updates/{update['id']}/rollout-plan"))
        check = {"projectId": "rr", "platform": "ios", "runtimeVersion": "1", "deviceId": "dev"}
        client.post("/api/v1/updates/check", json=check).raise_for_status()
        _check(
            r.PinAnswer,
            client.put("/api/v1/projects/rr/devices/dev", json={"channel": "production"}),
        )
        _check(r.Items[r.PinAnswer], client.get("/api/v1/projects/rr/devices"))
        _check(r.DeviceTimelineAnswer, client.get("/api/v1/projects/rr/devices/dev"))
        _check(r.UnpinnedAnswer, client.delete("/api/v1/projects/rr/devices/dev"))
        deliveries = _check(
            r.Items[r.DeliveryAnswer],
            client.get(f"/api/v1/projects/rr/webhooks/{hook['id']}/deliveries"),
        )
        _check(r.Items[r.WebhookAnswer], client.get("/api/v1/projects/rr/webhooks"))
        delivery = deliveries["items"][0]["id"]  # the publish's update.published event
        _check(
            r.DeliveryAnswer,
            client.post(
                f"/api/v1/projects/rr/webhooks/{hook['id']}/deliveries/{delivery}/redeliver"
            ),
        )
        _check(r.DeletedIdAnswer, client.delete(f"/api/v1/projects/rr/webhooks/{hook['id']}"))
        bundle = b"embedded bundle"
        digest = hashlib.sha256(bundle).hexdigest()
        for _ in range(2):  # 201 stored, then 200 present
            _check(
                r.UploadAnswer,
                client.put(f"/api/v1/assets/{digest}", params={"project": "rr"}, content=bundle),
            )
        embedded = {
            "platform": "ios",
            "runtimeVersion": "1",
            "embeddedUpdateId": "0f0e0d0c-0b0a-4908-8706-050403020100",
            "sha256": digest,
        }
        for _ in range(2):  # 201 registered, then 200 registered already
            _check(r.EmbeddedAnswer, client.post("/api/v1/projects/rr/embedded", json=embedded))
        _check(r.Items[r.EmbeddedAnswer], client.get("/api/v1/projects/rr/embedded"))
        _check(r.RolledBackAnswer, client.post(f"/api/v1/updates/{update['id']}/rollback", json={}))
        _check(
            r.UpdateAnswer,
            client.post(f"/api/v1/updates/{update['id']}/rollback", json={"toEmbedded": True}),
        )
        _check(r.StatsReport, client.get("/api/v1/stats", params={"project": "rr"}))
        _check(r.HealthAnswer, client.get("/health"))
        _publisher_signatures(client)
        del client.headers["authorization"]
        _check(r.HealthAnswer, client.get("/health"))  # anonymous: the status only


def _publisher_signatures(client: Any) -> None:
    key_pem, cert_pem = generate_signing_identity("p")
    key = load_private_key(key_pem)
    no_update = json.dumps({"type": "noUpdateAvailable"}, separators=(",", ":")).encode()
    _check(
        r.SigningSetAnswer,
        client.put(
            "/api/v1/projects/rr/signing",
            json={
                "mode": "publisher",
                "keyid": "main",
                "certificatePem": cert_pem.decode(),
                "noUpdateSignature": sign_rsa_sha256(key, no_update),
            },
        ),
    )
    unsigned = _check(r.UnsignedAnswer, client.get("/api/v1/projects/rr/signing/unsigned"))
    first = unsigned["unsigned"][0]
    upload = {
        "updateId": first["updateId"],
        "body": first["body"],
        "signature": sign_rsa_sha256(key, first["body"].encode()),
    }
    stored = _check(
        r.StoredAnswer,
        client.post("/api/v1/projects/rr/signing/signatures", json={"signatures": [upload]}),
    )
    assert stored["stored"] == 1


class _Answer:
    """An answer already read (``publish_export`` returns the JSON), shaped for ``_check``."""

    status_code = 201

    def __init__(self, body: Any) -> None:
        self._body = body
        self.text = json.dumps(body)
        self.request = type("Request", (), {"url": "/api/v1/updates/publish"})()

    def json(self) -> Any:
        return self._body
