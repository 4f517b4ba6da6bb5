"""The red-team suite of issue 15: each attack, as an attacker would make it, against a real
``lumora serve``. Every test here failed on the code before the fix it guards (SECURITY.md,
"Threat model", points at each one).

Items 2, 3, 14 and 15 (device-driven statistics, storage bounds, negative caching, patch
caps) live in ``test_security_attacks_stats.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from harness import (
    ServerProcess,
    create_project,
    free_port,
    lumora_bin,
    make_export,
    publish_dir,
    sha256_hex,
)

CHROMIUM = Path("/usr/bin/chromium")
ASSET_CSP = "sandbox; default-src 'none'"

# The payload of item 1: read the dashboard session's CSRF token, mint an all-projects
# admin key with it, and say so in the title.
PWN_SCRIPT = """
fetch('/dashboard/session').then(r => r.json()).then(s => fetch('/api/v1/keys', {
  method: 'POST', credentials: 'same-origin',
  headers: {'content-type': 'application/json', 'x-csrf-token': s.csrfToken},
  body: JSON.stringify({name: 'pwned-MARK', role: 'admin'})
})).then(r => { document.title = 'pwned ' + r.status; });
"""
ACTIVE_FILES = {
    "x.html": "<html><body><script>{js}</script></body></html>",
    "x.htm": "<html><body><script>{js}</script></body></html>",
    "x.xhtml": (
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><script>{js}</script></body></html>'
    ),
    "x.svg": '<svg xmlns="http://www.w3.org/2000/svg"><script>{js}</script></svg>',
    "x.xml": '<?xml version="1.0"?><x xmlns:h="http://www.w3.org/1999/xhtml"/>',
    "x.pdf": "%PDF-1.4 not really",
}
# Types a browser would execute, render as a document or hand to a scripting viewer.
ACTIVE_TYPES = ("html", "xml", "svg", "pdf", "xsl")


def run_serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``lumora serve`` with ``env``, expected to refuse to start: its exit and output. A
    server that starts anyway is stopped (its whole session) after 20 s."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    args = [lumora_bin(), "serve", "--data-dir", str(tmp_path / "refused"), "--port"]
    proc = subprocess.Popen(
        [*args, str(free_port())],
        env={**full, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def new_key(server: ServerProcess, role: str, project_id: str | None, name: str) -> str:
    body: dict[str, Any] = {"name": name, "role": role}
    if project_id is not None:
        body["project"] = project_id
    with server.client() as admin:
        resp = admin.post("/api/v1/keys", json=body)
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["key"]
    return key


def key_names(server: ServerProcess) -> list[str]:
    with server.client() as admin:
        resp = admin.get("/api/v1/keys")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    items = body["items"] if isinstance(body, dict) else body
    return [k["name"] for k in items]


@pytest.fixture
def active_assets(server: ServerProcess, unique: str, tmp_path: Path) -> dict[str, str]:
    """A publish key's update carrying HTML, SVG, XHTML, XML and PDF files: name -> URL path."""
    with server.client() as admin:
        project = create_project(admin, f"xss-{unique}")
    publisher = new_key(server, "publish", project["id"], f"ci-{unique}")
    root = tmp_path / "export"
    root.mkdir()
    (root / "bundle.js").write_text(f"console.log('{unique}')")
    for name, text in ACTIVE_FILES.items():
        (root / name).write_text(text.format(js=PWN_SCRIPT.replace("MARK", unique)))
    with server.client(publisher) as client:
        publish_dir(client, project["slug"], root, launch="bundle.js")
    return {
        name: f"/api/v1/assets/{sha256_hex((root / name).read_bytes())}{Path(name).suffix}"
        for name in [*ACTIVE_FILES, "bundle.js"]
    }


def assert_inert(resp: httpx.Response, *, active: bool) -> None:
    assert resp.headers.get("content-security-policy") == ASSET_CSP, resp.headers
    assert resp.headers.get("x-content-type-options") == "nosniff"
    if active:
        media = resp.headers.get("content-type", "application/octet-stream").lower()
        assert not any(word in media for word in ACTIVE_TYPES), media
        assert resp.headers.get("content-disposition", "").startswith("attachment")


# ------------------------------------------------------- 1. published files are never pages


