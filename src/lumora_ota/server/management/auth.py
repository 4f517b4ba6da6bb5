"""Who is calling the management API, and what they may see and do.

``current_principal`` (a FastAPI dependency) turns ``Authorization: Bearer <key>`` into a
``Principal``; a missing, unknown, revoked or expired key gets 401. A project-scoped key sees
only its project: anything else answers 404, exactly as if it did not exist. A visible object
acted on without the needed role answers 403.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.server.context import app_context
from lumora_ota.server.dashboard.sessions import DashboardSession
from lumora_ota.server.management.throttle import source_of, throttle_of
from lumora_ota.server.problems import ProblemError, not_found
from lumora_ota.store.apikeys import (
    find_usable_key,
    get_key,
    is_usable,
    needs_touch,
    role_allows,
    touch_key,
)
from lumora_ota.store.models import Project
from lumora_ota.store.repository import find_project

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lumora"'}


@dataclass(frozen=True)
class Principal:
    """The key behind a request: its id, name, role and project scope (None = all)."""

    key_id: str
    name: str
    role: str
    project_id: str | None

    def can_see(self, project_id: str) -> bool:
        """Whether objects of ``project_id`` are visible to this key."""
        return self.project_id is None or self.project_id == project_id

    def require(self, role: str) -> None:
        """Raise 403 unless this key has at least ``role``."""
        if not role_allows(self.role, role):
            raise ProblemError(403, f"this action needs a key with the {role!r} role")

    def require_all_projects(self) -> None:
        """Raise 403 unless this key is scoped to every project."""
        if self.project_id is not None:
            raise ProblemError(403, "this action needs a key scoped to all projects")


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, headers=_CHALLENGE)


def bearer_secret(request: Request) -> str:
    """The key from the ``Authorization: Bearer`` header; 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    return secret.strip()


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the ``Principal`` of the request's key, or 401."""
    # The dashboard's session cookie (server/dashboard/sessions.py) stands in for the header.
    cookie_auth = app_context(request).cookie_auth
    if cookie_auth is not None and "authorization" not in request.headers:
        dashboard_session = cookie_auth(request)
        if dashboard_session is not None:
            return _principal_of_session(request, dashboard_session)
    secret = bearer_secret(request)
    throttle = throttle_of(request)
    if throttle is not None:
        throttle.check(source_of(request))
    sessions = app_context(request).sessions
    with sessions() as session:
        session.connection(execution_options={"readonly": True})
        key = find_usable_key(session, secret)
        if key is None:
            if throttle is not None:
                throttle.failed(source_of(request))
            raise _unauthorized("the API key is unknown, revoked or expired")
        principal = Principal(
            key_id=key.id, name=key.name, role=key.role, project_id=key.project_id
        )
        stale = needs_touch(key)
    if stale:
        _note_use(sessions, principal.key_id)
    return principal


def _note_use(sessions: sessionmaker[Session], key_id: str) -> None:
    # Bookkeeping only: losing a lock race here must never fail the request.
    with contextlib.suppress(SQLAlchemyError), sessions() as session:
        touch_key(session, key_id)
        session.commit()


def _principal_of_session(request: Request, dashboard: DashboardSession) -> Principal:
    with app_context(request).sessions() as session:
        session.connection(execution_options={"readonly": True})
        key = get_key(session, dashboard.key_id)
        if key is None or not is_usable(key):
            raise _unauthorized("the dashboard session's key is revoked or expired")
        if dashboard.voided_by(key.sessions_void_before_ms):
            raise _unauthorized("this dashboard session was signed out")
        return Principal(key_id=key.id, name=key.name, role=key.role, project_id=key.project_id)


def write_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a session for a write transaction (serialised on SQLite)."""
    with app_context(request).sessions() as session:
        yield session


def read_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a session for reads only (no write lock on SQLite)."""
    with app_context(request).sessions() as session:
        session.connection(execution_options={"readonly": True})
        yield session


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
WriteSession = Annotated[Session, Depends(write_session)]
ReadSession = Annotated[Session, Depends(read_session)]


def visible_project(session: Session, principal: Principal, ref: str) -> Project:
    """The project whose id or slug is ``ref``, if this key may see it; else 404."""
    project = find_project(session, ref)
    if project is None or not principal.can_see(project.id):
        raise not_found(f"project {ref!r}")
    return project
