"""Freshness of signed check answers (issue 20): the SDK refuses replayed, expired and
downgrading answers; the server's sequence only grows, across processes and restarts.

The real-server tests run ``lumora serve`` on SQLite and PostgreSQL; the rules themselves
(``lumora_ota.freshness``, ``check_freshness``, ``is_rollback``) are unit-tested too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness import ServerProcess, create_project
from lumora_ota.client import (
    FetcherInterface,
    FetchResponse,
    HttpxFetcher,
    StaleAnswerError,
    UpdateManager,
)
from lumora_ota.client._internal.check import check_freshness
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.selection import Selection, is_rollback
from lumora_ota.freshness import Freshness, FreshnessError, body_digest, issue_window
from lumora_ota.signing import generate_signing_identity
from test_client_e2e import V1, V2, App

V3 = {"main.py": b"print('v3')\n" * 50}


# ---------------------------------------------------------------- pure rules


def _statement(**changes: Any) -> Freshness:
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    fields: dict[str, Any] = {
        "project_id": "p",
        "channel": "production",
        "platform": "ios",
        "sequence": 7,
        "issued_at": issued,
        "expires": issued + timedelta(hours=1),
        "body_sha256": body_digest(b"{}"),
        "rollback": False,
    }
    fields.update(changes)
    return Freshness(**fields)


def test_statement_round_trips_and_malformed_ones_are_refused() -> None:
    statement = _statement(rollback=True)
    assert Freshness.parse(statement.to_bytes().decode()) == statement
    good = json.loads(statement.to_bytes())
    for name, value in [
        ("type", "other"),
        ("version", 2),
        ("sequence", -1),
        ("sequence", True),
        ("sequence", "7"),
        ("channel", None),
        ("expires", "tomorrow"),
        ("expires", "2026-01-01T00:00:00"),  # no zone
        ("rollback", "yes"),
    ]:
        with pytest.raises(FreshnessError):
            Freshness.parse(json.dumps({**good, name: value}))
    with pytest.raises(FreshnessError):
        Freshness.parse("[]")


def test_check_freshness_rules() -> None:
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    ok: dict[str, Any] = {
        "project_id": "p",
        "channel": "production",
        "platform": "ios",
        "now": now,
        "newest_seen": 7,
        "offers_update": True,
    }
    check_freshness(_statement(), **ok)  # same sequence: the same state, accepted
    check_freshness(_statement(sequence=9), **ok)
    refused: list[tuple[Freshness, dict[str, Any]]] = [
        (_statement(sequence=6), {}),  # older than seen
        (_statement(), {"now": now + timedelta(hours=1)}),  # expired
        (_statement(project_id="q"), {}),
        (_statement(platform="android"), {}),
        (_statement(channel="staging"), {}),
        (_statement(channel=""), {}),  # unknown-channel statement offering an update
    ]
    for statement, changes in refused:
        with pytest.raises(StaleAnswerError):
            check_freshness(statement, **{**ok, **changes})
    check_freshness(_statement(channel=""), **{**ok, "offers_update": False})


def test_issue_window_signs_once_per_quarter_ttl() -> None:
    issued, expires = issue_window(1000.0, 400)
    assert issued.timestamp() == 1000 and expires.timestamp() == 1400
    assert issue_window(1099.9, 400) == (issued, expires)
    later, _ = issue_window(1100.0, 400)
    assert later.timestamp() == 1100


def _record(update_id: str, minute: int, status: str = "active") -> UpdateRecord:
    return UpdateRecord(
        id=update_id,
        group_id="g",
        project_id="p",
        channel="production",
        platform="ios",
        runtime_version="1",
        created_at=datetime(2026, 1, 1, 0, minute, tzinfo=UTC),
        status=status,  # type: ignore[arg-type]
    )


def test_is_rollback() -> None:
    v1, v2, v3 = _record("v1", 1), _record("v2", 2, "rolled_back"), _record("v3", 3)
    assert is_rollback([v2, v1], Selection("update", v1))  # older than a rolled-back one
    assert not is_rollback([v3, v1], Selection("update", v1))  # outside a rollout, say
    assert not is_rollback([v3, v2, v1], Selection("update", v3))
    assert is_rollback([], Selection("rollback_to_embedded", v1))
    assert not is_rollback([v1], Selection("no_update", v1))


# ---------------------------------------------------------------- against a real server


class Recorder(FetcherInterface):
    """The httpx fetcher, keeping every check answer; ``replay`` answers checks with a
    recorded one instead (a man in the middle, or a stale mirror)."""

    def __init__(self) -> None:
        self.inner = HttpxFetcher(timeout=10)
        self.checks: list[tuple[int, dict[str, str], bytes]] = []
        self.replay: tuple[int, dict[str, str], bytes] | None = None
        self.asset_gets: list[str] = []

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        if method == "GET":
            self.asset_gets.append(url)
        if url.endswith("/updates/check") and self.replay is not None:
            status, answer_headers, data = self.replay
            return FetchResponse(status, answer_headers, iter([data]), lambda: None)
        response = self.inner._fetch(method, url, headers, body)
        if not url.endswith("/updates/check"):
            return response
        data = b"".join(response.chunks)
        self.checks.append((response.status, dict(response.headers), data))
        return FetchResponse(response.status, response.headers, iter([data]), response.close)

    def close(self) -> None:
        self.inner.close()


def _signed_app(server: ServerProcess, unique: str, tmp_path: Path) -> tuple[App, bytes]:
    slug = f"fresh-{unique}"
    key_pem, cert_pem = generate_signing_identity("freshness-test")
    with server.client() as client:
        create_project(client, slug)
        client.put(
            f"/api/v1/projects/{slug}/signing",
            json={
                "keyid": "main",
                "privateKeyPem": key_pem.decode(),
                "certificatePem": cert_pem.decode(),
            },
        ).raise_for_status()
    return App(server, slug, tmp_path), cert_pem


def _statement_of(answer: bytes) -> Freshness:
    return Freshness.parse(json.loads(answer)["freshnessText"])


def _manager(app: App, cert_pem: bytes, fetcher: FetcherInterface, **kwargs: Any) -> UpdateManager:
    return app.manager(certificate=cert_pem, fetcher=fetcher, **kwargs)


def _run(
    app: App, manager: UpdateManager, update_id: str, cert_pem: bytes, fetcher: Recorder
) -> UpdateManager:
    """Install the offered ``update_id``, apply it and launch it in a restarted app."""
    result = manager.check_for_update()
    assert result.update_id == update_id, result
    manager.download_and_install_update(result)
    manager.apply_update()
    manager.close()
    restarted = _manager(app, cert_pem, fetcher)
    assert restarted.launch() == app.data_dir / "updates" / update_id
    restarted.mark_launch_successful()
    return restarted


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_replayed_older_signed_answer_is_refused(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    app, cert_pem = _signed_app(server, unique, tmp_path)
    recorder = Recorder()
    u1 = app.publish("v1", V1)
    device = _run(app, _manager(app, cert_pem, recorder), u1, cert_pem, recorder)
    old_answer = recorder.checks[0]  # offered v1, validly signed, not yet expired
    u2 = app.publish("v2", V2)
    device = _run(app, device, u2, cert_pem, recorder)
    assert _statement_of(recorder.checks[-1][2]).sequence > _statement_of(old_answer[2]).sequence
    # A rollback reaches the device as usual (republished v1: a new update, newer sequence).
    with app.server.client() as client:
        client.post(f"/api/v1/updates/{u2}/rollback", json={}).raise_for_status()
    _wait_for(lambda: device.check_for_update().update_available, "the rollback never arrived")
    assert device.check_for_update().update_id not in (u1, u2)

    # The red-team replay: v1's old answer, signature intact. Refused, nothing downloaded,
    # and still refused by the app after a restart (the newest sequence is in state.json).
    recorder.replay = old_answer
    gets = len(recorder.asset_gets)
    with pytest.raises(StaleAnswerError, match="older than one already seen"):
        device.check_for_update()
    device.close()
    restarted = _manager(app, cert_pem, recorder)
    with pytest.raises(StaleAnswerError, match="older than one already seen"):
        restarted.check_for_update()
    assert len(recorder.asset_gets) == gets
    assert restarted.current_update_id == u2
    restarted.close()


def test_expired_signed_answer_is_refused(
    server_factory: Callable[..., ServerProcess], unique: str, tmp_path: Path
) -> None:
    server = server_factory("sqlite", extra_env={"LUMORA_SIGNED_ANSWER_TTL": "120"})
    app, cert_pem = _signed_app(server, unique, tmp_path)
    recorder = Recorder()
    app.publish("v1", V1)
    manager = _manager(app, cert_pem, recorder)
    assert manager.check_for_update().update_available
    statement = _statement_of(recorder.checks[-1][2])
    assert statement.expires - statement.issued_at == timedelta(seconds=120)
    assert statement.issued_at <= datetime.now(UTC) < statement.expires
    manager.close()
    # The same answer, read three minutes later (a withheld answer, a frozen mirror).
    later = _manager(
        app, cert_pem, recorder, _clock=lambda: datetime.now(UTC) + timedelta(minutes=3)
    )
    with pytest.raises(StaleAnswerError, match="expired"):
        later.check_for_update()
    recorder.replay = recorder.checks[-1]
    with pytest.raises(StaleAnswerError, match="expired"):
        later.check_for_update()
    assert recorder.asset_gets == []
    later.close()


def test_downgrade_without_signed_rollback_is_refused(
    server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    app, cert_pem = _signed_app(server, unique, tmp_path)
    recorder = Recorder()
    u1 = app.publish("v1", V1)
    device = _run(app, _manager(app, cert_pem, recorder), u1, cert_pem, recorder)
    u2 = app.publish("v2", V2)
    device = _run(app, device, u2, cert_pem, recorder)
    # v2's rollout drops to 0: the server now offers this device v1, an older update, and
    # the answer is fresh and validly signed, but not a rollback.
    with app.server.client() as client:
        client.patch(f"/api/v1/updates/{u2}", json={"rollout": 0}).raise_for_status()

    def offered_v1() -> bool:
        try:
            device.check_for_update()
        except StaleAnswerError:
            return True
        return False

    _wait_for(offered_v1, "the server never offered v1")
    statement = _statement_of(recorder.checks[-1][2])
    assert not statement.rollback
    assert json.loads(json.loads(recorder.checks[-1][2])["manifestText"])["id"] == u1
    assert device.current_update_id == u2 and device.ready_update is None
    # An explicit rollback to embedded is a signed rollback: it applies.
    with app.server.client() as client:
        client.patch(f"/api/v1/updates/{u2}", json={"rollout": 100}).raise_for_status()
        client.post(f"/api/v1/updates/{u2}/rollback", json={"toEmbedded": True}).raise_for_status()
    _wait_for(
        lambda: device.check_for_update().directive == "rollBackToEmbedded",
        "the directive never arrived",
    )
    assert _statement_of(recorder.checks[-1][2]).rollback
    device.close()
    assert app.manager(certificate=cert_pem).launch() == app.embedded


def test_sequence_grows_across_processes_and_restarts(
    server: ServerProcess,
    server_factory: Callable[..., ServerProcess],
    unique: str,
    tmp_path: Path,
) -> None:
    app, _cert_pem = _signed_app(server, unique, tmp_path)
    other = server_factory("shared", database_url=server.database_url)
    request = {"projectId": app.project, "platform": "ios", "runtimeVersion": "1", "signed": True}

    def sequence(srv: ServerProcess) -> int:
        with srv.anon() as client:
            answer = client.post("/api/v1/updates/check", json=request)
            answer.raise_for_status()
            return _statement_of(answer.content).sequence

    first = sequence(server)
    app.publish("v1", V1)  # through the first process
    _wait_for(lambda: sequence(other) > first, "the other process never saw the publish")
    seen = sequence(other)
    assert sequence(server) == seen
    other.stop()
    other.start()
    assert sequence(other) == seen  # the database's revision: a restart keeps it
    app.publish("v2", V2)
    _wait_for(lambda: sequence(other) > seen, "the restarted process never saw the publish")
