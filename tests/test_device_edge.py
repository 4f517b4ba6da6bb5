"""The device edge answers exactly as the full application would, and only what it should.

Each request is sent twice to the same in-process app at the ASGI level: once to the app
(edge in front) and once to ``app.framework`` (FastAPI and every middleware, no edge). The
two answers must be identical: status, body, and headers (as a multiset). The edge's counter
tells which requests it answered itself and which it handed over.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import STORAGE
from device_helpers import (
    IN_PROCESS_ADMIN_KEY,
    expo_headers,
    in_process_app,
    new_project,
    publish_small,
)
from harness import ServerProcess, create_project, make_export, publish_dir, publish_export
from lumora_ota.server.device.edge import finish_headers, is_json_content_type, request_headers
from lumora_ota.server.device.edge_rsgi import RsgiEdge
from lumora_ota.server.device.memory import BytesLRU
from lumora_ota.signing import generate_signing_identity

PATHSEND = {"http.response.pathsend": {}}


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    pathsend: str | None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.encode():
                return value.decode("latin-1")
        return None

    def content(self) -> bytes:
        """The bytes the client receives, whether sent from memory or by pathsend."""
        return Path(self.pathsend).read_bytes() if self.pathsend else self.body

    def comparable(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        # The date is the server's; everything else must match byte for byte.
        headers = sorted(h for h in self.headers if h[0] != b"date")
        return self.status, headers, self.content()


@dataclass
class EdgeApp:
    client: Any
    app: Any
    launch_sha: str
    image_sha: str
    big_sha: str
    served_id: str

    def call(
        self,
        target: Any,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        query: bytes = b"",
        extensions: dict[str, Any] | None = None,
    ) -> Answer:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 3002),
            "state": {},
            "extensions": PATHSEND if extensions is None else extensions,
        }
        messages: list[dict[str, Any]] = []
        chunks = [body]

        async def receive() -> dict[str, Any]:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": False}
            await anyio.sleep_forever()  # the client stays until the answer is complete
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        async def run() -> None:
            await target(scope, receive, send)

        self.client.portal.call(run)
        start = messages[0]
        assert start["type"] == "http.response.start"
        data = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        sent_path = next(
            (m["path"] for m in messages if m["type"] == "http.response.pathsend"), None
        )
        return Answer(start["status"], list(start["headers"]), data, sent_path)

    def both(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[Answer, bool]:
        """The edge's answer (asserted equal to the framework's) and whether the edge took it."""
        before = self.app.edge.answered
        via_edge = self.call(self.app, method, path, headers, **kw)
        took = self.app.edge.answered > before
        via_framework = self.call(self.app.framework, method, path, headers, **kw)
        assert via_edge.comparable() == via_framework.comparable(), (method, path, headers)
        return via_edge, took


@pytest.fixture(scope="module")
def edge_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeApp]:
    tmp = tmp_path_factory.mktemp("edge")
    settings = {"stats_flush_interval": 3600, "asset_memory_file_bytes": 100_000}
    with in_process_app(tmp, **settings) as (client, _ctx):
        create_project(client, "edge")
        key_pem, cert_pem = generate_signing_identity("edge")
        resp = client.put(
            "/api/v1/projects/edge/signing",
            json={
                "keyid": "main",
                "privateKeyPem": key_pem.decode(),
                "certificatePem": cert_pem.decode(),
            },
        )
        assert resp.status_code == 200, resp.text
        answer, _ = publish_export(
            client, "edge", make_export(tmp / "export", seed="edge", n_assets=2)
        )
        android = next(u for u in answer["updates"] if u["platform"] == "android")
        image = next(a for a in android["assets"] if a["fileExtension"] == ".png")
        big = tmp / "big"
        big.mkdir()
        (big / "app.js").write_bytes(b"var big = 1;\n" * 40_000)  # past the per-file memory cap
        big_answer = publish_dir(client, "edge", big, launch="app.js", channel="staging")
        big_sha = big_answer["updates"][0]["launchAsset"]["sha256"]
        # Variants are written in the background after a publish: wait for the brotli ones.
        for sha in (android["launchAsset"]["sha256"], big_sha):
            _wait_for_variant(client, sha)
        yield EdgeApp(
            client,
            client.app,
            android["launchAsset"]["sha256"],
            image["sha256"],
            big_sha,
            android["id"],
        )


def _wait_for_variant(client: Any, sha: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        resp = client.get(f"/api/v1/assets/{sha}.js", headers={"accept-encoding": "br"})
        if resp.headers.get("content-encoding") == "br":
            return
        time.sleep(0.1)
    raise AssertionError("no brotli variant appeared")


def manifest_headers(**overrides: str | None) -> dict[str, str]:
    headers = {
        "accept": "multipart/mixed",
        "expo-platform": "android",
        "expo-runtime-version": "1",
        "expo-protocol-version": "1",
        "expo-channel-name": "production",
    }
    headers.update({k.replace("_", "-"): v for k, v in overrides.items() if v is not None})
    for name, value in overrides.items():
        if value is None:
            headers.pop(name.replace("_", "-"), None)
    return headers


MANIFEST = "/api/v1/expo/edge/manifest"


def test_manifest_answers_match_the_application(edge_app: EdgeApp) -> None:
    cases: list[tuple[dict[str, str], int, bool]] = [
        (manifest_headers(), 200, True),
        (manifest_headers(expo_expect_signature='sig, keyid="main"'), 200, True),
        (manifest_headers(accept="application/expo+json"), 200, True),
        (manifest_headers(accept="application/json", expo_expect_signature="sig"), 200, True),
        (manifest_headers(expo_current_update_id=edge_app.served_id), 200, True),  # no update
        (manifest_headers(accept="application/json", expo_runtime_version="9"), 204, True),
        (manifest_headers(expo_protocol_version=None), 200, True),  # protocol 0
        (manifest_headers(expo_platform="web"), 400, True),  # rendered by the edge
        (manifest_headers(expo_protocol_version="7"), 400, True),  # rendered by the edge
        (manifest_headers(expo_runtime_version=None), 400, True),  # rendered by the edge
        (manifest_headers(accept="text/html"), 406, True),  # rendered by the edge
    ]
    for headers, status, edge_answers in cases:
        answer, took = edge_app.both("GET", MANIFEST, headers)
        assert answer.status == status, (headers, answer.body)
        assert took is edge_answers, headers
        assert answer.header("x-frame-options") == "DENY"
    ghost, took = edge_app.both("GET", "/api/v1/expo/ghost/manifest", manifest_headers())
    assert ghost.status == 404 and took  # a problem document: rendered by the edge
    assert json.loads(ghost.body)["status"] == 404
    signed, _ = edge_app.both("GET", MANIFEST, manifest_headers(expo_expect_signature="sig"))
    assert b"expo-signature: sig=" in signed.body
    assert signed.header("vary") == "Origin"


def test_requests_the_edge_leaves_to_the_application(edge_app: EdgeApp) -> None:
    with_origin, took = edge_app.both(
        "GET", MANIFEST, {**manifest_headers(), "origin": "https://app.example"}
    )
    assert with_origin.status == 200 and not took
    assert with_origin.header("access-control-allow-origin") == "*"
    _, took = edge_app.both("GET", MANIFEST, manifest_headers(), query=b"platform=ios")
    assert not took
    huge, took = edge_app.both("GET", MANIFEST, {**manifest_headers(), "x-big": "a" * 40_000})
    assert huge.status == 431 and not took
    nul, took = edge_app.both("GET", "/api/v1/expo/ed\x00ge/manifest", manifest_headers())
    assert nul.status == 400 and not took
    head, took = edge_app.both("HEAD", f"/api/v1/assets/{edge_app.launch_sha}.js")
    assert head.status == 200 and not took


CHECK = "/api/v1/updates/check"


def check_body(**fields: Any) -> bytes:
    body = {"projectId": "edge", "platform": "android", "runtimeVersion": "1", "deviceId": "d"}
    body.update(fields)
    return json.dumps(body).encode()


def test_check_answers_match_the_application(edge_app: EdgeApp) -> None:
    json_type = {"content-type": "application/json"}
    cases: list[tuple[dict[str, str], bytes, int, bool]] = [
        (json_type, check_body(), 200, True),
        ({}, check_body(), 422, False),  # no content-type: FastAPI's strict content types
        ({"content-type": "application/vnd.lumora+json"}, check_body(), 200, True),
        (json_type, check_body(signed=True), 200, True),
        ({**json_type, "expo-expect-signature": "sig"}, check_body(), 200, True),
        (json_type, check_body(currentUpdateId=edge_app.served_id), 200, True),
        (json_type, check_body(runtimeVersion="9"), 200, True),
        (json_type, check_body(platform="windows"), 422, True),  # rendered by the edge
        (json_type, check_body(unknown=1), 422, True),  # rendered by the edge
        (json_type, check_body(projectId="ghost"), 404, True),  # rendered by the edge
        (json_type, b"{not json", 400, True),  # rendered by the edge
        (json_type, b"[" * 100 + b"]" * 100, 400, True),  # rendered by the edge
        (json_type, b"", 422, False),
        ({"content-type": "text/plain"}, check_body(), 422, False),
        ({**json_type, "content-length": str(10**9)}, check_body(), 413, False),
    ]
    for headers, body, status, edge_answers in cases:
        answer, took = edge_app.both("POST", CHECK, headers, body=body)
        assert answer.status == status, (headers, body, answer.body)
        assert took is edge_answers, (headers, body)
    ok, _ = edge_app.both("POST", CHECK, json_type, body=check_body(signed=True))
    document = json.loads(ok.body)
    assert document["updateAvailable"] is True
    assert document["manifest"]["id"] == edge_app.served_id
    assert ok.header("expo-signature") == document["signature"]


def test_a_body_past_the_json_limit_is_replayed_to_the_application(edge_app: EdgeApp) -> None:
    limit = edge_app.app.state.ctx.settings.max_json_bytes
    padded = b'{"projectId": "edge", "pad": "' + b"x" * limit + b'"}'
    answer, took = edge_app.both("POST", CHECK, {"content-type": "application/json"}, body=padded)
    assert answer.status == 413 and not took


def asset(sha: str, ext: str = ".js") -> str:
    return f"/api/v1/assets/{sha}{ext}"


def test_asset_answers_match_the_application(edge_app: EdgeApp) -> None:
    launch, image, big = edge_app.launch_sha, edge_app.image_sha, edge_app.big_sha
    br, took = edge_app.both("GET", asset(launch), {"accept-encoding": "gzip, br"})
    assert took and br.status == 200 and br.header("content-encoding") == "br"
    assert br.pathsend is None and br.body  # small: sent from memory
    gz, took = edge_app.both("GET", asset(launch), {"accept-encoding": "gzip"})
    assert took and gz.header("content-encoding") == "gzip"
    plain, took = edge_app.both("GET", asset(launch))
    assert took and plain.header("content-encoding") is None
    assert plain.header("etag") == f'"{launch}"'
    png, took = edge_app.both("GET", asset(image, ".png"), {"accept-encoding": "br"})
    assert took and png.header("content-type") == "image/png"
    assert png.header("content-encoding") is None
    not_modified, took = edge_app.both("GET", asset(launch), {"if-none-match": f'"{launch}"'})
    assert took and not_modified.status == 304 and not_modified.body == b""
    # Past the per-file memory cap: the file goes out by pathsend, or through the app's
    # FileResponse when the server has no pathsend.
    large, took = edge_app.both("GET", asset(big))
    assert took and large.pathsend is not None and large.body == b""
    streamed, took = edge_app.both("GET", asset(big), extensions={})
    assert not took and streamed.status == 200 and len(streamed.body) == 13 * 40_000
    for path, headers, status in [
        (asset("0" * 64), {}, 404),
        ("/api/v1/assets/not-a-hash.js", {}, 400),
        (asset(launch), {"range": "bytes=0-9"}, 206),
        (asset(launch), {"expo-requested-update-id": edge_app.served_id}, 200),
    ]:
        answer, took = edge_app.both("GET", path, headers)
        assert answer.status == status and not took, (path, headers)


def test_edge_answers_are_counted_in_the_request_metrics(edge_app: EdgeApp) -> None:
    def count() -> float:
        text = edge_app.client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith("lumora_http_requests_total{") and (
                'route="/api/v1/expo/{project}/manifest"' in line and 'status="200"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    for _ in range(3):
        _, took = edge_app.both("GET", MANIFEST, manifest_headers())
        assert took
    # Three through the edge and three through the framework: both count the same way.
    assert count() == before + 6


def test_rate_limits_are_charged_once_whichever_path_answers(tmp_path: Path) -> None:
    # 3 requests of burst per device: the edge answers them (an unknown project's 404 too)
    # and hands the fourth, refused, to the application; none is charged twice.
    with in_process_app(tmp_path, rate_limit_per_client="0.001/3") as (client, _ctx):
        edge = client.app.edge
        create_project(client, "limited")
        publish_export(client, "limited", make_export(tmp_path / "export", seed="limits"))
        device = {**manifest_headers(), "eas-client-id": "device-1"}
        before = edge.answered
        first = client.get("/api/v1/expo/limited/manifest", headers=device)
        second = client.get("/api/v1/expo/ghost/manifest", headers=device)
        third = client.get("/api/v1/expo/limited/manifest", headers=device)
        assert [first.status_code, second.status_code, third.status_code] == [200, 404, 200]
        assert edge.answered == before + 3  # the 404 is a problem document the edge renders
        refused = client.get("/api/v1/expo/limited/manifest", headers=device)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["x-frame-options"] == "DENY"
        other = {**device, "eas-client-id": "device-2"}
        assert client.get("/api/v1/expo/limited/manifest", headers=other).status_code == 200
        assert client.get("/health").status_code == 200  # not a device endpoint


header_values = st.one_of(
    st.none(), st.sampled_from(["", " ", "1", "0", "ios", "android", "web", "*/*", "\t"])
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    platform=header_values,
    runtime=st.one_of(header_values, st.sampled_from(["2", "1.0", "x" * 300])),
    protocol=header_values,
    accept=st.one_of(
        header_values,
        st.sampled_from(
            [
                "multipart/mixed",
                "application/expo+json;q=0.9, multipart/mixed;q=0.1",
                "application/json",
                "multipart/mixed;q=0",
            ]
        ),
    ),
    channel=st.one_of(header_values, st.sampled_from(["staging", "nope", "c" * 120])),
    signed=st.booleans(),
    current=st.one_of(st.none(), st.just("served"), st.uuids().map(str)),
    failed=st.one_of(st.none(), st.just('"a", "b"'), st.just("served")),
)
def test_any_manifest_request_gets_the_application_answer(
    edge_app: EdgeApp,
    platform: str | None,
    runtime: str | None,
    protocol: str | None,
    accept: str | None,
    channel: str | None,
    signed: bool,
    current: str | None,
    failed: str | None,
) -> None:
    served = edge_app.served_id
    headers = {
        "expo-platform": platform,
        "expo-runtime-version": runtime,
        "expo-protocol-version": protocol,
        "accept": accept,
        "expo-channel-name": channel,
        "expo-expect-signature": "sig" if signed else None,
        "expo-current-update-id": served.upper() if current == "served" else current,
        "expo-recent-failed-update-ids": served if failed == "served" else failed,
    }
    edge_app.both("GET", MANIFEST, {k: v for k, v in headers.items() if v is not None})


def test_request_headers_first_value_wins_and_origin_or_size_opt_out() -> None:
    scope = {"headers": [(b"accept", b"a"), (b"accept", b"b"), (b"x", b"\xe9")]}
    assert request_headers(scope) == {"accept": "a", "x": "\xe9"}
    assert request_headers({"headers": [(b"origin", b"https://x")]}) is None
    assert request_headers({"headers": [(b"x", b"a" * 40_000)]}) is None


def test_json_content_types_follow_fastapi() -> None:
    assert not is_json_content_type(None)
    assert not is_json_content_type("")
    assert is_json_content_type("application/json; charset=utf-8")
    assert is_json_content_type("Application/Problem+JSON")
    assert not is_json_content_type("text/json")
    assert not is_json_content_type("application/x-www-form-urlencoded")


def test_finish_headers_adds_security_headers_and_origin_to_vary() -> None:
    assert finish_headers(((b"vary", b"accept-encoding"), (b"x-frame-options", b"SAMEORIGIN"))) == [
        (b"vary", b"accept-encoding, Origin"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]


def test_bytes_lru_keeps_the_most_recent_within_its_limit() -> None:
    lru: BytesLRU[str, str] = BytesLRU(10)
    lru.put("a", "A", 4)
    lru.put("b", "B", 4)
    assert lru.get("a") == "A"  # now the most recent
    lru.put("c", "C", 4)  # 12 > 10: the least recently used ("b") goes
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == ("A", None, "C")
    assert lru.size == 8
    lru.put("huge", "H", 50)  # larger than the limit: kept alone
    assert len(lru) == 1 and lru.get("huge") == "H" and lru.size == 50
    lru.put("huge", "H2", 5)  # replacing adjusts the size
    assert lru.size == 5


def _edge_answered(http: Any, key: str) -> float:
    metrics = http.get("/metrics", headers={"authorization": f"Bearer {key}"})
    for line in metrics.text.splitlines():
        if line.startswith("lumora_device_edge_answered_total "):
            return float(line.split()[1])
    raise AssertionError("no lumora_device_edge_answered_total in /metrics")


def test_a_real_server_answers_device_requests_at_the_edge(
    server: ServerProcess, tmp_path: Path
) -> None:
    # granian, as `lumora serve` runs it: the edge answers and counts.
    slug = new_project(server, uuid.uuid4().hex[:8], prefix="edge")
    ios = publish_small(server, slug, tmp_path)["ios"]
    launch = f"/api/v1/assets/{ios['launchAsset']['sha256']}.js"
    with server.anon() as http:
        assert http.get(f"/api/v1/expo/{slug}/manifest", headers=expo_headers()).status_code == 200
        before = _edge_answered(http, server.admin_key)
        manifest = http.get(f"/api/v1/expo/{slug}/manifest", headers=expo_headers())
        check = http.post(
            "/api/v1/updates/check",
            json={"projectId": slug, "platform": "ios", "runtimeVersion": "1", "deviceId": "d"},
        )
        asset = http.get(launch)
        assert (manifest.status_code, check.status_code, asset.status_code) == (200, 200, 200)
        assert check.json()["manifest"]["id"] == ios["id"]
        assert hashlib.sha256(asset.content).hexdigest() == ios["launchAsset"]["sha256"]
        assert (
            manifest.headers["vary"] == "Origin" and manifest.headers["x-frame-options"] == "DENY"
        )
        # On an object store (LUMORA_TEST_STORAGE=s3) the asset is the app's 302 to the bucket.
        edge_answers = 3 if STORAGE == "file" else 2
        assert _edge_answered(http, server.admin_key) == before + edge_answers
        # Left to the application: a browser's request (CORS). A problem is the edge's.
        browser = http.get(
            f"/api/v1/expo/{slug}/manifest",
            headers={**expo_headers(), "origin": "https://web.example"},
        )
        assert browser.headers["access-control-allow-origin"] == "*"
        missing = http.get(f"/api/v1/expo/{slug}/manifest", headers=expo_headers(platform="web"))
        assert missing.status_code == 400
        assert missing.headers["content-type"] == "application/problem+json"
        assert _edge_answered(http, server.admin_key) == before + edge_answers + 1


def test_an_unexpected_error_is_logged_before_the_edge_hands_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a responder is never swallowed: the edge logs it (with the traceback), then
    the application answers (its handler logs and answers 500 as problem+json)."""
    with in_process_app(tmp_path) as (client, _ctx):
        create_project(client, "buggy")
        edge = client.app.edge
        client._transport.raise_server_exceptions = False  # type: ignore[attr-defined]  # the 500 is under test

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("responder bug")

        monkeypatch.setattr(edge._expo, "answer", broken)
        before = edge.answered
        with caplog.at_level("ERROR", logger="lumora_ota.server"):
            answer = client.get("/api/v1/expo/buggy/manifest", headers=manifest_headers())
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/problem+json"
        assert edge.answered == before
        edge_logs = [r for r in caplog.records if "device edge" in r.getMessage()]
        assert len(edge_logs) == 1 and edge_logs[0].exc_info is not None
        assert "responder bug" in str(edge_logs[0].exc_info[1])


