"""Database transactions of the management API: projects, channels, blobs, publishing,
rollbacks, promotion and listing.

Functions take a ``Session`` inside the caller's transaction and never commit: the caller adds
its audit row and commits once, so each management action is all-or-nothing. A write to a
delivery table moves the delivery revision in the same transaction by itself (the session
listener in ``store/db.py``). Failures a client can
cause raise ``StoreError`` subclasses carrying an HTTP-like status; the API turns them into
problem documents.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import and_, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from lumora_ota.domain.model import AssetRecord, UpdateKind, UpdateRecord, UpdateStatus
from lumora_ota.store.models import (
    Base,
    Blob,
    Channel,
    DevicePin,
    Project,
    ProjectBlob,
    Update,
    UpdateAsset,
    UpdateGroup,
    utcnow,
)

DEFAULT_CHANNELS: tuple[str, ...] = ("production", "staging", "development", "preview")
KIND_UPDATE = "update"
KIND_ROLLBACK_TO_EMBEDDED = "rollback_to_embedded"
STATUS_ACTIVE = "active"
STATUS_ROLLED_BACK = "rolled_back"
_IN_CHUNK = 500
_PREVIOUS_SCAN = 50  # earlier updates a rollback looks through for different files


class StoreError(Exception):
    """A failure the client caused; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFound(StoreError):
    """The object does not exist."""

    status = 404


class Conflict(StoreError):
    """The request clashes with the stored state (slug taken, blobs missing, ...)."""

    status = 409


class Unprocessable(StoreError):
    """The request is well-formed but makes no sense for these objects."""

    status = 422


@dataclass(frozen=True)
class AssetSpec:
    """One file of a publish, as the publisher declared it."""

    key: str
    sha256: str
    content_type: str
    file_extension: str


@dataclass(frozen=True)
class PlatformSpec:
    """One platform's files of a publish."""

    launch_asset: AssetSpec
    assets: tuple[AssetSpec, ...] = ()

    def all_assets(self) -> tuple[AssetSpec, ...]:
        """The launch asset followed by the other assets."""
        return (self.launch_asset, *self.assets)


@dataclass(frozen=True)
class PublishSpec:
    """A whole publish: one update per platform, sharing one group."""

    project_id: str
    channel: str
    runtime_version: str
    platforms: dict[str, PlatformSpec]
    message: str = ""
    rollout: int = 100
    mandatory: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None


# ---------------------------------------------------------------- generic helpers


