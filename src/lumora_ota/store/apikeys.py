"""Management API keys: generation, hashing, lookup, revocation and the bootstrap key.

A key is ``lum_`` followed by 32 random bytes (base64url). Only its SHA-256 is stored; the
secret is shown once, at creation. These functions take a ``Session`` and never commit, so the
API can add an audit row in the same transaction and the CLI's direct mode can call them on a
database with no server running.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from lumora_ota.store.models import ApiKey, utcnow

KEY_PREFIX = "lum_"
ROLES: tuple[str, ...] = ("read", "publish", "admin")
_ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
_DISPLAY_PREFIX_LENGTH = 12
LAST_USED_RESOLUTION = timedelta(minutes=5)


def generate_secret() -> str:
    """A new random key secret."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a key: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    """The leading characters kept in clear so people can tell their keys apart."""
    return secret[:_DISPLAY_PREFIX_LENGTH]


def role_allows(held: str, needed: str) -> bool:
    """Whether a key of role ``held`` may do what needs role ``needed`` (admin > publish > read)."""
    return _ROLE_RANK.get(held, -1) >= _ROLE_RANK[needed]


def is_usable(key: ApiKey, now: datetime | None = None) -> bool:
    """Whether ``key`` is neither revoked nor expired."""
    now = now or utcnow()
    if key.revoked_at is not None:
        return False
    return key.expires_at is None or key.expires_at > now


def find_usable_key(session: Session, secret: str, now: datetime | None = None) -> ApiKey | None:
    """The key whose secret is ``secret``, when it exists and is neither revoked nor expired."""
    if not secret:
        return None
    wanted = hash_secret(secret)
    key = session.scalars(select(ApiKey).where(ApiKey.secret_hash == wanted)).one_or_none()
    # The lookup goes through an index on the hash; comparing the hashes again in constant
    # time keeps the decision itself free of timing differences.
    if key is None or not hmac.compare_digest(key.secret_hash, wanted):
        return None
    return key if is_usable(key, now) else None


def create_key(
    session: Session,
    *,
    name: str,
    role: str,
    project_id: str | None = None,
    expires_at: datetime | None = None,
    secret: str | None = None,
) -> tuple[ApiKey, str]:
    """Add a key (flushed, not committed); returns it and its secret, shown only this once.

    ``secret`` fixes the value (the bootstrap key); otherwise a random one is made.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    secret = secret or generate_secret()
    key = ApiKey(
        name=name,
        role=role,
        project_id=project_id,
        expires_at=expires_at,
        prefix=display_prefix(secret),
        secret_hash=hash_secret(secret),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key, secret


def list_keys(session: Session, *, project_id: str | None = None) -> list[ApiKey]:
    """Keys, oldest first; only those scoped to ``project_id`` when it is given."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    return list(session.scalars(query))


def get_key(session: Session, key_id: str) -> ApiKey | None:
    """The key with id ``key_id``, or None."""
    return session.get(ApiKey, key_id)


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke a key (idempotent; not committed). None when no such key exists."""
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def touch_key(session: Session, key_id: str, now: datetime | None = None) -> None:
    """Record that the key was just used (not committed); only rewrites a ``last_used_at``
    older than ``LAST_USED_RESOLUTION`` so busy keys cause few writes."""
    now = now or utcnow()
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )


def needs_touch(key: ApiKey, now: datetime | None = None) -> bool:
    """Whether ``touch_key`` would change the key's ``last_used_at``."""
    now = now or utcnow()
    return key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION


def ensure_bootstrap_key(sessions: sessionmaker[Session], secret: str) -> bool:
    """Create an all-projects admin key with exactly ``secret`` unless it already exists.

    Returns whether a key was created. Several processes may start at once: the unique index
    on the secret hash lets exactly one insert win, and the others see an IntegrityError.
    """
    with sessions() as session:
        wanted = hash_secret(secret)
        if session.scalars(select(ApiKey.id).where(ApiKey.secret_hash == wanted)).first():
            return False
        try:
            create_key(session, name="bootstrap admin", role="admin", secret=secret)
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
    return True
