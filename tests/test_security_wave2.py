"""Attacks on the progressive-delivery features (issue 19/20) against real ``lumora serve``
processes: rollout plans, webhooks, device pins, and the CLI that drives them.

Each test is an attack as an attacker would make it, and failed on the code before its fix.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import BACKENDS
from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.domain.rollout import in_rollout
from lumora_ota.server import webhooks as sender
from stats_attack_helpers import EMBEDDED, manifest, served
from test_cli_e2e import Cli, cli, project  # noqa: F401 - fixtures
from test_rollout_plans import wait_for
from webhook_receiver import receiver


def plan_of(client: httpx.Client, ref: str) -> dict[str, Any]:
    resp = client.get(f"/api/v1/updates/{ref}/rollout-plan")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    assert len(items) == 1
    return items[0]


# ---------------------------------------------------------------- rollout plans


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_address_cannot_halt_a_rollout_plan(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """Devices are anonymous: from one address an attacker asks for the update under a few
    invented device ids (so it is "served" to them) and reports each as failed. That must not
    halt the plan (SECURITY.md section 11), as it cannot auto-pause an update."""
    server = server_factory(backend, extra_env={"LUMORA_PLAN_INTERVAL": "0.1"})
    slug = f"nohalt-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=slug))
        ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
        android = next(u["id"] for u in answer["updates"] if u["platform"] == "android")
        plan = {"steps": [50, 100], "stepSeconds": 3600, "maxFailureRate": 0.02}
        assert client.put(f"/api/v1/updates/{ios}/rollout-plan", json=plan).status_code == 200
    devices = [d for d in (f"atk-{i}" for i in range(400)) if in_rollout(ios, d, 50)][:6]
    with server.anon() as anon:
        for device in devices:
            served(anon, slug, device, ios)
            manifest(
                anon,
                slug,
                eas_client_id=device,
                expo_embedded_update_id=EMBEDDED,
                expo_recent_failed_update_ids=f'"{ios}"',
            )
    with server.client() as client:
        # The attack's failures are counted (up to the per-address cap) ...
        wait_for(lambda: plan_of(client, ios)["gate"]["failures"] == 3, "the failures")
        # ... and the runner has looked at the plans since: a time-only plan set now advances.
        witness = {"steps": [50, 100], "stepSeconds": 0}
        assert client.put(f"/api/v1/updates/{android}/rollout-plan", json=witness).status_code
        wait_for(lambda: plan_of(client, android)["status"] == "completed", "the witness plan")
        attacked = plan_of(client, ios)
        assert attacked["status"] == "active", attacked["haltReason"]
        assert attacked["rollout"] == 50
        audit = client.get("/api/v1/audit", params={"project": slug}).json()["items"]
        assert not [a for a in audit if a["action"] == "rolloutPlan.halt"]


# ---------------------------------------------------------------- webhooks


@contextmanager
def hostile_receiver(kind: str, seconds: float = 120.0) -> Iterator[str]:
    """A webhook receiver that never finishes its answer: ``trickle`` sends a status line,
    then headers and a body one byte at a time (each byte well within a read timeout);
    ``flood`` announces a terabyte body and keeps sending zeros; ``silent`` never answers.
    Yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        deadline = time.monotonic() + seconds
        try:
            conn.settimeout(5)
            conn.recv(65536)
            if kind == "silent":
                stop.wait(deadline - time.monotonic())
            elif kind == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                header = b"X-Slow: " + b"a" * 4000 + b"\r\n"
                while not stop.is_set() and time.monotonic() < deadline:
                    for byte in header:
                        conn.sendall(bytes([byte]))
                        if stop.wait(0.3) or time.monotonic() > deadline:
                            return
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\n\r\n")
                chunk = b"\0" * 65536
                # About 6 MB/s: endless to a reader that reads it all, yet harmless here.
                while not stop.wait(0.01) and time.monotonic() < deadline:
                    conn.sendall(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("kind", ["trickle", "flood"])
def test_a_hostile_webhook_receiver_cannot_hold_the_sender(
    server_factory: Callable[..., ServerProcess], kind: str, unique: str, tmp_path: Path
) -> None:
    """A project admin points a webhook at a receiver that answers forever (a byte at a time,
    or an endless body). The attempt must end within the webhook timeout, unread body and
    all, so other projects' deliveries still go out and no body is read into memory."""
    env = {
        "LUMORA_WEBHOOK_ALLOW_PRIVATE": "1",
        "LUMORA_WEBHOOK_TIMEOUT": "1",
        "LUMORA_WEBHOOK_BACKOFF": "3600",
    }
    server = server_factory("sqlite", extra_env=env)
    hostile, victim = f"hostile-{unique}", f"victim-{unique}"
    with hostile_receiver(kind) as bad_url, receiver() as rx, server.client() as client:
        for slug, url in ((hostile, bad_url), (victim, rx.url)):
            create_project(client, slug)
            resp = client.post(
                f"/api/v1/projects/{slug}/webhooks",
                json={"url": url, "events": ["update.published"]},
            )
            assert resp.status_code == 201, resp.text
        publish_export(client, hostile, make_export(tmp_path / "h", seed=hostile))
        hook = client.get(f"/api/v1/projects/{hostile}/webhooks").json()["items"][0]

        def attempted() -> list[dict[str, Any]]:
            items = client.get(
                f"/api/v1/projects/{hostile}/webhooks/{hook['id']}/deliveries"
            ).json()["items"]
            return [a for d in items for a in d["attempts"]]

        # The hostile delivery is under way before the victim's event exists.
        time.sleep(0.5)
        publish_export(client, victim, make_export(tmp_path / "v", seed=victim))
        rx.wait_for(lambda got: len(got) >= 1, timeout=30)
        # The hostile attempt is over (recorded) while its receiver is still sending.
        wait_for(attempted, "the hostile attempt", timeout=30)


HIDDEN_PRIVATE = [
    "http://[64:ff9b::a9fe:a9fe]/latest",  # NAT64 of 169.254.169.254 (cloud metadata)
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[64:ff9b:1::a00:1]/",  # local-use NAT64 prefix
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated) loopback
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped
]
BAD_URLS = [
    "https://8.8.8.8/hook\r\nX-Injected: 1",
    "https://8.8.8.8/hook\nX-Injected: 1",
    "https://8.8.8.8/a\tb",
    "https://8.8.8.8/a b",
    "https://8.8.8.8/a\x7f",
]


