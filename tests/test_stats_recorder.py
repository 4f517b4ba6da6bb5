"""StatsRecorder and the stats report, in process, on SQLite and PostgreSQL.

Two recorders over one database stand for two server processes; the figures must add up
exactly, and repeated reports of the same outcome must not inflate them.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from lumora_ota.settings import Settings, SettingsError
from lumora_ota.stats import ClientEvent, StatsRecorder, event_time, stats_source
from lumora_ota.stats_report import (
    HealthThresholds,
    StatsQuery,
    auto_pause_failing,
    build_report,
    evaluate_health,
)
from lumora_ota.stats_retention import PruneResult, prune_statistics
from lumora_ota.store.db import create_db_engine, make_session_factory, migrate
from lumora_ota.store.models import (
    AuditEntry,
    Channel,
    DeliveryState,
    DeviceState,
    DeviceUpdateFact,
    Project,
    Update,
    UpdateGroup,
)

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


def serve(rec: StatsRecorder, pid: str, update_id: str, device: str, source: str = "") -> None:
    """A check that offered ``update_id`` to ``device``: its served-to record."""
    rec.record_check(
        project_id=pid,
        channel="production",
        platform="ios",
        served_update_id=update_id,
        device_id=device,
        source=source,
    )


def report(
    engine: Engine,
    project_id: str,
    thresholds: HealthThresholds = HealthThresholds(),
    **kw: object,
) -> dict:
    with make_session_factory(engine)() as s:
        query = StatsQuery(
            project_ids=[project_id],
            since=kw.pop("since", TODAY - timedelta(days=6)),  # type: ignore[arg-type]
            until=kw.pop("until", TODAY),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        return build_report(s, query, thresholds=thresholds, now=NOW)


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
    serve(a, pid, android, "d4")
    serve(b, pid, android, "d5")
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
    assert totals["checks"] == 3 + 4 + 2 + 1 + 2
    # A failed launch implies a download and an install: d1, d2, d3 (ios) + d4, d5 (android).
    assert totals["downloads"] == 3 + 2
    assert totals["installs"] == 5
    assert totals["launchSuccesses"] == 3  # d1, d2, d4
    assert totals["launchFailures"] == 2  # d3 (ios, header), d5 (android, event)
    assert totals["rollbacks"] == 1
    assert totals["uniqueDevices"] == 5  # d1..d5 checked in
    assert totals["activeDevices"] == {"1d": 5, "7d": 5, "30d": 5}
    assert totals["successRate"] == pytest.approx(0.6)
    assert totals["failureRate"] == pytest.approx(0.4)
    today = body["daily"][-1]
    assert today["date"] == TODAY.isoformat()
    assert today["checks"] == 12 and today["installs"] == 5
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
        served_update_id=ios,
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
            served_update_id=ios,
            device_id=device,
            current_update_id=ios,
            embedded_update_id="e",
        )

    check("d1")
    # checks counter, device, device day, served-to record and the three running facts
    assert rec.pending == 7 and rec.flush() == 7
    check("d1")  # the same device, day, record and facts again: the counter and the device
    assert rec.pending == 2
    check("d2")  # a new device brings its own device day, served-to record and facts
    assert rec.pending == 2 + 1 + 1 + 1 + 3
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
        serve(rec, pid, ios, f"ok{i}", source=f"10.0.0.{i}")
        rec.record_events(pid, f"ok{i}", [ClientEvent("launch_success", ios)])
    for i in range(2):
        serve(rec, pid, ios, f"bad{i}", source=f"10.0.1.{i}")
        rec.record_events(pid, f"bad{i}", [ClientEvent("launch_failure", ios)])
    rec.flush()
    thresholds = HealthThresholds(min_failures=2)
    sessions = make_session_factory(engine)
    revision_before = _revision(engine)
    with sessions() as s:
        # 2 / 20 = 10% > 5% over 20 launches: flagged and paused, once.
        assert auto_pause_failing(s, [(pid, ios), (pid, android)], thresholds) == [ios]
    with sessions() as s:
        assert auto_pause_failing(s, [(pid, ios)], thresholds) == []
        assert s.get(Update, ios).rollout == 0  # type: ignore[union-attr]
        assert s.get(Update, android).rollout == 100  # type: ignore[union-attr]
        audit = s.scalars(select(AuditEntry).where(AuditEntry.target == ios)).all()
        assert [a.action for a in audit] == ["update.autoPause"]
        assert audit[0].detail["previousRollout"] == 100
    assert _revision(engine) == revision_before + 1
    flags = report(engine, pid, thresholds=thresholds)["flags"]
    assert [f["updateId"] for f in flags] == [ios]
    assert flags[0]["launches"] == 20 and flags[0]["failures"] == 2


def _revision(engine: Engine) -> int:
    with make_session_factory(engine)() as s:
        return s.get(DeliveryState, 1).revision  # type: ignore[union-attr]


@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 30))
def test_health_rule(successes: int, failures: int, min_failures: int) -> None:
    thresholds = HealthThresholds(failure_rate=0.05, min_launches=20, min_failures=min_failures)
    health = evaluate_health(successes, failures, thresholds)
    launches = successes + failures
    assert health.launches == launches
    assert health.flagged == (
        launches >= 20 and failures >= min_failures and failures * 100 > launches * 5
    )
    assert health.status == (
        "failing" if health.flagged else "ok" if launches >= 20 else "insufficientData"
    )


def test_event_time_is_clamped() -> None:
    assert event_time(None, NOW) == NOW
    assert event_time(NOW - timedelta(days=2), NOW) == NOW - timedelta(days=2)
    assert event_time(NOW - timedelta(days=400), NOW) == NOW
    assert event_time(NOW + timedelta(days=3), NOW) == NOW
    assert event_time(datetime(2026, 11, 25, 1, 0), NOW).date() == date(2026, 11, 25)


def test_retention_rolls_up_and_prunes(engine: Engine, request: pytest.FixtureRequest) -> None:
    """Detailed rows older than the retention become daily counters: the figures of those
    days stay, the rows (and device ids) go; a second run changes nothing."""
    pid, (ios, _android) = make_project(engine, f"ret-{request.node.callspec.id}")
    old_time = NOW - timedelta(days=100)
    old = StatsRecorder(engine, clock=lambda: old_time)
    serve(old, pid, ios, "gone")
    old.record_events(pid, "gone", [ClientEvent("launch_success", ios, at=old_time)])
    old.record_events(pid, "never-served", [ClientEvent("launch_failure", ios, at=old_time)])
    old.flush()
    fresh = recorder(engine)
    serve(fresh, pid, ios, "here")
    fresh.record_events(pid, "here", [ClientEvent("install", ios)])
    fresh.flush()
    window = {"since": old_time.date(), "until": TODAY}
    before = report(engine, pid, **window)

    assert prune_statistics(engine, NOW, 90) == PruneResult(
        device_days=1, devices=1, facts=6, served=1
    )
    assert prune_statistics(engine, NOW, 90) == PruneResult()
    after = report(engine, pid, **window)
    assert after["daily"] == before["daily"]
    assert after["totals"]["launchSuccesses"] == 1 and after["totals"]["installs"] == 2
    per_update = {u["updateId"]: u for u in after["updates"]}
    assert per_update[ios]["launchSuccesses"] == 1  # rolled up, still in the figure
    with make_session_factory(engine)() as s:
        assert s.scalars(
            select(DeviceState.device_id).where(DeviceState.project_id == pid)
        ).all() == ["here"]
        left = s.scalars(
            select(DeviceUpdateFact.device_id).where(DeviceUpdateFact.project_id == pid)
        ).all()
        assert set(left) == {"here"}


def test_retention_and_caps_refuse_values_that_switch_them_off() -> None:
    for name, value in (
        ("stats_retention_days", 30),
        ("stats_devices_per_source", 0),
        ("health_min_failures", 0),
    ):
        with pytest.raises(SettingsError, match="must be at least"):
            Settings(**{name: value})  # type: ignore[arg-type]


def test_sources_group_ipv6_by_64() -> None:
    """An IPv6 subscriber gets a /64 (or more): all its addresses are one source."""
    assert stats_source("2001:db8:1:2::a") == stats_source("2001:db8:1:2:ffff::1")
    assert stats_source("2001:db8:1:2::a") == "2001:db8:1:2::/64"
    assert stats_source("2001:db8:1:3::a") != stats_source("2001:db8:1:2::a")
    assert stats_source("::ffff:10.0.0.1") == "10.0.0.1" == stats_source("10.0.0.1")
    assert stats_source(None) == "" and stats_source("not-an-ip") == "not-an-ip"


def test_one_source_adds_a_bounded_number_of_new_devices(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    pid, (ios, _android) = make_project(engine, f"cap-{request.node.callspec.id}")
    rec = StatsRecorder(engine, clock=lambda: NOW, new_devices_per_source=3)
    for i in range(10):
        rec.record_check(
            project_id=pid,
            channel="production",
            platform="ios",
            served_update_id=ios,
            device_id=f"a{i}",
            source="10.9.9.9",
        )
    serve(rec, pid, ios, "a0", source="10.9.9.9")  # an admitted device keeps counting
    serve(rec, pid, ios, "b0", source="10.9.9.8")  # another source has its own budget
    rec.flush()
    totals = report(engine, pid)["totals"]
    assert totals["uniqueDevices"] == 4
    assert totals["checks"] == 12
    assert rec.totals["stats_dropped"] == 7


def test_failing_flushes_keep_counters_but_bound_per_device_detail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database outage: the batch is kept for the next flush, but fresh device ids cannot
    grow it past ``MAX_PENDING_ROWS``; the counters keep counting."""
    from sqlalchemy import create_engine

    import lumora_ota.stats as stats_module

    monkeypatch.setattr(stats_module, "MAX_PENDING_ROWS", 100)
    no_schema = create_engine("sqlite://")  # every flush fails: no tables
    recorder = StatsRecorder(no_schema, clock=lambda: NOW)

    def checks(start: int, count: int) -> None:
        for i in range(start, start + count):
            recorder.record_check(
                project_id="p", channel="production", platform="ios",
                served_update_id="u", device_id=f"device-{i}",
            )  # fmt: skip

    checks(0, 150)
    with pytest.raises(Exception):
        recorder.flush()
    kept = recorder.pending
    assert kept <= 100 + 4  # the bound, plus the last admitted device's rows
    checks(150, 1000)  # the outage goes on: fresh device ids add nothing
    assert recorder.pending == kept
    assert recorder.totals["stats_dropped"] >= 1000
    assert recorder.totals["checks"] == 1150
    assert recorder.flush_errors == 1


