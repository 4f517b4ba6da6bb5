"""Webhook delivery: target checks (no private addresses) and the outbox worker.

Every server process runs a ``WebhookSender``. It takes due rows of ``webhook_deliveries``
(written by ``store.webhooks.emit`` in the transaction of each change), ``PARALLEL`` at a
time, each through a lease: ``UPDATE ... SET claimed_until = <lease> WHERE id = ? AND
(claimed_until IS NULL OR claimed_until < now)``, so exactly one process sends a row at a
time; a process killed while sending leaves a lease that runs out, and the row is sent again
(at least once). A non-2xx answer, a timeout or a refused target is retried with exponential
backoff (``webhook_backoff`` doubling, at most an hour apart) until ``webhook_retry_seconds``
after the first attempt. One attempt (connect, request, the answer's status and headers) has one
deadline, ``webhook_timeout`` in all, and the answer's body is never read, so a receiver that
trickles bytes or sends an endless body neither holds the sender nor fills its memory.

Targets: ``check_target`` resolves the host and refuses it when any address is not global
(private, loopback, link-local, multicast, reserved, or an IPv6 form of such an IPv4
address: mapped, 6to4, NAT64, compatible; SSRF), unless
``LUMORA_WEBHOOK_ALLOW_PRIVATE=1``. It runs when the webhook is created and again before
every attempt, and the request goes to the address just checked (``Host`` header and TLS
server name keep the original host), so a DNS answer changed in between (rebinding) cannot
point a delivery at an internal service.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import Engine, delete, event, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota import __version__
from lumora_ota.settings import Settings
from lumora_ota.store.models import Webhook, WebhookAttempt, WebhookDelivery, utcnow
from lumora_ota.store.webhooks import SIGNATURE_HEADER, WEBHOOK_EMITTED, sign

log = logging.getLogger("lumora_ota.webhooks")

MAX_BACKOFF_SECONDS = 3600.0
# Delivered and failed deliveries (with their attempts) are kept this long, then deleted.
HISTORY_DAYS = 30
PRUNE_EVERY_SECONDS = 3600.0
BATCH = 50
# Attempts of one pass run side by side, this many at a time: a project's silent receivers
# (at most 20 webhooks, each attempt at most the timeout) delay other projects' deliveries
# by a few timeouts, not by all of theirs one after another.
PARALLEL = 8
_ERROR_CHARS = 500


class TargetError(ValueError):
    """A webhook URL that may not be called."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: its host, port and the addresses it resolved to (all allowed)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


# IPv6 forms that carry an IPv4 address a gateway or tunnel delivers to: NAT64's well-known
# prefix (RFC 6052) and IPv4-compatible addresses (::a.b.c.d, deprecated); 6to4 and
# IPv4-mapped addresses have accessors of their own. NAT64's local-use prefix (RFC 8215)
# embeds at a length only the site knows: it is the site's own network, refused outright.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forbidden(address: str) -> bool:
    """Whether a webhook may not be sent to ``address``: not global, multicast, or an IPv6
    address standing for such an IPv4 address (SSRF through NAT64, 6to4 or mapped forms)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _forbidden(str(embedded))
    return not ip.is_global or ip.is_multicast


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a well-formed http(s) URL; ``TargetError`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise TargetError("the URL must not carry credentials")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        # urlsplit drops CR, LF and TAB silently: refuse them (and other controls, spaces)
        # rather than store a URL that differs from the one requested.
        raise TargetError("the URL must not contain spaces or control characters")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_target(url: str, *, allow_private: bool) -> Target:
    """Resolve the URL's host; ``TargetError`` when it does not resolve or (unless
    ``allow_private``) when any of its addresses is not a public one."""
    scheme, host, port = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetError(f"cannot resolve {host!r}: {exc}") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetError(f"{host!r} has no address")
    if not allow_private:
        bad = [a for a in addresses if _forbidden(a)]
        if bad:
            raise TargetError(
                f"{host!r} resolves to a private, loopback or reserved address ({bad[0]});"
                " set LUMORA_WEBHOOK_ALLOW_PRIVATE=1 to allow it"
            )
    return Target(url, scheme, host, port, addresses)


def _pinned(target: Target) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with the host replaced by its first checked address, the Host header and the
    TLS server name to send."""
    parts = urlsplit(target.url)
    address = target.addresses[0]
    shown = f"[{address}]" if ":" in address else address
    default = 443 if target.scheme == "https" else 80
    netloc = shown if target.port == default else f"{shown}:{target.port}"
    host_header = target.host if target.port == default else f"{target.host}:{target.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, {"Host": host_header}, extensions


