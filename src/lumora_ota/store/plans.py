"""Rollout plans in the database: setting, clearing, resuming, and running them.

``run_plans`` is called by every server process on a timer (``server/management/plans.py``).
Each plan is handled in its own transaction, and its step only moves through
``UPDATE rollout_plans ... WHERE step_index = <old> AND status = 'active'``: on PostgreSQL a
second process doing the same waits for the first one's commit, re-reads the row and updates
nothing; on SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (``store/db.py``)
so they queue. Either way each advance or halt happens, is audited and fires its webhook
event exactly once, and progress lives in the row, so it survives restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.domain.plans import Action, Decision, Plan, decide
from lumora_ota.stats_report import HealthThresholds, launch_counts
from lumora_ota.store import webhooks
from lumora_ota.store.models import AuditEntry, RolloutPlan, Update, utcnow
from lumora_ota.store.repository import STATUS_ACTIVE

log = logging.getLogger("lumora_ota.plans")

ACTIVE = "active"
HALTED = "halted"
COMPLETED = "completed"
ADVANCE_ACTION = "rolloutPlan.advance"
HALT_ACTION = "rolloutPlan.halt"


def plan_of(row: RolloutPlan) -> Plan:
    """The domain plan a stored row describes."""
    return Plan(
        steps=tuple(int(s) for s in row.steps),
        step_seconds=row.step_seconds,
        min_launches=row.min_launches,
        max_failure_rate=row.max_failure_rate,
    )


def next_step_at(row: RolloutPlan) -> datetime | None:
    """When the soak time of the current step ends, None when no step follows."""
    if row.status != ACTIVE or row.step_index >= len(row.steps) - 1:
        return None
    return row.step_started_at + timedelta(seconds=row.step_seconds)


def set_plan(session: Session, upd: Update, plan: Plan) -> RolloutPlan:
    """Give ``upd`` the plan, starting at its first step now (replacing any plan); sets the
    rollout to the first step and bumps the delivery revision. The caller commits."""
    now = utcnow()
    row = session.get(RolloutPlan, upd.id)
    if row is None:
        row = RolloutPlan(update_id=upd.id, project_id=upd.project_id)
        session.add(row)
    row.steps = list(plan.steps)
    row.step_seconds = plan.step_seconds
    row.min_launches = plan.min_launches
    row.max_failure_rate = plan.max_failure_rate
    row.step_index = 0
    row.step_started_at = now
    row.status = COMPLETED if len(plan.steps) == 1 else ACTIVE
    row.halt_reason = None
    row.updated_at = now
    previous = upd.rollout
    upd.rollout = plan.steps[0]
    session.flush()
    webhooks.rollout_changed(session, upd, previous)
    return row


def clear_plan(session: Session, upd: Update) -> bool:
    """Remove the update's plan (the rollout stays where it is); whether there was one."""
    row = session.get(RolloutPlan, upd.id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def resume_plan(session: Session, row: RolloutPlan) -> None:
    """Continue a halted plan from its current step; the step's soak time starts again. A
    paused update (rollout 0) goes back to the current step's rollout."""
    row.status = ACTIVE if row.step_index < len(row.steps) - 1 else COMPLETED
    row.halt_reason = None
    row.step_started_at = utcnow()
    row.updated_at = row.step_started_at
    upd = session.get(Update, row.update_id)
    if upd is not None and upd.rollout == 0 and upd.status == STATUS_ACTIVE:
        upd.rollout = int(row.steps[row.step_index])
        session.flush()
        webhooks.rollout_changed(session, upd, 0)
    session.flush()


def run_plans(
    sessions: sessionmaker[Session], thresholds: HealthThresholds, now: datetime | None = None
) -> list[tuple[str, Action]]:
    """Advance, halt or complete every due active plan, each once; returns what this call
    did as ``(update_id, action)`` pairs (another process may have done the rest)."""
    with sessions() as session:
        session.connection(execution_options={"readonly": True})
        ids = list(
            session.scalars(select(RolloutPlan.update_id).where(RolloutPlan.status == ACTIVE))
        )
    done: list[tuple[str, Action]] = []
    for update_id in ids:
        try:
            action = _run_one(sessions, update_id, thresholds, now or utcnow())
        except Exception:
            log.exception("rollout plan of update %s failed; will retry", update_id)
            continue
        if action is not None:
            done.append((update_id, action))
    return done


def _run_one(
    sessions: sessionmaker[Session], update_id: str, thresholds: HealthThresholds, now: datetime
) -> Action | None:
    with sessions() as session:
        row = session.get(RolloutPlan, update_id)
        upd = session.get(Update, update_id)
        if row is None or upd is None or row.status != ACTIVE:
            return None
        successes, failures = launch_counts(session, row.project_id, update_id, thresholds)
        elapsed = (now - row.step_started_at).total_seconds()
        rolled_back = upd.status != STATUS_ACTIVE
        # Paused by hand or by auto-pause: the next step must not undo that (resume it).
        paused = upd.rollout == 0
        if rolled_back:  # nothing left to roll out: stop here, without flagging it
            decision = Decision(Action.HALT, row.step_index, reason="the update was rolled back")
        elif paused:
            decision = Decision(
                Action.HALT,
                row.step_index,
                reason="the update's rollout was paused (0%); resume the plan to go on",
            )
        else:
            decision = decide(
                plan_of(row),
                row.step_index,
                elapsed,
                successes + failures,
                failures,
                min_failures=thresholds.min_failures,
            )
        if decision.action is Action.WAIT:
            session.rollback()
            return None
        old_step = row.step_index
        values: dict[str, Any] = {"updated_at": now}
        if decision.action is Action.HALT:
            values.update(status=HALTED, halt_reason=decision.reason)
        elif decision.action is Action.COMPLETE:
            values.update(status=COMPLETED)
        else:
            last = decision.step_index == len(row.steps) - 1
            values.update(
                step_index=decision.step_index,
                step_started_at=now,
                status=COMPLETED if last else ACTIVE,
            )
        # The WHERE makes this happen once when several processes decide at the same time.
        result = session.execute(
            update(RolloutPlan)
            .where(
                RolloutPlan.update_id == update_id,
                RolloutPlan.step_index == old_step,
                RolloutPlan.status == ACTIVE,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            session.rollback()
            return None
        figures = {
            "launches": successes + failures,
            "failures": failures,
            "failureRate": round(failures / (successes + failures), 4)
            if successes + failures
            else None,
        }
        data = {**webhooks.update_data(upd), **figures, "steps": list(row.steps)}
        if decision.action is Action.HALT:
            data.update(step=old_step, rollout=upd.rollout, reason=decision.reason)
            _audit(session, row.project_id, HALT_ACTION, update_id, data)
            webhooks.emit(session, row.project_id, "rollout_plan.halted", data)
            if not rolled_back and not paused:
                webhooks.emit(session, row.project_id, "update.flagged", data)
        elif decision.action is Action.ADVANCE:
            previous = upd.rollout
            upd.rollout = row.steps[decision.step_index]
            data.update(
                step=decision.step_index,
                previousRollout=previous,
                rollout=upd.rollout,
                completed=decision.step_index == len(row.steps) - 1,
            )
            _audit(session, row.project_id, ADVANCE_ACTION, update_id, data)
            webhooks.emit(session, row.project_id, "rollout_plan.advanced", data)
            webhooks.rollout_changed(session, upd, previous)
        session.commit()
        log.info("rollout plan of update %s: %s", update_id, decision.action.value)
        return decision.action


def _audit(
    session: Session, project_id: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    session.add(
        AuditEntry(
            at=utcnow(),
            key_id=None,
            project_id=project_id,
            action=action,
            target=target,
            detail=detail,
        )
    )


def plans_for(session: Session, update_ids: Iterable[str]) -> dict[str, RolloutPlan]:
    """The plans of these updates, by update id."""
    ids = list(update_ids)
    if not ids:
        return {}
    rows = session.scalars(select(RolloutPlan).where(RolloutPlan.update_id.in_(ids)))
    return {row.update_id: row for row in rows}
