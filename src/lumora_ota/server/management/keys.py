"""Management API: keys (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from lumora_ota.server.context import AppContext
from lumora_ota.server.lifecycle import Lifecycle

router = APIRouter(tags=["keys"])


def install_bootstrap(ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Create the ``LUMORA_BOOTSTRAP_ADMIN_KEY`` admin key at start when it does not exist."""