REPORT = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["check", "events"]),
        "device": st.integers(0, 40).map(lambda n: f"device-{n}"),
        "served": st.sampled_from([None, "u1", "u2"]),
        "running": st.sampled_from([None, "u1", "u2", "u3"]),
        "failed": st.lists(st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6"]), max_size=8),
        "events": st.lists(
            st.sampled_from(["install", "launch_success", "launch_failure", "rollback"]),
            max_size=4,
        ),
        "source": st.sampled_from(["10.0.0.1", "10.0.0.2", ""]),
    }
)


@given(st.lists(REPORT, max_size=60), st.integers(1, 40))
def test_pending_device_rows_never_exceed_the_bound(
    reports: list[dict[str, Any]], bound: int
) -> None:
    """Whatever devices report while every flush fails (a database outage): the rows about
    devices waiting in memory never exceed ``MAX_PENDING_ROWS``, and every report that did
    not fit is counted as dropped; the counters keep counting every check. (Before, the
    bound was checked before a report's rows were added, so it could be passed by up to a
    report's worth: 21 rows.)"""
    from sqlalchemy import create_engine

    import lumora_ota.stats as stats_module

    original = stats_module.MAX_PENDING_ROWS
    stats_module.MAX_PENDING_ROWS = bound
    try:
        recorder = StatsRecorder(create_engine("sqlite://"), clock=lambda: NOW)
        checks = 0
        for n, r in enumerate(reports):
            if r["kind"] == "check":
                checks += 1
                recorder.record_check(
                    project_id="p", channel="production", platform="ios",
                    served_update_id=r["served"], device_id=r["device"],
                    current_update_id=r["running"], failed_update_ids=r["failed"],
                    source=r["source"],
                )  # fmt: skip
            else:
                recorder.record_events(
                    "p", r["device"], [ClientEvent(t, "u1") for t in r["events"]],
                    source=r["source"],
                )  # fmt: skip
            if n % 7 == 3:
                with contextlib.suppress(Exception):
                    recorder.flush()  # no tables: a batch is kept
            with recorder._lock:
                b = recorder._batch
                assert len(b.facts) + len(b.devices) + len(b.device_days) + len(b.served) <= bound
        assert recorder.totals.get("checks", 0) == checks
    finally:
        stats_module.MAX_PENDING_ROWS = original


def test_a_large_batch_is_flushed_before_the_interval(
    monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    """New devices arriving faster than the flush interval: once the batch passes
    ``FLUSH_EARLY_ROWS`` the flush task writes it at once, so the batch is bounded by size as
    well as by time (here the interval is an hour)."""
    import asyncio

    import lumora_ota.stats as stats_module

    monkeypatch.setattr(stats_module, "FLUSH_EARLY_ROWS", 30)
    pid, (ios, _android) = make_project(engine, "flush-early")

    async def scenario() -> tuple[int, int]:
        recorder = StatsRecorder(engine, flush_interval=3600, clock=lambda: NOW)
        await recorder.start()
        try:
            for i in range(20):  # 3 rows each: device, device day, served-to record
                recorder.record_check(
                    project_id=pid, channel="production", platform="ios",
                    served_update_id=ios, device_id=f"early-{i}", source=f"10.1.0.{i}",
                )  # fmt: skip
            while recorder.flushes == 0:  # woken, not after an hour
                await asyncio.sleep(0.01)
            return recorder.early_flushes, recorder.pending
        finally:
            await recorder.stop()

    early, pending = asyncio.run(scenario())
    assert early == 1
    assert pending < 30
