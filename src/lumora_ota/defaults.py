"""Defaults the CLI client, the launcher and the settings model share (standard library
only: the client and the launcher stay lean). Everything else the server reads is declared,
with its default, unit and range, once: ``lumora_ota.settings.Settings``."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3002
DEFAULT_DATA_DIR = ".lumora"
SERVERS = ("granian", "uvicorn")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# Set by ``lumora serve`` once it validated every ``LUMORA_*`` variable and exported the
# launcher's values: the launcher then reads them as they are (no second validation there).
VALIDATED_ENV = "LUMORA_SETTINGS_VALIDATED"
