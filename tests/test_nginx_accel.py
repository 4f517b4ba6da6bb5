"""Assets sent by nginx through ``X-Accel-Redirect`` (issue 21 target 2), end to end.

Two real ``lumora serve`` processes share one data folder: one answers devices itself, the
other runs with ``LUMORA_ACCEL_REDIRECT_PREFIX`` behind a real nginx (Debian's package) that
runs the configuration docs/DEPLOYMENT.md shows (docs/nginx/lumora.conf, over TLS, its example
addresses and paths replaced by ``bench/proxy.local_config``). Every answer through nginx must
be the direct answer: status, bytes on the wire and headers (less the connection's own:
``date``, ``server``, ``connection``, ``keep-alive``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from delta_helpers import launch_path, wait_for_patch
from harness import REPO_ROOT, ServerProcess, create_project, database_url_for, publish_dir

if str(REPO_ROOT) not in sys.path:  # the benchmark's nginx runner is shared with this test
    sys.path.insert(0, str(REPO_ROOT))

from bench.processes import nginx_executable
from bench.proxy import ACCEL_PREFIX, DEPLOYMENT_CONF, NginxProxy

from lumora_ota.signing import generate_signing_identity

ASSETS = "/api/v1/assets/"
# Headers of the connection, not of the answer.
HOP_HEADERS = frozenset({"date", "server", "connection", "keep-alive"})
BUNDLE = b"".join(b"function f%d(a) { return a * %d + 'lumora'; }\n" % (i, i) for i in range(6000))


@dataclass
class Answer:
    """An answer as it crossed the wire: status, headers, still-encoded bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


