"""The device answers against their models (``lumora_ota/api_models.py``, unknown members
refused): the Expo manifest and extensions parts, the directives, the Expo JSON manifest and
every shape of the Lumora check answer, read from a running app serving the suite's
export-shaped data and the SDK 58 export of ``../shared/fixtures`` (skipped when absent).

The check answer is written as bytes by hand (the hot path): a property test proves
``encode_check_answer`` JSON-equal to the model's own serialization for generated updates,
messages, directives, signatures and freshness statements.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from device_helpers import expo_headers, in_process_app, parse_multipart
from harness import create_project, make_export, publish_export
from lumora_ota.api_models import (
    CheckResponse,
    Directive,
    ExpoManifest,
    LumoraManifest,
    ManifestExtensions,
    NoUpdateDirective,
    RollBackDirective,
)
from lumora_ota.domain.manifest import build_manifest
from lumora_ota.domain.model import AssetRecord, UpdateRecord
from lumora_ota.server.device.bodies import NO_UPDATE_DIRECTIVE, dump_json, rollback_directive
from lumora_ota.server.device.check import encode_check_answer
from lumora_ota.signing import generate_signing_identity

DIRECTIVE: TypeAdapter[Any] = TypeAdapter(Directive)
SDK58 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "expo-export-sdk58-v1"


def _export(source: str, tmp_path: Path) -> Path:
    if source == "sdk58":
        if not (SDK58 / "metadata.json").exists():
            pytest.skip("../shared/fixtures is not present")
        return SDK58
    return make_export(tmp_path / "export", seed="answers")


def _round_trips(model: Any, text: bytes) -> None:
    """``text`` validates as ``model`` and is JSON-equal to the model's serialization (the
    model neither drops nor adds anything)."""
    parsed = model.model_validate_json(text)
    assert json.loads(parsed.model_dump_json(by_alias=True, exclude_unset=True)) == json.loads(text)


@pytest.mark.parametrize("source", ["suite", "sdk58"])
def test_served_answers_match_their_models(tmp_path: Path, source: str) -> None:
    with in_process_app(tmp_path) as (client, _ctx):
        create_project(client, "answers")
        published, _ = publish_export(
            client, "answers", _export(source, tmp_path), message='notes "quoted" ✓'
        )
        update_id = published["updates"][0]["id"]
        url = "/api/v1/expo/answers/manifest"
        check = {"projectId": "answers", "platform": "ios", "runtimeVersion": "1"}
        checks = [check, {**check, "currentUpdateId": update_id}, {**check, "runtimeVersion": "9"}]

        def expo_parts(**headers: str) -> dict[str, Any]:
            response = client.get(url, headers=expo_headers(**headers))
            assert response.status_code == 200, response.text
            return parse_multipart(response)

        def check_answers() -> list[bytes]:
            answers = [client.post("/api/v1/updates/check", json=c) for c in checks]
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            return [a.content for a in answers]

        new = expo_parts()
        _round_trips(ExpoManifest, new["manifest"].body)
        _round_trips(ManifestExtensions, new["extensions"].body)
        assert json.loads(new["manifest"].body)["id"] == update_id
        on_it = expo_parts(expo_current_update_id=update_id)
        assert DIRECTIVE.validate_json(on_it["directive"].body) == NoUpdateDirective(
            type="noUpdateAvailable"
        )
        as_json = client.get(url, headers=expo_headers(accept="application/expo+json"))
        _round_trips(ExpoManifest, as_json.content)
        bodies = check_answers()
        client.post(f"/api/v1/updates/{update_id}/rollback", json={"toEmbedded": True})
        rolled = expo_parts()
        assert isinstance(DIRECTIVE.validate_json(rolled["directive"].body), RollBackDirective)
        bodies += check_answers()
        key_pem, cert_pem = generate_signing_identity("answers")
        client.put(
            "/api/v1/projects/answers/signing",
            json={
                "keyid": "main",
                "privateKeyPem": key_pem.decode(),
                "certificatePem": cert_pem.decode(),
            },
        ).raise_for_status()
        checks = [{**c, "signed": True} for c in checks]
        bodies += check_answers()
        signed_parts = expo_parts(expo_expect_signature='sig, keyid="main", alg="rsa-v1_5-sha256"')
        _round_trips(
            type(DIRECTIVE.validate_json(signed_parts["directive"].body)),
            signed_parts["directive"].body,
        )
    answers = [CheckResponse.model_validate_json(body) for body in bodies]
    for body in bodies:
        _round_trips(CheckResponse, body)
    assert [a.update_available for a in answers[:3]] == [True, False, False]
    assert isinstance(answers[4].directive, RollBackDirective)
    assert all(a.signature and a.freshness_text for a in answers[6:])
    for answer in answers:
        if answer.manifest_text is not None:
            assert LumoraManifest.model_validate_json(answer.manifest_text) == answer.manifest
        if answer.directive_text is not None:
            assert DIRECTIVE.validate_json(answer.directive_text) == answer.directive


# --- the check answer's bytes against the model, for generated shapes ---------------------

HEX = "0123456789abcdef"
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def assets(draw: st.DrawFn) -> AssetRecord:
    return AssetRecord(
        key=draw(st.text(min_size=1, max_size=30)),
        sha256=draw(st.text(HEX, min_size=64, max_size=64)),
        size=draw(st.integers(0, 2**40)),
        content_type=draw(st.sampled_from(["application/javascript", "image/png", "font/ttf"])),
        file_extension=draw(st.sampled_from(["", ".js", ".png", ".ttf", ".hbc"])),
        md5=draw(st.none() | st.text(HEX, min_size=32, max_size=32)),
    )


@st.composite
def updates(draw: st.DrawFn) -> UpdateRecord:
    return UpdateRecord(
        id=draw(st.uuids()).hex,
        group_id="g",
        project_id="p",
        channel="production",
        platform=draw(st.sampled_from(["ios", "android"])),
        runtime_version=draw(st.text(string.printable, min_size=1, max_size=20)),
        created_at=draw(TIMES),
        message=draw(st.text(max_size=60)),
        mandatory=draw(st.booleans()),
        launch_asset=draw(assets()),
        assets=tuple(draw(st.lists(assets(), max_size=4))),
        metadata=draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)),
        extra=draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)),
    )


SIGNATURES = st.none() | st.text(max_size=40).map(lambda s: f'sig="{s}", keyid="main"')
FRESHNESS = st.none() | st.tuples(st.text(max_size=80), st.text(max_size=40))


@settings(max_examples=150, deadline=None)
@given(
    update=updates(),
    served=st.sampled_from(["update", "noUpdate", "rollBack"]),
    message=st.none() | st.text(max_size=60),
    signature=SIGNATURES,
    freshness=FRESHNESS,
)
def test_check_answer_bytes_equal_the_models_serialization(
    update: UpdateRecord,
    served: str,
    message: str | None,
    signature: str | None,
    freshness: tuple[str, str] | None,
) -> None:
    fields: dict[str, Any]
    if served == "update":
        manifest = build_manifest(update, "https://cdn.example/a", lumora_fields=True)
        payload = dump_json(manifest)
        body = encode_check_answer(
            payload,
            update=(update.mandatory, message),
            signature=signature,
            freshness=freshness,
        )
        fields = {
            "update_available": True,
            "is_mandatory": update.mandatory,
            "message": message,
            "manifest": LumoraManifest.model_validate(manifest),
        }
        text_field = "manifest_text"
    else:
        directive = NO_UPDATE_DIRECTIVE if served == "noUpdate" else rollback_directive(update)
        payload = dump_json(directive)
        body = encode_check_answer(payload, update=None, signature=signature, freshness=freshness)
        fields = {
            "update_available": False,
            "is_mandatory": False,
            "directive": DIRECTIVE.validate_python(directive),
        }
        text_field = "directive_text"
    if signature is not None:
        fields |= {text_field: payload.decode(), "signature": signature}
    if freshness is not None:
        fields |= {"freshness_text": freshness[0], "freshness_signature": freshness[1]}
    model = CheckResponse(**fields)
    assert json.loads(body) == json.loads(model.model_dump_json(by_alias=True, exclude_unset=True))
    # And the bytes parse back to the very same model (no member unknown to it).
    assert CheckResponse.model_validate_json(body) == model
