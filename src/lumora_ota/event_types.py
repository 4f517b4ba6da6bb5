"""The client event types, shared by the SDK that sends them and the server that counts them.

Kept free of heavy imports: the client SDK imports this module.
"""

from __future__ import annotations

from typing import Literal

# The client event types ``POST /api/v1/events`` accepts.
EventType = Literal[
    "download_completed",
    "download_failed",
    "install",
    "launch_success",
    "launch_failure",
    "rollback",
]