def test_every_asset_answer_is_sandboxed_and_active_types_are_attachments(
    server: ServerProcess, active_assets: dict[str, str]
) -> None:
    if server.storage_url is not None:
        pytest.skip("an object store serves asset bytes from its own origin (302 from here)")
    # One representation throughout: a compressed variant written meanwhile by the
    # post-publish job would carry another ETag.
    with server.anon(headers={"accept-encoding": "identity"}) as anon:
        for name, path in active_assets.items():
            active = name != "bundle.js"
            edge = anon.get(path)  # answered by the device edge
            assert edge.status_code == 200
            assert_inert(edge, active=active)
            routed = anon.get(path, params={"via": "route"})  # a query string: the route
            assert routed.status_code == 200
            assert_inert(routed, active=active)
            assert_inert(anon.head(path), active=active)
            ranged = anon.get(path, headers={"range": "bytes=0-3"})
            assert ranged.status_code == 206
            assert_inert(ranged, active=active)
            etag = edge.headers["etag"]
            for params in ({}, {"via": "route"}):
                unchanged = anon.get(path, params=params, headers={"if-none-match": etag})
                assert unchanged.status_code == 304
                assert unchanged.headers["content-security-policy"] == ASSET_CSP
        # A miss and a bad name on the asset path are sandboxed too.
        for missing in (f"/api/v1/assets/{'0' * 64}.html", "/api/v1/assets/nope.html"):
            assert anon.get(missing).headers["content-security-policy"] == ASSET_CSP
        # The launch asset keeps its type: devices and the SDK read it as JavaScript.
        bundle = anon.get(active_assets["bundle.js"])
        assert bundle.headers["content-type"] == "application/javascript"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield instance
        instance.close()


@pytest.mark.browser
@pytest.mark.parametrize("name", ["x.html", "x.svg", "x.xhtml"])
def test_a_signed_in_admin_opening_a_published_page_mints_no_key(
    server: ServerProcess, active_assets: dict[str, str], browser: Any, name: str, unique: str
) -> None:
    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        signed_in = page.request.post(
            f"{server.url}/dashboard/session",
            data={"apiKey": server.admin_key},
            headers={"origin": server.url},
        )
        assert signed_in.ok
        # The browser downloads the file instead of rendering it on our origin.
        downloaded = False
        with contextlib.suppress(PlaywrightTimeout):
            with page.expect_download(timeout=10_000):
                try:
                    page.goto(f"{server.url}{active_assets[name]}")
                except PlaywrightError as exc:  # how goto reports a navigation that downloads
                    assert "Download is starting" in str(exc)
            downloaded = True
        minted = [n for n in key_names(server) if n == f"pwned-{unique}"]
        assert not minted, f"{name} ran on the dashboard's origin: title {page.title()!r}"
        assert downloaded
    finally:
        context.close()


# ------------------------------------- 16. device limits: only devices, by their real address


def _many_files(root: Path, n: int, seed: str) -> Path:
    root.mkdir(parents=True)
    (root / "bundle.js").write_text(f"console.log('{seed}')")
    for i in range(n - 1):
        (root / f"asset{i}.png").write_bytes(f"{seed} {i}".encode() * 10)
    return root


def test_device_limits_never_apply_to_management_routes(
    server_factory: Any, unique: str, tmp_path: Path
) -> None:
    srv: ServerProcess = server_factory("sqlite", extra_env={"LUMORA_RATE_LIMIT_PER_IP": "1/5"})
    with srv.client() as admin:
        create_project(admin, f"rl-{unique}")
        # 31 files: POST /assets/missing and 31 PUT /assets/{sha256} from one address.
        root = _many_files(tmp_path / "export", 31, unique)
        answer = publish_dir(admin, f"rl-{unique}", root, launch="bundle.js")
    assert answer["updates"]
    # Devices on that address are still limited.
    with srv.anon() as anon:
        statuses = [anon.get(f"/api/v1/assets/{'0' * 64}").status_code for _ in range(8)]
    assert 429 in statuses


