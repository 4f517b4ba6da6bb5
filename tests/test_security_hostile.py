"""Hostile input: every attack gets a clear 4xx (problem+json where the app answers) and
leaves no trace — no file served from outside the blob store, no blob or temporary file
written, no row created, no 500 in the server log.

Raw request targets go over a plain socket (``security_helpers.raw_request``) so that no
client library normalises ``..`` or re-encodes percent escapes before the server sees them.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ServerProcess, create_project, make_export, publish_export
from security_helpers import (
    assert_problem,
    blob_files,
    parse_raw_response,
    raw_request,
    server_errors_in_log,
    temp_blob_files,
)

SMALL_UPLOAD_LIMIT = 64 * 1024
SMALL_JSON_LIMIT = 32 * 1024
IDLE_TIMEOUT_S = 1.0
CANARY = b"LUMORA-CANARY-OUTSIDE-THE-BLOB-STORE"

# Every spelling of "go up and read something else" we know of, on the asset route.
TRAVERSALS: list[bytes] = [
    b"../../lumora.db",
    b"..%2f..%2flumora.db",
    b"..%2F..%2Flumora.db",
    b"%2e%2e/%2e%2e/lumora.db",
    b"%2e%2e%2f%2e%2e%2flumora.db",
    b"%252e%252e%252f%252e%252e%252flumora.db",
    b"%252e%252e/%252e%252e/lumora.db",
    b"..%5c..%5clumora.db",
    b"..\\..\\lumora.db",
    b"%2fetc%2fpasswd",
    b"/etc/passwd",
    b"//etc/passwd",
    b"C:%5cWindows%5cwin.ini",
    b"C:/Windows/win.ini",
    b"%5c%5cserver%5cshare%5cfile",
    b"lumora.db%00.png",
    b"%00",
    b"..%00/lumora.db",
    b"%E2%80%A4%E2%80%A4/%E2%80%A4%E2%80%A4/lumora.db",  # U+2024 ONE DOT LEADER
    b"%EF%BC%8E%EF%BC%8E%2f%EF%BC%8E%EF%BC%8E%2flumora.db",  # U+FF0E FULLWIDTH FULL STOP
    b"\xef\xbc\x8e\xef\xbc\x8e/\xef\xbc\x8e\xef\xbc\x8e/lumora.db",  # raw UTF-8, unescaped
    b"%c0%ae%c0%ae/%c0%ae%c0%ae/lumora.db",  # overlong UTF-8 dots
    b"....//....//lumora.db",
    b"canary.txt",
    b"..%2f..%2f..%2fcanary.txt",
    b"../../../canary.txt",
]


@pytest.fixture(scope="module")
def strict_server(server: ServerProcess, server_factory: Any) -> ServerProcess:
    """A server of the same backend with small limits and a 1 s upload idle timeout."""
    backend = "sqlite" if server.database_url.startswith("sqlite") else "postgres"
    return server_factory(
        backend,
        extra_env={
            "LUMORA_MAX_UPLOAD_BYTES": str(SMALL_UPLOAD_LIMIT),
            "LUMORA_MAX_JSON_BYTES": str(SMALL_JSON_LIMIT),
            "LUMORA_UPLOAD_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
        },
    )


@pytest.fixture(scope="module")
def strict_project(strict_server: ServerProcess) -> str:
    """A project on the strict server, with one published update."""
    slug = f"hostile-{time.monotonic_ns() % 10**9}"
    with strict_server.client() as c:
        create_project(c, slug)
    return slug


@pytest.fixture
def project(server: ServerProcess, unique: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A project on the shared server with one publish; yields its JSON and the update."""
    export = make_export(tmp_path / "e", seed=unique)
    with server.client() as c:
        created = create_project(c, f"hostile-{unique}")
        answer, _ = publish_export(c, created["slug"], export)
    yield {"project": created, "update": answer["updates"][0]}


# ------------------------------------------------------------------ path traversal


def test_asset_route_traversal_serves_nothing_outside_the_store(
    strict_server: ServerProcess,
) -> None:
    # A file next to the blob folder that traversal would reach, plus the database itself.
    (strict_server.data_dir / "canary.txt").write_bytes(CANARY)
    (strict_server.data_dir / "blobs" / "canary.txt").write_bytes(CANARY)
    before = blob_files(strict_server)
    for attack in TRAVERSALS:
        for prefix in (b"/api/v1/assets/", b"/api/v1/assets/" + b"a" * 64 + b"/"):
            resp = raw_request(strict_server, "GET", prefix + attack)
            assert 400 <= resp.status < 500, (attack, resp.status)
            assert CANARY not in resp.body, attack
            assert b"SQLite format" not in resp.body, attack
            assert b"root:" not in resp.body, attack
    assert blob_files(strict_server) == before
    assert server_errors_in_log(strict_server) == []


