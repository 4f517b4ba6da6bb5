"""Asset delivery: content types, compression negotiation, Range, ETag and bad names."""

from __future__ import annotations

import gzip
import hashlib
import time
import uuid
from typing import Any

import brotli
import httpx
import pytest

from conftest import STORAGE
from device_helpers import new_project, publish_small
from harness import ServerProcess
from lumora_ota.server.device.assets import content_type_for, etag_matches, parse_asset_name
from lumora_ota.server.device.negotiation import acceptable_encodings, acceptable_media_types
from lumora_ota.server.problems import ProblemError

IMMUTABLE = "public, max-age=31536000, immutable"
# With LUMORA_TEST_STORAGE=s3 the object store answers downloads itself (after a 302), with
# its own ETags, conditional requests and CORS rules; test_scaleout_* covers that path.
app_sends_bytes = pytest.mark.skipif(
    STORAGE == "s3", reason="ETag/304/If-Range/CORS of bytes the app sends (file store only)"
)


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ()),
        ("", ()),
        ("br, gzip", ("br", "gzip")),
        ("gzip, br", ("br", "gzip")),  # equal q: the server prefers brotli
        ("br;q=0.5, gzip", ("gzip", "br")),
        ("br;q=0, gzip;q=0", ()),
        ("*", ("br", "gzip")),
        ("*;q=0.2, gzip", ("gzip", "br")),
        ("identity", ()),
        ("deflate", ()),
        ("GZIP;Q=0.8", ("gzip",)),
        ("br;q=bogus, gzip", ("gzip",)),
    ],
)
def test_encoding_negotiation(header: str | None, expected: tuple[str, ...]) -> None:
    assert acceptable_encodings(header, ("br", "gzip")) == expected


OFFERED = ("multipart/mixed", "application/expo+json", "application/json")


@pytest.mark.parametrize(
    ("accept", "first"),
    [
        (None, "multipart/mixed"),
        ("*/*", "multipart/mixed"),
        ("application/expo+json, application/json, multipart/mixed", "multipart/mixed"),
        ("application/expo+json;q=0.9, application/json;q=0.8, multipart/mixed", "multipart/mixed"),
        ("application/json", "application/json"),
        ("application/*", "application/expo+json"),
        ("multipart/mixed;q=0.1, */*;q=0.5", "application/expo+json"),
        ("text/html", None),
    ],
)
def test_media_type_negotiation(accept: str | None, first: str | None) -> None:
    acceptable = acceptable_media_types(accept, OFFERED)
    assert (acceptable[0] if acceptable else None) == first


@pytest.mark.parametrize(
    ("extension", "content_type"),
    [
        (".js", "application/javascript"),
        (".bundle", "application/javascript"),
        (".hbc", "application/javascript"),
        (".json", "application/json"),
        (".png", "image/png"),
        (".PNG", "image/png"),
        (".jpg", "image/jpeg"),
        (".ttf", "font/ttf"),
        ("", "application/octet-stream"),
        (".unknownext", "application/octet-stream"),
    ],
)
def test_content_types(extension: str, content_type: str) -> None:
    assert content_type_for(extension) == content_type


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "a" * 64 + "/x",
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "a" * 64 + ".",
        "a" * 64 + ".x-y",
        "a" * 64 + ".waytoolongextension",
        "a" * 64 + "\x00.js",
        "",
    ],
)
def test_bad_asset_names(name: str) -> None:
    with pytest.raises(ProblemError):
        parse_asset_name(name)


def test_etag_comparison() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc"', '"abc"')
    assert etag_matches('"x", "abc"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abc-br"', '"abc"')


# ---------------------------------------------------------------- against a server


