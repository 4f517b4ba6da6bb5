"""Server settings: one model, read from ``LUMORA_*`` environment variables (and flags),
validated with units and ranges before anything starts.

``Settings`` is a pydantic-settings model: every variable is a field (``LUMORA_`` + its name
upper-cased), declared once with its default, unit and
range. A bad value is refused at load with one line naming the variable
(``SettingsError``): ``lumora serve`` prints it and exits non-zero before anything listens.
Empty variables count as unset.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lumora_ota.defaults import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT
from lumora_ota.domain.ratelimit import RateLimit
from lumora_ota.server.endpoints import ASSET

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_HOST", "DEFAULT_PORT", "Settings", "SettingsError"]

ENV_PREFIX = "LUMORA_"
MiB = 1024 * 1024
DATABASE_SCHEMES = ("sqlite", "postgresql")
STORAGE_SCHEMES = ("file://", "s3://")
# An nginx location prefix: "/", then path segments each ending in "/" (URL-safe characters,
# no "." or ".." segment).
ACCEL_PREFIX_RE = re.compile(r"/(?:(?!\.\.?/)[A-Za-z0-9._~-]+/)+")


class SettingsError(ValueError):
    """A ``LUMORA_*`` variable (or flag) holds a value of the wrong kind or out of range;
    ``variable`` names it."""

    def __init__(self, message: str, variable: str = "") -> None:
        super().__init__(message)
        self.variable = variable


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


_MESSAGES = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "literal_error": "must be {expected}",
}


def _error(exc: ValidationError) -> SettingsError:
    """The first error of ``exc``, in one line naming the variable (and the value)."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    return SettingsError(_one_line(first), env_name(field) if field else "")


def _one_line(first: Any) -> str:
    field = str(first["loc"][0]) if first["loc"] else ""
    name = env_name(field) if field else "LUMORA settings"
    template = _MESSAGES.get(first["type"])
    if template is not None:
        message = template.format(**first.get("ctx", {}))
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
        if message.startswith(ENV_PREFIX):  # already names its variable (and value)
            return message
    value = first.get("input")
    shown = f", not {value!r}" if isinstance(value, (str, int, float)) else ""
    return f"{name} {message}{shown}"


def parse_bind(name: str, raw: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6) as a pair; None for ""; ``SettingsError``
    naming ``name`` for anything else."""
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name} must be host:port (e.g. 127.0.0.1:9102), not {raw!r}")
    return host, int(port)


def parse_networks(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses and CIDR networks (``10.0.0.0/8, ::1``),
    normalised; ``SettingsError`` naming ``name`` for anything else (host names and ``*``
    included: trusting a name or everyone would let any client choose its address)."""
    networks: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SettingsError(
                f"{name} must list IP addresses or CIDR networks, not {item!r}"
            ) from None
    return tuple(networks)


def _split(raw: Any) -> Any:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


Seconds = float
Bytes = int