@pytest.mark.parametrize(
    "template",
    [
        b"/api/v1/projects/{}",
        b"/api/v1/updates/{}",
        b"/api/v1/manifests/{}",
        b"/api/v1/deployments/{}",
        b"/api/v1/projects/{}/signing",
        b"/api/v1/expo/{}/manifest",
    ],
)
def test_traversal_in_other_path_params_is_4xx(server: ServerProcess, template: bytes) -> None:
    auth = [(b"Authorization", b"Bearer " + server.admin_key.encode())]
    device = [(b"expo-platform", b"ios"), (b"expo-runtime-version", b"1")]
    for attack in TRAVERSALS:
        target = template.replace(b"{}", attack)
        resp = raw_request(server, "GET", target, headers=auth + device)
        assert 400 <= resp.status < 500, (target, resp.status)
        assert b"SQLite format" not in resp.body and CANARY not in resp.body


def test_asset_keys_with_traversal_are_rejected_at_publish(
    server: ServerProcess, project: dict[str, Any], tmp_path: Path
) -> None:
    update = project["update"]
    launch = update["launchAsset"]
    base = {
        "project": project["project"]["slug"],
        "channel": "traversal",
        "runtimeVersion": "1",
        "platforms": {"ios": {"launchAsset": {**_entry(launch)}, "assets": []}},
    }
    with server.client() as c:
        for key in ["../x.js", "a/../../x.js", "/abs.js", "C:\\x.js", "a\\..\\x.js", "a\x00.js",
                    "a//b.js", "\u2024\u2024/x.js"]:  # fmt: skip
            body = json.loads(json.dumps(base))
            body["platforms"]["ios"]["launchAsset"]["key"] = key
            resp = c.post("/api/v1/updates/publish", json=body)
            if key.startswith("\u2024"):
                # Not a traversal on any file system: a harmless name, stored as given.
                assert resp.status_code in (201, 422), resp.text
                continue
            assert_problem(resp, 400, 422)
        listed = c.get(
            "/api/v1/updates", params={"project": base["project"], "channel": "traversal"}
        )
        assert all(u["launchAsset"]["key"].startswith("\u2024") for u in listed.json()["items"])


def _entry(asset: dict[str, Any]) -> dict[str, Any]:
    return {k: asset[k] for k in ("key", "sha256", "contentType", "fileExtension")}


# ------------------------------------------------------------------ uploads


def test_upload_with_wrong_bytes_is_400_and_leaves_nothing(
    strict_server: ServerProcess, strict_project: str
) -> None:
    data = b"the real bytes" * 100
    sha = hashlib.sha256(data).hexdigest()
    before = blob_files(strict_server)
    with strict_server.client() as c:
        wrong = c.put(f"/api/v1/assets/{sha}", params={"project": strict_project},
                      content=data + b"!")  # fmt: skip
        assert_problem(wrong, 400)
        truncated = c.put(f"/api/v1/assets/{sha}", params={"project": strict_project},
                          content=data[:-1])  # fmt: skip
        assert_problem(truncated, 400)
        missing = c.post(
            "/api/v1/assets/missing", json={"project": strict_project, "hashes": [sha]}
        )
        assert missing.json()["missing"] == [sha]
    assert blob_files(strict_server) == before
    assert temp_blob_files(strict_server) == []


