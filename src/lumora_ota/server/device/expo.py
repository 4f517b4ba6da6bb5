"""``GET`` ``endpoints.EXPO_MANIFEST``: the Expo Updates protocol v1 (and v0) endpoint.

Answers, by protocol version and negotiated response structure:

========================  ===========================  ==========================  =======
selection                 v1 multipart/mixed           v1 JSON (expo+json, json)   v0
========================  ===========================  ==========================  =======
new update                manifest + extensions parts  manifest                    manifest
device already on it      ``noUpdateAvailable`` part   manifest (same id)          manifest
nothing eligible          ``noUpdateAvailable`` part   204                         204
roll back to embedded     ``rollBackToEmbedded`` part  406 (needs a directive)     406
========================  ===========================  ==========================  =======

With ``expo-expect-signature`` every manifest and directive (part) carries ``expo-signature``
over its exact bytes; a project without a signing key answers 400 then. Every answer carries
``expo-protocol-version`` (the request's), ``expo-sfv-version: 0``, ``expo-manifest-filters``
and ``expo-server-defined-headers`` (empty dictionaries: Lumora filters on the server) and
``cache-control: private, max-age=0``.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping

from fastapi import APIRouter, Request
from starlette.responses import Response

from lumora_ota.api_models import ExpoManifest
from lumora_ota.domain.manifest import manifest_asset_key
from lumora_ota.domain.model import UpdateRecord
from lumora_ota.domain.selection import Selection, SelectionRequest
from lumora_ota.server.context import AppContext
from lumora_ota.server.device.answer import DeviceAnswer, RawHeaders, raw_headers
from lumora_ota.server.device.bodies import (
    BodyKey,
    directive_body,
    dump_json,
    manifest_body,
    publisher_gate,
    selection_key,
    signature_for,
)
from lumora_ota.server.device.cache import DeliveryCache
from lumora_ota.server.device.delivery import (
    MAX_FAILED_IDS,
    MAX_RUNTIME_VERSION_LENGTH,
    apply_pin,
    bounded,
    record_check,
    request_shape,
    required_identity,
    resolve_project,
    select_shared,
)
from lumora_ota.server.device.negotiation import acceptable_media_types, parse_string_list
from lumora_ota.server.endpoints import EXPO_MANIFEST
from lumora_ota.server.problems import ProblemError
from lumora_ota.signing import Signer
from lumora_ota.stats import stats_source

MULTIPART = "multipart/mixed"
MANIFEST_REF = {"$ref": "#/components/schemas/ExpoManifest"}
OFFERED_TYPES = (MULTIPART, "application/expo+json", "application/json")
EXPO_PLATFORMS = ("ios", "android")
DEFAULT_CHANNEL = "production"
PART_CONTENT_TYPE = "application/json"
# The first element of this endpoint's keys in the delivery cache's shape memo.
EXPO_SHAPE = "expo-shape"


def protocol_version(headers: Mapping[str, str]) -> int:
    """0 or 1 from ``expo-protocol-version`` (absent means 0); 400 problem otherwise."""
    raw = headers.get("expo-protocol-version")
    if raw is None:
        return 0
    if raw.strip() in ("0", "1"):
        return int(raw.strip())
    raise ProblemError(400, "unsupported expo-protocol-version; expected 0 or 1")


def selection_request(headers: Mapping[str, str], query: Mapping[str, str]) -> SelectionRequest:
    """The selection request the Expo headers (or the ``platform``/``runtime-version`` query
    parameters) describe; 400 problem for bad values."""
    get = headers.get
    channel, platform, runtime_version, current, embedded, failed = request_fields(
        get("expo-platform") or query.get("platform"),
        get("expo-runtime-version") or query.get("runtime-version"),
        get("expo-channel-name"),
        get("expo-recent-failed-update-ids"),
        get("expo-current-update-id"),
        get("expo-embedded-update-id"),
    )
    return SelectionRequest(
        channel,
        platform,
        runtime_version,
        current,
        embedded,
        bounded(get("eas-client-id"), "eas-client-id"),
        failed,
    )


# Devices of one app send few distinct header sets (its runtime versions, channels, the
# updates they run), so their parsing is memoized; bad values raise and are not remembered.
@functools.lru_cache(maxsize=4096)
def request_fields(
    platform: str | None,
    runtime_header: str | None,
    channel_header: str | None,
    failed_header: str | None,
    current_header: str | None,
    embedded_header: str | None,
) -> tuple[str, str, str, str | None, str | None, frozenset[str]]:
    """(channel, platform, runtime version, current update id, embedded update id, failed
    update ids) from the raw values of the request's Expo headers; 400 problem for bad ones."""
    if platform not in EXPO_PLATFORMS:
        raise ProblemError(400, "expo-platform must be 'ios' or 'android'")
    runtime_version = bounded(runtime_header, "expo-runtime-version", MAX_RUNTIME_VERSION_LENGTH)
    if runtime_version is None:
        raise ProblemError(400, "the expo-runtime-version header is required")
    channel = bounded(channel_header, "expo-channel-name", 100)
    failed = parse_string_list(failed_header, limit=MAX_FAILED_IDS)
    return (
        channel or DEFAULT_CHANNEL,
        platform,
        runtime_version,
        update_id_value(current_header, "expo-current-update-id"),
        update_id_value(embedded_header, "expo-embedded-update-id"),
        frozenset(update_id.lower() for update_id in failed),
    )


