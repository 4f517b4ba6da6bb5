"""The patch job (store/patches.py) in process: which bases, idempotence, crash repair and
usefulness, on a real SQLite database and file blob store."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bsdiff4
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.domain.delta import (
    DEFAULT_MAX_BUNDLE_BYTES,
    DEFAULT_MEMORY_BUDGET,
    bsdiff_memory,
    patch_object_name,
    patch_skip_reason,
)
from lumora_ota.store import repository
from lumora_ota.store.blobs import FileBlobStore
from lumora_ota.store.db import create_db_engine, make_session_factory, migrate
from lumora_ota.store.models import DeliveryState, DeltaPatch, EmbeddedBundle, StatCounter, utcnow
from lumora_ota.store.patches import (
    PatchPolicy,
    PatchWorker,
    compute_patches,
    stream_heads,
    updates_without_patches,
)
from lumora_ota.store.variants import ensure_variants


@dataclass
class Store:
    sessions: sessionmaker[Session]
    blobs: FileBlobStore
    project_id: str


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'lumora.db'}")
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        project = repository.create_project(session, name="p", slug="p")
        session.commit()
        project_id = project.id
    yield Store(sessions, FileBlobStore(tmp_path / "blobs"), project_id)
    engine.dispose()


def js_bundle(version: int) -> bytes:
    """A bundle-like text whose versions differ a little."""
    rng = random.Random(1)
    lines = [f"function f{i}(a){{return a*{rng.randint(0, 999)}+{i};}}" for i in range(3000)]
    for i in range(0, 3000, 500):
        lines[i + version % 7] = f"function changed{version}_{i}(){{return {version};}}"
    return "\n".join(lines).encode()


def publish(store: Store, data: bytes, *, ext: str = ".js", channel: str = "production") -> str:
    sha = hashlib.sha256(data).hexdigest()
    store.blobs.put_bytes(sha, data)
    content_type = "application/javascript" if ext == ".js" else "image/png"
    with store.sessions() as session:
        repository.record_blob(session, store.project_id, sha, len(data))
        spec = repository.PublishSpec(
            project_id=store.project_id,
            channel=channel,
            runtime_version="1",
            platforms={
                "android": repository.PlatformSpec(
                    repository.AssetSpec(f"bundle{ext}", sha, content_type, ext)
                )
            },
        )
        update_id = repository.publish(session, spec)[0].id
        session.commit()
    if ext == ".js":
        ensure_variants(store.blobs, store.sessions, sha)  # what the variant worker does
    return update_id


def rows(store: Store, target: str) -> dict[str, DeltaPatch]:
    with store.sessions() as session:
        found = session.scalars(select(DeltaPatch).where(DeltaPatch.target_update_id == target))
        return {row.base_update_id: row for row in found}


def revisions(store: Store) -> tuple[int, int]:
    """(delivery revision, patch revision)."""
    with store.sessions() as session:
        state = session.get_one(DeliveryState, 1)
        return state.revision, state.patch_revision


POLICY = PatchPolicy(bases=2, max_ratio=0.5)


def test_patches_from_the_last_bases_are_idempotent(store: Store) -> None:
    ids = [publish(store, js_bundle(v)) for v in range(4)]
    same_as_last = publish(store, js_bundle(3))  # e.g. a re-publish: nothing to diff
    target = publish(store, js_bundle(9))
    publish(store, js_bundle(1), channel="staging")  # another stream: never a base

    assert compute_patches(store.blobs, store.sessions, POLICY, [target]) == 3
    recorded = rows(store, target)
    # the two newest distinct bundles (ids[3] and its re-publish share one), not ids[0..1]
    assert set(recorded) == {same_as_last, ids[3], ids[2]}
    new = js_bundle(9)
    for base_id, base_version in ((ids[3], 3), (ids[2], 2)):
        row = recorded[base_id]
        patch = store.blobs.read_bytes(patch_object_name(row.target_sha256, row.base_sha256))
        assert len(patch) == row.size and row.useful
        assert bsdiff4.patch(js_bundle(base_version), patch) == new
    assert compute_patches(store.blobs, store.sessions, POLICY, [target]) == 0  # idempotent
    assert compute_patches(store.blobs, store.sessions, POLICY, [ids[0]]) == 0  # no earlier base


def test_a_crash_between_object_and_row_is_repaired_without_recomputing(store: Store) -> None:
    base = publish(store, js_bundle(1))
    target = publish(store, js_bundle(2))
    base_sha = hashlib.sha256(js_bundle(1)).hexdigest()
    target_sha = hashlib.sha256(js_bundle(2)).hexdigest()
    name = patch_object_name(target_sha, base_sha)
    # the object was stored, then the process died before recording the row
    store.blobs.put_bytes(name, bsdiff4.diff(js_bundle(1), js_bundle(2)))
    os.utime(store.blobs.path_for(name), (1_000_000, 1_000_000))
    with store.sessions() as session:
        assert target in updates_without_patches(session)
    assert compute_patches(store.blobs, store.sessions, POLICY, [target]) == 1
    assert store.blobs.path_for(name).stat().st_mtime == 1_000_000  # reused, not recomputed
    assert set(rows(store, target)) == {base}
    with store.sessions() as session:
        assert target not in updates_without_patches(session)


def test_patches_that_do_not_beat_the_full_bundle_are_marked_not_useful(store: Store) -> None:
    rng = random.Random(7)
    publish(store, rng.randbytes(40_000), ext=".png")
    target = publish(store, rng.randbytes(40_000), ext=".png")  # unrelated random bytes
    assert compute_patches(store.blobs, store.sessions, POLICY, [target]) == 1
    (row,) = rows(store, target).values()
    assert row.useful is False


def test_embedded_bundles_are_bases_too(store: Store) -> None:
    embedded = js_bundle(0)
    sha = hashlib.sha256(embedded).hexdigest()
    store.blobs.put_bytes(sha, embedded)
    with store.sessions() as session:
        repository.record_blob(session, store.project_id, sha, len(embedded))
        session.add(
            EmbeddedBundle(
                project_id=store.project_id,
                embedded_update_id="emb-1",
                platform="android",
                runtime_version="1",
                sha256=sha,
                created_at=utcnow(),
            )
        )
        session.commit()
    target = publish(store, js_bundle(5))
    with store.sessions() as session:
        assert stream_heads(session, store.project_id, "android", "1") == [target]
    assert compute_patches(store.blobs, store.sessions, POLICY, [target]) == 1
    assert set(rows(store, target)) == {"emb-1"}


def test_a_batch_bumps_the_patch_revision_once_and_never_the_delivery_revision(
    store: Store,
) -> None:
    ids = [publish(store, js_bundle(v)) for v in range(5)]
    delivery, patch = revisions(store)
    # 1 + 2 + 2 + 2 patches toward ids[1:] (two bases each at most), in one run
    assert compute_patches(store.blobs, store.sessions, POLICY, ids[1:]) == 7
    assert revisions(store) == (delivery, patch + 1)
    assert compute_patches(store.blobs, store.sessions, POLICY, ids) == 0  # nothing new
    assert compute_patches(store.blobs, store.sessions, POLICY, [ids[4]]) == 0
    assert revisions(store) == (delivery, patch + 1)  # a run that records nothing bumps nothing
    target = publish(store, js_bundle(9))
    delivery, patch = revisions(store)  # the publish bumped the delivery revision
    assert compute_patches(store.blobs, store.sessions, POLICY, [target]) == 2
    assert revisions(store) == (delivery, patch + 1)


def test_a_failing_update_does_not_lose_the_rest_of_its_batch(store: Store) -> None:
    base = publish(store, js_bundle(1))
    good = publish(store, js_bundle(2))
    broken = publish(store, js_bundle(3))
    store.blobs.path_for(hashlib.sha256(js_bundle(3)).hexdigest()).unlink()  # unreadable
    _, patch = revisions(store)
    assert compute_patches(store.blobs, store.sessions, POLICY, [broken, good]) == 1
    assert set(rows(store, good)) == {base} and rows(store, broken) == {}
    assert revisions(store)[1] == patch + 1


def test_the_worker_bumps_once_per_job_and_catch_up(store: Store) -> None:
    ids = [publish(store, js_bundle(v)) for v in range(4)]
    delivery, patch = revisions(store)
    worker = PatchWorker(store.blobs, store.sessions, POLICY)
    try:
        # the start-up catch-up: every recent update without rows, recorded in one go
        assert worker.catch_up().result(timeout=120) == 1 + 2 + 2
        assert set(rows(store, ids[3])) == {ids[2], ids[1]}
        assert revisions(store) == (delivery, patch + 1)
        # again: only ids[0] (no base) has no rows; nothing recorded, nothing bumped
        assert worker.catch_up().result(timeout=120) == 0
        assert revisions(store) == (delivery, patch + 1)
        # a publish's job (both of its updates at once)
        new = [publish(store, js_bundle(7)), publish(store, js_bundle(8), channel="staging")]
        delivery, patch = revisions(store)
        assert worker.submit(new).result(timeout=120) == 2 + 0
        assert revisions(store) == (delivery, patch + 1)
    finally:
        worker.shutdown()


def test_a_stopped_batch_records_what_it_computed_and_leaves_the_rest(store: Store) -> None:
    ids = [publish(store, js_bundle(v)) for v in range(3)]
    _, patch = revisions(store)

    def stop() -> bool:  # shutdown arrives once the first update's patch is stored
        return any(store.blobs.root.rglob("*.bsdiff"))

    assert compute_patches(store.blobs, store.sessions, POLICY, ids[1:], stop=stop) == 1
    assert set(rows(store, ids[1])) == {ids[0]} and rows(store, ids[2]) == {}
    assert revisions(store)[1] == patch + 1
    with store.sessions() as session:
        assert ids[2] in updates_without_patches(session)  # the next catch-up's work


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (PatchPolicy(bases=2, max_bundle_bytes=50_000), "too-large"),
        (PatchPolicy(bases=2, memory_budget=1_000_000), "over-memory-budget"),
    ],
)
def test_bundles_past_the_size_cap_or_memory_budget_are_not_diffed(
    store: Store, policy: PatchPolicy, reason: str
) -> None:
    """Issue 15, item 15: a patch is computed only within a size cap and a memory budget; a
    skipped pair is recorded as done (not useful, size 0, no object) and noted in the stats."""
    base_data, target_data = js_bundle(1), js_bundle(2)  # about 120 kB each
    assert (
        patch_skip_reason(
            len(base_data),
            len(target_data),
            max_bundle_bytes=policy.max_bundle_bytes,
            memory_budget=policy.memory_budget,
        )
        == reason
    )
    publish(store, base_data)
    target = publish(store, target_data)
    assert compute_patches(store.blobs, store.sessions, policy, [target]) == 1
    (row,) = rows(store, target).values()
    assert (row.size, row.useful) == (0, False)
    assert store.blobs.size(patch_object_name(row.target_sha256, row.base_sha256)) is None
    assert compute_patches(store.blobs, store.sessions, policy, [target]) == 0  # done
    with store.sessions() as session:
        skipped = session.scalars(
            select(StatCounter.value).where(
                StatCounter.update_id == target, StatCounter.metric == "patch_skipped"
            )
        ).all()
    assert skipped == [1]


def test_bsdiff_memory_estimate_covers_a_measured_diff() -> None:
    """The estimate is at least the 15 bytes per base byte measured for bsdiff4 (plus both
    inputs), and defaults keep a 48 MiB bundle (the issue's 1.27 GB diff) out."""
    mib = 1024 * 1024
    assert bsdiff_memory(16 * mib, 16 * mib) >= (15 + 2) * 16 * mib
    assert (
        patch_skip_reason(
            48 * mib,
            48 * mib,
            max_bundle_bytes=DEFAULT_MAX_BUNDLE_BYTES,
            memory_budget=DEFAULT_MEMORY_BUDGET,
        )
        == "too-large"
    )
    assert (
        patch_skip_reason(
            8 * mib,
            8 * mib,
            max_bundle_bytes=DEFAULT_MAX_BUNDLE_BYTES,
            memory_budget=DEFAULT_MEMORY_BUDGET,
        )
        is None
    )
