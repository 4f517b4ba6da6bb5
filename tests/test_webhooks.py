"""Webhooks against real servers: a receiver that answers 500 once then 200 gets every event,
retried, signed; a server killed between the change and the delivery delivers after its
restart; private targets are refused."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from harness import ServerProcess, create_project, make_export, publish_export
from lumora_ota.server import webhooks as sender
from lumora_ota.store.webhooks import EVENT_TYPES, sign, verify
from webhook_receiver import Received, receiver

ENV = {
    "LUMORA_WEBHOOK_ALLOW_PRIVATE": "1",
    "LUMORA_WEBHOOK_BACKOFF": "0.1",
    "LUMORA_PLAN_INTERVAL": "0.1",
}


def types_of(received: list[Received], status: int = 200) -> set[str]:
    return {json.loads(r.body)["type"] for r in received if r.status == status}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_event_arrives_signed_and_retried(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    server = server_factory(backend, extra_env=ENV)
    slug = f"hook-{unique}"
    expected = set(EVENT_TYPES) - {"rollout_plan.halted", "update.flagged"}  # test_rollout_plans
    with receiver(answer=lambda n: 500 if n == 0 else 200) as rx, server.client() as client:
        create_project(client, slug)
        resp = client.post(
            f"/api/v1/projects/{slug}/webhooks", json={"url": rx.url, "events": list(EVENT_TYPES)}
        )
        assert resp.status_code == 201, resp.text
        hook = resp.json()
        secret = hook["secret"]
        assert secret.startswith("whsec_")
        listed = client.get(f"/api/v1/projects/{slug}/webhooks").json()["items"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
        group = answer["groupId"]
        ios = next(u["id"] for u in answer["updates"] if u["platform"] == "ios")
        android = next(u["id"] for u in answer["updates"] if u["platform"] == "android")
        assert client.patch(f"/api/v1/groups/{group}", json={"rollout": 50}).status_code == 200
        assert client.patch(f"/api/v1/updates/{ios}", json={"rollout": 0}).status_code == 200
        plan = {"steps": [50, 100], "stepSeconds": 0, "maxFailureRate": 0.5}
        assert client.put(f"/api/v1/updates/{android}/rollout-plan", json=plan).status_code == 200
        channel = client.get("/api/v1/deployments", params={"project": slug}).json()["items"][0]
        assert client.post(f"/api/v1/deployments/{channel['id']}/pause").status_code == 200
        assert client.post(f"/api/v1/deployments/{channel['id']}/resume").status_code == 200
        # (A rolled-back update's plan stops: let it advance first.)
        rx.wait_for(lambda got: "rollout_plan.advanced" in types_of(got))
        assert client.post(f"/api/v1/updates/{android}/rollback", json={}).status_code == 200
        assert client.delete(f"/api/v1/groups/{group}").status_code == 200

        rx.wait_for(lambda got: expected <= types_of(got))
        for got in rx.received:
            verify(secret, got.headers["Lumora-Signature"], got.body)
            event = json.loads(got.body)
            assert set(event) == {"id", "type", "createdAt", "project", "data"}
            assert event["project"] == slug and got.headers["Lumora-Event"] == event["type"]
        # The first event was answered 500, then sent again (same event id) and answered 200.
        first = rx.received[0]
        assert first.status == 500
        again = [r for r in rx.received[1:] if r.body == first.body]
        assert [r.status for r in again] == [200]
        assert again[0].headers["Lumora-Delivery"] == first.headers["Lumora-Delivery"]
        with pytest.raises(ValueError):
            verify("whsec_wrong", first.headers["Lumora-Signature"], first.body)

        deliveries = client.get(
            f"/api/v1/projects/{slug}/webhooks/{hook['id']}/deliveries", params={"limit": 200}
        ).json()["items"]
        published = next(d for d in deliveries if d["type"] == "update.published")
        assert published["status"] == "delivered"
        assert [a["statusCode"] for a in published["attempts"]] == [200, 500]
        # Redelivery on demand: the same event arrives once more.
        before = len(rx.received)
        resp = client.post(
            f"/api/v1/projects/{slug}/webhooks/{hook['id']}/deliveries/{published['id']}/redeliver"
        )
        assert resp.status_code == 202, resp.text
        rx.wait_for(
            lambda got: any(json.loads(r.body)["id"] == published["eventId"] for r in got[before:])
        )
        resp = client.delete(f"/api/v1/projects/{slug}/webhooks/{hook['id']}")
        assert resp.status_code == 200
        assert client.get(f"/api/v1/projects/{slug}/webhooks").json()["items"] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_between_change_and_delivery_delivers_after_restart(
    server_factory: Callable[..., ServerProcess], backend: str, unique: str, tmp_path: Path
) -> None:
    server = server_factory(backend, extra_env={**ENV, "LUMORA_WEBHOOK_TIMEOUT": "1"})
    slug = f"kill-{unique}"
    hold = threading.Event()
    with receiver(hold=hold) as rx:
        with server.client() as client:
            create_project(client, slug)
            resp = client.post(
                f"/api/v1/projects/{slug}/webhooks",
                json={"url": rx.url, "events": ["update.published"]},
            )
            hook = resp.json()
            publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
        assert rx.arrived.wait(30)  # the sender is mid-request ...
        server.kill()  # ... when the server dies (SIGKILL)
        hold.set()
        server.start()
        rx.wait_for(lambda got: len(got) >= 2)
        ids = {json.loads(r.body)["id"] for r in rx.received}
        assert len(ids) == 1  # the same event, sent again by the restarted server
        verify(hook["secret"], rx.received[-1].headers["Lumora-Signature"], rx.received[-1].body)
        with server.client() as client:
            url = f"/api/v1/projects/{slug}/webhooks/{hook['id']}/deliveries"

            def delivered() -> bool:
                items = client.get(url).json()["items"]
                return bool(items) and items[0]["status"] == "delivered"

            rx.wait_for(lambda _got: delivered())


def test_bad_webhooks_are_refused(server: ServerProcess, unique: str) -> None:
    slug = f"ssrf-{unique}"
    with server.client() as client:
        create_project(client, slug)
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://[::1]/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:127.0.0.1]/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
        ):
            resp = client.post(
                f"/api/v1/projects/{slug}/webhooks",
                json={"url": url, "events": ["update.published"]},
            )
            assert resp.status_code == 422, (url, resp.text)
            assert resp.headers["content-type"].startswith("application/problem+json")
        for events in ([], ["update.exploded"], "update.published"):
            resp = client.post(
                f"/api/v1/projects/{slug}/webhooks",
                json={"url": "https://example.com/", "events": events},
            )
            assert resp.status_code == 422, (events, resp.text)
        assert client.get(f"/api/v1/projects/{slug}/webhooks").json()["items"] == []


def test_target_check_resolves_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with one public and one private address is refused (and a host re-resolving
    to a private address at delivery time fails that attempt: the same check runs)."""

    def fake(host: str, port: int, **_: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.5", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(sender.TargetError, match=r"192\.168\.1\.5"):
        sender.check_target("https://hooks.example.com/x", allow_private=False)
    target = sender.check_target("https://hooks.example.com:8443/x?a=1", allow_private=True)
    url, headers, extensions = sender._pinned(target)
    assert url == "https://93.184.215.14:8443/x?a=1"
    assert headers == {"Host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}


def test_signature_format() -> None:
    header = sign("whsec_x", 1700000000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("whsec_x", header, b'{"a":1}') == 1700000000
    with pytest.raises(ValueError):
        verify("whsec_x", header, b'{"a":2}')


@pytest.mark.skipif("postgres" not in BACKENDS, reason="needs PostgreSQL")
def test_two_processes_send_each_delivery_once(
    server_factory: Callable[..., ServerProcess], unique: str, tmp_path: Path
) -> None:
    env = {**ENV, "LUMORA_WEBHOOK_POLL_INTERVAL": "0.05"}
    first = server_factory("postgres", extra_env=env)
    server_factory("postgres", database_url=first.database_url, extra_env=env)
    slug = f"once-{unique}"
    with receiver() as rx, first.client() as client:
        create_project(client, slug)
        events = {"url": rx.url, "events": ["update.rollout_changed"]}
        assert client.post(f"/api/v1/projects/{slug}/webhooks", json=events).status_code == 201
        answer, _ = publish_export(client, slug, make_export(tmp_path / "export", seed=unique))
        group = answer["groupId"]
        for rollout in range(1, 21):
            resp = client.patch(f"/api/v1/groups/{group}", json={"rollout": rollout})
            assert resp.status_code == 200
        total = 20 * len(answer["updates"])
        rx.wait_for(lambda got: len(got) >= total)
        # Absence can only be observed over time: a second sender polling every 0.05 s would
        # have sent a duplicate within this second.
        time.sleep(1.0)
    deliveries = [r.headers["Lumora-Delivery"] for r in rx.received]
    assert len(deliveries) == total == len(set(deliveries))
