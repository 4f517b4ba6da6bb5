"""Management API: ``POST /updates/publish`` — commit an update group in one transaction.

The publisher first uploads what ``POST /assets/missing`` reports (see ``assets.py``); the
publish then only references files by SHA-256, every one of which must already be uploaded
for the project. The gzip variant of each new compressible file is stored before the commit
(so no device ever gets an uncompressed bundle it could have had compressed); brotli, which
takes seconds, follows after the commit on a background thread.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, field_validator, model_validator

from lumora_ota.api_models import PublishAnswer
from lumora_ota.domain.paths import file_and_directory_problem
from lumora_ota.server.context import AppContext, app_context
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import CurrentPrincipal, WriteSession, visible_project
from lumora_ota.server.management.deployments import CHANNEL_PATTERN
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel, store_errors
from lumora_ota.server.management.responses import answer
from lumora_ota.server.management.updates import Flag, PlatformName, Rollout, update_json
from lumora_ota.store import repository, webhooks
from lumora_ota.store.digests import fill_missing_md5
from lumora_ota.store.patches import schedule_patches
from lumora_ota.store.variants import gzip_before_publish

router = APIRouter(tags=["publish"], route_class=GuardedJSONRoute)

SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_KEY_BYTES = 1024
MAX_ASSETS_PER_PLATFORM = 10_000

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_EXTENSION = re.compile(r"^(\.[A-Za-z0-9_-]{1,16}){1,2}$")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(\s*;[ -~]*)?$")


def asset_key_problem(key: str) -> str | None:
    """Why ``key`` is not a safe relative path, or None when it is."""
    if not key:
        return "must not be empty"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"must be at most {MAX_KEY_BYTES} bytes"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "must not contain NUL or control characters"
    if "\\" in key:
        return "must not contain backslashes"
    if key.startswith("/"):
        return "must be relative (no leading '/')"
    if _DRIVE_LETTER.match(key):
        return "must not start with a drive letter"
    segments = key.split("/")
    if any(s == ".." for s in segments):
        return "must not contain '..' segments"
    if any(s in ("", ".") for s in segments):
        return "must not contain empty or '.' segments"
    if posixpath.normpath(key) != key:
        return "must be a normalised path"
    return None


class AssetIn(RequestModel):
    """One file of a publish."""

    key: str
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    content_type: Annotated[str, Field(min_length=3, max_length=255)] = "application/octet-stream"
    file_extension: Annotated[str, Field(max_length=32)] = ""

    @field_validator("key")
    @classmethod
    def _safe_key(cls, key: str) -> str:
        problem = asset_key_problem(key)
        if problem:
            raise ValueError(f"asset key {key[:80]!r} {problem}")
        return key

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        if not _CONTENT_TYPE.fullmatch(value):
            raise ValueError(f"invalid content type {value[:80]!r}")
        return value

    @field_validator("file_extension")
    @classmethod
    def _extension(cls, value: str) -> str:
        if value and not value.startswith("."):
            value = "." + value  # expo export metadata writes "png"; manifests want ".png"
        if value and not _EXTENSION.fullmatch(value):
            raise ValueError(f"invalid file extension {value[:40]!r}")
        return value


class PlatformIn(RequestModel):
    """One platform's files."""

    launch_asset: AssetIn
    assets: Annotated[list[AssetIn], Field(max_length=MAX_ASSETS_PER_PLATFORM)] = []

    @model_validator(mode="after")
    def _unique_keys(self) -> PlatformIn:
        seen: set[str] = set()
        for asset in (self.launch_asset, *self.assets):
            if asset.key in seen:
                raise ValueError(f"duplicate asset key {asset.key[:80]!r}")
            seen.add(asset.key)
        # The Lumora SDK installs files under their keys: "a" and "a/b" cannot both be.
        problem = file_and_directory_problem(seen)
        if problem:
            raise ValueError(problem)
        return self


class PublishRequest(RequestModel):
    """Body of ``POST /updates/publish`` (see docs/CONTRACTS.md)."""

    project: Annotated[str, Field(min_length=1, max_length=64)]
    channel: Annotated[str, Field(pattern=CHANNEL_PATTERN)] = "production"
    runtime_version: Annotated[
        str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]
    message: Annotated[str, Field(max_length=10_000)] = ""
    rollout: Rollout = 100
    mandatory: Flag = False
    platforms: Annotated[dict[PlatformName, PlatformIn], Field(min_length=1)]
    extra: dict[str, Any] = {}
    metadata: dict[str, Any] = {}


def _asset_spec(asset: AssetIn) -> repository.AssetSpec:
    return repository.AssetSpec(
        key=asset.key,
        sha256=asset.sha256,
        content_type=asset.content_type,
        file_extension=asset.file_extension,
    )


@router.post(
    "/updates/publish",
    status_code=201,
    summary="Publish an update group",
    **answer(PublishAnswer),
)
def publish_updates(
    body: PublishRequest, request: Request, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Create one update per platform, atomically; 409 with ``missing`` when a referenced
    file has not been uploaded for the project."""
    ctx = app_context(request)
    project = visible_project(session, principal, body.project)
    principal.require("publish")
    spec = repository.PublishSpec(
        project_id=project.id,
        channel=body.channel,
        runtime_version=body.runtime_version,
        message=body.message,
        rollout=body.rollout,
        mandatory=body.mandatory,
        metadata=body.metadata,
        extra=body.extra,
        created_by=principal.key_id,
        platforms={
            platform: repository.PlatformSpec(
                launch_asset=_asset_spec(files.launch_asset),
                assets=tuple(_asset_spec(a) for a in files.assets),
            )
            for platform, files in body.platforms.items()
        },
    )
    # Blobs uploaded before the server kept md5s (or by an older process during an upgrade)
    # get theirs now: every manifest key is the md5 of the file (store/digests.py).
    fill_missing_md5(
        session.connection(),
        ctx.blobs,
        {a.sha256 for files in spec.platforms.values() for a in files.all_assets()},
    )
    with store_errors():
        updates = repository.publish(session, spec)
    # Compressed before visible: devices asking right after the commit get gzip at least.
    gzip_before_publish(session, ctx.blobs, _spec_files(spec))
    webhooks.emit(
        session,
        project.id,
        "update.published",
        {
            "groupId": updates[0].group_id,
            "channel": body.channel,
            "runtimeVersion": body.runtime_version,
            "message": body.message,
            "updates": [webhooks.update_data(u) for u in updates],
        },
    )
    record_audit(
        session,
        principal,
        "update.publish",
        project_id=project.id,
        target=updates[0].group_id,
        detail={"channel": body.channel, "updates": {u.platform: u.id for u in updates}},
    )
    session.commit()
    _queue_variants(ctx, spec)
    schedule_patches(ctx, [u.id for u in updates])  # delta patches, in the background (#10)
    return {
        "groupId": updates[0].group_id,
        "updates": [update_json(u, ctx.settings) for u in updates],
    }


def _spec_files(spec: repository.PublishSpec) -> list[tuple[str, str, str]]:
    """(sha256, content type, file extension) of every file of a publish."""
    return [
        (a.sha256, a.content_type, a.file_extension)
        for files in spec.platforms.values()
        for a in files.all_assets()
    ]


def _queue_variants(ctx: AppContext, spec: repository.PublishSpec) -> None:
    ctx.variant_worker.submit(_spec_files(spec))


def install(ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Start the background worker that precomputes compressed variants after publishes."""
    worker = ctx.variant_worker

    async def stop() -> None:
        worker.shutdown()

    lifecycle.on_stop(stop)