class WebhookSender:
    """Sends due outbox rows, in a worker thread, every ``poll_interval`` seconds and at once
    after a commit of this process that emitted events."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session], settings: Settings):
        self._engine = engine
        self._sessions = sessions
        self._allow_private = settings.webhook_allow_private
        self._retry = timedelta(seconds=settings.webhook_retry_seconds)
        self._backoff = settings.webhook_backoff
        self._timeout = settings.webhook_timeout
        self._poll = settings.webhook_poll_interval
        # Long enough for one attempt (connect + answer) and its bookkeeping.
        self._lease = timedelta(seconds=2 * self._timeout + 5)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def watch_local_commits(self) -> None:
        """Wake the sender when a transaction of this process that emitted events commits."""

        def on_commit(conn: Any) -> None:
            if conn.info.pop(WEBHOOK_EMITTED, False):
                conn.info["lumora_webhook_committed"] = True

        def on_rollback(conn: Any) -> None:
            conn.info.pop(WEBHOOK_EMITTED, None)

        def on_checkin(_dbapi_conn: Any, record: Any) -> None:
            if record.info.pop("lumora_webhook_committed", False):
                self.wake()

        event.listen(self._engine, "commit", on_commit)
        event.listen(self._engine, "rollback", on_rollback)
        event.listen(self._engine.pool, "checkin", on_checkin)

    def wake(self) -> None:
        """Look at the outbox now (thread-safe)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                loop.call_soon_threadsafe(wake.set)

    def prune(self) -> int:
        """Delete finished deliveries older than ``HISTORY_DAYS``; returns how many."""
        cutoff = utcnow() - timedelta(days=HISTORY_DAYS)
        with self._sessions() as session:
            result = session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status.in_(("delivered", "failed")),
                    WebhookDelivery.created_at < cutoff,
                )
            )
            session.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    async def _run(self) -> None:
        assert self._wake is not None
        pruned_at = 0.0
        while True:
            self._wake.clear()
            if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                pruned_at = time.monotonic()
                try:
                    await asyncio.to_thread(self.prune)
                except Exception:
                    log.exception("pruning webhook deliveries failed; will retry")
            try:
                sent = await asyncio.to_thread(self.send_due)
            except Exception:
                log.exception("webhook delivery failed; will retry")
                sent = 0
            if sent:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def start(self) -> None:
        """Start the worker."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, trust_env=False
        )
        self._task = asyncio.create_task(self._run(), name="lumora-webhooks")

    async def stop(self) -> None:
        """Stop it; a delivery in flight finishes or is retried after its lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._loop = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ one pass

    def send_due(self) -> int:
        """Claim and send the due rows; returns how many this process sent."""
        now = utcnow()
        with self._sessions() as session:
            session.connection(execution_options={"readonly": True})
            due = list(
                session.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.next_attempt_at <= now,
                        or_(
                            WebhookDelivery.claimed_until.is_(None),
                            WebhookDelivery.claimed_until < now,
                        ),
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(BATCH)
                )
            )
        if not due:
            return 0
        workers = min(PARALLEL, len(due))
        with ThreadPoolExecutor(workers, thread_name_prefix="lumora-webhook") as pool:
            return sum(pool.map(self._claim_and_attempt, due))

    def _claim_and_attempt(self, delivery_id: str) -> int:
        """Send one row if this process gets its lease; 1 when it did."""
        lease = self._claim(delivery_id)
        if lease is None:
            return 0
        self._attempt(delivery_id, lease)
        return 1

    def _claim(self, delivery_id: str) -> Any:
        now = utcnow()
        lease = now + self._lease
        with self._sessions() as session:
            result = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    or_(
                        WebhookDelivery.claimed_until.is_(None),
                        WebhookDelivery.claimed_until < now,
                    ),
                )
                .values(claimed_until=lease)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return lease if getattr(result, "rowcount", 0) == 1 else None

    def _attempt(self, delivery_id: str, lease: Any) -> None:
        with self._sessions() as session:
            row = session.get(WebhookDelivery, delivery_id)
            hook = session.get(Webhook, row.webhook_id) if row is not None else None
            if row is None or hook is None:
                return
            url, secret, body = hook.url, hook.secret, row.body.encode()
            event_type = row.event_type
        started = time.monotonic()
        status_code, error = self._post(url, secret, body, event_type, delivery_id)
        duration_ms = round((time.monotonic() - started) * 1000)
        now = utcnow()
        with self._sessions() as session:
            row = session.get(WebhookDelivery, delivery_id)
            if row is None:  # the webhook was deleted meanwhile
                return
            session.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                )
            )
            row.attempts += 1
            retry_until = row.retry_until or now + self._retry
            row.retry_until = retry_until
            row.claimed_until = None
            if status_code is not None and 200 <= status_code < 300:
                row.status = "delivered"
                row.delivered_at = now
            else:
                delay = min(self._backoff * 2 ** (row.attempts - 1), MAX_BACKOFF_SECONDS)
                row.next_attempt_at = now + timedelta(seconds=delay)
                if row.next_attempt_at > retry_until:
                    row.status = "failed"
                    log.warning("webhook delivery %s failed for good: %s", delivery_id, error)
            session.commit()

    def _post(
        self, url: str, secret: str, body: bytes, event_type: str, delivery_id: str
    ) -> tuple[int | None, str | None]:
        try:
            target = check_target(url, allow_private=self._allow_private)
        except TargetError as exc:
            return None, str(exc)[:_ERROR_CHARS]
        pinned_url, headers, extensions = _pinned(target)
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": f"Lumora-Webhooks/{__version__}",
                "Lumora-Event": event_type,
                "Lumora-Delivery": delivery_id,
                SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            }
        )
        loop, client = self._loop, self._client
        if loop is None or client is None:
            return None, "the webhook sender is not running"
        # The attempt runs on the event loop under one deadline for all of it (connect,
        # headers, answer), and the answer's body is never read: a receiver trickling bytes
        # or sending an endless body can hold neither this sender nor its memory.
        attempt = asyncio.run_coroutine_threadsafe(
            self._send(client, pinned_url, headers, body, extensions), loop
        )
        try:
            status = attempt.result(timeout=self._timeout + 5)
        except (TimeoutError, httpx.TimeoutException):
            attempt.cancel()
            return None, f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            return None, (str(exc) or type(exc).__name__)[:_ERROR_CHARS]
        except concurrent.futures.CancelledError:
            return None, "cancelled: the server is stopping"
        error = None if 200 <= status < 300 else f"answered {status}"
        return status, error

    async def _send(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        body: bytes,
        extensions: dict[str, Any],
    ) -> int:
        """POST and return the status once the answer's headers are in; the whole attempt
        is bounded by the webhook timeout (``TimeoutError`` past it)."""
        async with asyncio.timeout(self._timeout):
            request = client.build_request(
                "POST", url, content=body, headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True)
            await response.aclose()  # unread: the connection is dropped, not drained
            return response.status_code