def test_webhooks_cannot_reach_private_addresses_hidden_in_ipv6(
    server: ServerProcess, unique: str
) -> None:
    """NAT64, 6to4 and IPv4-compatible IPv6 addresses carry an IPv4 address that a NAT64
    gateway or tunnel delivers to: a private one is as internal as the plain address."""
    slug = f"ssrf6-{unique}"
    with server.client() as client:
        create_project(client, slug)
        for url in HIDDEN_PRIVATE + BAD_URLS:
            resp = client.post(
                f"/api/v1/projects/{slug}/webhooks",
                json={"url": url, "events": ["update.published"]},
            )
            assert resp.status_code == 422, (url, resp.status_code, resp.text)
        assert client.get(f"/api/v1/projects/{slug}/webhooks").json()["items"] == []
    for url in HIDDEN_PRIVATE:
        with pytest.raises(sender.TargetError):
            sender.check_target(url, allow_private=False)
    # Public addresses in these forms stay allowed.
    assert sender.check_target("http://[64:ff9b::808:808]/", allow_private=False).addresses
    assert sender.check_target("http://[2002:808:808::1]/", allow_private=False).addresses


# ---------------------------------------------------------------- CLI paths


def test_cli_ids_cannot_retarget_the_request(cli: Cli, project: str) -> None:  # noqa: F811
    """An id given to the CLI is one path segment: ``x?y=1`` or ``a#b`` pins exactly that
    device (not ``x`` or ``a``), and ``..`` cannot climb to another resource."""
    for device in ("x?y=1", "a#b", "dev 1", "p%2Fq"):
        assert (
            cli.json("devices", "pin", device, "--channel", "staging", "--project", project)[
                "deviceId"
            ]
            == device
        )
    pins = {p["deviceId"] for p in cli.json("devices", "list", "--project", project)["items"]}
    assert pins == {"x?y=1", "a#b", "dev 1", "p%2Fq"}
    for sneaky in ("..", "."):
        error = cli.fails("devices", "view", sneaky, "--project", project)
        assert error.startswith("error:") and "Traceback" not in error
    assert "not found: not found" not in cli.fails(
        "devices", "view", "nobody", "--project", project
    )


# ---------------------------------------------------------------- SDK and publish: paths


