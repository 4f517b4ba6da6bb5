"""Management API: a project's code-signing key pair.

``PUT /projects/{project}/signing`` (admin) turns manifest signing on: the key pair must parse,
the key must be RSA with at least 2048 bits, and the certificate must belong to it and allow
code signing (what expo-updates checks). The private key is kept in the database, or — with
``privateKeyPath`` instead of ``privateKeyPem``, for an all-projects admin only — read from a
file in the server's signing-keys directory that only its owner may read (mode 0600), at most
64 KiB (``signing.read_key_file``; one message for every refused file, so the field is no
oracle for the server's files). The private key is never returned.

**Publisher-held keys** (``"mode": "publisher"``, issue 20): the server gets the certificate
and the publisher's signature over the constant ``noUpdateAvailable`` directive, never a
private key. It makes its own online *timestamp* key (returned as
``timestampCertificatePem``), which signs only the freshness statements of Lumora check
answers. Each manifest or directive the server would serve is listed by
``GET /projects/{project}/signing/unsigned`` until the publisher (``lumora codesigning
sign``) uploads its signature with ``POST /projects/{project}/signing/signatures``; the
server checks the signature against the certificate and that the body is one it serves, and
until then answers devices "no update" for that update (``bodies.publisher_gate``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from lumora_ota.api_models import SigningAnswer, SigningSetAnswer, StoredAnswer, UnsignedAnswer
from lumora_ota.domain.manifest import build_manifest, iso_time
from lumora_ota.domain.runtime import is_runtime_range
from lumora_ota.server.context import app_context
from lumora_ota.server.device.bodies import NO_UPDATE_DIRECTIVE, dump_json, rollback_directive
from lumora_ota.server.management.audit import record_audit
from lumora_ota.server.management.auth import (
    CurrentPrincipal,
    ReadSession,
    WriteSession,
    visible_project,
)
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.server.management.responses import answer
from lumora_ota.server.problems import ProblemError
from lumora_ota.signing import (
    KEYID_RE,
    SigningError,
    body_sha256,
    generate_signing_identity,
    load_certificate,
    load_signing_identity,
    parse_signature_value,
    read_key_file,
    validate_publisher_certificate,
    verify_rsa_sha256,
)
from lumora_ota.store.models import PublisherSignature, SigningKey, Update, utcnow
from lumora_ota.store.repository import STATUS_ACTIVE, to_record

router = APIRouter(tags=["signing"], route_class=GuardedJSONRoute)

MAX_PEM_CHARS = 64 * 1024
DER = Encoding.DER


class SigningKeyPut(RequestModel):
    """Body of ``PUT /projects/{project}/signing``: exactly one of the two private-key forms."""

    keyid: Annotated[str, Field(pattern=KEYID_RE.pattern)]
    private_key_pem: Annotated[str | None, Field(max_length=MAX_PEM_CHARS)] = None
    private_key_path: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    certificate_pem: Annotated[str, Field(min_length=1, max_length=MAX_PEM_CHARS)]
    # "publisher": no private key; ``noUpdateSignature`` (base64, or an expo-signature
    # value) signs the compact ``{"type":"noUpdateAvailable"}`` directive.
    mode: Literal["server", "publisher"] = "server"
    no_update_signature: Annotated[str | None, Field(max_length=4096)] = None


class SignatureUpload(RequestModel):
    """One publisher signature: the update it belongs to, the exact body, the signature."""

    update_id: Annotated[str, Field(min_length=1, max_length=36)]
    body: Annotated[str, Field(min_length=2, max_length=4 * 1024 * 1024)]
    signature: Annotated[str, Field(min_length=1, max_length=4096)]


class SignaturesPost(RequestModel):
    """Body of ``POST /projects/{project}/signing/signatures``."""

    signatures: Annotated[list[SignatureUpload], Field(min_length=1, max_length=200)]


def signing_json(row: SigningKey | None) -> dict[str, Any]:
    """The API shape of a project's signing configuration (never the private key)."""
    if row is None:
        return {"enabled": False}
    if row.mode == "publisher":
        return {
            "enabled": True,
            "mode": "publisher",
            "keyid": row.keyid,
            "certificatePem": row.certificate_pem,
            "privateKeySource": "publisher",
            "timestampCertificatePem": row.timestamp_certificate_pem,
            "createdAt": iso_time(row.created_at),
        }
    return {
        "enabled": True,
        "mode": "server",
        "keyid": row.keyid,
        "certificatePem": row.certificate_pem,
        "privateKeySource": "file" if row.private_key_path else "database",
        "createdAt": iso_time(row.created_at),
    }