def test_upload_shorter_than_its_content_length_is_not_stored(
    strict_server: ServerProcess, strict_project: str
) -> None:
    data = b"x" * 1000
    sha = hashlib.sha256(data).hexdigest()
    before = blob_files(strict_server)
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as sock:
        sock.sendall(
            f"PUT /api/v1/assets/{sha}?project={strict_project} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {strict_server.admin_key}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:500]
        )
        sock.shutdown(socket.SHUT_WR)  # the client gives up half-way
        with _ignore_reset():
            sock.recv(4096)
    _wait_for(lambda: temp_blob_files(strict_server) == [])
    assert blob_files(strict_server) == before
    with strict_server.client() as c:
        missing = c.post(
            "/api/v1/assets/missing", json={"project": strict_project, "hashes": [sha]}
        )
        assert missing.json()["missing"] == [sha]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_past_the_limit_is_413(
    strict_server: ServerProcess, strict_project: str, chunked: bool
) -> None:
    data = b"y" * (SMALL_UPLOAD_LIMIT + 1)
    sha = hashlib.sha256(data).hexdigest()
    before = blob_files(strict_server)
    content: Any = (
        iter([data[i : i + 8192] for i in range(0, len(data), 8192)]) if chunked else data
    )
    with strict_server.client() as c:
        resp = c.put(f"/api/v1/assets/{sha}", params={"project": strict_project}, content=content)
        assert_problem(resp, 413)
    assert blob_files(strict_server) == before
    assert temp_blob_files(strict_server) == []


def test_declared_content_length_past_the_limit_is_413_before_reading(
    strict_server: ServerProcess, strict_project: str
) -> None:
    sha = "ab" * 32
    resp = raw_request(
        strict_server,
        "PUT",
        f"/api/v1/assets/{sha}?project={strict_project}".encode(),
        headers=[
            (b"Authorization", f"Bearer {strict_server.admin_key}".encode()),
            (b"Content-Length", str(10 * 1024**3).encode()),  # 10 GiB that never comes
        ],
    )
    assert_problem(resp, 413)


def test_slow_drip_upload_times_out(strict_server: ServerProcess, strict_project: str) -> None:
    data = b"z" * 4096
    sha = hashlib.sha256(data).hexdigest()
    before = blob_files(strict_server)
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=30) as sock:
        sock.sendall(
            f"PUT /api/v1/assets/{sha}?project={strict_project} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {strict_server.admin_key}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:10]
        )
        # Then nothing: the server must give up on its own and answer 408.
        answer = b""
        with _ignore_reset():
            while chunk := sock.recv(65536):
                answer += chunk
    assert_problem(parse_raw_response(answer), 408)
    assert temp_blob_files(strict_server) == []
    assert blob_files(strict_server) == before
    assert server_errors_in_log(strict_server) == []


def test_slow_but_steady_upload_succeeds(strict_server: ServerProcess, strict_project: str) -> None:
    """The idle timeout is per chunk: an upload that keeps sending is never cut off."""
    data = b"s" * 4000
    sha = hashlib.sha256(data).hexdigest()

    def drip() -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            time.sleep(IDLE_TIMEOUT_S * 0.4)
            yield data[i : i + 1000]

    with strict_server.client() as c:
        resp = c.put(f"/api/v1/assets/{sha}", params={"project": strict_project}, content=drip())
        assert resp.status_code == 201, resp.text


# ------------------------------------------------------------------ JSON bodies

DEEP = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/projects",
        "/api/v1/deployments",
        "/api/v1/updates/publish",
        "/api/v1/assets/missing",
        "/api/v1/keys",
        "/api/v1/updates/check",
        "/api/v1/events",
    ],
)
def test_json_nested_10000_deep_is_400(server: ServerProcess, path: str) -> None:
    with server.client() as c:
        for body in (DEEP, DEEP_OBJECT):
            resp = c.post(path, content=body, headers={"content-type": "application/json"})
            assert_problem(resp, 400)
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/updates/check", "/api/v1/events"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_json_body_past_the_limit_is_413(
    strict_server: ServerProcess, path: str, chunked: bool
) -> None:
    body = json.dumps({"name": "x" * (SMALL_JSON_LIMIT + 10), "slug": "too-big"}).encode()
    content: Any = (
        iter([body[i : i + 4096] for i in range(0, len(body), 4096)]) if chunked else body
    )
    with strict_server.client() as c:
        resp = c.post(path, content=content, headers={"content-type": "application/json"})
        assert_problem(resp, 413)
        assert c.get("/api/v1/projects/too-big").status_code == 404


# ------------------------------------------------------------------ headers


def test_100_kb_header_value_is_rejected_by_the_server_layer(server: ServerProcess) -> None:
    big = b"a" * 100_000
    for target, name in [(b"/health", b"X-Big"), (b"/api/v1/projects", b"Authorization"),
                         (b"/api/v1/expo/x/manifest", b"expo-channel-name")]:  # fmt: skip
        resp = raw_request(server, "GET", target, headers=[(name, big)])
        assert resp.status in (400, 431), (target, resp.status)
    many = [(f"X-H{i}".encode(), b"v" * 100) for i in range(2000)]
    assert raw_request(server, "GET", b"/health", headers=many).status in (400, 431)
    assert httpx.get(f"{server.url}/health").status_code == 200