def test_forwarded_for_is_believed_from_trusted_proxies_only(
    server_factory: Any, unique: str
) -> None:
    limits = {"LUMORA_RATE_LIMIT_PER_IP": "1/3"}
    behind = server_factory(
        "sqlite", extra_env={**limits, "LUMORA_TRUSTED_PROXIES": "127.0.0.0/8, 10.9.0.0/16"}
    )
    direct = server_factory("sqlite", extra_env=limits)
    asset = f"/api/v1/assets/{'0' * 64}"

    def statuses(srv: ServerProcess, forwarded_for: str, n: int = 3) -> list[int]:
        with srv.anon() as anon:
            return [
                anon.get(asset, headers={"x-forwarded-for": forwarded_for}).status_code
                for _ in range(n)
            ]

    # Behind a trusted proxy every device has its own bucket (the rightmost untrusted hop),
    # however many share the proxy ...
    for device in range(6):
        assert 429 not in statuses(behind, f"192.0.2.{device}, 10.9.0.1")
    # ... and a device cannot pick another bucket by prepending addresses.
    assert statuses(behind, "198.51.100.7, 192.0.2.0, 10.9.0.1", n=1) == [429]
    # Without trusted proxies the header means nothing: a client cannot make up addresses.
    seen = [s for device in range(3) for s in statuses(direct, f"192.0.2.{device}")]
    assert 429 in seen


def test_an_invalid_trusted_proxy_list_is_refused_at_start(tmp_path: Path) -> None:
    proc = run_serve(tmp_path, {"LUMORA_TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"})
    assert proc.returncode != 0
    assert "LUMORA_TRUSTED_PROXIES" in proc.stderr and "proxy.example" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------ 4. idle connections cannot lock clients out


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):  # a 408 answer may come first
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@pytest.mark.parametrize("kind", ["silent", "slow-headers"])
def test_a_thousand_idle_connections_leave_room_and_time_out(
    server_factory: Any, kind: str
) -> None:
    srv: ServerProcess = server_factory("sqlite", extra_env={"LUMORA_HEADER_TIMEOUT": "2"})
    sockets: list[socket.socket] = []
    try:
        for _ in range(1024):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            if kind == "slow-headers":
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sockets.append(sock)
        # A new client is answered while all of them are open (it hung ~30 s before).
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            for _ in range(3):
                assert client.get("/health").status_code == 200
        # And every idle connection is closed by the server after the header timeout.
        assert all(_closed_by_server(sock, within=30) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("name", "value"), [("LUMORA_HEADER_TIMEOUT", "0"), ("LUMORA_MAX_CONNECTIONS", "lots")]
)
def test_connection_limits_are_checked_at_start(tmp_path: Path, name: str, value: str) -> None:
    proc = run_serve(tmp_path, {name: value})
    assert proc.returncode != 0
    assert name in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------ 8. /metrics names no project to strangers


def test_metrics_need_an_all_projects_key_or_the_private_address(
    server_factory: Any, unique: str
) -> None:
    private = free_port()
    srv: ServerProcess = server_factory(
        "sqlite", extra_env={"LUMORA_METRICS_BIND": f"127.0.0.1:{private}"}
    )
    slug = f"secret-{unique}"
    with srv.client() as admin:
        project = create_project(admin, slug)
        admin.post("/api/v1/updates/check", json={})  # anything, so figures exist
    scoped = new_key(srv, "admin", project["id"], f"scoped-{unique}")
    with srv.anon() as anon:
        refused = anon.get("/metrics")
    assert refused.status_code == 401
    assert slug.encode() not in refused.content and b"lumora_" not in refused.content
    with srv.client(scoped) as client:
        assert client.get("/metrics").status_code == 403
    with srv.client() as admin:
        full = admin.get("/metrics")
    assert full.status_code == 200 and "lumora_http_requests_total" in full.text
    # The private listener: no key, for a scraper on the private network.
    scraped = httpx.get(f"http://127.0.0.1:{private}/metrics", timeout=10)
    assert scraped.status_code == 200 and "lumora_http_requests_total" in scraped.text
    assert httpx.get(f"http://127.0.0.1:{private}/", timeout=10).status_code == 404


def test_a_malformed_metrics_bind_is_refused_at_start(tmp_path: Path) -> None:
    proc = run_serve(tmp_path, {"LUMORA_METRICS_BIND": "everywhere"})
    assert proc.returncode != 0
    assert "LUMORA_METRICS_BIND" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------- 13. uploaded is not published: no download by hash