def _upsert(
    session: Session, project_id: str, body: SigningKeyPut, *, keep: bool = False
) -> SigningKey:
    """Store the key pair; ``keep`` (the same publisher-held certificate again) keeps the
    publisher's signatures and the timestamp key."""
    row = session.get(SigningKey, project_id)
    if row is None:
        row = SigningKey(project_id=project_id)
        session.add(row)
    row.keyid = body.keyid
    row.private_key_pem = body.private_key_pem
    row.private_key_path = body.private_key_path
    row.certificate_pem = body.certificate_pem
    row.created_at = utcnow()
    row.mode = body.mode
    if keep:
        return row
    row.timestamp_key_pem = None
    row.timestamp_certificate_pem = None
    # Signatures under an earlier certificate verify no more: the publisher signs again.
    session.query(PublisherSignature).filter(PublisherSignature.project_id == project_id).delete()
    return row


def _same_publisher_certificate(row: SigningKey | None, certificate: Any) -> bool:
    """Whether ``row`` is already publisher-held under ``certificate`` (same DER bytes)."""
    if row is None or row.mode != "publisher" or not row.timestamp_key_pem:
        return False
    try:
        current = load_certificate(row.certificate_pem)
    except SigningError:
        return False
    return bool(current.public_bytes(DER) == certificate.public_bytes(DER))


def _put_publisher(session: Session, project_id: str, slug: str, body: SigningKeyPut) -> SigningKey:
    """Store a publisher-held key: certificate, the signed noUpdateAvailable directive and a
    fresh timestamp key of the server's own."""
    if body.private_key_pem is not None or body.private_key_path is not None:
        raise ProblemError(400, "publisher-held keys stay with the publisher: send no private key")
    if body.no_update_signature is None:
        raise ProblemError(400, "send noUpdateSignature: the signed noUpdateAvailable directive")
    try:
        certificate = validate_publisher_certificate(body.certificate_pem)
        signature = parse_signature_value(body.no_update_signature)
    except SigningError as exc:
        raise ProblemError(400, str(exc), title="Unusable signing key") from None
    directive = dump_json(NO_UPDATE_DIRECTIVE)
    if not verify_rsa_sha256(certificate, directive, signature):
        raise ProblemError(
            400,
            'noUpdateSignature does not verify over {"type":"noUpdateAvailable"} '
            "under the certificate",
            title="Unusable signing key",
        )
    # The same certificate again (the command run twice, a changed keyid) keeps what was
    # signed under it and the timestamp key SDK devices pin (freshness_certificate).
    if _same_publisher_certificate(session.get(SigningKey, project_id), certificate):
        return _upsert(session, project_id, body, keep=True)
    row = _upsert(session, project_id, body)
    timestamp_key, timestamp_certificate = generate_signing_identity(
        f"{slug} timestamp", valid_days=3650
    )
    row.timestamp_key_pem = timestamp_key.decode()
    row.timestamp_certificate_pem = timestamp_certificate.decode()
    session.add(
        PublisherSignature(
            project_id=project_id,
            body_sha256=body_sha256(directive),
            update_id=None,
            kind="directive",
            body=directive.decode(),
            signature=signature,
        )
    )
    return row


def served_bodies(update: Update, asset_base_url: str) -> list[tuple[str, bytes]]:
    """``(kind, body)`` of every body the server serves for ``update`` in publisher-held
    mode: the Expo and the Lumora manifest (for the runtime version it declares), or the
    ``rollBackToEmbedded`` directive of a marker. The same bytes as ``server/device/bodies``."""
    record = to_record(update)
    if record.kind == "rollback_to_embedded":
        return [("directive", dump_json(rollback_directive(record)))]
    if is_runtime_range(record.runtime_version):
        # Served manifests name each device's exact version: nothing one signature covers.
        return []
    return [
        (
            f"manifest-{variant}",
            dump_json(
                build_manifest(
                    record,
                    asset_base_url,
                    runtime_version=record.runtime_version,
                    lumora_fields=variant == "lumora",
                )
            ),
        )
        for variant in ("expo", "lumora")
    ]


def _publisher_row(session: Session, project_id: str) -> SigningKey:
    row = session.get(SigningKey, project_id)
    if row is None or row.mode != "publisher":
        raise ProblemError(409, "the project's signing key is not publisher-held")
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
    if body.mode == "publisher":
        row = _put_publisher(session, found.id, found.slug, body)
        record_audit(
            session,
            principal,
            "signing.set",
            project_id=found.id,
            target=found.slug,
            detail={"keyid": body.keyid, "privateKeySource": "publisher"},
        )
        session.commit()
        return signing_json(row)
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