def test_problem_documents_have_one_shape_whoever_renders_them(tmp_path: Path) -> None:
    """The rate limiter's 429, the request guard's 431 and a route's 404 come from the one
    renderer: the same members, ``instance`` where the path is known."""
    with in_process_app(tmp_path, rate_limit_per_client="0.001/1") as (client, _ctx):
        device = {**manifest_headers(), "eas-client-id": "shape"}
        client.get("/api/v1/expo/ghost/manifest", headers=device)
        limited = client.get("/api/v1/expo/ghost/manifest", headers=device)
        huge = client.get("/health", headers={"x-big": "x" * 40_000})
        missing = client.get("/api/v1/projects/ghost")
    for answer, status in [(limited, 429), (huge, 431), (missing, 404)]:
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        document = answer.json()
        assert {"type", "title", "status", "detail"} <= document.keys()
        assert document["status"] == status
    assert limited.json()["instance"] == "/api/v1/expo/ghost/manifest"


@dataclass
class NativeScope:
    """An RSGI request (``server.rsgi.RsgiScope``) as granian hands it over."""

    method: str
    path: str
    header_items: list[tuple[str, str]]
    query_string: str = ""
    proto: str = "http"
    client: str = "127.0.0.1:40000"

    @property
    def headers(self) -> Any:
        items = self.header_items

        class Headers:
            def items(self) -> list[tuple[str, str]]:
                return items

        return Headers()