def update_id_header(headers: Mapping[str, str], name: str) -> str | None:
    """An update-id header, lowercased: update ids are lowercase UUIDs, and a client may send
    them in upper case (Apple's ``UUIDString`` does)."""
    return update_id_value(headers.get(name), name)


def update_id_value(raw: str | None, name: str) -> str | None:
    """The raw value of update-id header ``name``, stripped and lowercased (see
    ``update_id_header``); 400 problem when too long."""
    value = bounded(raw, name)
    return value.lower() if value else None


def common_headers(protocol: int) -> dict[str, str]:
    """The headers every manifest-endpoint answer carries."""
    return {
        "expo-protocol-version": str(protocol),
        "expo-sfv-version": "0",
        "expo-manifest-filters": "",
        "expo-server-defined-headers": "",
        "cache-control": "private, max-age=0",
    }


@functools.lru_cache(maxsize=64)
def answer_headers(protocol: int, content_type: str | None) -> RawHeaders:
    """``common_headers`` plus the content type, as raw header bytes (few distinct sets)."""
    pairs = [*common_headers(protocol).items()]
    if content_type is not None:
        pairs.append(("content-type", content_type))
    return raw_headers(*pairs)


class MultipartBuilder:
    """``multipart/mixed`` bodies with one boundary per process: random, so no published
    JSON can contain it by accident or by design (checked anyway)."""

    def __init__(self) -> None:
        self.boundary = "lumora-" + secrets.token_hex(16)
        self.content_type = f"{MULTIPART}; boundary={self.boundary}"

    def build(self, parts: list[tuple[str, bytes, str | None]]) -> bytes:
        """Join (name, body, expo-signature or None) parts."""
        delimiter = f"--{self.boundary}".encode()
        chunks: list[bytes] = []
        for name, body, signature in parts:
            if delimiter in body:
                raise RuntimeError("a part body contains the multipart boundary")
            headers = [
                f'content-disposition: inline; name="{name}"',
                f"content-type: {PART_CONTENT_TYPE}",
            ]
            if signature is not None:
                headers.append(f"expo-signature: {signature}")
            chunks.append(delimiter + b"\r\n" + "\r\n".join(headers).encode() + b"\r\n\r\n")
            chunks.append(body + b"\r\n")
        chunks.append(delimiter + b"--\r\n")
        return b"".join(chunks)


