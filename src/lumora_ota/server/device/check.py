"""``POST`` ``endpoints.UPDATES_CHECK``: Lumora's JSON check API (used by the Python SDK).

Same selection engine as the Expo endpoint. The answer is one of:

* ``{"updateAvailable": true, "isMandatory": b, "message": "...", "manifest": {...}}`` — the
  manifest has the Expo shape plus ``path``, ``sha256`` and ``size`` per asset;
* ``{"updateAvailable": false, "isMandatory": false, "directive": {"type": "rollBackToEmbedded",
  "parameters": {"commitTime": "..."}}}``;
* ``{"updateAvailable": false, "isMandatory": false, "directive": {"type":
  "noUpdateAvailable"}}``.

**Signed answers.** With ``"signed": true`` (or the ``expo-expect-signature`` header) the
answer also carries ``manifestText`` (or ``directiveText``): the exact JSON text whose UTF-8
bytes were signed — the parsed ``manifest``/``directive`` beside it is the same document —
and ``signature``, the ``expo-signature`` structured field
``sig="<base64 RSA PKCS#1 v1.5 SHA-256>", keyid="...", alg="rsa-v1_5-sha256"``, which is also
sent as the ``expo-signature`` response header. A client verifies the signature over
``manifestText``, then uses the manifest parsed from that very text. A signed request for a
project without a signing key gets 400.

**Freshness.** A signed answer also carries ``freshnessText`` and ``freshnessSignature``: a
signed statement binding the answer's bytes to its project, channel and platform, a sequence
that only grows (the delivery revision) and an expiry (``LUMORA_SIGNED_ANSWER_TTL``), so a
replayed or withheld answer is refused by the SDK (``lumora_ota.freshness``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from lumora_ota.api_models import CheckResponse
from lumora_ota.domain.selection import Selection, SelectionRequest, is_rollback
from lumora_ota.freshness import Freshness, body_digest, issue_window
from lumora_ota.server.context import AppContext
from lumora_ota.server.device.answer import DeviceAnswer, raw_headers
from lumora_ota.server.device.bodies import (
    directive_body,
    dump_json,
    freshness_signer,
    manifest_body,
    publisher_gate,
    selection_key,
    signature_for,
)
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.server.device.delivery import (
    MAX_FAILED_IDS,
    MAX_HEADER_ID_LENGTH,
    MAX_RUNTIME_VERSION_LENGTH,
    apply_pin,
    record_check,
    required_identity,
    resolve_project,
    select_for_device,
)
from lumora_ota.server.endpoints import UPDATES_CHECK
from lumora_ota.server.management.guards import GuardedJSONRoute, RequestModel
from lumora_ota.signing import Signer
from lumora_ota.stats import stats_source

ShortId = Field(default=None, min_length=1, max_length=MAX_HEADER_ID_LENGTH)


class CheckRequest(RequestModel):
    """What the device runs."""

    project_id: str = Field(min_length=1, max_length=MAX_HEADER_ID_LENGTH)
    channel: str = Field(default="production", min_length=1, max_length=100)
    platform: Literal["ios", "android", "web"]
    runtime_version: str = Field(min_length=1, max_length=MAX_RUNTIME_VERSION_LENGTH)
    current_update_id: str | None = ShortId
    embedded_update_id: str | None = ShortId
    device_id: str | None = ShortId
    signed: bool = False
    recent_failed_update_ids: list[str] = Field(default_factory=list, max_length=MAX_FAILED_IDS)

    def selection_request(self) -> SelectionRequest:
        """The engine's view of this request."""
        return SelectionRequest(
            channel=self.channel,
            platform=self.platform,
            runtime_version=self.runtime_version,
            current_update_id=self.current_update_id,
            embedded_update_id=self.embedded_update_id,
            device_id=self.device_id,
            failed_update_ids=frozenset(self.recent_failed_update_ids),
        )


def encode_check_answer(
    payload: bytes,
    *,
    update: tuple[bool, str | None] | None,
    signature: str | None = None,
    freshness: tuple[str, str] | None = None,
) -> bytes:
    """The bytes of a check answer (``CheckResponse``), written directly: the answer is
    memoized whole, and ``payload`` — the served manifest or directive — is embedded as the
    very bytes that were signed.

    ``payload``: compact JSON of the manifest (when ``update`` is ``(is_mandatory,
    message)``) or of the directive (``update`` None). ``signature``: the expo-signature
    value over ``payload`` (adds ``manifestText``/``directiveText`` and ``signature``).
    ``freshness``: ``(statement text, its signature)``. ``tests/test_device_answers.py``
    proves the bytes JSON-equal to the model's serialization for every shape."""
    if update is not None:
        mandatory, message = update
        parts = [
            b'{"updateAvailable":true,"isMandatory":',
            dump_json(mandatory),
            b',"message":',
            dump_json(message),
            b',"manifest":',
            payload,
        ]
        text_field = b"manifestText"
    else:
        parts = [b'{"updateAvailable":false,"isMandatory":false,"directive":', payload]
        text_field = b"directiveText"
    if signature is not None:
        text = dump_json(payload.decode("utf-8"))
        parts += [b',"', text_field, b'":', text, b',"signature":', dump_json(signature)]
    if freshness is not None:
        statement, statement_signature = freshness
        parts += [b',"freshnessText":', dump_json(statement)]
        parts += [b',"freshnessSignature":', dump_json(statement_signature)]
    parts.append(b"}")
    return b"".join(parts)


