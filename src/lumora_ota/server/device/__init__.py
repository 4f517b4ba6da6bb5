"""Device routes (being built)."""

from __future__ import annotations

from fastapi import FastAPI

from lumora_ota.server.context import AppContext
from lumora_ota.server.lifecycle import Lifecycle


def install(app: FastAPI, ctx: AppContext, lifecycle: Lifecycle) -> None:
    """Add the device routes and background tasks to app."""