# ------------------------------------------------------------------ channels and devices


def test_huge_and_many_channel_names(server: ServerProcess, project: dict[str, Any]) -> None:
    slug = project["project"]["slug"]
    with server.client() as c:
        huge = c.post("/api/v1/deployments", json={"project": slug, "name": "c" * 100_000})
        assert_problem(huge, 422)
        for name in ["", " ", "a/b", "../x", "a\x00b", "\u202ertl"]:
            assert_problem(
                c.post("/api/v1/deployments", json={"project": slug, "name": name}), 400, 422
            )
        before = len(c.get("/api/v1/deployments", params={"project": slug}).json()["items"])
    with server.anon() as anon:
        for i in range(300):  # devices naming channels that do not exist create nothing
            resp = anon.get(
                f"/api/v1/expo/{slug}/manifest",
                headers={
                    "expo-platform": "ios",
                    "expo-runtime-version": "1",
                    "expo-channel-name": f"nope-{i}-" + "x" * 200,
                },
            )
            assert resp.status_code in (200, 204, 400, 404), resp.status_code
        long_name = anon.get(
            f"/api/v1/expo/{slug}/manifest",
            headers={
                "expo-platform": "ios",
                "expo-runtime-version": "1",
                "expo-channel-name": "x" * 20_000,
            },
        )
        assert long_name.status_code < 500
        check = anon.post(
            "/api/v1/updates/check",
            json={
                "projectId": slug,
                "channel": "x" * 100_000,
                "platform": "ios",
                "runtimeVersion": "1",
            },
        )
        assert 400 <= check.status_code < 500 or check.json()["updateAvailable"] is False
    with server.client() as c:
        after = len(c.get("/api/v1/deployments", params={"project": slug}).json()["items"])
    assert after == before


@pytest.mark.parametrize(
    ("platform", "runtime"),
    [
        ("windows", "1"),
        ("IOS", "1"),
        ("", "1"),
        ("ios", ""),
        ("ios", "x" * 10_000),
        ("ios", "../../1"),
        ("ios\x00", "1"),
        ("ios", ">=0.0.0"),
        ("ios", "*"),
    ],
)
def test_unknown_platforms_and_runtimes_on_device_endpoints(
    server: ServerProcess, project: dict[str, Any], platform: str, runtime: str
) -> None:
    slug = project["project"]["slug"]
    with server.anon() as anon:
        check = anon.post(
            "/api/v1/updates/check",
            json={"projectId": slug, "platform": platform, "runtimeVersion": runtime},
        )
        if check.status_code == 200:
            # A runtime nobody published for: nothing to offer, never somebody else's update.
            assert check.json()["updateAvailable"] is False, (platform, runtime, check.text)
        else:
            assert_problem(check, 400, 404, 422)
        headers = [
            (b"expo-platform", platform.encode()),
            (b"expo-runtime-version", runtime.encode()),
        ]
        manifest = raw_request(
            server, "GET", f"/api/v1/expo/{slug}/manifest".encode(), headers=headers
        )
        assert manifest.status in (204, 400, 404, 406, 422) or (
            manifest.status == 200 and b"noUpdateAvailable" in manifest.body
        ), (platform, runtime, manifest.status, manifest.body[:200])


# ------------------------------------------------------------------ helpers


class _ignore_reset:
    """Suppress the connection errors a server may answer a misbehaving client with."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, ConnectionError | TimeoutError)


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_nul_in_json_strings_is_422_and_in_query_values_400(
    server: ServerProcess, unique: str
) -> None:
    """PostgreSQL text cannot hold NUL: such input is refused up front, on both backends."""
    with server.client() as c:
        for body in ({"name": "a\x00b", "slug": f"nul-{unique}"}, {"name": "ok", "slug": "n\x00l"}):
            assert_problem(c.post("/api/v1/projects", json=body), 422)
        assert_problem(c.get("/api/v1/updates", params={"project": "a\x00b"}), 400)
        assert c.get(f"/api/v1/projects/nul-{unique}").status_code == 404
    with server.anon() as anon:
        check = {"projectId": "x\x00", "platform": "ios", "runtimeVersion": "1"}
        assert_problem(anon.post("/api/v1/updates/check", json=check), 422)