MAX_UNSIGNED = 100


@router.get(
    "/projects/{project}/signing/unsigned",
    summary="Bodies awaiting the publisher's signature (publisher-held keys)",
    **answer(UnsignedAnswer),
)
def get_unsigned(
    project: str,
    principal: CurrentPrincipal,
    session: ReadSession,
    request: Request,
    update_id: Annotated[list[str] | None, Query(alias="updateId", max_length=100)] = None,
) -> dict[str, Any]:
    """``{"unsigned": [{updateId, kind, body, sha256}]}``: the bodies of active updates
    (newest first, at most 100; or the ``updateId``s given) that the server would serve but
    the publisher has not signed, with the current asset base URL (a changed base URL lists
    every update again: ``lumora codesigning resign``)."""
    found = visible_project(session, principal, project)
    _publisher_row(session, found.id)
    query = (
        select(Update)
        .where(Update.project_id == found.id, Update.status == STATUS_ACTIVE)
        .order_by(Update.created_at.desc(), Update.id.desc())
        .options(selectinload(Update.assets), selectinload(Update.channel))
    )
    if update_id:
        query = query.where(Update.id.in_(update_id))
    signed = set(
        session.scalars(
            select(PublisherSignature.body_sha256).where(PublisherSignature.project_id == found.id)
        )
    )
    base = app_context(request).settings.resolved_asset_base_url
    unsigned: list[dict[str, Any]] = []
    for update in session.scalars(query):
        for kind, body in served_bodies(update, base):
            digest = body_sha256(body)
            if digest not in signed:
                unsigned.append(
                    {"updateId": update.id, "kind": kind, "body": body.decode(), "sha256": digest}
                )
        if len(unsigned) >= MAX_UNSIGNED:
            break
    return {"unsigned": unsigned}


@router.post(
    "/projects/{project}/signing/signatures",
    summary="Upload the publisher's signatures (publisher-held keys)",
    **answer(StoredAnswer),
)
def post_signatures(
    project: str,
    body: SignaturesPost,
    principal: CurrentPrincipal,
    session: WriteSession,
    request: Request,
) -> dict[str, Any]:
    """Store signatures over bodies the server serves: each must verify under the project's
    certificate over exactly ``body``, which must be one of ``updateId``'s bodies now (400
    otherwise, nothing stored). Devices are served those bodies from now on."""
    found = visible_project(session, principal, project)
    principal.require("publish")
    row = _publisher_row(session, found.id)
    certificate = validate_certificate_or_400(row.certificate_pem)
    base = app_context(request).settings.resolved_asset_base_url
    stored = 0
    for index, upload in enumerate(body.signatures):
        update = session.get(Update, upload.update_id)
        if update is None or update.project_id != found.id:
            raise ProblemError(400, f"signatures[{index}]: update {upload.update_id} not found")
        data = upload.body.encode()
        kinds = {bytes_: kind for kind, bytes_ in served_bodies(update, base)}
        if data not in kinds:
            raise ProblemError(
                400, f"signatures[{index}]: the body is not one the server serves for the update"
            )
        try:
            signature = parse_signature_value(upload.signature)
        except SigningError as exc:
            raise ProblemError(400, f"signatures[{index}]: {exc}") from None
        if not verify_rsa_sha256(certificate, data, signature):
            raise ProblemError(
                400, f"signatures[{index}]: the signature does not verify under the certificate"
            )
        digest = body_sha256(data)
        existing = session.get(PublisherSignature, (found.id, digest))
        if existing is None:
            session.add(
                PublisherSignature(
                    project_id=found.id,
                    body_sha256=digest,
                    update_id=update.id,
                    kind=kinds[data],
                    body=upload.body,
                    signature=signature,
                )
            )
            stored += 1
    record_audit(
        session,
        principal,
        "signing.signatures",
        project_id=found.id,
        target=found.slug,
        detail={"stored": stored},
    )
    session.commit()
    return {"stored": stored}


def validate_certificate_or_400(certificate_pem: str) -> Any:
    """The stored certificate, or 409 when it is no longer usable (expired, say)."""
    try:
        return validate_publisher_certificate(certificate_pem)
    except SigningError as exc:
        raise ProblemError(409, f"the project's certificate is unusable: {exc}") from None
