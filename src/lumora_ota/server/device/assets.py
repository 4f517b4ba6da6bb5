"""``GET``/``HEAD /api/v1/assets/{sha256}{.ext}``: immutable asset delivery.

The URL names the content (its SHA-256), so the answer never changes: ``cache-control: public,
max-age=31536000, immutable`` and a strong ETag ``"<sha256>"`` (``"<sha256>-br"`` /
``"<sha256>-gzip"`` for the compressed representations). Compression is never done per
request: a brotli or gzip variant written at publish time (``store.variants``) is sent when
``accept-encoding`` allows it (q-values respected, brotli preferred on ties), with
``content-encoding`` and ``vary: accept-encoding``. Local files go out through
``FileResponse`` (zero-copy ``pathsend`` where the server supports it, ``Range`` → 206); a store
that answers with URLs (S3) gets a 302 to the object (or to its variant, which the store then
serves with the right ``content-encoding``).

No database is involved: the name is validated, the file (or variant) looked up by hash. For
a URL store, ``store.known_sizes.KnownSizes`` remembers which objects exist, so steady-state
requests make no call to the store either.

Delta updates (issue #10): an expo-updates launch-asset request with ``A-IM: bsdiff`` may be
answered with a ``226`` bsdiff patch instead (``server/device/patches.negotiate_patch``, from
an in-memory index); launch assets then ``vary`` on ``A-IM`` and ``Expo-Current-Update-ID``.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from lumora_ota.server.context import AppContext
from lumora_ota.server.device.negotiation import acceptable_encodings
from lumora_ota.server.device.patches import full_asset_vary, negotiate_patch
from lumora_ota.server.problems import ProblemError
from lumora_ota.store.blobs import VARIANTS, BlobLocation, BlobStore, variant_name
from lumora_ota.store.known_sizes import KnownSizes
from lumora_ota.store.variants import is_compressible

ASSET_NAME_RE = re.compile(r"^(?P<sha256>[0-9a-f]{64})(?P<ext>\.[A-Za-z0-9]{1,16})?$")
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".bundle": "application/javascript",
    ".hbc": "application/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".svg": "image/svg+xml",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".mp3": "audio/mpeg",
    ".mp4": "video/mp4",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Encodings in server preference order (brotli is smaller).
ENCODINGS = tuple(VARIANTS)


def content_type_for(extension: str) -> str:
    """The content type served for a file extension (with its dot; "" for none)."""
    ext = extension.lower()
    if not ext:
        return DEFAULT_CONTENT_TYPE
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(f"x{ext}")[0] or DEFAULT_CONTENT_TYPE


def parse_asset_name(name: str) -> tuple[str, str]:
    """(sha256, extension) of an asset URL name; 400 problem for anything else."""
    match = ASSET_NAME_RE.fullmatch(name)
    if match is None:
        raise ProblemError(
            400, "asset names are a lowercase hex SHA-256 with an optional short extension"
        )
    return match["sha256"], match["ext"] or ""


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``if-none-match`` list names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if if_none_match.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in candidates


def _file_variant(blobs: BlobStore, sha256: str, accept_encoding: str | None) -> tuple[str, Any]:
    """The best stored representation: (encoding or "identity", its local path)."""
    for encoding in acceptable_encodings(accept_encoding, ENCODINGS):
        location = blobs.locate(variant_name(sha256, encoding))
        if location.path is not None and location.path.is_file():
            return encoding, location.path
    return "identity", blobs.locate(sha256).path


async def _redirect_to_store(
    ctx: AppContext,
    sizes: KnownSizes,
    request: Request,
    sha256: str,
    extension: str,
    identity: BlobLocation,
) -> Response:
    """302 to an object store (S3): the best stored variant for ``accept-encoding``, else
    the blob itself; 404 when the store has neither. Sizes come from a per-process memo, so
    steady-state requests make no call to the store; types never compressed (images) are
    not even looked up."""
    content_type = content_type_for(extension)
    location, encoding = identity, "identity"
    accepted = acceptable_encodings(request.headers.get("accept-encoding"), ENCODINGS)
    for candidate in accepted if is_compressible(content_type, extension) else ():
        name = variant_name(sha256, candidate)
        size = await sizes.size(name)
        if size is not None:
            location = ctx.blobs.locate(name, content_type=content_type, content_encoding=candidate)
            encoding = candidate
            break
    else:
        size = await sizes.size(sha256)
        if size is None:
            raise ProblemError(404, "asset not found")
    if request.method == "HEAD":
        # A pre-signed GET URL is refused for HEAD, and a HEAD moves no bytes: answer here.
        headers = {"cache-control": IMMUTABLE, "vary": "accept-encoding"}
        if encoding != "identity":
            headers["content-encoding"] = encoding
        return Response(headers={**headers, "content-length": str(size)}, media_type=content_type)
    stats = ctx.components.get("stats")
    if stats is not None:
        stats.record_asset(nbytes=size, variant=encoding)
    headers = {
        "cache-control": location.cache_control or IMMUTABLE,
        "vary": full_asset_vary(ctx, sha256),  # launch assets also vary on A-IM (#10)
    }
    return RedirectResponse(str(location.url), status_code=302, headers=headers)


def build_router(ctx: AppContext) -> APIRouter:
    """The asset router, bound to ``ctx``."""
    router = APIRouter(tags=["device"])
    sizes = KnownSizes(ctx.blobs)

    # HEAD answers like GET without a body (FileResponse knows); one schema entry is enough.
    @router.head("/api/v1/assets/{name}", include_in_schema=False)
    @router.get(
        "/api/v1/assets/{name}",
        summary="Download an asset by content hash",
        response_class=Response,
        responses={
            200: {"description": "The asset (possibly br/gzip encoded)"},
            206: {"description": "A byte range"},
            302: {"description": "Redirect to the object store"},
            304: {"description": "Not modified"},
            400: {"description": "Not an asset name"},
            404: {"description": "No such asset"},
        },
    )
    async def get_asset(name: str, request: Request) -> Response:
        sha256, extension = parse_asset_name(name)
        patched = await negotiate_patch(ctx, request, sha256)  # delta updates (#10)
        if patched is not None:
            return patched
        content_type = content_type_for(extension)
        blobs = ctx.blobs
        identity = blobs.locate(sha256, content_type=content_type)
        if identity.url is not None:
            return await _redirect_to_store(ctx, sizes, request, sha256, extension, identity)
        encoding, path = _file_variant(blobs, sha256, request.headers.get("accept-encoding"))
        if path is None:
            raise ProblemError(404, "asset not found")
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ProblemError(404, "asset not found") from None
        etag = f'"{sha256}"' if encoding == "identity" else f'"{sha256}-{encoding}"'
        headers = {
            "cache-control": IMMUTABLE,
            "etag": etag,
            "vary": full_asset_vary(ctx, sha256),  # launch assets also vary on A-IM (#10)
            "x-content-type-options": "nosniff",
        }
        if encoding != "identity":
            headers["content-encoding"] = encoding
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        stats = ctx.components.get("stats")
        if stats is not None and request.method == "GET":
            stats.record_asset(nbytes=stat.st_size, variant=encoding)
        return FileResponse(path, headers=headers, media_type=content_type, stat_result=stat)

    return router