def fetch(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> Answer:
    """One request; the body is not decoded (``iter_raw``)."""
    sent = {"accept-encoding": "identity", **headers}
    with client.stream(method, path, headers=sent) as resp:
        body = b"".join(resp.iter_raw())
    kept = {k.lower(): v for k, v in resp.headers.multi_items() if k.lower() not in HOP_HEADERS}
    return Answer(resp.status_code, kept, body)


@dataclass
class Deployment:
    """The direct server, the one behind nginx, nginx, and what was published."""

    direct: ServerProcess
    behind: ServerProcess
    nginx: NginxProxy
    files: dict[str, str]  # file name -> asset path (``/api/v1/assets/<sha><ext>``)
    shas: dict[str, str]  # file name -> sha256
    updates: list[dict[str, Any]]  # the two published updates (the second patchable)

    def both(self, method: str, path: str, **headers: str) -> tuple[Answer, Answer]:
        """The same request, to Lumora directly and through nginx."""
        with (
            httpx.Client(base_url=self.direct.url, timeout=30) as direct,
            httpx.Client(base_url=self.nginx.url, timeout=30, verify=False) as proxied,
        ):
            return fetch(direct, method, path, headers), fetch(proxied, method, path, headers)


def _wait_for_variants(server: ServerProcess, path: str) -> None:
    """Compressed variants are written in the background after a publish."""
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for encoding in ("br", "gzip"):
            while (
                fetch(client, "GET", path, {"accept-encoding": encoding}).headers.get(
                    "content-encoding"
                )
                != encoding
            ):
                assert time.monotonic() < deadline, f"no {encoding} variant of {path}"
                time.sleep(0.1)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if nginx_executable() is None:
        pytest.skip("nginx is not installed (make system-deps installs Debian's nginx)")
    root = tmp_path_factory.mktemp("accel")
    data = root / "data"
    direct = ServerProcess(data_dir=data, database_url=database_url_for("sqlite", data))
    behind = ServerProcess(
        data_dir=data,
        database_url=direct.database_url,
        admin_key=direct.admin_key,
        extra_env={"LUMORA_ACCEL_REDIRECT_PREFIX": ACCEL_PREFIX},
    )
    nginx: NginxProxy | None = None
    try:
        direct.start()
        export = root / "export"
        export.mkdir()
        files = {
            "bundle.js": BUNDLE,
            "logo.png": os.urandom(3000),
            "notes.txt": b"plain text, compressible " * 400,
            "page.svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script>"
            + b"<!-- padding -->" * 300
            + b"</svg>",
        }
        for name, content in files.items():
            (export / name).write_bytes(content)
        with direct.client() as client:
            slug = "accel-" + uuid.uuid4().hex[:8]
            create_project(client, slug)
            first = publish_dir(client, slug, export, launch="bundle.js")["updates"][0]
            # A second update whose bundle differs a little: a delta patch from the first.
            (export / "bundle.js").write_bytes(BUNDLE + b"console.log('second');\n")
            second = publish_dir(client, slug, export, launch="bundle.js")["updates"][0]
            (export / "bundle.js").write_bytes(BUNDLE)
            wait_for_patch(client, second["id"], first["id"])
            # Stored but never published: nobody's to download.
            unpublished = b"uploaded, never published " + uuid.uuid4().bytes
            sha = hashlib.sha256(unpublished).hexdigest()
            put = client.put(f"{ASSETS}{sha}", params={"project": slug}, content=unpublished)
            assert put.status_code in (200, 201), put.text
        shas = {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}
        shas["unpublished"] = sha
        paths = {name: f"{ASSETS}{shas[name]}{Path(name).suffix}" for name in files}
        paths["unpublished"] = f"{ASSETS}{sha}.js"
        for name in ("bundle.js", "notes.txt", "page.svg"):
            _wait_for_variants(direct, paths[name])
        behind.start()
        private_pem, certificate_pem = generate_signing_identity("127.0.0.1")
        (root / "tls.key").write_bytes(private_pem)
        (root / "tls.crt").write_bytes(certificate_pem)
        nginx = NginxProxy(
            root / "nginx",
            upstream_port=behind.port,
            blobs_dir=data / "blobs",
            tls=(root / "tls.crt", root / "tls.key"),
        )
        (root / "nginx").mkdir()
        nginx.start()
        yield Deployment(direct, behind, nginx, paths, shas, [first, second])
    finally:
        if nginx is not None:
            nginx.stop()
        behind.stop()
        direct.stop()


def assert_same(direct: Answer, proxied: Answer) -> None:
    """Status, bytes and headers alike; nothing of the hand-over left."""
    assert proxied.status == direct.status, proxied
    assert proxied.body == direct.body
    assert proxied.headers == direct.headers
    assert "x-accel-redirect" not in proxied.headers


ENCODINGS = ["br", "gzip", "identity", "gzip, br;q=0.5", "br;q=0, gzip;q=0", "*"]


@pytest.mark.parametrize("name", ["bundle.js", "notes.txt", "page.svg", "logo.png"])
@pytest.mark.parametrize("accept_encoding", ENCODINGS)
def test_negotiated_answers_are_the_direct_ones(
    deployment: Deployment, name: str, accept_encoding: str
) -> None:
    direct, proxied = deployment.both(
        "GET", deployment.files[name], **{"accept-encoding": accept_encoding}
    )
    assert direct.status == 200 and direct.body
    assert_same(direct, proxied)


def test_nginx_sends_the_chosen_variant(deployment: Deployment) -> None:
    """The bytes come from the variant file Lumora named, with Lumora's headers (nginx on
    its own would send its own ETag and drop the encoding and the security headers)."""
    path = deployment.files["bundle.js"]
    _, proxied = deployment.both("GET", path, **{"accept-encoding": "br"})
    sha = deployment.shas["bundle.js"]
    assert proxied.headers["content-encoding"] == "br"
    assert proxied.headers["etag"] == f'"{sha}-br"'
    assert proxied.headers["content-type"] == "application/javascript"
    assert proxied.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert proxied.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert proxied.headers["x-content-type-options"] == "nosniff"
    assert "accept-encoding" in proxied.headers["vary"].lower()
    assert int(proxied.headers["content-length"]) == len(proxied.body) < len(BUNDLE)
    # Lumora itself answered with no bytes: the hand-over (edge and route alike).
    for method, extra in (("GET", {}), ("HEAD", {}), ("GET", {"range": "bytes=0-9"})):
        with httpx.Client(base_url=deployment.behind.url, timeout=30) as client:
            handed = fetch(client, method, path, {"accept-encoding": "br", **extra})
        assert handed.status == 200 and handed.body == b"", (method, extra)
        relative = f"{sha[:2]}/{sha[2:4]}/{sha}.br"
        assert handed.headers["x-accel-redirect"] == ACCEL_PREFIX + relative
        assert handed.headers["content-length"] == "0"


def test_mixed_requests_each_get_their_own_answer(deployment: Deployment) -> None:
    """Encodings, origins and conditional requests mixed on kept-alive connections (nginx's
    to Lumora included): each gets the direct answer."""
    path = deployment.files["bundle.js"]
    sha = deployment.shas["bundle.js"]
    requests = [
        {"accept-encoding": "br"},
        {"accept-encoding": "gzip"},
        {"accept-encoding": "identity"},
        {"accept-encoding": "br", "origin": "https://web.example"},
        {"accept-encoding": "br", "if-none-match": f'"{sha}-br"'},
        {"accept-encoding": "gzip", "if-none-match": f'"{sha}-br"'},
    ]
    for _ in range(3):
        for headers in requests:
            direct, proxied = deployment.both("GET", path, **headers)
            assert_same(direct, proxied)


def test_svg_stays_an_inert_attachment(deployment: Deployment) -> None:
    direct, proxied = deployment.both("GET", deployment.files["page.svg"])
    assert_same(direct, proxied)
    assert proxied.headers["content-type"] == "application/octet-stream"
    assert proxied.headers["content-disposition"] == "attachment"


@pytest.mark.parametrize("accept_encoding", ["br", "identity"])
def test_not_modified(deployment: Deployment, accept_encoding: str) -> None:
    path = deployment.files["bundle.js"]
    first, _ = deployment.both("GET", path, **{"accept-encoding": accept_encoding})
    direct, proxied = deployment.both(
        "GET", path, **{"accept-encoding": accept_encoding, "if-none-match": first.headers["etag"]}
    )
    assert direct.status == 304
    assert_same(direct, proxied)
    # A tag of another representation is no match: the whole answer, from nginx.
    direct, proxied = deployment.both(
        "GET", path, **{"accept-encoding": accept_encoding, "if-none-match": '"other"'}
    )
    assert direct.status == 200
    assert_same(direct, proxied)


def test_if_modified_since_is_not_a_validator_here(deployment: Deployment) -> None:
    """Lumora decides by ETag alone; nginx must not answer 304 to a date on its own."""
    path = deployment.files["bundle.js"]
    first, _ = deployment.both("GET", path)
    for since in (first.headers["last-modified"], "Fri, 01 Jan 2100 00:00:00 GMT"):
        direct, proxied = deployment.both("GET", path, **{"if-modified-since": since})
        assert_same(direct, proxied)


@pytest.mark.parametrize("matches", [True, False])
def test_if_range(deployment: Deployment, matches: bool) -> None:
    path = deployment.files["bundle.js"]
    first, _ = deployment.both("GET", path)
    tag = first.headers["etag"] if matches else '"stale"'
    direct, proxied = deployment.both("GET", path, range="bytes=5-20", **{"if-range": tag})
    assert direct.status == (206 if matches else 200)
    assert_same(direct, proxied)


@pytest.mark.parametrize(
    ("accept_encoding", "byte_range"),
    [("identity", "bytes=10-99"), ("identity", "bytes=-50"), ("br", "bytes=0-0"),
     ("identity", "bytes=100-")],
)  # fmt: skip
def test_ranges(deployment: Deployment, accept_encoding: str, byte_range: str) -> None:
    direct, proxied = deployment.both(
        "GET",
        deployment.files["bundle.js"],
        **{"accept-encoding": accept_encoding, "range": byte_range},
    )
    assert direct.status == 206
    assert_same(direct, proxied)


def test_head(deployment: Deployment) -> None:
    direct, proxied = deployment.both(
        "HEAD", deployment.files["bundle.js"], **{"accept-encoding": "gzip"}
    )
    assert direct.status == 200 and direct.body == b""
    assert_same(direct, proxied)


def test_cors_request(deployment: Deployment) -> None:
    direct, proxied = deployment.both(
        "GET", deployment.files["bundle.js"], origin="https://web.example"
    )
    assert "access-control-allow-origin" in direct.headers
    assert_same(direct, proxied)


@pytest.mark.parametrize("a_im", ["bsdiff", None])
def test_delta_patch(deployment: Deployment, a_im: str | None) -> None:
    """A launch-asset request of expo-updates that a stored patch answers gets Lumora's 226
    (bytes from Lumora, not a hand-over); without ``A-IM`` the full bundle, from nginx."""
    first, second = deployment.updates
    headers = {
        "expo-requested-update-id": second["id"],
        "expo-current-update-id": first["id"],
        "expo-platform": second["platform"],
        "expo-runtime-version": second["runtimeVersion"],
        "accept-encoding": "br, gzip",
    }
    if a_im is not None:
        headers["a-im"] = a_im
    direct, proxied = deployment.both("GET", launch_path(second), **headers)
    assert direct.status == (226 if a_im else 200)
    assert_same(direct, proxied)
    if a_im:
        assert proxied.headers["im"] == "bsdiff" and proxied.body.startswith(b"BSDIFF40")


@pytest.mark.parametrize(
    "path",
    [
        ASSETS + "0" * 64 + ".js",  # never stored
        "unpublished",  # stored, never published
        ASSETS + "not-a-hash.js",
        ASSETS + "..%2F..%2Flumora.db",
        ASSETS + "%2E%2E%2F%2E%2E%2Fserver.log",
    ],
)
def test_missing_and_bad_names_get_lumoras_problem(deployment: Deployment, path: str) -> None:
    path = deployment.files.get(path, path)
    direct, proxied = deployment.both("GET", path)
    assert direct.status in (400, 404)
    assert direct.headers["content-type"].startswith("application/problem+json")
    assert_same(direct, proxied)


def test_the_internal_location_is_not_reachable_from_outside(deployment: Deployment) -> None:
    sha = deployment.shas["bundle.js"]
    blob = f"{sha[:2]}/{sha[2:4]}/{sha}"
    attempts = [
        ACCEL_PREFIX + blob,
        ACCEL_PREFIX + blob + ".br",
        ACCEL_PREFIX,
        ACCEL_PREFIX + ".tmp/",
        # Dot segments are resolved by nginx before it picks a location: still outside.
        ASSETS + "../../.." + ACCEL_PREFIX + blob,
        ASSETS + "%2E%2E/%2E%2E/%2E%2E" + ACCEL_PREFIX + blob,
    ]
    with httpx.Client(base_url=deployment.nginx.url, timeout=30, verify=False) as client:
        for path in attempts:
            answer = fetch(client, "GET", path, {})
            assert answer.status in (400, 404), (path, answer.status)
            assert BUNDLE[:40] not in answer.body, path
            # Nor by a client naming the location in its own request headers.
            sneaky = fetch(client, "GET", path, {"x-accel-redirect": ACCEL_PREFIX + blob})
            assert sneaky.status in (400, 404) and BUNDLE[:40] not in sneaky.body


def test_the_documented_configuration_is_the_tested_one() -> None:
    """docs/DEPLOYMENT.md quotes docs/nginx/lumora.conf whole: the tested file is the one
    the operator copies."""
    guide = (REPO_ROOT / "docs" / "DEPLOYMENT.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", guide, re.DOTALL)
    assert DEPLOYMENT_CONF.read_text() in blocks
    assert f"LUMORA_ACCEL_REDIRECT_PREFIX={ACCEL_PREFIX}" in guide