def insert_ignore(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """INSERT rows, silently skipping those whose key already exists (race-safe upsert)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        pg_stmt = postgresql.insert(model).values(list(rows)).on_conflict_do_nothing()
        session.execute(pg_stmt)
    else:
        lite_stmt = sqlite.insert(model).values(list(rows)).on_conflict_do_nothing()
        session.execute(lite_stmt)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


# ---------------------------------------------------------------- projects and channels


def find_project(session: Session, ref: str) -> Project | None:
    """The project whose id or slug is ``ref``."""
    return session.scalars(
        select(Project).where(or_(Project.id == ref, Project.slug == ref))
    ).first()


def list_projects(session: Session, project_ids: Collection[str] | None = None) -> list[Project]:
    """Projects by slug; only those in ``project_ids`` when given."""
    query = select(Project).order_by(Project.slug)
    if project_ids is not None:
        query = query.where(Project.id.in_(list(project_ids)))
    return list(session.scalars(query))


def create_project(session: Session, *, name: str, slug: str) -> Project:
    """Add a project with the default channels; Conflict when the slug is taken."""
    now = utcnow()
    project = Project(name=name, slug=slug, created_at=now)
    try:
        with session.begin_nested():
            session.add(project)
            session.flush()
    except IntegrityError:
        raise Conflict(f"project slug {slug!r} is taken") from None
    for channel_name in DEFAULT_CHANNELS:
        session.add(Channel(project_id=project.id, name=channel_name, created_at=now))
    session.flush()
    # Devices may ask for the new project at once: make every delivery cache re-read its
    # project map rather than answer 404 until its rate-limited re-read comes round.
    return project


def list_channels(session: Session, project_id: str) -> list[Channel]:
    """A project's channels by name."""
    return list(
        session.scalars(
            select(Channel).where(Channel.project_id == project_id).order_by(Channel.name)
        )
    )


def channel_by_name(session: Session, project_id: str, name: str) -> Channel | None:
    """The project's channel called ``name``."""
    return session.scalars(
        select(Channel).where(Channel.project_id == project_id, Channel.name == name)
    ).first()


def create_channel(session: Session, project_id: str, name: str) -> Channel:
    """Add a channel; Conflict when the project already has one of that name."""
    channel = Channel(project_id=project_id, name=name, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(channel)
            session.flush()
    except IntegrityError:
        raise Conflict(f"channel {name!r} already exists") from None
    return channel


def ensure_channel(session: Session, project_id: str, name: str) -> Channel:
    """The project's channel called ``name``, created when missing (even if a concurrent
    transaction creates it at the same moment)."""
    for _ in range(3):
        existing = channel_by_name(session, project_id, name)
        if existing is not None:
            return existing
        try:
            return create_channel(session, project_id, name)
        except Conflict:
            continue  # created concurrently: read it on the next pass
    raise Conflict(f"channel {name!r} could not be created; retry")


def rename_channel(session: Session, channel: Channel, name: str) -> Channel:
    """Rename a channel; Conflict when the new name is taken in its project."""
    if channel.name == name:
        return channel
    previous = channel.name
    try:
        with session.begin_nested():
            channel.name = name
            session.flush()
    except IntegrityError:
        raise Conflict(f"channel {name!r} already exists") from None
    # Devices pinned to the channel stay pinned to it (issue 19).
    session.execute(
        sql_update(DevicePin)
        .where(DevicePin.project_id == channel.project_id, DevicePin.channel == previous)
        .values(channel=name)
    )
    return channel


# ---------------------------------------------------------------- blobs


def record_blob(
    session: Session, project_id: str, sha256: str, size: int, md5: str | None = None
) -> None:
    """Note that ``project_id`` uploaded the blob ``sha256`` (idempotent, race-safe), with the
    md5 the server computed from the bytes."""
    row = {"sha256": sha256, "size": size, "created_at": utcnow(), "md5": md5}
    insert_ignore(session, Blob, [row])
    if md5 is not None:
        session.execute(
            sql_update(Blob).where(Blob.sha256 == sha256, Blob.md5.is_(None)).values(md5=md5)
        )
    insert_ignore(session, ProjectBlob, [{"project_id": project_id, "sha256": sha256}])


def project_has_blob(session: Session, project_id: str, sha256: str) -> bool:
    """Whether the project has uploaded ``sha256``."""
    return session.get(ProjectBlob, (project_id, sha256)) is not None


def blob_sizes(session: Session, project_id: str, hashes: Collection[str]) -> dict[str, int]:
    """Sizes of those of ``hashes`` the project has uploaded."""
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(set(hashes))):
        rows = session.execute(
            select(Blob.sha256, Blob.size)
            .join(ProjectBlob, ProjectBlob.sha256 == Blob.sha256)
            .where(ProjectBlob.project_id == project_id, Blob.sha256.in_(chunk))
        )
        found.update({sha: size for sha, size in rows})
    return found


def blob_md5s(session: Session, hashes: Collection[str]) -> dict[str, str]:
    """The md5 of those of ``hashes`` whose md5 is known."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(hashes))):
        rows = session.execute(
            select(Blob.sha256, Blob.md5).where(Blob.sha256.in_(chunk), Blob.md5.is_not(None))
        )
        found.update({sha: md5 for sha, md5 in rows if md5})
    return found


def missing_hashes(session: Session, project_id: str, hashes: Sequence[str]) -> list[str]:
    """Those of ``hashes`` the project has not uploaded yet, in request order, unique."""
    present = blob_sizes(session, project_id, hashes)
    return list(dict.fromkeys(h for h in hashes if h not in present))


# ---------------------------------------------------------------- updates


def get_update(session: Session, update_id: str) -> Update | None:
    """The update with its channel and assets loaded."""
    return session.scalars(
        select(Update).where(Update.id == update_id).options(selectinload(Update.assets))
    ).first()


def _new_group(session: Session, project_id: str, message: str, now: datetime) -> UpdateGroup:
    group = UpdateGroup(project_id=project_id, message=message, created_at=now)
    session.add(group)
    session.flush()
    return group


def publish(session: Session, spec: PublishSpec) -> list[Update]:
    """Insert one update per platform as one group; Conflict (with ``missing``) when any
    referenced blob has not been uploaded for the project."""
    referenced = {a.sha256 for p in spec.platforms.values() for a in p.all_assets()}
    sizes = blob_sizes(session, spec.project_id, referenced)
    missing = sorted(referenced - sizes.keys())
    if missing:
        raise Conflict(f"{len(missing)} referenced file(s) have not been uploaded", missing=missing)
    md5s = blob_md5s(session, referenced)
    channel = ensure_channel(session, spec.project_id, spec.channel)
    now = utcnow()
    group = _new_group(session, spec.project_id, spec.message, now)
    updates: list[Update] = []
    for platform, files in spec.platforms.items():
        update = Update(
            group_id=group.id,
            project_id=spec.project_id,
            channel_id=channel.id,
            platform=platform,
            runtime_version=spec.runtime_version,
            kind=KIND_UPDATE,
            message=spec.message,
            created_at=now,
            rollout=spec.rollout,
            mandatory=spec.mandatory,
            status=STATUS_ACTIVE,
            metadata_json=spec.metadata,
            extra_json=spec.extra,
            created_by=spec.created_by,
            assets=[
                UpdateAsset(
                    position=position,
                    key=asset.key,
                    sha256=asset.sha256,
                    size=sizes[asset.sha256],
                    content_type=asset.content_type,
                    file_extension=asset.file_extension,
                    is_launch_asset=position == 0,
                    md5=md5s.get(asset.sha256),
                )
                for position, asset in enumerate(files.all_assets())
            ],
        )
        update.channel = channel
        session.add(update)
        updates.append(update)
    session.flush()
    return updates


def _copy_update(
    session: Session,
    source: Update,
    *,
    channel: Channel,
    rollout: int,
    mandatory: bool,
    created_by: str | None,
) -> Update:
    """A new update (in a new group) serving exactly ``source``'s files: no upload needed."""
    now = utcnow()
    group = _new_group(session, source.project_id, source.message, now)
    copy = Update(
        group_id=group.id,
        project_id=source.project_id,
        channel_id=channel.id,
        platform=source.platform,
        runtime_version=source.runtime_version,
        kind=source.kind,
        message=source.message,
        created_at=now,
        rollout=rollout,
        mandatory=mandatory,
        status=STATUS_ACTIVE,
        source_update_id=source.id,
        metadata_json=dict(source.metadata_json),
        extra_json=dict(source.extra_json),
        created_by=created_by,
        assets=[
            UpdateAsset(
                position=a.position,
                key=a.key,
                sha256=a.sha256,
                size=a.size,
                content_type=a.content_type,
                file_extension=a.file_extension,
                is_launch_asset=a.is_launch_asset,
                md5=a.md5,
            )
            for a in source.assets
        ],
    )
    copy.channel = channel
    session.add(copy)
    session.flush()
    return copy


def mark_rolled_back(session: Session, update: Update) -> Update:
    """Mark ``update`` rolled back: it is served to no device from now on.

    Alone this only stops it spreading: expo-updates launches an update only when its
    ``createdAt`` is newer than the one it runs, so devices that run ``update`` keep it even
    when the server offers an older one. ``rollback`` moves them off it.
    """
    if update.status != STATUS_ROLLED_BACK:
        update.status = STATUS_ROLLED_BACK
        session.flush()
    return update


def _stream(update: Update) -> Any:
    """The condition selecting the updates that compete with ``update`` for its devices."""
    return and_(
        Update.project_id == update.project_id,
        Update.channel_id == update.channel_id,
        Update.platform == update.platform,
        Update.runtime_version == update.runtime_version,
        Update.id != update.id,
    )


def _launch_sha256(update: Update) -> str | None:
    return next((a.sha256 for a in update.assets if a.is_launch_asset), None)


def rollback(session: Session, update: Update, *, created_by: str | None) -> Update | None:
    """Roll ``update`` back and move the devices that run it to what came before it.

    What came before is the newest active update (or roll-back-to-embedded marker) of the
    same channel, platform and runtime version published before ``update`` with a rollout
    above 0 and another launch asset (earlier copies of the same bundle are as bad). It is
    republished as a new update (new id, ``createdAt`` now, rollout 100), as
    EAS does, because expo-updates ignores an update older than the one it runs; a marker,
    or nothing at all, gives a new roll-back-to-embedded marker instead. Returns that new
    update or marker, or None when nothing needs to move: ``update`` was rolled back already,
    or a newer active update replaces it for its devices anyway.
    """
    if update.status == STATUS_ROLLED_BACK:
        return None
    mark_rolled_back(session, update)
    newer = session.scalars(
        select(Update.id)
        .where(_stream(update), Update.status == STATUS_ACTIVE, Update.rollout > 0)
        .where(Update.created_at >= update.created_at)
        .limit(1)
    ).first()
    if newer is not None:
        return None
    # The same files published earlier (the update this one republished, say) are as bad.
    bad_launch = _launch_sha256(update)
    earlier = session.scalars(
        select(Update)
        .where(_stream(update), Update.status == STATUS_ACTIVE, Update.rollout > 0)
        .where(Update.created_at <= update.created_at)
        .order_by(Update.created_at.desc(), Update.id.desc())
        .options(selectinload(Update.assets))
        .limit(_PREVIOUS_SCAN)
    )
    previous = next(
        (u for u in earlier if u.kind != KIND_UPDATE or _launch_sha256(u) != bad_launch), None
    )
    if previous is None or previous.kind == KIND_ROLLBACK_TO_EMBEDDED:
        return _embedded_marker(session, update, created_by=created_by)
    copy = _copy_update(
        session,
        previous,
        channel=update.channel,
        rollout=100,
        mandatory=previous.mandatory,
        created_by=created_by,
    )
    return copy


def rollback_to(
    session: Session, update: Update, target: Update, *, created_by: str | None
) -> Update:
    """Roll ``update`` back and re-publish ``target`` (an earlier update of the same project,
    platform and runtime version) as a new update on ``update``'s channel."""
    if target.id == update.id:
        raise Unprocessable("an update cannot be rolled back to itself")
    if target.project_id != update.project_id:
        raise NotFound(f"update {target.id} not found")
    if target.kind != KIND_UPDATE:
        raise Unprocessable("the rollback target must be a published update, not a marker")
    if target.platform != update.platform or target.runtime_version != update.runtime_version:
        raise Unprocessable(
            "the rollback target must have the same platform and runtime version "
            f"({update.platform}, {update.runtime_version})"
        )
    mark_rolled_back(session, update)
    copy = _copy_update(
        session,
        target,
        channel=update.channel,
        rollout=100,
        mandatory=target.mandatory,
        created_by=created_by,
    )
    return copy


def rollback_to_embedded(session: Session, update: Update, *, created_by: str | None) -> Update:
    """Roll ``update`` back and record a roll-back-to-embedded marker for its channel,
    platform and runtime version: devices there return to the build's embedded update."""
    mark_rolled_back(session, update)
    return _embedded_marker(session, update, created_by=created_by)


def _embedded_marker(session: Session, update: Update, *, created_by: str | None) -> Update:
    """A new roll-back-to-embedded marker for ``update``'s channel, platform and runtime
    version (its ``createdAt``, now, is the directive's ``commitTime``)."""
    now = utcnow()
    group = _new_group(session, update.project_id, "Roll back to the embedded update", now)
    marker = Update(
        group_id=group.id,
        project_id=update.project_id,
        channel_id=update.channel_id,
        platform=update.platform,
        runtime_version=update.runtime_version,
        kind=KIND_ROLLBACK_TO_EMBEDDED,
        message=group.message,
        created_at=now,
        rollout=100,
        mandatory=False,
        status=STATUS_ACTIVE,
        source_update_id=update.id,
        metadata_json={},
        extra_json={},
        created_by=created_by,
        assets=[],
    )
    marker.channel = update.channel
    session.add(marker)
    session.flush()
    return marker


def promote(
    session: Session,
    update: Update,
    channel: Channel,
    *,
    rollout: int = 100,
    mandatory: bool | None = None,
    created_by: str | None,
) -> Update:
    """Publish ``update``'s files again on another channel, as a new update."""
    if update.kind != KIND_UPDATE:
        raise Unprocessable("only published updates can be promoted")
    if update.status != STATUS_ACTIVE:
        raise Conflict("a rolled-back update cannot be promoted")
    if channel.id == update.channel_id:
        raise Unprocessable(f"the update is already on channel {channel.name!r}")
    copy = _copy_update(
        session,
        update,
        channel=channel,
        rollout=rollout,
        mandatory=update.mandatory if mandatory is None else mandatory,
        created_by=created_by,
    )
    return copy


def patch_update(
    session: Session, update: Update, *, rollout: int | None, mandatory: bool | None
) -> Update:
    """Change an update's rollout percentage and/or mandatory flag."""
    if rollout is not None:
        update.rollout = rollout
    if mandatory is not None:
        update.mandatory = mandatory
    session.flush()
    return update


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class UpdateFilter:
    """Which updates ``list_updates`` returns. ``project_ids`` None means every project."""

    project_ids: Collection[str] | None = None
    channel: str | None = None
    platform: str | None = None
    runtime_version: str | None = None


def encode_cursor(update: Update) -> str:
    """An opaque cursor pointing just past ``update`` in newest-first order."""
    raw = f"{update.created_at.astimezone(UTC).isoformat()}|{update.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points past; StoreError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, update_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(when)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise StoreError("invalid cursor") from None
    if created_at.tzinfo is None:
        raise StoreError("invalid cursor")
    return created_at.astimezone(UTC), update_id


def list_updates(
    session: Session, filters: UpdateFilter, *, limit: int, cursor: str | None = None
) -> tuple[list[Update], str | None]:
    """Updates newest first, at most ``limit``, and the cursor of the next page (or None)."""
    query = select(Update).options(selectinload(Update.assets))
    if filters.project_ids is not None:
        query = query.where(Update.project_id.in_(list(filters.project_ids)))
    if filters.channel is not None:
        query = query.where(
            Update.channel_id.in_(select(Channel.id).where(Channel.name == filters.channel))
        )
    if filters.platform is not None:
        query = query.where(Update.platform == filters.platform)
    if filters.runtime_version is not None:
        query = query.where(Update.runtime_version == filters.runtime_version)
    if cursor:
        created_at, update_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Update.created_at < created_at,
                and_(Update.created_at == created_at, Update.id < update_id),
            )
        )
    query = query.order_by(Update.created_at.desc(), Update.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query).unique())
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit and page else None
    return page, next_cursor