def extensions_body(update: UpdateRecord) -> bytes:
    """The extensions part: every asset key, with no extra request headers needed."""
    assets = [a for a in (update.launch_asset, *update.assets) if a is not None]
    return dump_json({"assetRequestHeaders": {manifest_asset_key(a): {} for a in assets}})


class ExpoResponder:
    """Turns a selection into the protocol's bytes. Whole answers are memoized in the delivery
    cache (``respond``); the parts they are built from (manifest and directive bodies, their
    signatures) are memoized there too, since the check API shares them."""

    def __init__(self, ctx: AppContext, cache: DeliveryCache) -> None:
        self._ctx = ctx
        self._cache = cache
        self._multipart = MultipartBuilder()

    def _signature(self, identity: Signer | None, key: BodyKey, body: bytes) -> str | None:
        return None if identity is None else signature_for(self._cache, identity, key, body)

    def _manifest(
        self, update: UpdateRecord, runtime_version: str, identity: Signer | None
    ) -> tuple[BodyKey, bytes, str | None]:
        key, body = manifest_body(
            self._cache,
            update,
            runtime_version,
            self._ctx.settings.resolved_asset_base_url,
            lumora_fields=False,
        )
        return key, body, self._signature(identity, key, body)

    def manifest_multipart(
        self, update: UpdateRecord, runtime_version: str, identity: Signer | None
    ) -> bytes:
        """Manifest and extensions parts."""
        _, body, signature = self._manifest(update, runtime_version, identity)
        return self._multipart.build(
            [("manifest", body, signature), ("extensions", extensions_body(update), None)]
        )

    def directive_multipart(self, marker: UpdateRecord | None, identity: Signer | None) -> bytes:
        """One directive part: ``rollBackToEmbedded`` for a marker, else ``noUpdateAvailable``."""
        key, body = directive_body(self._cache, marker)
        signature = self._signature(identity, key, body)
        return self._multipart.build([("directive", body, signature)])

    def manifest_json(
        self, update: UpdateRecord, runtime_version: str, identity: Signer | None
    ) -> tuple[bytes, str | None]:
        """The bare manifest body and its signature."""
        _, body, signature = self._manifest(update, runtime_version, identity)
        return body, signature

    def respond(
        self,
        selection: Selection,
        request: SelectionRequest,
        protocol: int,
        acceptable: tuple[str, ...],
        identity: Signer | None,
    ) -> DeviceAnswer:
        """The HTTP answer for ``selection`` (see the module table), built once per
        generation for each distinct combination that shapes it."""
        key = (
            "expo-answer",
            *selection_key(selection, request.runtime_version, identity),
            protocol,
            acceptable[0],
            MULTIPART in acceptable,
        )
        return self._cache.memoize(
            key, lambda: self._build_answer(selection, request, protocol, acceptable, identity)
        )

    def _build_answer(
        self,
        selection: Selection,
        request: SelectionRequest,
        protocol: int,
        acceptable: tuple[str, ...],
        identity: Signer | None,
    ) -> DeviceAnswer:
        update = selection.update
        serves_manifest = update is not None and (
            selection.kind == "update"
            or (selection.kind == "no_update" and (protocol == 0 or acceptable[0] != MULTIPART))
        )
        if update is not None and serves_manifest:
            if acceptable[0] == MULTIPART:
                body = self.manifest_multipart(update, request.runtime_version, identity)
                return DeviceAnswer(
                    200, body, answer_headers(protocol, self._multipart.content_type)
                )
            body, signature = self.manifest_json(update, request.runtime_version, identity)
            headers = answer_headers(protocol, acceptable[0])
            if signature is not None:
                headers = (*headers, (b"expo-signature", signature.encode("latin-1")))
            return DeviceAnswer(200, body, headers)
        if selection.kind == "no_update" and (protocol == 0 or MULTIPART not in acceptable):
            return DeviceAnswer(204, b"", answer_headers(protocol, None))
        if protocol == 0 or MULTIPART not in acceptable:
            raise ProblemError(
                406,
                "a rollBackToEmbedded directive needs protocol 1 and accept: multipart/mixed",
                headers=common_headers(protocol),
            )
        marker = update if selection.kind == "rollback_to_embedded" else None
        body = self.directive_multipart(marker, identity)
        return DeviceAnswer(200, body, answer_headers(protocol, self._multipart.content_type))

    async def answer(
        self,
        project: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        *,
        client_host: str | None = None,
    ) -> DeviceAnswer:
        """Answer a manifest request for ``project`` (id or slug) given its headers (lowercase
        names), query parameters and client address (statistics' source); ProblemError for
        what the protocol refuses."""
        protocol = protocol_version(headers)
        selection_req = selection_request(headers, query)
        acceptable = acceptable_media_types(headers.get("accept"), OFFERED_TYPES)
        if not acceptable:
            raise ProblemError(
                406,
                "accept must allow multipart/mixed, application/expo+json or application/json",
                headers=common_headers(protocol),
            )
        cache = self._cache
        # Captured first: everything below is loaded from this generation or a newer one, so
        # an answer stored here is never older than the generation that would serve it.
        memo = cache.shape_memo()
        stale_before = cache.stale_answers
        project_id = await resolve_project(cache, project)
        identity = None
        signed = "expo-expect-signature" in headers
        if signed:
            identity = await required_identity(cache, project_id)
        selection_req = await apply_pin(cache, project_id, selection_req)
        key = (EXPO_SHAPE, *request_shape(project_id, selection_req), protocol, acceptable, signed)
        remembered: tuple[Selection, DeviceAnswer] | None = memo.get(key)
        if remembered is not None:
            selection, answer = remembered
        else:
            selected, shareable = await select_shared(cache, project_id, selection_req)
            selection = publisher_gate(
                cache,
                selected,
                selection_req.runtime_version,
                self._ctx.settings.resolved_asset_base_url,
                identity or await cache.signing_identity(project_id),
                lumora_fields=False,
            )
            answer = self.respond(selection, selection_req, protocol, acceptable, identity)
            if shareable and cache.stale_answers == stale_before:
                cache.remember_shape(memo, key, (selection, answer))
        await record_check(
            self._ctx.stats,
            cache,
            project_id,
            selection_req,
            selection,
            stats_source(client_host),
        )
        return answer


