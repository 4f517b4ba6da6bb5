"""Server settings, resolved once at start from flags and ``LUMORA_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from lumora_ota.domain.ratelimit import RateLimit

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3002
DEFAULT_DATA_DIR = ".lumora"


class SettingsError(ValueError):
    """A ``LUMORA_*`` variable holds a value of the wrong kind."""


def _env_parsed(name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {kind}, not {raw!r}") from None


def _env_int(name: str, default: int) -> int:
    return _env_parsed(name, default, int, "an integer")


def _env_float(name: str, default: float) -> float:
    return _env_parsed(name, default, float, "a number")


def _rate_spec(raw: str) -> str:
    RateLimit.parse(raw)  # ValueError when malformed
    return raw


def _env_path(name: str) -> Path | None:
    raw = os.environ.get(name)
    return Path(raw) if raw else None


def _env_bounded_float(name: str, default: float, low: float, high: float) -> float:
    value = _env_float(name, default)
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
    return value


def _env_bounded_int(name: str, default: int, low: int, high: int) -> int:
    value = _env_int(name, default)
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, not {value}")
    return value


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


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know about its surroundings.

    ``database_url`` and ``storage_url`` default to an SQLite file and a blob folder inside
    ``data_dir``; ``public_url`` defaults to the address the server listens on.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR))
    database_url: str | None = None
    storage_url: str | None = None
    public_url: str | None = None
    asset_base_url: str | None = None
    bootstrap_admin_key: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_json_bytes: int = 4 * 1024 * 1024
    # Seconds an upload may go without receiving a byte before it is answered 408.
    upload_idle_timeout: float = 30.0
    cors_origins: tuple[str, ...] = ("*",)
    cache_poll_interval: float = 0.5
    stats_flush_interval: float = 1.0
    # An update is flagged unhealthy when its launch-failure rate exceeds this over at least
    # ``health_min_launches`` launches (devices that launched it or failed to).
    health_failure_rate: float = 0.05
    health_min_launches: int = 20
    # ... and at least this many devices failed to launch it (see SECURITY.md: what anonymous
    # devices can influence).
    health_min_failures: int = 10
    # Devices one client address (IPv6: its /64) adds to an update's health figure, per
    # outcome: bounds what one source can do with invented device ids.
    stats_devices_per_source: int = 3
    # Device ids new today that one client address may add to the statistics, per server
    # process (more are counted as checks only): what bounds rows of invented device ids.
    stats_new_devices_per_source: int = 5000
    # Days of detailed statistics kept: older device days are rolled up into daily counters,
    # devices not seen for this long (and their outcome rows) rolled up and deleted.
    stats_retention_days: int = 90
    workers: int = 1
    server: str = "granian"
    # Seconds a connection may take to send a request's headers, counted from the moment it
    # opens or finishes its previous request (so also the keep-alive idle time): idle and
    # slow-header connections are closed after it instead of holding a connection slot.
    header_timeout: float = 10.0
    # Connections each worker serves at once; more wait in the kernel's accept queue. With
    # ``header_timeout`` this bounds what idle connections can hold (``server/launch.py``).
    max_connections: int = 4096
    log_level: str = "info"
    # Names this process in /health, so operators (and tests) can tell who answered.
    instance_name: str = field(default_factory=socket.gethostname)
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
    trusted_proxies: tuple[str, ...] = ()
    # Where ``/metrics`` is also served without a key (a private address for a Prometheus
    # scraper); on the main port it always needs an all-projects key.
    metrics_bind: tuple[str, int] | None = None
    # The only directory ``privateKeyPath`` (code signing) may read from; default
    # ``<data_dir>/signing-keys``.
    signing_keys_dir: Path | None = None
    # Seconds a signed check answer's freshness stays valid (its ``expires``); the server
    # signs a new one every quarter of it. Bounds how long a replayed answer is believed.
    signed_answer_ttl: int = 3600
    # Delta updates: patches are computed from the launch assets of this many previous updates
    # of a stream, and served only when smaller than this fraction of the brotli bundle.
    patch_bases: int = 3
    patch_max_ratio: float = 0.5
    # Bounds on computing a patch: bundles over this size are not diffed, nor pairs whose
    # diff would need more memory than the budget (bsdiff holds ~17 bytes per base byte).
    patch_max_bundle_bytes: int = 32 * 1024 * 1024
    patch_memory_bytes: int = 512 * 1024 * 1024
    # Asset bytes each server process keeps in memory for the device edge (most-recently
    # used first; only files up to ``asset_memory_file_bytes``); 0 turns it off.
    asset_memory_bytes: int = 32 * 1024 * 1024
    asset_memory_file_bytes: int = 4 * 1024 * 1024
    # Progressive delivery (issue 19): seconds between two looks at the rollout plans.
    plan_interval: float = 10.0
    # Webhooks: private and loopback targets are refused unless allowed (tests, on-premises);
    # a delivery is retried with exponential backoff from ``webhook_backoff`` seconds for
    # ``webhook_retry_seconds``; each attempt waits ``webhook_timeout`` for an answer; the
    # outbox is looked at every ``webhook_poll_interval`` seconds.
    webhook_allow_private: bool = False
    webhook_retry_seconds: float = 24 * 3600.0
    webhook_backoff: float = 2.0
    webhook_timeout: float = 10.0
    webhook_poll_interval: float = 1.0

    def __post_init__(self) -> None:
        # What bounds anonymous devices' influence and the statistics' storage: refused when
        # it would switch the bound off (SECURITY.md).
        for name, value, least in (
            ("LUMORA_STATS_RETENTION_DAYS", self.stats_retention_days, 31),
            ("LUMORA_STATS_DEVICES_PER_SOURCE", self.stats_devices_per_source, 1),
            ("LUMORA_STATS_NEW_DEVICES_PER_SOURCE", self.stats_new_devices_per_source, 1),
            ("LUMORA_HEALTH_MIN_FAILURES", self.health_min_failures, 1),
        ):
            if value < least:
                raise SettingsError(f"{name} must be at least {least}, not {value}")

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
        return f"{self.resolved_public_url}/api/v1/assets"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from ``LUMORA_*`` environment variables, defaults elsewhere."""
        env = os.environ.get
        origins = env("LUMORA_CORS_ORIGINS", "*")
        return cls(
            host=env("LUMORA_HOST") or DEFAULT_HOST,
            port=_env_int("LUMORA_PORT", DEFAULT_PORT),
            data_dir=Path(env("LUMORA_DATA_DIR") or DEFAULT_DATA_DIR),
            database_url=env("LUMORA_DATABASE_URL") or None,
            storage_url=env("LUMORA_STORAGE_URL") or None,
            public_url=env("LUMORA_PUBLIC_URL") or None,
            asset_base_url=env("LUMORA_ASSET_BASE_URL") or None,
            bootstrap_admin_key=env("LUMORA_BOOTSTRAP_ADMIN_KEY") or None,
            max_upload_bytes=_env_int("LUMORA_MAX_UPLOAD_BYTES", 512 * 1024 * 1024),
            max_json_bytes=_env_int("LUMORA_MAX_JSON_BYTES", 4 * 1024 * 1024),
            upload_idle_timeout=_env_float("LUMORA_UPLOAD_IDLE_TIMEOUT", 30.0),
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            cache_poll_interval=_env_float("LUMORA_CACHE_POLL_INTERVAL", 0.5),
            stats_flush_interval=_env_float("LUMORA_STATS_FLUSH_INTERVAL", 1.0),
            health_failure_rate=_env_float("LUMORA_HEALTH_FAILURE_RATE", 0.05),
            health_min_launches=_env_int("LUMORA_HEALTH_MIN_LAUNCHES", 20),
            health_min_failures=_env_int("LUMORA_HEALTH_MIN_FAILURES", 10),
            stats_devices_per_source=_env_int("LUMORA_STATS_DEVICES_PER_SOURCE", 3),
            stats_new_devices_per_source=_env_int("LUMORA_STATS_NEW_DEVICES_PER_SOURCE", 5000),
            stats_retention_days=_env_int("LUMORA_STATS_RETENTION_DAYS", 90),
            workers=_env_int("LUMORA_WORKERS", 1),
            server=env("LUMORA_SERVER_IMPL") or "granian",
            header_timeout=_env_bounded_float("LUMORA_HEADER_TIMEOUT", 10.0, 0.1, 60.0),
            max_connections=_env_bounded_int("LUMORA_MAX_CONNECTIONS", 4096, 16, 1_000_000),
            log_level=env("LUMORA_LOG_LEVEL") or "info",
            instance_name=env("LUMORA_INSTANCE_NAME") or socket.gethostname(),
            rate_limit_per_ip=env("LUMORA_RATE_LIMIT_PER_IP") or "",
            rate_limit_per_client=env("LUMORA_RATE_LIMIT_PER_CLIENT") or "",
            auth_failure_limit=_env_parsed(
                "LUMORA_AUTH_FAILURE_LIMIT", "1/20", _rate_spec, "RATE[/BURST] or off"
            ),
            signing_keys_dir=Path(keys_dir)
            if (keys_dir := env("LUMORA_SIGNING_KEYS_DIR"))
            else None,
            signed_answer_ttl=_env_bounded_int("LUMORA_SIGNED_ANSWER_TTL", 3600, 60, 2_592_000),
            metrics_bind=parse_bind("LUMORA_METRICS_BIND", env("LUMORA_METRICS_BIND") or ""),
            trusted_proxies=parse_networks(
                "LUMORA_TRUSTED_PROXIES", env("LUMORA_TRUSTED_PROXIES") or ""
            ),
            patch_bases=_env_int("LUMORA_PATCH_BASES", 3),
            patch_max_ratio=_env_float("LUMORA_PATCH_MAX_RATIO", 0.5),
            patch_max_bundle_bytes=_env_int("LUMORA_PATCH_MAX_BUNDLE_BYTES", 32 * 1024 * 1024),
            patch_memory_bytes=_env_int("LUMORA_PATCH_MEMORY_BYTES", 512 * 1024 * 1024),
            asset_memory_bytes=_env_int("LUMORA_ASSET_MEMORY_BYTES", 32 * 1024 * 1024),
            asset_memory_file_bytes=_env_int("LUMORA_ASSET_MEMORY_FILE_BYTES", 4 * 1024 * 1024),
            plan_interval=_env_bounded_float("LUMORA_PLAN_INTERVAL", 10.0, 0.05, 3600.0),
            webhook_allow_private=env("LUMORA_WEBHOOK_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
            webhook_retry_seconds=_env_bounded_float(
                "LUMORA_WEBHOOK_RETRY_SECONDS", 24 * 3600.0, 0.0, 30 * 24 * 3600.0
            ),
            webhook_backoff=_env_bounded_float("LUMORA_WEBHOOK_BACKOFF", 2.0, 0.05, 3600.0),
            webhook_timeout=_env_bounded_float("LUMORA_WEBHOOK_TIMEOUT", 10.0, 0.1, 120.0),
            webhook_poll_interval=_env_bounded_float(
                "LUMORA_WEBHOOK_POLL_INTERVAL", 1.0, 0.05, 60.0
            ),
        )