def test_uploaded_but_unpublished_files_are_not_served(
    server_factory: Any, unique: str, tmp_path: Path
) -> None:
    first: ServerProcess = server_factory("sqlite")
    # A second process on the same database and files, which learns of publishes late.
    second: ServerProcess = server_factory(
        "sqlite",
        database_url=first.database_url,
        storage_url=first.storage_url or f"file://{first.data_dir / 'blobs'}",
        extra_env={"LUMORA_CACHE_POLL_INTERVAL": "3600"},
    )
    slug = f"unpub-{unique}"
    with first.client() as admin:
        create_project(admin, slug)
    secret = f"not for devices {unique}".encode()
    sha = sha256_hex(secret)
    with first.client() as admin:
        put = admin.put(f"/api/v1/assets/{sha}", params={"project": slug}, content=secret)
    assert put.status_code == 201
    for srv in (first, second):
        with srv.anon() as anon:
            for path in (f"/api/v1/assets/{sha}", f"/api/v1/assets/{sha}.txt"):
                assert anon.get(path).status_code == 404
                assert anon.get(path, params={"via": "route"}).status_code == 404
                assert anon.head(path).status_code == 404
                assert anon.get(path, headers={"range": "bytes=0-3"}).status_code == 404
                assert secret not in anon.get(path).content
    # Once published it is served, at once, by every process.
    root = tmp_path / "export"
    root.mkdir()
    (root / "bundle.js").write_text(f"console.log('{unique}')")
    (root / "notes.txt").write_bytes(secret)
    with first.client() as admin:
        publish_dir(admin, slug, root, launch="bundle.js")
    with first.anon() as anon:
        served = anon.get(f"/api/v1/assets/{sha}.txt")
        assert served.status_code == 200 and served.content == secret
    # The other process still runs on its old snapshot: it asks the database (a "no" it
    # got before the publish is reused for at most a second).
    with second.anon() as anon:
        deadline = time.monotonic() + 10
        while (served := anon.get(f"/api/v1/assets/{sha}.txt")).status_code == 404:
            assert time.monotonic() < deadline, "the other process never served it"
            time.sleep(0.2)
        assert served.status_code == 200 and served.content == secret


# ------------------------------------------- 7. the data directory is private from creation


def _loose(root: Path) -> list[str]:
    """Paths under ``root`` (and itself) that group or others may access."""
    paths = [root, *root.rglob("*")]
    return [f"{p} {p.stat().st_mode & 0o777:04o}" for p in paths if p.stat().st_mode & 0o077]


def test_data_directory_and_database_are_private_from_creation(
    server_factory: Any, unique: str, tmp_path: Path
) -> None:
    data = tmp_path / "fresh" / "data"  # does not exist: `lumora serve` creates it
    srv: ServerProcess = server_factory(
        "sqlite",
        database_url=f"sqlite:///{data / 'lumora.db'}",
        extra_args=["--data-dir", str(data)],  # the last --data-dir wins
    )
    with srv.client() as admin:
        create_project(admin, f"modes-{unique}")
        root = _many_files(tmp_path / "export", 3, unique)
        publish_dir(admin, f"modes-{unique}", root, launch="bundle.js")
    assert (data / "lumora.db").exists()
    assert srv.storage_url is not None or any((data / "blobs").rglob("*"))
    assert _loose(data) == []
    assert "accessible to other users" not in srv.log()