@pytest.fixture(scope="module")
def published(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A published export; returns the iOS update JSON."""
    slug = new_project(server, uuid.uuid4().hex[:8], "assets")
    return publish_small(server, slug, tmp_path_factory.mktemp("assets"))["ios"]


def raw_get(client: httpx.Client, url: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """GET without httpx decoding the content-encoding."""
    with client.stream("GET", url, headers=headers) as resp:
        return resp, b"".join(resp.iter_raw())


def bundle(published: dict[str, Any]) -> tuple[str, str, int]:
    launch = published["launchAsset"]
    return launch["url"], launch["sha256"], launch["size"]


@app_sends_bytes
def test_identity_download(server: ServerProcess, published: dict[str, Any]) -> None:
    url, sha, size = bundle(published)
    with server.anon() as client:
        resp, body = raw_get(client, url, **{"accept-encoding": "identity"})
    assert resp.status_code == 200
    assert hashlib.sha256(body).hexdigest() == sha and len(body) == size
    assert resp.headers["content-type"] == "application/javascript"
    assert resp.headers["cache-control"] == IMMUTABLE
    assert resp.headers["etag"] == f'"{sha}"'
    assert "content-encoding" not in resp.headers
    assert "accept-encoding" in resp.headers["vary"].lower()


def test_content_type_follows_the_extension(
    server: ServerProcess, published: dict[str, Any]
) -> None:
    (asset,) = published["assets"]
    base = server.url + "/api/v1/assets/" + asset["sha256"]
    with server.anon() as client:
        assert client.get(base + ".png").headers["content-type"] == "image/png"
        assert client.get(base).headers["content-type"] == "application/octet-stream"
        assert client.get(base + ".json").headers["content-type"] == "application/json"


def wait_for_variant(client: httpx.Client, url: str, encoding: str) -> tuple[httpx.Response, bytes]:
    """Variants are computed once, in the background, after the publish: poll for one."""
    deadline = time.monotonic() + 30
    while True:
        resp, body = raw_get(client, url, **{"accept-encoding": encoding})
        if resp.headers.get("content-encoding") == encoding or time.monotonic() > deadline:
            return resp, body
        time.sleep(0.1)


@app_sends_bytes
@pytest.mark.parametrize(
    ("encoding", "decompress"), [("br", brotli.decompress), ("gzip", gzip.decompress)]
)
def test_precomputed_variants(
    server: ServerProcess, published: dict[str, Any], encoding: str, decompress: Any
) -> None:
    url, sha, size = bundle(published)
    with server.anon() as client:
        resp, body = wait_for_variant(client, url, encoding)
        assert resp.headers.get("content-encoding") == encoding
        assert resp.headers["etag"] == f'"{sha}-{encoding}"'
        assert resp.headers["content-type"] == "application/javascript"
        assert resp.headers["cache-control"] == IMMUTABLE
        assert len(body) < size
        assert hashlib.sha256(decompress(body)).hexdigest() == sha
        # Conditional GET on the variant's own tag.
        again = client.get(
            url, headers={"accept-encoding": encoding, "if-none-match": f'"{sha}-{encoding}"'}
        )
        assert again.status_code == 304


def test_negotiation_respects_q_values(server: ServerProcess, published: dict[str, Any]) -> None:
    url, _, _ = bundle(published)
    with server.anon() as client:
        wait_for_variant(client, url, "br")
        wait_for_variant(client, url, "gzip")
        cases = {
            "br, gzip": "br",
            "gzip;q=1, br;q=0.5": "gzip",
            "br;q=0, gzip;q=0": None,
            "*": "br",
            "identity": None,
        }
        for header, expected in cases.items():
            resp, _ = raw_get(client, url, **{"accept-encoding": header})
            assert resp.headers.get("content-encoding") == expected, header


def test_png_is_never_compressed(server: ServerProcess, published: dict[str, Any]) -> None:
    (asset,) = published["assets"]
    with server.anon() as client:
        resp, body = raw_get(client, asset["url"], **{"accept-encoding": "br, gzip"})
    assert "content-encoding" not in resp.headers
    assert hashlib.sha256(body).hexdigest() == asset["sha256"]


@app_sends_bytes
def test_conditional_get(server: ServerProcess, published: dict[str, Any]) -> None:
    url, sha, _ = bundle(published)
    identity = {"accept-encoding": "identity"}
    with server.anon() as client:
        resp = client.get(url, headers={**identity, "if-none-match": f'"{sha}"'})
        assert resp.status_code == 304 and resp.content == b""
        assert resp.headers["etag"] == f'"{sha}"'
        assert resp.headers["cache-control"] == IMMUTABLE
        resp = client.get(url, headers={**identity, "if-none-match": f'W/"{sha}", "other"'})
        assert resp.status_code == 304
        resp = client.get(url, headers={**identity, "if-none-match": '"something-else"'})
        assert resp.status_code == 200


@app_sends_bytes
def test_range_requests(server: ServerProcess, published: dict[str, Any]) -> None:
    url, sha, size = bundle(published)
    identity = {"accept-encoding": "identity"}
    with server.anon() as client:
        full = client.get(url, headers=identity).content
        resp = client.get(url, headers={**identity, "range": "bytes=0-9"})
        assert resp.status_code == 206
        assert resp.content == full[:10]
        assert resp.headers["content-range"] == f"bytes 0-9/{size}"
        resp = client.get(url, headers={**identity, "range": f"bytes={size - 5}-"})
        assert resp.status_code == 206 and resp.content == full[-5:]
        resp = client.get(url, headers={**identity, "range": f"bytes={size + 10}-"})
        assert resp.status_code == 416
        # If-Range with the current tag honours the range; a stale one sends everything.
        resp = client.get(url, headers={**identity, "range": "bytes=0-9", "if-range": f'"{sha}"'})
        assert resp.status_code == 206
        resp = client.get(url, headers={**identity, "range": "bytes=0-9", "if-range": '"old"'})
        assert resp.status_code == 200 and len(resp.content) == size


@app_sends_bytes
def test_head(server: ServerProcess, published: dict[str, Any]) -> None:
    url, sha, size = bundle(published)
    with server.anon() as client:
        resp = client.head(url, headers={"accept-encoding": "identity"})
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-length"] == str(size)
    assert resp.headers["etag"] == f'"{sha}"'


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/assets/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/assets/%2e%2e",
        "/api/v1/assets/" + "A" * 64,
        "/api/v1/assets/" + "a" * 64 + ".toolongextension123",
        "/api/v1/assets/" + "a" * 64 + "%00.js",
        "/api/v1/assets/" + "0" * 64 + ".js",  # well-formed but absent
    ],
)
def test_bad_or_unknown_names(server: ServerProcess, path: str) -> None:
    with server.anon() as client:
        resp = client.get(path)
    assert resp.status_code in (400, 404)
    assert resp.headers["content-type"].startswith("application/problem+json")


@app_sends_bytes
def test_cors_on_assets(server: ServerProcess, published: dict[str, Any]) -> None:
    url, _, _ = bundle(published)
    with server.anon() as client:
        resp = client.get(url, headers={"origin": "https://web.example"})
    assert resp.headers["access-control-allow-origin"] in ("*", "https://web.example")
    exposed = resp.headers["access-control-expose-headers"].lower()
    assert "etag" in exposed and "content-encoding" in exposed


def test_blob_folder_is_untouched_by_traversal(server: ServerProcess) -> None:
    # Starlette decodes %2F inside one path segment; it must still be refused, not resolved.
    with server.anon() as client:
        resp = client.get("/api/v1/assets/%2E%2E%2Flumora.db")
    assert resp.status_code in (400, 404)
    assert b"SQLite" not in resp.content