class NativeProtocol:
    """Records the one answer a native handler gives (``server.rsgi.RsgiProtocol``)."""

    def __init__(self) -> None:
        self.answer: tuple[int, list[tuple[str, str]], bytes | str] | None = None

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answer = (status, headers, body)

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        self.answer = (status, headers, file)


def test_assets_are_answered_natively_over_rsgi(edge_app: EdgeApp) -> None:
    """The RSGI edge answers asset requests itself (it handed every one to the ASGI bridge
    before), with the ASGI edge's status, headers and bytes; the unusual ones it hands over."""
    native = RsgiEdge(edge_app.app.edge)
    launch, big = edge_app.launch_sha, edge_app.big_sha

    def native_answer(path: str, headers: dict[str, str], method: str = "GET") -> Any:
        protocol = NativeProtocol()
        scope = NativeScope(method, path, list(headers.items()))
        handover = edge_app.client.portal.call(native, scope, protocol)
        return handover, protocol.answer

    for headers, status in [
        ({"accept-encoding": "br"}, 200),
        ({"accept-encoding": "identity"}, 200),
        ({"if-none-match": f'"{launch}"'}, 304),
    ]:
        handover, answer = native_answer(asset(launch), headers)
        assert handover is None and answer is not None, headers
        via_asgi = edge_app.call(edge_app.app, "GET", asset(launch), headers)
        got = sorted((k.encode(), v.encode()) for k, v in answer[1])
        assert (answer[0], got, answer[2]) == (
            status,
            sorted(via_asgi.headers),
            via_asgi.body,
        ), headers
    handover, answer = native_answer(asset(big), {"accept-encoding": "identity"})
    via_asgi = edge_app.call(edge_app.app, "GET", asset(big), {"accept-encoding": "identity"})
    assert handover is None and answer is not None
    assert answer[2] == via_asgi.pathsend  # the file, sent by granian
    assert sorted((k.encode(), v.encode()) for k, v in answer[1]) == sorted(via_asgi.headers)
    for method, headers in [
        ("GET", {"range": "bytes=0-9"}),
        ("GET", {"expo-requested-update-id": edge_app.served_id}),
        ("GET", {"origin": "https://app.example"}),
        ("HEAD", {}),
    ]:
        handover, answer = native_answer(asset(launch), headers, method)
        assert handover is not None and answer is None, (method, headers)


