"""Response models of the management API: the schemas of its success answers in
``/openapi.json``, and what the CLI and tests read the answers as.

Routes still build their answers as dictionaries (``*_json`` helpers); ``answer(Model)`` makes
FastAPI validate them against the model and serialise exactly the members set, so the bytes
are unchanged. Members a model does not list are kept rather than dropped (``extra="allow"``):
``tests/test_mgmt_responses.py`` asserts every answer matches its model with no extra member.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class Answer(BaseModel):
    """Base of management answers: camelCase members; times are ISO 8601 UTC strings."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


def answer(model: type[BaseModel]) -> dict[str, Any]:
    """Route keyword arguments documenting (and checking) a success answer as ``model``."""
    return {"response_model": model, "response_model_exclude_unset": True}


class Items(Answer, Generic[T]):
    """A list answer."""

    items: list[T]


class ProjectAnswer(Answer):
    """A project, with its channel names."""

    id: str
    slug: str
    name: str
    created_at: str
    auto_pause_on_failure: bool
    channels: list[str]


class DeploymentAnswer(Answer):
    """A deployment (channel)."""

    id: str
    project_id: str
    name: str
    created_at: str
    paused: bool


class AssetAnswer(Answer):
    """One file of an update; ``url`` is where devices download it."""

    key: str | None
    sha256: str
    md5: str | None
    hash: str
    size: int | None
    content_type: str | None
    file_extension: str | None
    url: str


class UpdateAnswer(Answer):
    """An update (``kind`` update or rollbackToEmbedded) with its assets."""

    id: str
    group_id: str | None
    project_id: str
    channel: str | None
    platform: str
    runtime_version: str
    kind: Literal["update", "rollbackToEmbedded"]
    message: str | None
    created_at: str
    rollout: int
    mandatory: bool
    status: Literal["active", "rolledBack"]
    source_update_id: str | None
    launch_asset: AssetAnswer | None
    assets: list[AssetAnswer]
    metadata: Any
    extra: Any
    manifest_url: str | None


class UpdatePage(Items[UpdateAnswer]):
    """A page of updates; ``nextCursor`` fetches the next (null: last page)."""

    next_cursor: str | None


class GroupAnswer(Answer):
    """An update group: the updates of one publish, one per platform."""

    id: str | None
    project_id: str
    message: str | None
    created_at: str
    updates: list[UpdateAnswer]


class DeletedAnswer(Answer):
    """The ids of the deleted updates."""

    deleted: list[str]


class KeyAnswer(Answer):
    """An API key, never its secret."""

    id: str
    name: str
    role: str
    project_id: str | None
    prefix: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class NewKeyAnswer(KeyAnswer):
    """A new API key with its secret (shown once)."""

    key: str


class SigningAnswer(Answer):
    """A project's signing configuration (never the private key)."""

    enabled: bool
    # "publisher": the private key stays with the publisher (SECURITY.md §8).
    mode: Literal["server", "publisher"] | None = None
    keyid: str | None = None
    certificate_pem: str | None = None
    private_key_source: Literal["file", "database", "publisher"] | None = None
    timestamp_certificate_pem: str | None = None
    created_at: str | None = None


class SigningSetAnswer(Answer):
    """The signing key just configured."""

    keyid: str
    certificate_pem: str


class WhoAmIProject(Answer):
    """A project a key may see."""

    id: str
    slug: str
    name: str


class WhoAmIAnswer(Answer):
    """The calling key and the projects it may see."""

    key_id: str | None
    name: str | None
    role: str
    project_id: str | None
    projects: list[WhoAmIProject]


class AuditAnswer(Answer):
    """A management action (``detail``: what the action records)."""

    id: Any
    at: str
    key_id: str | None
    project_id: str | None
    action: str
    target: str | None
    detail: Any


class MissingAnswer(Answer):
    """The SHA-256 hashes still to upload."""

    missing: list[str]
