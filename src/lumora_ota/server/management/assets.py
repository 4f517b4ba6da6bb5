"""Management API: which files the server lacks, and streamed, hash-checked uploads.

``PUT /assets/{sha256}`` streams the body into the blob store (a temporary object, hash- and
size-checked, then moved to its final name) and only then records the ``Blob`` and
``ProjectBlob`` rows, so ``POST /assets/missing`` reports a file as present only once it is
complete. Rows are inserted with insert-or-ignore, so concurrent uploads of one file by two
publishers both succeed. An upload that stalls (no byte for ``settings.upload_idle_timeout``
seconds) is answered 408 and its temporary object removed, so a slow-drip client cannot hold
a worker and a temporary file forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.routing import APIRoute
from pydantic import Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from lumora_ota.api_models import MissingAnswer, UploadAnswer
from lumora_ota.server.context import app_context
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    visible_project,
)
from lumora_ota.server.management.guards import (
    DRAIN_LIMIT,
    GuardedJSONRoute,
    RequestModel,
    drain_body,
)
from lumora_ota.server.management.publish import SHA256_PATTERN
from lumora_ota.server.management.responses import also, answer
from lumora_ota.server.problems import ProblemError
from lumora_ota.store import repository
from lumora_ota.store.blobs import HashMismatch, SizeExceeded
from lumora_ota.store.digests import Md5Tap
from lumora_ota.store.outage import StorageFull

router = APIRouter(tags=["assets"], route_class=GuardedJSONRoute)

MAX_HASHES = 10_000
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]


class MissingRequest(RequestModel):
    """Body of ``POST /assets/missing``."""

    project: Annotated[str, Field(min_length=1, max_length=64)]
    hashes: Annotated[list[Sha256], Field(max_length=MAX_HASHES)]


@router.post(
    "/assets/missing",
    summary="Which of these SHA-256 hashes must still be uploaded",
    **answer(MissingAnswer),
)
def missing_assets(
    body: MissingRequest, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The hashes this project has not uploaded (completely) yet."""
    project = visible_project(session, principal, body.project)
    principal.require("publish")
    return {"missing": repository.missing_hashes(session, project.id, body.hashes)}


def _upload_target(
    request: Request, principal: Principal, project_ref: str, sha256: str
) -> tuple[str, bool]:
    """The project id and whether it already has the blob (404/403 as for any write)."""
    session: Session
    with app_context(request).sessions() as session:
        session.connection(execution_options={"readonly": True})
        project = visible_project(session, principal, project_ref)
        principal.require("publish")
        return project.id, repository.project_has_blob(session, project.id, sha256)


def _record_upload(
    request: Request, principal: Principal, project_id: str, sha256: str, size: int, md5: str
) -> None:
    with app_context(request).sessions() as session:
        repository.record_blob(session, project_id, sha256, size, md5)
        record_audit(
            session,
            principal,
            "asset.upload",
            project_id=project_id,
            target=sha256,
            detail={"size": size},
        )
        session.commit()


class UploadStalled(Exception):
    """No byte of the upload arrived within the idle timeout."""


async def _drain(body: AsyncIterator[bytes], cap: int) -> None:
    """``drain_body``, giving up quietly on a stalled client (it gets the answer anyway)."""
    with contextlib.suppress(UploadStalled):
        await drain_body(body, cap)


async def _with_idle_timeout(body: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The chunks of ``body``; ``UploadStalled`` when the next one takes over ``seconds``."""
    chunks = aiter(body)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout=seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled from None
        yield chunk


async def upload_asset(
    request: Request,
    principal: CurrentPrincipal,
    sha256: Annotated[str, Path(pattern=SHA256_PATTERN, description="lowercase hex SHA-256")],
    project: Annotated[str, Query(min_length=1, max_length=64, description="Project id or slug")],
) -> JSONResponse:
    """Upload one file, streamed: 201 when stored, 200 when the project already had it,
    400 when the bytes do not hash to ``sha256``, 413 past the size limit."""
    project_id, present = await run_in_threadpool(
        _upload_target, request, principal, project, sha256
    )
    settings = app_context(request).settings
    limit = settings.max_upload_bytes
    body = _with_idle_timeout(request.stream(), settings.upload_idle_timeout)
    if present:
        await _drain(body, limit)
        return JSONResponse({"sha256": sha256, "created": False}, status_code=200)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _drain(body, DRAIN_LIMIT)
        raise ProblemError(413, f"the upload exceeds the {limit}-byte limit")
    tap = Md5Tap(body)  # the manifest key of the file (store/digests.py)
    try:
        stored = await app_context(request).blobs.put_stream(sha256, tap.chunks(), max_bytes=limit)
    except UploadStalled:
        idle = settings.upload_idle_timeout
        raise ProblemError(
            408, f"no upload data arrived for {idle:g} s", headers={"connection": "close"}
        ) from None
    except SizeExceeded:
        await _drain(body, DRAIN_LIMIT)
        raise ProblemError(413, f"the upload exceeds the {limit}-byte limit") from None
    except HashMismatch as exc:
        raise ProblemError(400, str(exc), title="Hash mismatch") from None
    except StorageFull:
        # Read the rest so the client gets the 507 rather than a broken pipe; nothing stored.
        await _drain(body, DRAIN_LIMIT)
        raise
    await run_in_threadpool(
        _record_upload, request, principal, project_id, sha256, stored.size, tap.hexdigest()
    )
    return JSONResponse({"sha256": sha256, "size": stored.size, "created": True}, status_code=201)


router.add_api_route(
    "/assets/{sha256}",
    upload_asset,
    methods=["PUT"],
    summary="Upload a file by its SHA-256 (raw body, streamed)",
    status_code=201,
    **answer(UploadAnswer),
    responses=also(200, UploadAnswer, "The project had the file already"),
    # The body is a file, not JSON: stream it instead of guarding it as JSON.
    route_class_override=APIRoute,
)
