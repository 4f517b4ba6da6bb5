"""StatsRecorder and the stats report, in process, on SQLite and PostgreSQL.

Two recorders over one database stand for two server processes; the figures must add up
exactly, and repeated reports of the same outcome must not inflate them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from lumora_ota.stats import ClientEvent, StatsRecorder, event_time
from lumora_ota.stats_report import (
    HealthThresholds,
    StatsQuery,
    auto_pause_failing,
    build_report,
    evaluate_health,
)
from lumora_ota.store.db import create_db_engine, make_session_factory, migrate
from lumora_ota.store.models import AuditEntry, Channel, DeliveryState, Project, Update, UpdateGroup

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


@pytest.fixture(scope="module")
def engine(store_engine: Engine) -> Engine:
    return store_engine


def make_project(engine: Engine, slug: str, *, auto_pause: bool = False) -> tuple[str, list[str]]:
    """A project with a channel and two updates (ios, android); returns ids."""
    sessions = make_session_factory(engine)
    with sessions() as s:
        project = Project(slug=slug, name=slug, auto_pause_on_failure=auto_pause)
        s.add(project)
        s.flush()
        channel = Channel(project_id=project.id, name="production")
        group = UpdateGroup(project_id=project.id)
        s.add_all([channel, group])
        s.flush()
        updates = [
            Update(
                group_id=group.id,
                project_id=project.id,
                channel_id=channel.id,
                platform=p,
                runtime_version="1",
                rollout=100,
            )
            for p in ("ios", "android")
        ]
        s.add_all(updates)
        s.commit()
        return project.id, [u.id for u in updates]


def recorder(engine: Engine) -> StatsRecorder:
    return StatsRecorder(engine, clock=lambda: NOW)


def report(engine: Engine, project_id: str, **kw: object) -> dict:
    with make_session_factory(engine)() as s:
        query = StatsQuery(
            project_ids=[project_id],
            since=kw.pop("since", TODAY - timedelta(days=6)),  # type: ignore[arg-type]
            until=kw.pop("until", TODAY),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        return build_report(s, query, thresholds=HealthThresholds(), now=NOW)


def test_two_recorders_add_up_exactly(engine: Engine, request: pytest.FixtureRequest) -> None:
    pid, (ios, android) = make_project(engine, f"two-{request.node.callspec.id}")
    a, b = recorder(engine), recorder(engine)
    # 3 devices check with nothing installed; both processes answer some of them.
    for rec, dev in ((a, "d1"), (b, "d2"), (a, "d3")):
        rec.record_check(
            project_id=pid,
            channel="production",
            platform="ios",
            served_update_id=ios,
            device_id=dev,
            current_update_id="embedded-1",
            embedded_update_id="embedded-1",
        )
    # d1 and d2 come back running the update, each twice, through both processes.
    for rec in (a, b):
        for dev in ("d1", "d2"):
            rec.record_check(
                project_id=pid,
                channel="production",
                platform="ios",
                served_update_id=ios,
                device_id=dev,
                current_update_id=ios,
                embedded_update_id="embedded-1",
            )
    # d3 reports the update as failed, twice (the header repeats).
    for rec in (a, b):
        rec.record_check(
            project_id=pid,
            channel="production",
            platform="ios",
            served_update_id=None,
            device_id="d3",
            current_update_id="embedded-1",
            embedded_update_id="embedded-1",
            failed_update_ids=[ios],
        )
    # An anonymous check counts as a check and nothing else.
    b.record_check(project_id=pid, channel="production", platform="android", served_update_id=None)
    # SDK device d4 on android: events, with a retry of the same batch on the other process.
    sdk = [
        ClientEvent("download_completed", android),
        ClientEvent("install", android),
        ClientEvent("launch_success", android),
    ]
    a.record_events(pid, "d4", sdk)
    b.record_events(pid, "d4", sdk)
    b.record_events(pid, "d5", [ClientEvent("launch_failure", android)])
    b.record_events(pid, "d5", [ClientEvent("rollback", android)])
    a.flush()
    b.flush()
    # A second round of the same reports after a flush must still not double anything.
    a.record_events(pid, "d4", sdk)
    a.flush()

    body = report(engine, pid)
    totals = body["totals"]
    assert totals["checks"] == 3 + 4 + 2 + 1
    # A failed launch implies a download and an install: d1, d2, d3 (ios) + d4, d5 (android).
    assert totals["downloads"] == 3 + 2
    assert totals["installs"] == 5
    assert totals["launchSuccesses"] == 3  # d1, d2, d4
    assert totals["launchFailures"] == 2  # d3 (ios, header), d5 (android, event)
    assert totals["rollbacks"] == 1
    assert totals["uniqueDevices"] == 3  # d1..d3 checked in; SDK events do not check in
    assert totals["activeDevices"] == {"1d": 3, "7d": 3, "30d": 3}
    assert totals["successRate"] == pytest.approx(0.6)
    assert totals["failureRate"] == pytest.approx(0.4)
    today = body["daily"][-1]
    assert today["date"] == TODAY.isoformat()
    assert today["checks"] == 10 and today["installs"] == 5
    assert all(p["checks"] == 0 for p in body["daily"][:-1])
    per_update = {u["updateId"]: u for u in body["updates"]}
    assert per_update[ios]["checks"] == 3 + 4
    assert per_update[ios]["installs"] == 3
    assert per_update[ios]["launchFailures"] == 1
    assert per_update[ios]["activeDevices"]["1d"] == 2
    assert per_update[android]["installs"] == 2
    assert per_update[android]["rollbacks"] == 1

    only_ios = report(engine, pid, update_id=ios)["totals"]
    assert only_ios["checks"] == 7 and only_ios["installs"] == 3
    assert only_ios["uniqueDevices"] == 3  # d1, d2 ran it, d3 failed it
    assert only_ios["activeDevices"]["7d"] == 2
    assert report(engine, pid, channel="staging")["totals"]["checks"] == 0


def test_newest_device_observation_wins(engine: Engine, request: pytest.FixtureRequest) -> None:
    pid, (ios, _android) = make_project(engine, f"newest-{request.node.callspec.id}")
    later = StatsRecorder(engine, clock=lambda: NOW)
    earlier = StatsRecorder(engine, clock=lambda: NOW - timedelta(hours=1))
    later.record_check(
        project_id=pid,
        channel="production",
        platform="ios",
        served_update_id=None,
        device_id="dx",
        current_update_id=ios,
        embedded_update_id="e",
    )
    earlier.record_check(
        project_id=pid,
        channel="production",
        platform="ios",
        served_update_id=None,
        device_id="dx",
        current_update_id="e",
        embedded_update_id="e",
    )
    later.flush()
    earlier.flush()  # flushed last but observed first: must not overwrite
    assert report(engine, pid, update_id=ios)["totals"]["activeDevices"]["1d"] == 1


def test_flushed_device_days_and_facts_stay_out_of_later_batches(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    pid, (ios, _android) = make_project(engine, f"seen-{request.node.callspec.id}")
    rec = recorder(engine)

    def check(device: str) -> None:
        rec.record_check(
            project_id=pid,
            channel="production",
            platform="ios",
            served_update_id=None,
            device_id=device,
            current_update_id=ios,
            embedded_update_id="e",
        )

    check("d1")
    # checks counter, device, device day and the three running facts
    assert rec.pending == 6 and rec.flush() == 6
    check("d1")  # the same device, day and facts again: only the counter and the device
    assert rec.pending == 2
    check("d2")  # a new device brings its own device day and facts
    assert rec.pending == 2 + 1 + 1 + 3
    rec.flush()
    totals = report(engine, pid, update_id=ios)["totals"]
    assert totals["activeDevices"]["1d"] == 2


def test_failed_flush_keeps_the_batch(tmp_path: Path) -> None:
    eng = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rec = StatsRecorder(eng, clock=lambda: NOW)
    rec.record_check(project_id="p", channel="c", platform="ios", served_update_id=None)
    with pytest.raises(Exception):
        rec.flush()  # no schema yet
    assert rec.pending == 1 and rec.flush_errors == 1
    rec.record_check(project_id="p", channel="c", platform="ios", served_update_id=None)
    migrate(eng)
    assert rec.flush() == 1
    with make_session_factory(eng)() as s:
        from lumora_ota.store.models import StatCounter

        assert s.scalars(select(StatCounter.value)).one() == 2


def test_auto_pause_once(engine: Engine, request: pytest.FixtureRequest) -> None:
    pid, (ios, android) = make_project(engine, f"pause-{request.node.callspec.id}", auto_pause=True)
    rec = recorder(engine)
    for i in range(18):
        rec.record_events(pid, f"ok{i}", [ClientEvent("launch_success", ios)])
    for i in range(2):
        rec.record_events(pid, f"bad{i}", [ClientEvent("launch_failure", ios)])
    rec.flush()
    sessions = make_session_factory(engine)
    revision_before = _revision(engine)
    with sessions() as s:
        # 2 / 20 = 10% > 5% over 20 launches: flagged and paused, once.
        assert auto_pause_failing(s, [(pid, ios), (pid, android)], HealthThresholds()) == [ios]
    with sessions() as s:
        assert auto_pause_failing(s, [(pid, ios)], HealthThresholds()) == []
        assert s.get(Update, ios).rollout == 0  # type: ignore[union-attr]
        assert s.get(Update, android).rollout == 100  # type: ignore[union-attr]
        audit = s.scalars(select(AuditEntry).where(AuditEntry.target == ios)).all()
        assert [a.action for a in audit] == ["update.autoPause"]
        assert audit[0].detail["previousRollout"] == 100
    assert _revision(engine) == revision_before + 1
    flags = report(engine, pid)["flags"]
    assert [f["updateId"] for f in flags] == [ios]
    assert flags[0]["launches"] == 20 and flags[0]["failures"] == 2


def _revision(engine: Engine) -> int:
    with make_session_factory(engine)() as s:
        return s.get(DeliveryState, 1).revision  # type: ignore[union-attr]


@given(st.integers(0, 200), st.integers(0, 200))
def test_health_rule(successes: int, failures: int) -> None:
    thresholds = HealthThresholds(failure_rate=0.05, min_launches=20)
    health = evaluate_health(successes, failures, thresholds)
    launches = successes + failures
    assert health.launches == launches
    assert health.flagged == (launches >= 20 and failures * 100 > launches * 5)
    assert health.status == (
        "failing" if health.flagged else "ok" if launches >= 20 else "insufficientData"
    )


def test_event_time_is_clamped() -> None:
    assert event_time(None, NOW) == NOW
    assert event_time(NOW - timedelta(days=2), NOW) == NOW - timedelta(days=2)
    assert event_time(NOW - timedelta(days=400), NOW) == NOW
    assert event_time(NOW + timedelta(days=3), NOW) == NOW
    assert event_time(datetime(2026, 11, 25, 1, 0), NOW).date() == date(2026, 11, 25)


def test_failing_flushes_keep_counters_but_bound_per_device_detail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database outage: the batch is kept for the next flush, but fresh device ids cannot
    grow it past ``MAX_UNFLUSHED``; the counters survive."""
    from sqlalchemy import create_engine

    import lumora_ota.stats as stats_module

    monkeypatch.setattr(stats_module, "MAX_UNFLUSHED", 100)
    no_schema = create_engine("sqlite://")  # every flush fails: no tables
    recorder = StatsRecorder(no_schema, clock=lambda: NOW)
    for i in range(150):
        recorder.record_check(
            project_id="p", channel="production", platform="ios",
            served_update_id="u", device_id=f"device-{i}",
        )  # fmt: skip
    with pytest.raises(Exception):
        recorder.flush()
    assert recorder.dropped > 0
    assert recorder.pending == 1  # the one counter: 150 checks of update u
    assert recorder.flush_errors == 1