def build_router(responder: ExpoResponder) -> APIRouter:
    """The Expo manifest router, answering through ``responder``."""
    router = APIRouter(tags=["device"])

    @router.api_route(
        EXPO_MANIFEST.path,
        methods=sorted(EXPO_MANIFEST.methods),
        summary="Expo Updates v1 manifest",
        description=(
            "The Expo Updates protocol endpoint (docs.expo.dev/technical-specs/expo-updates-1)."
            " Request headers: `expo-protocol-version`, `expo-platform` (ios|android), "
            "`expo-runtime-version`, optional `expo-channel-name` (default production), "
            "`expo-current-update-id`, `expo-embedded-update-id`, `eas-client-id`, "
            "`expo-recent-failed-update-ids`, `expo-expect-signature`. `{project}` is the "
            "project's id or slug."
        ),
        response_class=Response,
        responses={
            200: {
                # The JSON answer is the manifest itself; the multipart parts are a manifest
                # (ExpoManifest) or a directive, each with its own headers (not expressible).
                "model": ExpoManifest,
                "content": {MULTIPART: {}, "application/expo+json": {"schema": MANIFEST_REF}},
            },
            204: {"description": "No update (protocol 0, or JSON-only clients)"},
            400: {"description": "Bad or missing expo headers"},
            404: {"description": "Unknown project"},
            406: {"description": "No acceptable response structure"},
        },
    )
    async def expo_manifest(project: str, request: Request) -> Response:
        answer = await responder.answer(
            project,
            request.headers,
            request.query_params,
            client_host=request.client.host if request.client else None,
        )
        return answer.to_response()

    return router