def current_updates(session: Session, project_id: str) -> dict[str, dict[str, dict[str, Update]]]:
    """Per channel id, platform and runtime version: the newest active update or marker."""
    rows = session.scalars(
        select(Update)
        .where(Update.project_id == project_id, Update.status == STATUS_ACTIVE)
        .order_by(Update.created_at.desc(), Update.id.desc())
    )
    current: dict[str, dict[str, dict[str, Update]]] = {}
    for update in rows:
        per_platform = current.setdefault(update.channel_id, {}).setdefault(update.platform, {})
        per_platform.setdefault(update.runtime_version, update)
    return current


# ---------------------------------------------------------------- groups and deletion


def group_updates(session: Session, group_id: str) -> list[Update]:
    """The updates of one publish group (one per platform), with their assets, by platform."""
    return list(
        session.scalars(
            select(Update)
            .where(Update.group_id == group_id)
            .options(selectinload(Update.assets))
            .order_by(Update.platform, Update.id)
        )
    )


def delete_updates(session: Session, updates: Sequence[Update]) -> None:
    """Delete ``updates`` (their asset rows and patches go with them; the files stay, other
    updates may share them) and any group left empty. Devices move to what remains eligible:
    the delivery revision is bumped."""
    groups = {u.group_id for u in updates}
    for update in updates:
        session.delete(update)
    session.flush()
    for group_id in groups:
        remaining = session.scalar(select(Update.id).where(Update.group_id == group_id).limit(1))
        group = session.get(UpdateGroup, group_id) if remaining is None else None
        if group is not None:
            session.delete(group)
    session.flush()