# --- The same answers through granian's RSGI entry (``server/rsgi.py``) --------------------
#
# A real ``lumora serve`` (granian, RSGI) on the edge app's data directory and database gets
# each request over HTTP; the in-process framework (FastAPI and every middleware, no edge,
# no RSGI) gets the same request with the exact headers httpx sent. Status, headers (but the
# server's date and name, and how the body is framed) and body bytes must match.

SERVER_OWN_HEADERS = {"date", "server", "transfer-encoding"}


@pytest.fixture(scope="module")
def rsgi_server(edge_app: EdgeApp) -> Iterator[ServerProcess]:
    if STORAGE != "file":
        pytest.skip("the edge app's blobs are a local folder")
    settings = edge_app.app.state.ctx.settings
    server = ServerProcess(
        data_dir=settings.data_dir,
        database_url=settings.resolved_database_url,
        admin_key=IN_PROCESS_ADMIN_KEY,
        extra_env={
            "LUMORA_ASSET_MEMORY_FILE_BYTES": "100000",
            "LUMORA_PUBLIC_URL": settings.resolved_public_url,  # the manifests' asset URLs
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def over_rsgi(
    edge_app: EdgeApp,
    server: ServerProcess,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    query: bytes = b"",
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """The real server's answer, asserted equal to the in-process framework's."""
    url = server.url + path + (f"?{query.decode()}" if query else "")
    content: Any = body or None
    if chunked:  # a body of unknown length, sent in pieces (transfer-encoding: chunked)
        content = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    with httpx.Client(timeout=30) as http:
        request = http.build_request(method, url, headers=headers, content=content)
        sent = {k: v for k, v in request.headers.items() if k != "transfer-encoding"}
        resp = http.send(request, stream=True)
        raw = b"".join(resp.iter_raw())
        resp.close()
    expected = edge_app.call(edge_app.app.framework, method, path, sent, body=body, query=query)
    status, expected_headers, expected_body = expected.comparable()
    if method == "HEAD":
        expected_body = b""
    got = sorted(
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in resp.headers.multi_items()
        if k not in SERVER_OWN_HEADERS
    )
    wanted = sorted(h for h in expected_headers if h[0].decode() not in SERVER_OWN_HEADERS)
    # Each process draws its own multipart boundary.
    got, raw = _same_boundary(got, raw, edge_app.app.edge._expo._multipart.boundary)
    assert (resp.status_code, got, raw) == (status, wanted, expected_body), (method, path)
    return resp.status_code, dict(resp.headers), raw


def _same_boundary(
    headers: list[tuple[bytes, bytes]], body: bytes, boundary: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    found = re.search(rb"boundary=(lumora-[0-9a-f]+)", b" ".join(v for _, v in headers))
    if found is None:
        return headers, body
    own, ours = found[1], boundary.encode()
    return sorted((k, v.replace(own, ours)) for k, v in headers), body.replace(own, ours)


def test_rsgi_device_answers_match_the_application(
    edge_app: EdgeApp, rsgi_server: ServerProcess
) -> None:
    launch, big = edge_app.launch_sha, edge_app.big_sha
    json_type = {"content-type": "application/json"}
    cases: list[tuple[str, str, dict[str, str], bytes, int]] = [
        ("GET", MANIFEST, manifest_headers(), b"", 200),
        ("GET", MANIFEST, manifest_headers(expo_expect_signature='sig, keyid="main"'), b"", 200),
        ("GET", MANIFEST, manifest_headers(expo_current_update_id=edge_app.served_id), b"", 200),
        (
            "GET",
            MANIFEST,
            manifest_headers(accept="application/json", expo_runtime_version="9"),
            b"",
            204,
        ),
        ("GET", MANIFEST, manifest_headers(expo_platform="web"), b"", 400),
        ("GET", "/api/v1/expo/ghost/manifest", manifest_headers(), b"", 404),
        ("GET", MANIFEST, {**manifest_headers(), "origin": "https://app.example"}, b"", 200),
        ("HEAD", MANIFEST, manifest_headers(), b"", 405),
        ("POST", CHECK, json_type, check_body(signed=True), 200),
        ("POST", CHECK, json_type, check_body(platform="windows"), 422),
        ("POST", CHECK, json_type, b"{not json", 400),
        ("POST", CHECK, {"content-type": "text/plain"}, check_body(), 422),
        ("GET", asset(launch), {"accept-encoding": "br"}, b"", 200),
        ("GET", asset(launch), {"accept-encoding": "identity"}, b"", 200),
        (
            "GET",
            asset(launch),
            {"if-none-match": f'"{launch}"', "accept-encoding": "identity"},
            b"",
            304,
        ),
        ("GET", asset(big), {"accept-encoding": "identity"}, b"", 200),  # a file: response_file
        ("GET", asset(launch), {"range": "bytes=0-9", "accept-encoding": "identity"}, b"", 206),
        ("HEAD", asset(launch), {"accept-encoding": "identity"}, b"", 200),
        ("GET", asset("0" * 64), {}, b"", 404),
        ("GET", "/api/v1/assets/not-a-hash.js", {}, b"", 400),
        ("GET", "/api/v1/projects/edge", {"authorization": "Bearer wrong"}, b"", 401),
    ]
    for method, path, headers, body, status in cases:
        got, _, _ = over_rsgi(edge_app, rsgi_server, method, path, headers, body)
        assert got == status, (method, path, headers)
    _, _, answer = over_rsgi(
        edge_app, rsgi_server, "GET", MANIFEST, manifest_headers(), query=b"x=1"
    )
    assert b"manifest" in answer


def test_rsgi_hands_bodies_and_streams_to_the_application(
    edge_app: EdgeApp, rsgi_server: ServerProcess
) -> None:
    admin = {"authorization": f"Bearer {IN_PROCESS_ADMIN_KEY}", "content-type": "application/json"}
    # A management POST whose body the framework reads: the project exists, a 409 problem.
    status, headers, body = over_rsgi(
        edge_app, rsgi_server, "POST", "/api/v1/projects", admin, b'{"slug": "edge", "name": "E"}'
    )
    assert status == 409 and headers["content-type"] == "application/problem+json"
    # The same check body sent in chunks of unknown length reaches the edge whole.
    status, _, body = over_rsgi(
        edge_app, rsgi_server, "POST", CHECK, {"content-type": "application/json"},
        check_body(), chunked=True,
    )  # fmt: skip
    assert status == 200 and json.loads(body)["manifest"]["id"] == edge_app.served_id
    # Past the JSON limit: the edge has read part of it, the framework reads the rest (413).
    limit = edge_app.app.state.ctx.settings.max_json_bytes
    padded = b'{"projectId": "edge", "pad": "' + b"x" * limit + b'"}'
    status, _, _ = over_rsgi(
        edge_app, rsgi_server, "POST", CHECK, {"content-type": "application/json"}, padded,
        chunked=True,
    )  # fmt: skip
    assert status == 413
    # A check body cut off by a client that leaves: nothing logged as an error, still serving.
    with socket.create_connection(("127.0.0.1", rsgi_server.port)) as raw:
        raw.sendall(
            b"POST " + CHECK.encode() + b" HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: 500\r\n\r\n" + check_body()[:20]
        )
    status, _, _ = over_rsgi(
        edge_app, rsgi_server, "POST", CHECK, {"content-type": "application/json"}, check_body()
    )
    assert status == 200 and "unhandled error" not in rsgi_server.log()
    # Framework answers: documents and pages (streamed answers: tests/test_rsgi_bridge.py).
    for path in ("/openapi.json", "/docs", "/health"):
        over_rsgi(edge_app, rsgi_server, "GET", path)


def test_rsgi_edge_counts_and_rate_limits(tmp_path: Path) -> None:
    """Through ``lumora serve`` with a per-device limit: the edge answers and counts the
    allowed requests, the refused one is the application's 429 with ``Retry-After``."""
    server = ServerProcess(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'data' / 'lumora.db'}",
        extra_env={"LUMORA_RATE_LIMIT_PER_CLIENT": "0.001/3"},
    ).start()
    try:
        device = {**manifest_headers(), "eas-client-id": "rsgi-device"}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            before = _edge_answered(http, server.admin_key)
            answers = [http.get("/api/v1/expo/ghost/manifest", headers=device) for _ in range(4)]
            assert [a.status_code for a in answers] == [404, 404, 404, 429]
            assert answers[3].headers["retry-after"]
            assert answers[3].headers["content-type"] == "application/problem+json"
            assert _edge_answered(http, server.admin_key) == before + 3
    finally:
        server.stop()