CHECK_HEADERS = raw_headers(
    ("content-type", "application/json"), ("cache-control", "private, max-age=0")
)


class CheckResponder:
    """Answers check requests from the delivery cache (bodies memoized there)."""

    def __init__(self, ctx: AppContext, cache: DeliveryCache) -> None:
        self._ctx = ctx
        self._cache = cache

    async def answer(
        self, body: CheckRequest, *, signed: bool, client_host: str | None = None
    ) -> DeviceAnswer:
        """The answer to a validated check request; ``signed`` when the request asks for a
        signature (its ``signed`` field or the ``expo-expect-signature`` header);
        ``client_host`` is the client address (statistics' source)."""
        cache = self._cache
        project_id = await resolve_project(cache, body.project_id)
        identity = None
        sequence: int | None = None
        if signed or body.signed:
            identity = await required_identity(cache, project_id)
            # Read before selecting: what is selected next is at least this new.
            sequence = cache.sequence()
        selection_req = body.selection_request()
        selection_req = await apply_pin(cache, project_id, selection_req)
        selection = publisher_gate(
            cache,
            await select_for_device(cache, project_id, selection_req),
            selection_req.runtime_version,
            self._ctx.settings.resolved_asset_base_url,
            identity or await cache.signing_identity(project_id),
            lumora_fields=True,
        )
        key: tuple[object, ...] = (
            "check-answer",
            *selection_key(selection, selection_req.runtime_version, identity),
        )
        freshness: Freshness | None = None
        if identity is not None and freshness_signer(identity) is not None:
            freshness = await self._freshness(body, project_id, selection, sequence)
            key = (*key, freshness.channel, freshness.platform, freshness.sequence)
            key = (*key, freshness.issued_at, freshness.rollback, freshness.project_id)
        answer = cache.memoize(
            key,
            lambda: self._build_answer(
                selection, selection_req.runtime_version, identity, freshness
            ),
        )
        await record_check(
            self._ctx.stats,
            cache,
            project_id,
            selection_req,
            selection,
            stats_source(client_host),
        )
        return answer

    async def _freshness(
        self, body: CheckRequest, project_id: str, selection: Selection, sequence: int | None
    ) -> Freshness:
        """The answer's freshness statement, its body digest still unset."""
        cache = self._cache
        if sequence is None:  # nothing was loaded before this request
            sequence = cache.sequence() or 0
        candidates = await cache.candidates(
            project_id, body.channel, body.platform, body.runtime_version
        )
        issued_at, expires = issue_window(time.time(), self._ctx.settings.signed_answer_ttl)
        return Freshness(
            # As the device names it (id or slug): what the SDK compares with its own.
            project_id=body.project_id,
            # Devices may name any channel: those the project lacks share one statement.
            channel=body.channel if cache.known_channel(project_id, body.channel) else "",
            platform=body.platform,
            sequence=sequence,
            issued_at=issued_at,
            expires=expires,
            body_sha256="",
            rollback=is_rollback(candidates, selection),
        )

    def _build_answer(
        self,
        selection: Selection,
        runtime_version: str,
        identity: Signer | None,
        freshness: Freshness | None,
    ) -> DeviceAnswer:
        cache = self._cache
        headers = CHECK_HEADERS
        update = selection.update
        summary: tuple[bool, str | None] | None = None
        if selection.kind == "update" and update is not None:
            key, payload = manifest_body(
                cache,
                update,
                runtime_version,
                self._ctx.settings.resolved_asset_base_url,
                lumora_fields=True,
            )
            summary = (selection.is_mandatory, update.message)
        else:
            marker = update if selection.kind == "rollback_to_embedded" else None
            key, payload = directive_body(cache, marker)
        signature: str | None = None
        statement: tuple[str, str] | None = None
        if identity is not None:
            signature = signature_for(cache, identity, key, payload)
            headers = (*headers, (b"expo-signature", signature.encode("latin-1")))
            statement_signer = freshness_signer(identity)
            if freshness is not None and statement_signer is not None:
                text = replace(freshness, body_sha256=body_digest(payload)).to_bytes()
                statement = (text.decode("utf-8"), statement_signer.signature_header(text))
        body = encode_check_answer(
            payload, update=summary, signature=signature, freshness=statement
        )
        return DeviceAnswer(200, body, headers)


def build_router(responder: CheckResponder) -> APIRouter:
    """The check router, answering through ``responder``."""
    # The guarded route caps the JSON body size and nesting before validation.
    router = APIRouter(tags=["device"], route_class=GuardedJSONRoute)

    @router.api_route(
        UPDATES_CHECK.path,
        methods=sorted(UPDATES_CHECK.methods),
        summary="Check for an update (Lumora JSON API)",
        description=__doc__,
        response_model=CheckResponse,
        response_model_exclude_none=True,
        responses={400: {"description": "Signing requested but not configured"}},
    )
    async def check_for_update(body: CheckRequest, request: Request) -> Response:
        signed = "expo-expect-signature" in request.headers
        answer = await responder.answer(
            body, signed=signed, client_host=request.client.host if request.client else None
        )
        return answer.to_response()

    return router