class Settings(BaseSettings):
    """Everything the server needs to know about its surroundings (units in the names'
    comments; ranges in the fields).

    ``database_url`` and ``storage_url`` default to an SQLite file and a blob folder inside
    ``data_dir``; ``public_url`` defaults to the address the server listens on. Made with
    keyword arguments, the variables still apply where no argument is given (pydantic-
    settings); ``from_env()`` is ``Settings()``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str | None = None
    storage_url: str | None = None
    public_url: str | None = None
    asset_base_url: str | None = None
    bootstrap_admin_key: str | None = None
    max_upload_bytes: Bytes = Field(512 * MiB, ge=1)
    max_json_bytes: Bytes = Field(4 * MiB, ge=1024)
    # Seconds an upload may go without receiving a byte before it is answered 408.
    upload_idle_timeout: Seconds = Field(30.0, gt=0, le=3600)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ("*",)
    # Seconds between delivery-revision polls (one small query each): 0 would poll without
    # pause (thousands of queries a second).
    cache_poll_interval: Seconds = Field(0.5, ge=0.05, le=3600)
    stats_flush_interval: Seconds = Field(1.0, ge=0.05, le=86400)
    # An update is flagged unhealthy when its launch-failure rate exceeds this over at least
    # ``health_min_launches`` launches (devices that launched it or failed to).
    health_failure_rate: float = Field(0.05, ge=0, le=1)
    health_min_launches: int = Field(20, ge=1)
    # ... and at least this many devices failed to launch it (see SECURITY.md: what anonymous
    # devices can influence). Refused when it would switch the bound off.
    health_min_failures: int = Field(10, ge=1)
    # Devices one client address (IPv6: its /64) adds to an update's health figure, per
    # outcome: bounds what one source can do with invented device ids.
    stats_devices_per_source: int = Field(3, ge=1)
    # Device ids new today that one client address may add to the statistics, per server
    # process (more are counted as checks only): what bounds rows of invented device ids.
    stats_new_devices_per_source: int = Field(5000, ge=1)
    # Days of detailed statistics kept: older device days are rolled up into daily counters,
    # devices not seen for this long (and their outcome rows) rolled up and deleted.
    stats_retention_days: int = Field(90, ge=31)
    workers: int = Field(1, ge=1, le=512)
    # The ASGI server (``LUMORA_SERVER_IMPL``; ``LUMORA_SERVER`` is the CLI's server URL).
    server_impl: Literal["granian", "uvicorn"] = "granian"
    # Seconds a connection may take to send a request's headers, counted from the moment it
    # opens or finishes its previous request (so also the keep-alive idle time): idle and
    # slow-header connections are closed after it instead of holding a connection slot.
    header_timeout: Seconds = Field(10.0, ge=0.1, le=60)
    # Connections each worker serves at once; more wait in the kernel's accept queue. With
    # ``header_timeout`` this bounds what idle connections can hold (``server/launch.py``).
    max_connections: int = Field(4096, ge=16, le=1_000_000)
    # Seconds a worker has after SIGTERM to finish its requests and its shutdown (statistics
    # flush, database closed) before it is killed, logged as an error (``server/workerstop.py``).
    shutdown_timeout: Seconds = Field(10.0, ge=1, le=300)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Names this process in /health, so operators (and tests) can tell who answered.
    instance_name: str = Field(default_factory=socket.gethostname)
    # Device-endpoint rate limits, "RATE[/BURST]" requests per second; empty = off.
    rate_limit_per_ip: str = ""
    rate_limit_per_client: str = ""
    # Failed API-key attempts per client address, "RATE[/BURST]" per second: past it every
    # key attempt from that address gets 429 until the bucket refills; "off" turns it off.
    auth_failure_limit: str = "1/20"
    # Reverse proxies (IP networks) whose ``X-Forwarded-For``/``-Proto`` are believed: a
    # request from one of them is taken to come from the rightmost address of that header
    # that is not itself a trusted proxy. Empty: the header is ignored (a client could
    # otherwise pick any address, and so its own rate-limit bucket).
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # Where ``/metrics`` is also served without a key (a private address for a Prometheus
    # scraper); on the main port it always needs an all-projects key.
    metrics_bind: Annotated[tuple[str, int] | None, NoDecode] = None
    # The only directory ``privateKeyPath`` (code signing) may read from; default
    # ``<data_dir>/signing-keys``.
    signing_keys_dir: Path | None = None
    # Seconds a signed check answer's freshness stays valid (its ``expires``); the server
    # signs a new one every quarter of it. Bounds how long a replayed answer is believed.
    signed_answer_ttl: int = Field(3600, ge=60, le=2_592_000)
    # Delta updates: patches are computed from the launch assets of this many previous updates
    # of a stream, and served only when smaller than this fraction of the brotli bundle.
    patch_bases: int = Field(3, ge=0, le=20)
    patch_max_ratio: float = Field(0.5, gt=0)
    # Bounds on computing a patch: bundles over this size are not diffed, nor pairs whose
    # diff would need more memory than the budget (bsdiff holds ~17 bytes per base byte).
    patch_max_bundle_bytes: Bytes = Field(32 * MiB, ge=0)
    patch_memory_bytes: Bytes = Field(512 * MiB, ge=0)
    # Asset bytes each server process keeps in memory for the device edge (most-recently
    # used first; only files up to ``asset_memory_file_bytes``); 0 turns it off.
    asset_memory_bytes: Bytes = Field(32 * MiB, ge=0)
    asset_memory_file_bytes: Bytes = Field(4 * MiB, ge=0)
    # Behind nginx (docs/DEPLOYMENT.md): asset answers carry ``X-Accel-Redirect: <prefix><file
    # path under the blob folder>`` and no body, and nginx sends the file from an ``internal``
    # location with that prefix. File store only (an S3 store's assets are redirects already).
    accel_redirect_prefix: str | None = None
    # Progressive delivery (issue 19): seconds between two looks at the rollout plans.
    plan_interval: Seconds = Field(10.0, ge=0.05, le=3600)
    # Webhooks: private and loopback targets are refused unless allowed (tests, on-premises);
    # a delivery is retried with exponential backoff from ``webhook_backoff`` seconds for
    # ``webhook_retry_seconds``; each attempt waits ``webhook_timeout`` for an answer; the
    # outbox is looked at every ``webhook_poll_interval`` seconds.
    webhook_allow_private: bool = False
    webhook_retry_seconds: Seconds = Field(24 * 3600.0, ge=0, le=30 * 24 * 3600)
    webhook_backoff: Seconds = Field(2.0, ge=0.05, le=3600)
    webhook_timeout: Seconds = Field(10.0, ge=0.1, le=120)
    webhook_poll_interval: Seconds = Field(1.0, ge=0.05, le=60)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _error(exc) from None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, raw: Any) -> Any:
        return _split(raw)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return parse_networks("LUMORA_TRUSTED_PROXIES", raw)
        return raw

    @field_validator("metrics_bind", mode="before")
    @classmethod
    def _bind(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return parse_bind("LUMORA_METRICS_BIND", raw)
        return raw

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, raw: Any) -> Any:
        return raw.lower() if isinstance(raw, str) else raw

    @field_validator("rate_limit_per_ip", "rate_limit_per_client", "auth_failure_limit")
    @classmethod
    def _rate(cls, raw: str) -> str:
        try:
            RateLimit.parse(raw)
        except ValueError:
            raise ValueError("must be RATE[/BURST] requests per second, or off") from None
        return raw

    @field_validator("database_url")
    @classmethod
    def _database(cls, raw: str | None) -> str | None:
        if raw is not None and raw.split(":", 1)[0].split("+", 1)[0] not in DATABASE_SCHEMES:
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return raw

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, raw: str | None) -> str | None:
        if raw is not None and not raw.startswith(STORAGE_SCHEMES):
            raise ValueError("must be a file:// or s3:// URL")
        return raw

    @field_validator("accel_redirect_prefix")
    @classmethod
    def _accel_prefix(cls, raw: str | None) -> str | None:
        if raw is not None and not ACCEL_PREFIX_RE.fullmatch(raw):
            raise ValueError(
                "must be an nginx location path that starts and ends with / (e.g. /_lumora_blobs/)"
            )
        if raw is not None and raw.startswith("/api/"):
            # nginx would make that part of Lumora's own API unreachable (``internal``).
            raise ValueError("must not lie under /api/ (that is Lumora's API)")
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.asset_memory_file_bytes > self.asset_memory_bytes > 0:
            raise ValueError(
                "LUMORA_ASSET_MEMORY_FILE_BYTES must not exceed LUMORA_ASSET_MEMORY_BYTES"
            )
        if self.accel_redirect_prefix and not self.resolved_storage_url.startswith("file://"):
            raise ValueError(
                "LUMORA_ACCEL_REDIRECT_PREFIX needs the file store (nginx sends files from "
                "the blob folder); with an s3:// LUMORA_STORAGE_URL asset answers are already "
                "redirects to the bucket: unset it"
            )
        return self

    @property
    def server(self) -> str:
        """The ASGI server: granian or uvicorn."""
        return self.server_impl

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, defaulting to ``<data_dir>/lumora.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lumora.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        """The blob store URL, defaulting to ``file://<data_dir>/blobs``."""
        if self.storage_url:
            return self.storage_url
        return f"file://{(self.data_dir / 'blobs').resolve()}"

    @property
    def resolved_signing_keys_dir(self) -> Path:
        """Where signing-key files may be read from (``privateKeyPath``)."""
        return self.signing_keys_dir or self.data_dir / "signing-keys"

    @property
    def resolved_public_url(self) -> str:
        """The base URL devices use to reach this server, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def resolved_asset_base_url(self) -> str:
        """Base of asset URLs in manifests: a CDN when configured, else this server."""
        if self.asset_base_url:
            return self.asset_base_url.rstrip("/")
        return self.resolved_public_url + ASSET.prefix.rstrip("/")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given non-None fields replaced, validated again."""
        values = self.model_dump()
        values.update({k: v for k, v in changes.items() if v is not None})
        return type(self)(**values)

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from ``LUMORA_*`` environment variables, defaults elsewhere."""
        return cls()
