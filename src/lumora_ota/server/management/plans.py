"""Management API: rollout plans (``/updates/{id}/rollout-plan``), and the timer that runs
them (``store/plans.py``) in every server process.

``{id}`` is an update or an update group (every update of the group gets the plan).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.api_models import ClearedAnswer, Items, PlanAnswer
from lumora_ota.domain.manifest import iso_time
from lumora_ota.domain.plans import MAX_STEP_SECONDS, MAX_STEPS, Plan, PlanError
from lumora_ota.server.context import AppContext, app_context
from lumora_ota.server.lifecycle import Lifecycle
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    WriteSession,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.server.management.responses import answer
from lumora_ota.server.problems import ProblemError, not_found
from lumora_ota.stats_report import HealthThresholds, health_thresholds, launch_counts, rate
from lumora_ota.store import repository
from lumora_ota.store.models import RolloutPlan, Update
from lumora_ota.store.plans import (
    HALTED,
    clear_plan,
    next_step_at,
    plans_for,
    resume_plan,
    run_plans,
    set_plan,
)

log = logging.getLogger("lumora_ota.plans")

router = APIRouter(tags=["rollout plans"], route_class=GuardedJSONRoute)


class PlanRequest(RequestModel):
    """Body of ``PUT /updates/{id}/rollout-plan``."""

    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100, strict=True)]],
        Field(min_length=1, max_length=MAX_STEPS),
    ]
    step_seconds: Annotated[int, Field(ge=0, le=MAX_STEP_SECONDS, strict=True)]
    min_launches: Annotated[int, Field(ge=0, le=10_000_000, strict=True)] = 0
    max_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.05


def targets(session: Session, principal: Principal, ref: str) -> list[Update]:
    """The updates ``ref`` names (an update, or every update of a group); 404 otherwise."""
    upd = repository.get_update(session, ref)
    found = [upd] if upd is not None else repository.group_updates(session, ref)
    if not found or not principal.can_see(found[0].project_id):
        raise not_found(f"update or update group {ref!r}")
    return found


def plan_json(row: RolloutPlan, upd: Update, figures: tuple[int, int]) -> dict[str, Any]:
    """The API shape of a plan, with the gate figures ``(successes, failures)``."""
    successes, failures = figures
    nxt = next_step_at(row)
    last = row.step_index >= len(row.steps) - 1
    return {
        "updateId": upd.id,
        "groupId": upd.group_id,
        "platform": upd.platform,
        "steps": list(row.steps),
        "stepSeconds": row.step_seconds,
        "minLaunches": row.min_launches,
        "maxFailureRate": row.max_failure_rate,
        "status": row.status,
        "stepIndex": row.step_index,
        "rollout": upd.rollout,
        "nextStep": None if last else row.steps[row.step_index + 1],
        "stepStartedAt": iso_time(row.step_started_at),
        "nextStepAt": iso_time(nxt) if nxt is not None else None,
        "haltReason": row.halt_reason,
        "gate": {
            "launches": successes + failures,
            "failures": failures,
            "failureRate": rate(failures, successes + failures),
        },
    }


def _answer(
    session: Session, updates: list[Update], thresholds: HealthThresholds
) -> dict[str, Any]:
    rows = plans_for(session, [u.id for u in updates])
    return {
        "items": [
            plan_json(rows[u.id], u, launch_counts(session, u.project_id, u.id, thresholds))
            for u in updates
            if u.id in rows
        ]
    }


def _thresholds(request: Request) -> HealthThresholds:
    return health_thresholds(app_context(request).settings)


@router.get(
    "/updates/{ref}/rollout-plan",
    summary="The rollout plan(s) of an update or group",
    **answer(Items[PlanAnswer]),
)
def get_plan(
    ref: str, request: Request, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """``{"items": [plan, ...]}``: one plan per update that has one, with its gate figures."""
    updates = targets(session, principal, ref)
    return _answer(session, updates, _thresholds(request))


@router.put(
    "/updates/{ref}/rollout-plan",
    summary="Give an update or group a rollout plan",
    **answer(Items[PlanAnswer]),
)
def put_plan(
    ref: str,
    body: PlanRequest,
    request: Request,
    principal: CurrentPrincipal,
    session: WriteSession,
) -> dict[str, Any]:
    """Start the plan now: the rollout goes to the first step at once, then moves one step
    per ``stepSeconds`` while the gate holds (``domain/plans.py``); replaces any plan."""
    updates = targets(session, principal, ref)
    principal.require("publish")
    try:
        plan = Plan(
            steps=tuple(body.steps),
            step_seconds=body.step_seconds,
            min_launches=body.min_launches,
            max_failure_rate=body.max_failure_rate,
        )
    except PlanError as exc:
        raise ProblemError(422, str(exc)) from None
    for upd in updates:
        if upd.kind != repository.KIND_UPDATE or upd.status != repository.STATUS_ACTIVE:
            raise ProblemError(
                409, f"update {upd.id} is a roll-back marker or rolled back: it takes no plan"
            )
    for upd in updates:
        set_plan(session, upd, plan)
        record_audit(
            session,
            principal,
            "rolloutPlan.set",
            project_id=upd.project_id,
            target=upd.id,
            detail=body.model_dump(by_alias=True),
        )
    session.commit()
    return _answer(session, updates, _thresholds(request))


@router.delete(
    "/updates/{ref}/rollout-plan",
    summary="Remove the rollout plan(s)",
    **answer(ClearedAnswer),
)
def delete_plan(ref: str, principal: CurrentPrincipal, session: WriteSession) -> dict[str, Any]:
    """The rollout stays where the plan left it. Answers ``{"cleared": [update ids]}``."""
    updates = targets(session, principal, ref)
    principal.require("publish")
    cleared = [u.id for u in updates if clear_plan(session, u)]
    for uid in cleared:
        record_audit(
            session, principal, "rolloutPlan.clear", project_id=updates[0].project_id, target=uid
        )
    session.commit()
    return {"cleared": cleared}


@router.post(
    "/updates/{ref}/rollout-plan/resume",
    summary="Resume a halted rollout plan",
    **answer(Items[PlanAnswer]),
)
def resume(
    ref: str, request: Request, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Continue halted plans from their current step (its soak time starts again; a paused
    update, rollout 0, goes back to the step's rollout). 409 when none is halted. A plan whose
    failure rate is still above the maximum halts again."""
    updates = targets(session, principal, ref)
    principal.require("publish")
    rows = plans_for(session, [u.id for u in updates])
    halted = [row for row in rows.values() if row.status == HALTED]
    if not halted:
        raise ProblemError(409, f"no halted rollout plan on {ref!r}")
    for row in halted:
        resume_plan(session, row)
        record_audit(
            session,
            principal,
            "rolloutPlan.resume",
            project_id=row.project_id,
            target=row.update_id,
        )
    session.commit()
    return _answer(session, updates, _thresholds(request))


class PlanRunner:
    """Looks at the active plans every ``interval`` seconds, in a worker thread."""

    def __init__(
        self, sessions: sessionmaker[Session], thresholds: HealthThresholds, interval: float
    ) -> None:
        self._sessions = sessions
        self._thresholds = thresholds
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(run_plans, self._sessions, self._thresholds)
            except Exception:
                log.exception("rollout plans failed; will retry")
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        """Start the periodic task."""
        self._task = asyncio.create_task(self._run(), name="lumora-rollout-plans")

    async def stop(self) -> None:
        """Stop it (a run in progress finishes in its thread)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def install(ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Start the plan runner with the process's health thresholds."""
    thresholds = health_thresholds(ctx.settings)
    runner = PlanRunner(ctx.sessions, thresholds, ctx.settings.plan_interval)
    lifecycle.on_start(runner.start)
    lifecycle.on_stop(runner.stop)
