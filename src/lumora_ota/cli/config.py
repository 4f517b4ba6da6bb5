"""The CLI's settings: a small JSON file in the user's config dir, overridden by environment
variables and flags.

The file lives at ``$XDG_CONFIG_HOME/lumora/config.json`` (``~/.config/lumora`` by default;
the platform's usual place elsewhere, via ``typer.get_app_dir``) and holds an API key, so it
is written with mode 0600. Precedence, highest first: the ``--server/--api-key/--project``
flags, ``LUMORA_SERVER/LUMORA_API_KEY/LUMORA_PROJECT``, the file, built-in defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.defaults import DEFAULT_HOST, DEFAULT_PORT

APP_NAME = "lumora"
CONFIG_FILE_NAME = "config.json"
DEFAULT_SERVER = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"


@dataclass(frozen=True)
class CliConfig:
    """What the CLI needs to reach the management API; ``None`` means not set."""

    server: str | None = None
    api_key: str | None = None
    project: str | None = None

    def overridden_by(self, other: CliConfig) -> CliConfig:
        """A copy where every value set in ``other`` wins."""
        return CliConfig(
            server=other.server or self.server,
            api_key=other.api_key or self.api_key,
            project=other.project or self.project,
        )


def config_path() -> Path:
    """Where the config file lives (honours ``XDG_CONFIG_HOME``)."""
    return Path(typer.get_app_dir(APP_NAME)) / CONFIG_FILE_NAME


def load_config(path: Path | None = None) -> CliConfig:
    """The config file's contents; an empty config when there is no file."""
    path = path or config_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return CliConfig()
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CliError(f"config file {path} does not hold a JSON object")
    return CliConfig(
        server=_str_or_none(raw.get("server")),
        api_key=_str_or_none(raw.get("apiKey")),
        project=_str_or_none(raw.get("project")),
    )


def save_config(config: CliConfig, path: Path | None = None) -> Path:
    """Write ``config`` atomically, readable by its owner only (mode 0600)."""
    path = path or config_path()
    body = {"server": config.server, "apiKey": config.api_key, "project": config.project}
    text = json.dumps({k: v for k, v in body.items() if v}, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600, so the key is never readable by others, not even
        # for the moment before the rename.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp_name, 0o600)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
    except OSError as exc:
        raise CliError(f"cannot write config file {path}: {exc}") from exc
    return path


def resolve_config(flags: CliConfig) -> CliConfig:
    """Flags (which already carry the ``LUMORA_*`` environment values) over the file,
    with the local default server when nothing names one."""
    merged = load_config().overridden_by(flags)
    return merged.overridden_by(CliConfig(server=merged.server or DEFAULT_SERVER))


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
