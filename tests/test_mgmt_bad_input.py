"""Bad input to the management API gets a clear 4xx problem document, never a 500, and
leaves nothing half-done behind."""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import (
    ServerProcess,
    create_project,
    export_publish_body,
    make_export,
    upload_missing,
)
from lumora_ota.server.management.guards import json_depth_exceeds
from lumora_ota.server.management.publish import asset_key_problem

UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
SMALL_LIMIT = 64 * 1024


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.fixture
def ready(
    server: ServerProcess, unique: str, tmp_path: Path
) -> tuple[httpx.Client, dict[str, Any]]:
    """A project whose export files are all uploaded, and a valid publish body for it."""
    c = server.client()
    slug = f"bad-{unique}"
    create_project(c, slug)
    body, files = export_publish_body(make_export(tmp_path / "e", seed=unique), slug)
    upload_missing(c, slug, files)
    yield c, body
    c.close()


def _with(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copy


def test_unknown_project_and_update(server: ServerProcess) -> None:
    with server.client() as c:
        assert_problem(c.get("/api/v1/projects/no-such-project"), 404)
        assert_problem(c.get("/api/v1/updates", params={"project": "no-such-project"}), 404)
        assert_problem(
            c.post("/api/v1/assets/missing", json={"project": "no-such-project", "hashes": []}),
            404,
        )
        assert_problem(c.get(f"/api/v1/updates/{UNKNOWN_ID}"), 404)
        assert_problem(c.patch(f"/api/v1/updates/{UNKNOWN_ID}", json={"rollout": 1}), 404)
        assert_problem(c.post(f"/api/v1/updates/{UNKNOWN_ID}/rollback", json={}), 404)
        assert_problem(c.get(f"/api/v1/manifests/{UNKNOWN_ID}"), 404)
        assert_problem(c.get(f"/api/v1/deployments/{UNKNOWN_ID}"), 404)


def test_unknown_project_in_publish(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    assert_problem(c.post("/api/v1/updates/publish", json={**body, "project": "nope-x"}), 404)


def test_invalid_platform(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    platforms = body["platforms"]
    bad = {**body, "platforms": {"windows": platforms["ios"]}}
    problem = assert_problem(c.post("/api/v1/updates/publish", json=bad), 422)
    assert "windows" in json.dumps(problem)
    assert_problem(c.post("/api/v1/updates/publish", json={**body, "platforms": {}}), 422)
    assert_problem(c.get("/api/v1/updates", params={"platform": "windows"}), 422)


def test_malformed_json(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, _ = ready
    headers = {"content-type": "application/json"}
    for raw in (b"{", b'{"project": }', b"\xff\xfe", b"[1, 2", b"nul"):
        assert_problem(c.post("/api/v1/updates/publish", content=raw, headers=headers), 400)
        assert_problem(c.post("/api/v1/projects", content=raw, headers=headers), 400)
    # Valid JSON of the wrong shape is a validation error.
    assert_problem(c.post("/api/v1/updates/publish", json=[1, 2]), 422)
    assert_problem(c.post("/api/v1/updates/publish", json="text"), 422)


def test_deeply_nested_json(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    headers = {"content-type": "application/json"}
    deep = b"[" * 10_000 + b"]" * 10_000
    assert_problem(c.post("/api/v1/updates/publish", content=deep, headers=headers), 400)
    deep_obj = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    assert_problem(c.post("/api/v1/projects", content=deep_obj, headers=headers), 400)
    nested: Any = 1
    for _ in range(100):
        nested = {"x": nested}
    assert_problem(c.post("/api/v1/updates/publish", json={**body, "extra": nested}), 400)


def test_oversized_json_body(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    huge = {**body, "message": "x" * (5 * 1024 * 1024)}
    assert_problem(c.post("/api/v1/updates/publish", json=huge), 413)


def test_unknown_fields(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    assert_problem(c.post("/api/v1/updates/publish", json={**body, "bogus": 1}), 422)
    launch = body["platforms"]["ios"]["launchAsset"]
    bad = _with(body, ["platforms", "ios", "launchAsset"], {**launch, "md5": "x"})
    assert_problem(c.post("/api/v1/updates/publish", json=bad), 422)
    assert_problem(c.post("/api/v1/projects", json={"name": "n", "slug": "s-1", "x": 1}), 422)
    assert_problem(
        c.post("/api/v1/keys", json={"name": "n", "role": "read", "secret": "lum_x"}), 422
    )


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "assets/../../x",
        "..",
        "/etc/passwd",
        "assets\\x.png",
        "assets/x\x00.png",
        "C:/windows/x.js",
        "c:x.js",
        "assets//x.png",
        "assets/./x.png",
        "assets/",
        "",
        "a" * 1025,
    ],
)
def test_unsafe_asset_keys(ready: tuple[httpx.Client, dict[str, Any]], key: str) -> None:
    c, body = ready
    launch = body["platforms"]["ios"]["launchAsset"]
    bad = _with(body, ["platforms", "ios", "launchAsset"], {**launch, "key": key})
    assert_problem(c.post("/api/v1/updates/publish", json=bad), 422)
    assert asset_key_problem(key) is not None


def test_duplicate_keys_in_one_platform(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    ios = body["platforms"]["ios"]
    dup = [ios["assets"][0], {**ios["assets"][1], "key": ios["assets"][0]["key"]}]
    assert_problem(
        c.post("/api/v1/updates/publish", json=_with(body, ["platforms", "ios", "assets"], dup)),
        422,
    )
    clash = [{**ios["assets"][0], "key": ios["launchAsset"]["key"]}]
    assert_problem(
        c.post("/api/v1/updates/publish", json=_with(body, ["platforms", "ios", "assets"], clash)),
        422,
    )


def test_rollout_outside_range(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    for rollout in (-1, 101, 1000, "50%", "50", 50.5, True, None):
        assert_problem(c.post("/api/v1/updates/publish", json={**body, "rollout": rollout}), 422)
    assert_problem(c.post("/api/v1/updates/publish", json={**body, "mandatory": "yes"}), 422)
    created = c.post("/api/v1/updates/publish", json=body)
    assert created.status_code == 201
    update = created.json()["updates"][0]["id"]
    for rollout in (-1, 101):
        assert_problem(c.patch(f"/api/v1/updates/{update}", json={"rollout": rollout}), 422)
        assert_problem(
            c.post(f"/api/v1/updates/{update}/promote", json={"channel": "x", "rollout": rollout}),
            422,
        )
    assert c.get(f"/api/v1/updates/{update}").json()["rollout"] == 100


def test_bad_names_and_hashes(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    for slug in ("A-upper", "-lead", "x", "has space", "a" * 64, "ü-slug"):
        assert_problem(c.post("/api/v1/projects", json={"name": "n", "slug": slug}), 422)
    for channel in ("", "-x", "a/b", "a" * 101, "spa ce"):
        assert_problem(c.post("/api/v1/updates/publish", json={**body, "channel": channel}), 422)
    launch = body["platforms"]["ios"]["launchAsset"]
    for sha in ("abc", launch["sha256"].upper(), "g" * 64):
        bad = _with(body, ["platforms", "ios", "launchAsset"], {**launch, "sha256": sha})
        assert_problem(c.post("/api/v1/updates/publish", json=bad), 422)
    project = body["project"]
    assert_problem(
        c.post("/api/v1/assets/missing", json={"project": project, "hashes": ["0" * 64] * 10_001}),
        422,
    )
    assert_problem(
        c.put("/api/v1/assets/not-a-hash", params={"project": project}, content=b"x"), 422
    )
    assert_problem(
        c.put(f"/api/v1/assets/{'A' * 64}", params={"project": project}, content=b"x"), 422
    )
    assert_problem(c.get("/api/v1/updates", params={"limit": "0"}), 422)
    assert_problem(c.get("/api/v1/updates", params={"limit": "201"}), 422)


def test_wrong_hash_upload_is_400_and_stays_missing(
    server: ServerProcess, ready: tuple[httpx.Client, dict[str, Any]]
) -> None:
    c, body = ready
    data = b"the real bytes " * 100
    claimed = hashlib.sha256(b"other bytes").hexdigest()
    resp = c.put(f"/api/v1/assets/{claimed}", params={"project": body["project"]}, content=data)
    assert_problem(resp, 400)
    missing = c.post(
        "/api/v1/assets/missing", json={"project": body["project"], "hashes": [claimed]}
    )
    assert missing.json()["missing"] == [claimed]
    blob_root = server.data_dir / "blobs"
    if blob_root.is_dir():
        assert not (blob_root / claimed[:2] / claimed[2:4] / claimed).exists()


def test_server_still_healthy_after_bad_input(ready: tuple[httpx.Client, dict[str, Any]]) -> None:
    c, body = ready
    c.post(
        "/api/v1/updates/publish",
        content=b"[" * 50_000,
        headers={"content-type": "application/json"},
    )
    assert c.post("/api/v1/updates/publish", json=body).status_code == 201
    assert c.get("/health").json()["status"] == "ok"


# ---------------------------------------------------------------- upload size limit


@pytest.fixture(scope="module")
def small_limit_server(server: ServerProcess, server_factory: Any) -> ServerProcess:
    """A server (same backend as ``server``) whose upload limit is 64 KiB."""
    backend = "sqlite" if server.database_url.startswith("sqlite") else "postgres"
    return server_factory(backend, extra_env={"LUMORA_MAX_UPLOAD_BYTES": str(SMALL_LIMIT)})


def test_oversized_upload_with_content_length(
    small_limit_server: ServerProcess, unique: str
) -> None:
    data = b"z" * (SMALL_LIMIT + 1)
    sha = hashlib.sha256(data).hexdigest()
    with small_limit_server.client() as c:
        create_project(c, f"big-{unique}")
        assert_problem(
            c.put(f"/api/v1/assets/{sha}", params={"project": f"big-{unique}"}, content=data), 413
        )
        ok = b"z" * SMALL_LIMIT
        ok_resp = c.put(
            f"/api/v1/assets/{hashlib.sha256(ok).hexdigest()}",
            params={"project": f"big-{unique}"},
            content=ok,
        )
        assert ok_resp.status_code == 201
        missing = c.post(
            "/api/v1/assets/missing", json={"project": f"big-{unique}", "hashes": [sha]}
        )
        assert missing.json()["missing"] == [sha]


def test_oversized_upload_chunked(small_limit_server: ServerProcess, unique: str) -> None:
    data = b"q" * (SMALL_LIMIT * 2)
    sha = hashlib.sha256(data).hexdigest()

    def chunks():
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    with small_limit_server.client() as c:
        create_project(c, f"chunk-{unique}")
        resp = c.put(
            f"/api/v1/assets/{sha}", params={"project": f"chunk-{unique}"}, content=chunks()
        )
        assert "content-length" not in resp.request.headers
        assert_problem(resp, 413)
        missing = c.post(
            "/api/v1/assets/missing", json={"project": f"chunk-{unique}", "hashes": [sha]}
        )
        assert missing.json()["missing"] == [sha]
    blob_root = small_limit_server.data_dir / "blobs"
    assert not (blob_root / sha[:2] / sha[2:4] / sha).exists()


# ---------------------------------------------------------------- pure validation


_SEGMENT = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="/\\\x7f"),
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(_SEGMENT, min_size=1, max_size=6))
def test_safe_relative_paths_are_accepted(segments: list[str]) -> None:
    key = "/".join(segments)
    if (
        len(segments[0]) >= 2
        and segments[0][1] == ":"
        and segments[0][0].isascii()
        and segments[0][0].isalpha()
    ):
        assert asset_key_problem(key) is not None
    else:
        assert asset_key_problem(key) is None


@given(st.text(max_size=60))
def test_accepted_keys_are_normalised_relative_paths(key: str) -> None:
    if asset_key_problem(key) is None:
        assert posixpath.normpath(key) == key
        assert not key.startswith("/")
        assert ".." not in key.split("/")
        assert "\\" not in key and "\x00" not in key


def test_json_depth() -> None:
    assert not json_depth_exceeds({"a": [1, {"b": 2}]}, 3)
    assert json_depth_exceeds({"a": [1, {"b": [2]}]}, 3)
    assert not json_depth_exceeds(5, 0)
