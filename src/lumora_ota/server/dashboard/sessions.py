"""Dashboard sessions: a signed, HttpOnly, SameSite=Strict cookie that names an API key.

Signing in with an API key sets the cookie ``lumora_session`` =
``base64url(json{k: key id, n: nonce, e: expiry}) "." base64url(HMAC-SHA256)``, signed with a
per-install secret kept in the database (``server_secrets``), so every server process sharing
the database accepts it. The cookie never holds the key itself; each request re-reads the key
by id, so revoking or expiring the key ends its sessions at once. Signing out voids, on the
server, every session of the key issued until then (``ApiKey.sessions_void_before_ms``,
compared with the cookie's issue time ``i``), so a copy of the cookie is worthless after it.

Write requests made with the cookie must carry ``X-CSRF-Token`` (an HMAC of the session nonce,
handed to the dashboard script by ``GET /dashboard/session``) and, when the browser sends one,
an ``Origin`` equal to the server's own; SameSite=Strict keeps cross-site requests from
carrying the cookie in the first place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.server.problems import ProblemError
from lumora_ota.store.models import ServerSecret

SESSION_COOKIE = "lumora_session"
CSRF_HEADER = "x-csrf-token"
SESSION_LIFETIME_SECONDS = 12 * 3600
SECRET_NAME = "dashboard-session"  # noqa: S105 - the row name, not a secret
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_secret(sessions: sessionmaker[Session]) -> bytes:
    """The install's session-signing secret, created on first use (race-free across
    processes: insert-or-ignore, then read whichever value won)."""
    with sessions() as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(ServerSecret).values(name=SECRET_NAME, value=secrets.token_urlsafe(48))
        session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        session.commit()
        value = session.scalars(
            select(ServerSecret.value).where(ServerSecret.name == SECRET_NAME)
        ).one()
    return value.encode("ascii")


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A verified session cookie."""

    key_id: str
    nonce: str
    expires_at: int
    issued_at_ms: int

    def voided_by(self, void_before_ms: int | None) -> bool:
        """Whether a sign-out at ``void_before_ms`` (Unix ms; None: never) ended it."""
        return void_before_ms is not None and self.issued_at_ms <= void_before_ms


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens with the install's secret."""

    def __init__(self, secret: bytes, lifetime: int = SESSION_LIFETIME_SECONDS) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"\0" + payload, hashlib.sha256).digest()

    def issue(self, key_id: str, now: float | None = None) -> tuple[str, DashboardSession]:
        """A new cookie value for ``key_id``."""
        now = now or time.time()
        expires_at = int(now + self.lifetime)
        session = DashboardSession(
            key_id, secrets.token_urlsafe(16), expires_at, issued_at_ms=int(now * 1000)
        )
        payload = json.dumps(
            {"k": key_id, "n": session.nonce, "e": expires_at, "i": session.issued_at_ms},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac('session', payload))}", session

    def verify(self, cookie: str, now: float | None = None) -> DashboardSession | None:
        """The session in ``cookie`` when its signature holds and it has not expired."""
        payload_b64, _, mac_b64 = cookie.partition(".")
        try:
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
            if not hmac.compare_digest(mac, self._mac("session", payload)):
                return None
            data = json.loads(payload)
            expires_at = int(data["e"])
            # Cookies made before issue times were recorded: issued one lifetime before expiry.
            issued = int(data.get("i", (expires_at - self.lifetime) * 1000))
            session = DashboardSession(str(data["k"]), str(data["n"]), expires_at, issued)
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > (now or time.time()) else None

    def csrf_token(self, session: DashboardSession) -> str:
        """The CSRF token bound to ``session``."""
        return _b64(self._mac("csrf", session.nonce.encode()))

    def csrf_ok(self, session: DashboardSession, token: str) -> bool:
        """Whether ``token`` is ``session``'s CSRF token (constant time)."""
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())


def same_origin(request: Request, public_origins: tuple[str, ...] = ()) -> bool:
    """Whether the request's ``Origin`` (when sent) is this server's own origin: the one the
    ``Host`` header names, or one of ``public_origins`` (the configured public URL)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}", *public_origins)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class CookieAuthenticator:
    """Finds the API key id behind a request's dashboard session cookie (the hook the
    management API's auth dependency calls when no ``Authorization`` header is sent)."""

    def __init__(self, signer: SessionSigner, public_origins: tuple[str, ...] = ()) -> None:
        self.signer = signer
        self.public_origins = public_origins

    def session_of(self, request: Request) -> DashboardSession | None:
        """The verified session of ``request``, or None."""
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.signer.verify(cookie) if cookie else None

    def __call__(self, request: Request) -> DashboardSession | None:
        """The request's session; None without a valid session cookie (whether a sign-out
        voided it is the caller's to check, with the key). Raises 403 for a write without a
        valid CSRF token or from another origin."""
        session = self.session_of(request)
        if session is None:
            return None
        if request.method not in SAFE_METHODS:
            token = request.headers.get(CSRF_HEADER, "")
            if (
                not token
                or not self.signer.csrf_ok(session, token)
                or not same_origin(request, self.public_origins)
            ):
                raise ProblemError(403, "missing or invalid CSRF token for this dashboard session")
        return session