def test_a_file_that_is_also_a_directory_is_refused_before_download(tmp_path: Path) -> None:
    """A hostile (or careless) server lists ``a`` and ``a/b``: no directory can hold both, so
    the install could only fail after every byte was downloaded. The SDK refuses the manifest
    first, as it refuses unsafe paths."""
    from lumora_ota.client import ServerResponseError, UpdateManager
    from test_client_fakes import SERVER, FakeServer, make_manifest

    embedded = tmp_path / "embedded"
    embedded.mkdir()
    (embedded / "main.py").write_text("print(0)\n")
    fake = FakeServer()
    for files in (
        {"main.py": b"print(1)", "a": b"file", "a/b": b"nested"},
        {"main.py": b"print(1)", "a/b/c": b"deep", "a/b": b"file"},
        {"main.py/x": b"under the launch asset", "main.py": b"print(1)"},
    ):
        fake.publish(make_manifest("u1", files, "main.py"), files)
        manager = UpdateManager(
            SERVER, "proj", "production", "1", "ios", tmp_path / "data", embedded_dir=embedded,
            fetcher=fake,
        )  # fmt: skip
        with pytest.raises(ServerResponseError, match="also a directory"):
            manager.check_for_update()
        manager.close()
    assert fake.asset_requests() == []


def test_publish_refuses_a_key_that_is_also_a_directory(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    """The same rule at publish time: such an update could never be installed by the SDK."""
    slug = f"dirfile-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "e", seed=slug))
        launch = next(u for u in answer["updates"] if u["platform"] == "ios")["launchAsset"]
        entry = {k: launch[k] for k in ("sha256", "contentType", "fileExtension")}
        body = {
            "project": slug,
            "runtimeVersion": "1",
            "platforms": {
                "ios": {
                    "launchAsset": {**entry, "key": "main.js"},
                    "assets": [{**entry, "key": "a"}, {**entry, "key": "a/b"}],
                }
            },
        }
        resp = client.post("/api/v1/updates/publish", json=body)
        assert resp.status_code == 422, resp.text
        assert "also a directory" in resp.text


# ---------------------------------------------------------------- publisher-held keys


def test_cli_says_when_new_updates_await_the_publishers_signature(
    cli: Cli,  # noqa: F811
    project: str,  # noqa: F811
    tmp_path: Path,
    fixtures_dir: Path,
) -> None:
    """With a publisher-held key, an update published (or a rollback copy made) without
    --private-key is served to nobody until signed: the CLI says so instead of reporting a
    plain success that devices never see."""
    keys = fixtures_dir / "expo-codesigning"
    cli.ok(
        "codesigning", "publisher-held", "--project", project, "--keyid", "main",
        "--private-key", str(keys / "private-key.pem"),
        "--certificate", str(keys / "certificate.pem"),
    )  # fmt: skip
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('v1')\n")
    publish = ("publish", str(app), "--project", project, "--launch-asset", "main.py",
               "--runtime-version", "1", "--platform", "ios", "--yes")  # fmt: skip
    done = cli.run(*publish)
    assert done.returncode == 0, done.stderr
    assert "await the publisher's signature" in done.stderr
    assert "lumora codesigning sign" in done.stderr
    signed = cli.run(*publish, "--private-key", str(keys / "private-key.pem"))
    assert signed.returncode == 0 and "await" not in signed.stderr
    group = cli.json("updates", "list", "--project", project)[0]["groupId"]
    rolled = cli.run("updates", "rollback", group, "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert "await the publisher's signature" in rolled.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rollout_plan_never_undoes_a_pause(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    """An operator pauses a bad update by hand (rollout 0), or auto-pause does: the plan's
    next step must not raise the rollout again. It halts, saying why, until resumed."""
    server = server_factory(backend, extra_env={"LUMORA_PLAN_INTERVAL": "0.1"})
    slug = f"pause-{unique}"
    with server.client() as client:
        create_project(client, slug)
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=slug))
        ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
        plan = {"steps": [10, 50, 100], "stepSeconds": 1}
        assert client.put(f"/api/v1/updates/{ios}/rollout-plan", json=plan).status_code == 200
        assert client.patch(f"/api/v1/updates/{ios}", json={"rollout": 0}).status_code == 200
        halted = wait_for(
            lambda: (p := plan_of(client, ios))["status"] != "active" and p, "the plan to stop"
        )
        assert halted["status"] == "halted" and "paused" in halted["haltReason"]
        assert client.get(f"/api/v1/updates/{ios}").json()["rollout"] == 0
        # Resuming is taking it back by hand: the plan goes on from its step.
        assert client.post(f"/api/v1/updates/{ios}/rollout-plan/resume").status_code == 200
        wait_for(lambda: plan_of(client, ios)["status"] == "completed", "the resumed plan")
        assert client.get(f"/api/v1/updates/{ios}").json()["rollout"] == 100


def test_a_webhook_url_is_shown_whole_to_admins_only(server: ServerProcess, unique: str) -> None:
    """Many receivers (Slack, Discord, CI triggers) take their credential in the URL itself:
    the keys that may not create or delete webhooks (read, publish) see its origin only."""
    slug = f"hookurl-{unique}"
    url = "https://8.8.8.8/services/T0001/B0002/XsEcReTtOkEn?token=hunter2"
    with server.client() as admin:
        create_project(admin, slug)
        resp = admin.post(
            f"/api/v1/projects/{slug}/webhooks", json={"url": url, "events": ["update.flagged"]}
        )
        assert resp.status_code == 201, resp.text
        assert admin.get(f"/api/v1/projects/{slug}/webhooks").json()["items"][0]["url"] == url
        for role in ("read", "publish"):
            key = admin.post(
                "/api/v1/keys", json={"name": role, "role": role, "project": slug}
            ).json()["key"]
            with server.client(key) as client:
                listed = client.get(f"/api/v1/projects/{slug}/webhooks")
                assert listed.status_code == 200
                assert "XsEcReTtOkEn" not in listed.text and "hunter2" not in listed.text
                assert listed.json()["items"][0]["url"].startswith("https://8.8.8.8/")


def test_turning_publisher_held_on_again_keeps_devices_served(
    cli: Cli,  # noqa: F811
    project: str,  # noqa: F811
    server: ServerProcess,
    tmp_path: Path,
    fixtures_dir: Path,
) -> None:
    """Switching a project with live updates to a publisher-held key, or running the command
    again with the same certificate, must not leave devices without updates (every body
    unsigned) nor replace the timestamp key that SDK devices pin as freshness_certificate
    (they would refuse every answer from then on)."""
    keys = fixtures_dir / "expo-codesigning"
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('live')\n")
    cli.ok("publish", str(app), "--project", project, "--launch-asset", "main.py",
           "--runtime-version", "1", "--platform", "ios", "--yes")  # fmt: skip
    setup = ("codesigning", "publisher-held", "--project", project, "--keyid", "main",
             "--private-key", str(keys / "private-key.pem"),
             "--certificate", str(keys / "certificate.pem"))  # fmt: skip
    first = cli.json(*setup)["timestampCertificatePem"]
    with server.client() as admin:

        def unsigned() -> list[Any]:
            resp = admin.get(f"/api/v1/projects/{project}/signing/unsigned")
            assert resp.status_code == 200, resp.text
            items: list[Any] = resp.json()["unsigned"]
            return items

        assert unsigned() == []  # the live update was signed on the publisher's machine
        again = cli.json(*setup)["timestampCertificatePem"]
        assert again == first
        assert unsigned() == []
    with server.anon() as anon:
        resp = anon.post(
            "/api/v1/updates/check",
            json={"projectId": project, "platform": "ios", "runtimeVersion": "1"},
        )
        assert resp.json()["updateAvailable"] is True


def test_one_projects_silent_receivers_delay_others_boundedly(
    server_factory: Callable[..., ServerProcess], unique: str, tmp_path: Path
) -> None:
    """A project admin fills its 20 webhooks with receivers that accept and never answer.
    Attempts run side by side (a few at a time), so another project's event still goes out
    after a couple of timeouts, not after twenty."""
    env = {
        "LUMORA_WEBHOOK_ALLOW_PRIVATE": "1",
        "LUMORA_WEBHOOK_TIMEOUT": "3",
        "LUMORA_WEBHOOK_BACKOFF": "3600",
    }
    server = server_factory("sqlite", extra_env=env)
    hostile, victim = f"silent-{unique}", f"waiting-{unique}"
    with hostile_receiver("silent") as bad_url, receiver() as rx, server.client() as client:
        create_project(client, hostile)
        for _ in range(20):
            resp = client.post(
                f"/api/v1/projects/{hostile}/webhooks",
                json={"url": bad_url, "events": ["update.published"]},
            )
            assert resp.status_code == 201, resp.text
        create_project(client, victim)
        resp = client.post(
            f"/api/v1/projects/{victim}/webhooks",
            json={"url": rx.url, "events": ["update.published"]},
        )
        assert resp.status_code == 201, resp.text
        publish_export(client, hostile, make_export(tmp_path / "h", seed=hostile))
        publish_export(client, victim, make_export(tmp_path / "v", seed=victim))
        # One after another, the victim would wait 20 x 3 s.
        rx.wait_for(lambda got: len(got) >= 1, timeout=40)