def test_an_existing_readable_data_directory_is_reported_at_start(
    server_factory: Any, tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    srv: ServerProcess = server_factory(
        "sqlite",
        database_url=f"sqlite:///{data / 'lumora.db'}",
        extra_args=["--data-dir", str(data)],
    )
    warnings = [line for line in srv.log().splitlines() if "accessible to other users" in line]
    assert len(warnings) == 1 and str(data) in warnings[0] and "chmod 700" in warnings[0]


# ------------------------------------ 6. `lumora publish` never follows a link out of DIR


def _lumora(server: ServerProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    env.update(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / ".config"),
        LUMORA_SERVER=server.url,
        LUMORA_API_KEY=server.admin_key,
    )
    return subprocess.run(
        [lumora_bin(), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_publish_refuses_a_symlink_leading_out_of_the_directory(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    slug = f"links-{unique}"
    with server.client() as admin:
        create_project(admin, slug)
    credentials = tmp_path / "home" / ".aws" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text(f"aws_secret_access_key = {unique}\n")
    app = tmp_path / "app"
    (app / "img").mkdir(parents=True)
    (app / "main.js").write_text(f"console.log('{unique}')")
    (app / "img" / "logo.png").write_bytes(b"png " + unique.encode())
    (app / "img" / "alias.png").symlink_to(app / "img" / "logo.png")  # inside: fine
    (app / "img" / "creds.png").symlink_to(credentials)
    export = make_export(tmp_path / "export", seed=unique)
    asset = next((export / "assets").iterdir())
    asset.unlink()
    asset.symlink_to(credentials)
    attempts = [
        (app / "img" / "creds.png", ["publish", str(app), "--launch-asset", "main.js",
                                     "--runtime-version", "1"]),
        (asset, ["publish", str(export)]),
    ]  # fmt: skip
    for link, args in attempts:
        done = _lumora(server, tmp_path, *args, "--project", slug, "--yes", "--json")
        assert done.returncode != 0, done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert str(link) in lines[0] and "outside" in lines[0]
    # Nothing of the file reached the server.
    with server.client() as admin:
        missing = admin.post(
            "/api/v1/assets/missing",
            json={"project": slug, "hashes": [sha256_hex(credentials.read_bytes())]},
        )
    assert missing.json()["missing"] == [sha256_hex(credentials.read_bytes())]
    # Without the outward link, links inside the directory are published as files.
    (app / "img" / "creds.png").unlink()
    args = ["publish", str(app), "--launch-asset", "main.js", "--runtime-version", "1"]
    done = _lumora(server, tmp_path, *args, "--project", slug, "--yes", "--json")
    assert done.returncode == 0, done.stderr


# ------------------------- 5. privateKeyPath: the keys directory, all-projects admins, no oracle


def test_private_key_path_reads_only_the_keys_directory_for_all_projects_admins(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    from lumora_ota.signing import KEY_FILE_REFUSED, generate_signing_identity

    key_pem, cert_pem = generate_signing_identity(f"keys-{unique}")
    keys_dir = server.data_dir / "signing-keys"
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    mine = keys_dir / f"a-{unique}.pem"
    mine.write_bytes(key_pem)
    mine.chmod(0o600)
    with server.client() as admin:
        victim = create_project(admin, f"victim-{unique}")
        attacker = create_project(admin, f"attacker-{unique}")
    body = {"keyid": "main", "certificatePem": cert_pem.decode()}

    def put(path: str, key: str | None = None, project: dict[str, Any] = attacker) -> Any:
        with server.client(key) as client:
            return client.put(
                f"/api/v1/projects/{project['slug']}/signing",
                json={**body, "privateKeyPath": path},
            )

    assert put(mine.name, project=victim).status_code == 200  # the operator sets it up
    # Another project's admin cannot point at the victim's key, nor any other server file.
    scoped = new_key(server, "admin", attacker["id"], f"attacker-{unique}")
    for path in (mine.name, str(mine), "/etc/hostname", "/nonexistent"):
        assert put(path, scoped).status_code == 403
    # For an all-projects admin, every refused file gets the same answer.
    outside = tmp_path / "outside.pem"
    outside.write_bytes(key_pem)
    outside.chmod(0o600)
    (keys_dir / f"link-{unique}.pem").symlink_to(outside)
    huge = keys_dir / f"huge-{unique}.pem"
    with huge.open("wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB, sparse: must not be read
    huge.chmod(0o600)
    loose = keys_dir / f"loose-{unique}.pem"
    loose.write_bytes(key_pem)
    loose.chmod(0o644)
    fifo = keys_dir / f"fifo-{unique}"
    os.mkfifo(fifo, 0o600)
    refused = [
        str(outside),
        f"link-{unique}.pem",
        "../lumora.db",
        "/etc/shadow",
        "/etc/hostname",
        "/nonexistent/key.pem",
        huge.name,
        loose.name,
        fifo.name,
        ".",
    ]
    details = set()
    for path in refused:
        resp = put(path)
        assert resp.status_code == 400, (path, resp.text)
        details.add(resp.json()["detail"])
    assert details == {KEY_FILE_REFUSED}
    # The operator's file in the directory works, by name or absolute path.
    assert put(mine.name).status_code == 200
    assert put(str(mine)).status_code == 200


# ------------------------------------------- 9. signing out voids the cookie on the server


def test_a_cookie_copied_before_sign_out_is_worthless_after_it(
    server: ServerProcess, unique: str
) -> None:
    from lumora_ota.server.dashboard.sessions import SESSION_COOKIE

    key = new_key(server, "admin", None, f"dash-{unique}")
    origin = {"origin": server.url}
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        signed_in = browser.post("/dashboard/session", json={"apiKey": key}, headers=origin)
        assert signed_in.status_code == 200
        csrf = signed_in.json()["csrfToken"]
        stolen = browser.cookies[SESSION_COOKIE]
        assert browser.delete("/dashboard/session", headers={"x-csrf-token": csrf}).status_code
    with httpx.Client(base_url=server.url, timeout=30, cookies={SESSION_COOKIE: stolen}) as thief:
        assert thief.get("/api/v1/projects").status_code == 401
        minted = thief.post(
            "/api/v1/keys",
            json={"name": f"stolen-{unique}", "role": "admin"},
            headers={"x-csrf-token": csrf, **origin},
        )
        assert minted.status_code == 401
        assert thief.get("/dashboard/session").json() == {"signedIn": False}
    assert f"stolen-{unique}" not in key_names(server)
    # Signing in again works.
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        assert browser.post("/dashboard/session", json={"apiKey": key}).status_code == 200
        assert browser.get("/api/v1/projects").status_code == 200


# ------------------------------------------------ 10. failed key attempts are throttled


def test_failed_key_attempts_are_throttled_per_address(server_factory: Any) -> None:
    srv: ServerProcess = server_factory(
        "sqlite",
        extra_env={"LUMORA_AUTH_FAILURE_LIMIT": "0.1/10", "LUMORA_TRUSTED_PROXIES": "127.0.0.1"},
    )
    guesser = {"x-forwarded-for": "203.0.113.5"}
    with srv.anon() as anon:
        statuses = []
        for i in range(40):
            resp = anon.get(
                "/api/v1/projects", headers={**guesser, "authorization": f"Bearer lum_guess{i}"}
            )
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert int(resp.headers["retry-after"]) >= 1
                assert resp.headers["content-type"].startswith("application/problem+json")
        assert statuses[:10] == [401] * 10 and statuses[-1] == 429
        assert statuses.count(429) >= 25
        # While throttled even the right key is refused (it would confirm a guess) ...
        right = {**guesser, "authorization": f"Bearer {srv.admin_key}"}
        assert anon.get("/api/v1/projects", headers=right).status_code == 429
        signin = anon.post("/dashboard/session", json={"apiKey": srv.admin_key}, headers=guesser)
        assert signin.status_code == 429
        # ... and another address is not affected.
        other = {"x-forwarded-for": "198.51.100.9", "authorization": f"Bearer {srv.admin_key}"}
        assert anon.get("/api/v1/projects", headers=other).status_code == 200


# -------------------------------------------- 11. /health tells strangers the status only


def test_health_shows_details_only_with_a_key(server: ServerProcess) -> None:
    with server.anon() as anon:
        anonymous = anon.get("/health")
        wrong = anon.get("/health", headers={"authorization": "Bearer lum_wrong"})
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert wrong.status_code == 401
    reader = new_key(server, "read", None, "health-reader")
    with server.client(reader) as client:
        detailed = client.get("/health").json()
    assert detailed["status"] == "ok" and detailed["instance"] == server.instance
    assert {"version", "pid", "checks"} <= detailed.keys()


# --------------------------------------- 12. /docs loads nothing from elsewhere, under a CSP


def test_docs_load_only_local_files_under_a_strict_csp(server: ServerProcess) -> None:
    with server.anon() as anon:
        page = anon.get("/docs")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
        assert directives["script-src"] == ["'self'"] and directives["default-src"] == ["'none'"]
        assert directives["frame-ancestors"] == ["'none'"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/docs/") for s in sources), sources
        assert "<script>" not in page.text  # no inline script
        for source in sources:
            assert anon.get(source).status_code == 200, source
        assert anon.get("/docs/static/../../../etc/passwd").status_code == 404
        assert anon.get("/docs/static/swagger-editor-bundle.js").status_code == 404


@pytest.mark.browser
def test_docs_render_in_a_browser_without_csp_violations(
    server: ServerProcess, browser: Any
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        outside: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on(
            "request",
            lambda req: None if req.url.startswith(server.url) else outside.append(req.url),
        )
        page.goto(f"{server.url}/docs")
        page.locator(".opblock").first.wait_for(timeout=30_000)  # operations listed
        assert page.locator(".opblock").count() > 20
    finally:
        context.close()
    assert not errors, errors
    assert not outside, outside


def test_keys_created_before_the_first_start_are_private_too(tmp_path: Path) -> None:
    data = tmp_path / "new-install"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMORA_")}
    args = [lumora_bin(), "keys", "create", "--data-dir", str(data), "--role", "admin"]
    done = subprocess.run(
        [*args, "--name", "me"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (data / "lumora.db").exists() and _loose(data) == []