def set_channel_paused(session: Session, channel: Channel, paused: bool) -> Channel:
    """Pause (serve no update on) or resume a channel, as EAS's ``channel:pause``."""
    if channel.paused != paused:
        channel.paused = paused
        session.flush()
    return channel


def channel_histories(
    session: Session, project_id: str, channel_id: str | None = None
) -> dict[str, dict[str, list[UpdateRecord]]]:
    """Per channel id and platform: the updates (rolled-back ones too) newest first, as
    selection records without assets (one Core query, like the delivery cache's)."""
    query = (
        select(
            Update.id,
            Update.group_id,
            Update.channel_id,
            Channel.name,
            Update.platform,
            Update.runtime_version,
            Update.created_at,
            Update.kind,
            Update.message,
            Update.rollout,
            Update.mandatory,
            Update.status,
            Update.source_update_id,
        )
        .join(Channel, Update.channel_id == Channel.id)
        .where(Update.project_id == project_id)
        .order_by(Update.created_at.desc(), Update.id.desc())
    )
    if channel_id is not None:
        query = query.where(Update.channel_id == channel_id)
    histories: dict[str, dict[str, list[UpdateRecord]]] = {}
    for row in session.execute(query):
        record = UpdateRecord(
            id=row.id,
            group_id=row.group_id,
            project_id=project_id,
            channel=row.name,
            platform=row.platform,
            runtime_version=row.runtime_version,
            created_at=row.created_at,
            kind=cast(UpdateKind, row.kind),
            message=row.message,
            rollout=row.rollout,
            mandatory=row.mandatory,
            status=cast(UpdateStatus, row.status),
            source_update_id=row.source_update_id,
        )
        histories.setdefault(row.channel_id, {}).setdefault(row.platform, []).append(record)
    return histories


# ---------------------------------------------------------------- records


def _asset_record(asset: UpdateAsset) -> AssetRecord:
    return AssetRecord(
        key=asset.key,
        sha256=asset.sha256,
        size=asset.size,
        content_type=asset.content_type,
        file_extension=asset.file_extension,
        md5=asset.md5,
    )


def to_record(update: Update) -> UpdateRecord:
    """The domain record of an update (its channel and assets must be loaded)."""
    launch = next((a for a in update.assets if a.is_launch_asset), None)
    return UpdateRecord(
        id=update.id,
        group_id=update.group_id,
        project_id=update.project_id,
        channel=update.channel.name,
        platform=update.platform,
        runtime_version=update.runtime_version,
        created_at=update.created_at,
        kind=cast(UpdateKind, update.kind),
        message=update.message,
        rollout=update.rollout,
        mandatory=update.mandatory,
        status=cast(UpdateStatus, update.status),
        launch_asset=_asset_record(launch) if launch is not None else None,
        assets=tuple(_asset_record(a) for a in update.assets if not a.is_launch_asset),
        metadata=dict(update.metadata_json or {}),
        extra=dict(update.extra_json or {}),
        source_update_id=update.source_update_id,
    )
