"""The per-process application context: settings, database, blob store and the typed
collaborators every part of the server shares.

One ``AppContext`` is built by ``create_app`` (every collaborator made there, once) and
reached from a request through ``app_context(request)``: no module-level globals, no lookup
by name, so mypy sees the whole wiring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.settings import Settings
from lumora_ota.store.blobs import BlobStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from lumora_ota.server.dashboard.sessions import CookieAuthenticator
    from lumora_ota.server.device.cache import DeliveryCache
    from lumora_ota.server.device.edge import DeviceEdge
    from lumora_ota.server.device.patches import PatchIndex
    from lumora_ota.server.management.throttle import FailedAuthThrottle
    from lumora_ota.server.metrics import RequestMetrics
    from lumora_ota.server.webhooks import WebhookSender
    from lumora_ota.stats import StatsRecorder
    from lumora_ota.store.patches import PatchWorker
    from lumora_ota.store.variants import VariantWorker


@dataclass(eq=False)
class AppContext:
    """What every route may need, built once per server process by ``create_app``.

    ``delivery`` answers devices from memory (the delivery cache), ``patches`` indexes the
    delta patches, ``stats`` records statistics in memory (flushed in batches),
    ``metrics``/``request_metrics`` are the Prometheus registry and the request figures,
    ``auth_throttle`` slows repeated bad API keys (None: off), the two workers precompute
    compressed variants and delta patches after publishes. Two are set later in the same
    start: ``edge`` once the application exists, ``cookie_auth`` at start (its secret is
    in the database).
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    delivery: DeliveryCache
    patches: PatchIndex
    stats: StatsRecorder
    metrics: CollectorRegistry
    request_metrics: RequestMetrics
    auth_throttle: FailedAuthThrottle | None
    variant_worker: VariantWorker
    patch_worker: PatchWorker
    edge: DeviceEdge | None = None
    cookie_auth: CookieAuthenticator | None = None
    webhooks: WebhookSender | None = None  # set by the webhooks part when it installs

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
