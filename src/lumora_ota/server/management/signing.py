"""Management API: a project's code-signing key pair.

``PUT /projects/{project}/signing`` (admin) turns manifest signing on: the key pair must parse,
the key must be RSA with at least 2048 bits, and the certificate must belong to it and allow
code signing (what expo-updates checks). The private key is kept in the database, or — with
``privateKeyPath`` instead of ``privateKeyPem``, for an all-projects admin only — read from a
file in the server's signing-keys directory that only its owner may read (mode 0600), at most
64 KiB (``signing.read_key_file``; one message for every refused file, so the field is no
oracle for the server's files). The private key is never returned.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field
from sqlalchemy.orm import Session

from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.context import app_context
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.server.management.responses import SigningAnswer, SigningSetAnswer, answer
from lumora_ota.server.problems import ProblemError
from lumora_ota.signing import KEYID_RE, SigningError, load_signing_identity, read_key_file
from lumora_ota.store.models import SigningKey, utcnow

router = APIRouter(tags=["signing"], route_class=GuardedJSONRoute)

MAX_PEM_CHARS = 64 * 1024


class SigningKeyPut(RequestModel):
    """Body of ``PUT /projects/{project}/signing``: exactly one of the two private-key forms."""

    keyid: Annotated[str, Field(pattern=KEYID_RE.pattern)]
    private_key_pem: Annotated[str | None, Field(max_length=MAX_PEM_CHARS)] = None
    private_key_path: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    certificate_pem: Annotated[str, Field(min_length=1, max_length=MAX_PEM_CHARS)]


def signing_json(row: SigningKey | None) -> dict[str, Any]:
    """The API shape of a project's signing configuration (never the private key)."""
    if row is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "keyid": row.keyid,
        "certificatePem": row.certificate_pem,
        "privateKeySource": "file" if row.private_key_path else "database",
        "createdAt": iso_time(row.created_at),
    }


def _upsert(session: Session, project_id: str, body: SigningKeyPut) -> SigningKey:
    row = session.get(SigningKey, project_id)
    if row is None:
        row = SigningKey(project_id=project_id)
        session.add(row)
    row.keyid = body.keyid
    row.private_key_pem = body.private_key_pem
    row.private_key_path = body.private_key_path
    row.certificate_pem = body.certificate_pem
    row.created_at = utcnow()
    return row


@router.put(
    "/projects/{project}/signing",
    summary="Turn on manifest signing (admin)",
    **answer(SigningSetAnswer),
)
def put_signing(
    project: str,
    body: SigningKeyPut,
    principal: CurrentPrincipal,
    session: WriteSession,
    request: Request,
) -> dict[str, Any]:
    """Store the project's signing key pair; manifests are signed from now on."""
    found = visible_project(session, principal, project)
    principal.require("admin")
    if (body.private_key_pem is None) == (body.private_key_path is None):
        raise ProblemError(400, "send exactly one of privateKeyPem and privateKeyPath")
    if body.private_key_pem is not None:
        private_pem = body.private_key_pem.encode()
    else:
        # Server files are the operator's: a project's admin must not pick one.
        principal.require_all_projects()
        keys_dir = app_context(request).settings.resolved_signing_keys_dir
        try:
            private_pem = read_key_file(keys_dir, body.private_key_path or "")
        except SigningError as exc:
            raise ProblemError(400, str(exc)) from None
    try:
        load_signing_identity(body.keyid, private_pem, body.certificate_pem, require_valid_now=True)
    except SigningError as exc:
        raise ProblemError(400, str(exc), title="Unusable signing key") from None
    row = _upsert(session, found.id, body)
    record_audit(
        session,
        principal,
        "signing.set",
        project_id=found.id,
        target=found.slug,
        detail={"keyid": body.keyid, "privateKeySource": signing_json(row)["privateKeySource"]},
    )
    session.commit()
    return {"keyid": row.keyid, "certificatePem": row.certificate_pem}


@router.get(
    "/projects/{project}/signing",
    summary="The project's signing configuration",
    **answer(SigningAnswer),
)
def get_signing(project: str, principal: CurrentPrincipal, session: ReadSession) -> dict[str, Any]:
    """Whether the project signs, with which keyid and certificate."""
    found = visible_project(session, principal, project)
    return signing_json(session.get(SigningKey, found.id))


@router.delete(
    "/projects/{project}/signing",
    summary="Turn off manifest signing (admin)",
    **answer(SigningAnswer),
)
def delete_signing(
    project: str, principal: CurrentPrincipal, session: WriteSession
) -> dict[str, Any]:
    """Forget the project's key pair; manifests are no longer signed."""
    found = visible_project(session, principal, project)
    principal.require("admin")
    row = session.get(SigningKey, found.id)
    if row is not None:
        session.delete(row)
        record_audit(session, principal, "signing.delete", project_id=found.id, target=found.slug)
        session.commit()
    return {"enabled": False}
