"""The per-process application context: settings, database, blob store, caches.

One ``AppContext`` is built by ``create_app`` and reached from a request through
``app_context(request)`` — no module-level globals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.settings import Settings
from lumora_ota.store.blobs import BlobStore

if TYPE_CHECKING:
    pass


@dataclass
class AppContext:
    """What every route may need, built once per server process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    # Components that register themselves at start (delivery cache, stats recorder, ...).
    components: dict[str, Any] = field(default_factory=dict)

    def session(self) -> Session:
        """A new database session; use as a context manager."""
        return self.sessions()


def app_context(request: Request) -> AppContext:
    """The ``AppContext`` of the app serving ``request``."""
    ctx: AppContext = request.app.state.ctx
    return ctx


def db_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: a session closed after the request."""
    with app_context(request).sessions() as session:
        yield session
