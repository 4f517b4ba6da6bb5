"""The steps both device protocols share: find the project, select, sign, count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from lumora_ota.domain.selection import NO_UPDATE, Selection, SelectionRequest, select_update
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.server.problems import ProblemError
from lumora_ota.signing import Signer
from lumora_ota.store.outage import DependencyUnavailable

MAX_HEADER_ID_LENGTH = 200
MAX_RUNTIME_VERSION_LENGTH = 255
MAX_FAILED_IDS = 50


class CheckRecorder(Protocol):
    """The part of the stats recorder (``AppContext.stats``) the device side uses."""

    def record_check(
        self,
        *,
        project_id: str,
        channel: str,
        platform: str,
        served_update_id: str | None,
        device_id: str | None = None,
        current_update_id: str | None = None,
        embedded_update_id: str | None = None,
        failed_update_ids: tuple[str, ...] = (),
        source: str = "",
        known: Callable[[str], bool] = ...,
        reason: dict[str, Any] | None = None,
    ) -> None: ...


async def resolve_project(cache: DeliveryCache, ref: str) -> str:
    """The id of the project named by id or slug ``ref``; 404 problem when unknown."""
    project_id = await cache.project_id(ref)
    if project_id is None:
        raise ProblemError(404, f"project {ref!r} not found")
    return project_id


async def apply_pin(
    cache: DeliveryCache, project_id: str, request: SelectionRequest
) -> SelectionRequest:
    """The request with the channel its device is pinned to (issue 19), else as it is."""
    if not request.device_id:
        return request
    channel = (await cache.pins(project_id)).get(request.device_id)
    if channel is None or channel == request.channel:
        return request
    return replace(request, channel=channel)


async def select_for_device(
    cache: DeliveryCache, project_id: str, request: SelectionRequest
) -> Selection:
    """Run the selection engine over the cached candidates of the device's channel.

    The answer carries the full record (assets, metadata) of the update it names.
    """
    selection, _shareable = await select_shared(cache, project_id, request)
    return selection


RequestShape = tuple[str, str, str, str, str | None, str | None, frozenset[str]]


def request_shape(project_id: str, request: SelectionRequest) -> RequestShape:
    """Everything of a (pinned) request that selection reads, but its device id: devices
    sending the same shape get the same answer whenever ``select_shared`` says it is
    shareable. The channel is the one after ``apply_pin``, so a pinned device has the shape of
    its pinned channel."""
    return (
        project_id,
        request.channel,
        request.platform,
        request.runtime_version,
        request.current_update_id,
        request.embedded_update_id,
        request.failed_update_ids,
    )


async def select_shared(
    cache: DeliveryCache, project_id: str, request: SelectionRequest
) -> tuple[Selection, bool]:
    """``select_for_device``'s answer and whether it is *shareable*: the same for every
    device sending the same ``request_shape`` for as long as the cache generation lives.

    It is when no candidate is partially rolled out (the device id enters selection only
    through ``in_rollout``) and nothing came from the outage snapshot (whose answers the next
    successful load must replace). Pins are applied before (``apply_pin``), and the pinned
    channel is part of the shape; rollout plans, pins and publishes all move the delivery
    revision, which drops the generation and every memo in it.
    """
    stale_before = cache.stale_answers
    candidates = await cache.candidates(
        project_id, request.channel, request.platform, request.runtime_version
    )
    selection = select_update(candidates, request)
    if selection.update is not None:
        full = await cache.full_update(selection.update)
        if full is None:  # deleted since the candidates were loaded; the next reload drops it
            selection = NO_UPDATE
        else:
            selection = Selection(selection.kind, full, selection.is_mandatory)
    return selection, candidates.device_independent and cache.stale_answers == stale_before


async def required_identity(cache: DeliveryCache, project_id: str) -> Signer:
    """The project's signing identity for a request that demands signatures.

    A client that expects signatures rejects unsigned answers anyway, so a project without a
    key is a configuration error worth saying out loud (as Expo's reference server does).
    """
    identity = await cache.signing_identity(project_id)
    if identity is None:
        raise ProblemError(
            400,
            "code signing was requested, but this project has no signing key; "
            "run `lumora codesigning generate` for it",
            title="Code signing not configured",
        )
    return identity


async def record_check(
    recorder: CheckRecorder,
    cache: DeliveryCache,
    project_id: str,
    request: SelectionRequest,
    selection: Selection,
    source: str,
) -> None:
    """Count the answered check in the statistics (in memory; flushed in batches).

    What devices can make the server store is bounded here (security issue 15): a channel the
    project does not have is counted as "" (random names add no rows), and only update ids of
    the project are passed on as running or failed (the id set comes from the delivery cache:
    no query in steady state).
    """
    served = selection.update.id if selection.kind == "update" and selection.update else None
    channel = request.channel if cache.known_channel(project_id, request.channel) else ""
    known: Callable[[str], bool] = _any_id
    if request.device_id and (request.current_update_id or request.failed_update_ids):
        try:
            known = (await cache.update_ids(project_id)).__contains__
        except DependencyUnavailable:
            # The database is out and this project's ids were never loaded: the device is
            # still answered, but the ids it names cannot be checked, so none is counted.
            known = _no_id
    reason = None
    if served and request.device_id and selection.update is not None:
        # Why this device gets this update (the device timeline): kept once per device and
        # update by the served-to record. The pins are in memory (loaded for the selection).
        pins = await cache.pins(project_id)
        reason = {
            "channel": request.channel,
            "pinned": pins.get(request.device_id) == request.channel,
            "rollout": selection.update.rollout,
        }
    recorder.record_check(
        reason=reason,
        project_id=project_id,
        channel=channel,
        platform=request.platform,
        served_update_id=served,
        device_id=request.device_id,
        current_update_id=request.current_update_id,
        embedded_update_id=request.embedded_update_id,
        failed_update_ids=tuple(request.failed_update_ids),
        source=source,
        known=known,
    )


def _any_id(_update_id: str) -> bool:
    return True


def _no_id(_update_id: str) -> bool:
    return False


def bounded(value: str | None, name: str, limit: int = MAX_HEADER_ID_LENGTH) -> str | None:
    """``value`` stripped, None when empty; 400 problem when longer than ``limit``."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > limit:
        raise ProblemError(400, f"{name} is longer than {limit} characters")
    return value or None
