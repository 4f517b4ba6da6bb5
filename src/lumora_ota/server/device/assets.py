"""``GET``/``HEAD`` ``endpoints.ASSET`` (``{sha256}{.ext}``): immutable asset delivery.

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

Behind nginx (``LUMORA_ACCEL_REDIRECT_PREFIX``, docs/DEPLOYMENT.md): the representation is
chosen and every header set here as usual, but a 200 carries ``x-accel-redirect: <prefix><its
path under the blob folder>`` and no body; nginx then sends the file itself from an
``internal`` location (ranges too). 304s, 404s and delta patches are answered here as always.

Delta updates (issue #10): an expo-updates launch-asset request with ``A-IM: bsdiff`` may be
answered with a ``226`` bsdiff patch instead (``server/device/patches.negotiate_patch``, from
an in-memory index); launch assets then ``vary`` on ``A-IM`` and ``Expo-Current-Update-ID``.
"""

from __future__ import annotations

import mimetypes
import os
import re
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from stat import S_ISREG

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from lumora_ota.server.context import AppContext
from lumora_ota.server.device.answer import RawHeaders, raw_headers
from lumora_ota.server.device.memory import BytesLRU
from lumora_ota.server.device.negotiation import acceptable_encodings
from lumora_ota.server.device.patches import full_asset_vary, negotiate_patch, patch_index
from lumora_ota.server.endpoints import ASSET
from lumora_ota.server.middleware import ASSET_SECURITY_HEADERS
from lumora_ota.server.problems import ProblemError
from lumora_ota.store.blobs import (
    VARIANTS,
    BlobLocation,
    BlobStore,
    FileBlobStore,
    variant_name,
)
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
    ".css": "text/css; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Published files are anyone's bytes (any publish key), served on the dashboard's origin:
# none may ever run as a page there. Every asset answer is sandboxed (``ASSET_SECURITY_HEADERS``)
# and only types a browser renders inertly keep their type; everything else (HTML, XHTML, SVG,
# XML/XSLT, PDF, unknown types...) goes out as an ``application/octet-stream`` attachment.
ATTACHMENT = "attachment"
INERT_TYPE_PREFIXES = ("image/", "audio/", "video/", "font/")
INERT_TYPES = frozenset(
    {
        "application/javascript",  # with nosniff never run as a document, only shown
        "application/json",
        "application/wasm",
        "application/octet-stream",
        "text/plain",
        "text/css",
    }
)
# Encodings in server preference order (brotli is smaller).
ENCODINGS = tuple(VARIANTS)
ACCEL_REDIRECT = b"x-accel-redirect"
# What one memoized X-Accel-Redirect answer (headers, no bytes) is counted as in memory.
ACCEL_ENTRY_BYTES = 1024


def content_type_for(extension: str) -> str:
    """The content type served for a file extension (with its dot; "" for none): the file's
    own type when a browser shows it inertly (``is_inert``), else ``application/octet-stream``
    (also sent as an attachment: ``stored_asset``)."""
    ext = extension.lower()
    if not ext:
        return DEFAULT_CONTENT_TYPE
    guessed = CONTENT_TYPES.get(ext) or mimetypes.guess_type(f"x{ext}")[0] or DEFAULT_CONTENT_TYPE
    return guessed if is_inert(guessed) else DEFAULT_CONTENT_TYPE


def is_inert(content_type: str) -> bool:
    """Whether a browser navigated to a response of this type never runs code from it.

    An allow-list, so a type nobody thought of is treated as active: HTML, XHTML, SVG and
    every XML type (XSLT runs, SVG and XHTML hold script), PDF (viewers run script) and
    anything unknown are not inert.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if "xml" in media or "svg" in media or "html" in media:
        return False
    return media in INERT_TYPES or media.startswith(INERT_TYPE_PREFIXES)


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


@dataclass(frozen=True, slots=True)
class StoredAsset:
    """One stored representation of an asset in a local blob store, with its answer headers
    (all but ``vary``, which depends on the patch index)."""

    sha256: str
    encoding: str  # "identity", "br" or "gzip"
    path: Path
    stat: os.stat_result
    content_type: str
    headers: RawHeaders
    # ``((b"x-accel-redirect", b"<prefix><path>"),)`` when nginx sends the bytes of a 200,
    # else empty (never on a 304).
    accel: RawHeaders = ()

    @property
    def etag(self) -> str:
        """The strong ETag of this representation."""
        return asset_etag(self.sha256, self.encoding)


def asset_etag(sha256: str, encoding: str) -> str:
    """``"<sha256>"``, or ``"<sha256>-br"`` / ``"<sha256>-gzip"`` for a compressed variant."""
    return f'"{sha256}"' if encoding == "identity" else f'"{sha256}-{encoding}"'


def stored_asset(
    sha256: str,
    encoding: str,
    path: Path,
    stat: os.stat_result,
    content_type: str,
    *,
    accel: str | None = None,
) -> StoredAsset:
    """A ``StoredAsset`` with its immutable-asset headers (those ``FileResponse`` would add
    too: ``accept-ranges``, ``last-modified``); ``accel`` is the ``X-Accel-Redirect`` URI
    of the file when nginx sends it."""
    pairs = [
        ("content-type", content_type),
        ("cache-control", IMMUTABLE),
        ("etag", asset_etag(sha256, encoding)),
        ("accept-ranges", "bytes"),
        ("last-modified", formatdate(stat.st_mtime, usegmt=True)),
    ]
    if content_type == DEFAULT_CONTENT_TYPE:
        pairs.append(("content-disposition", ATTACHMENT))
    if encoding != "identity":
        pairs.append(("content-encoding", encoding))
    headers = (*raw_headers(*pairs), *ASSET_SECURITY_HEADERS)
    redirect = ((ACCEL_REDIRECT, accel.encode("ascii")),) if accel else ()
    return StoredAsset(sha256, encoding, path, stat, content_type, headers, redirect)


class AssetFiles:
    """Finds the best local representation of an asset, and keeps the bytes of recently
    served small ones in memory.

    Asset names are content hashes, so a representation never changes once it exists: the
    bytes kept are served without looking at the disk again. A variant that does not exist
    yet (the post-publish job writes them in the background) is looked for again next time.

    With ``accel_prefix`` (nginx sends the files: module docstring) no bytes are read: every
    representation found carries its ``X-Accel-Redirect`` and comes back with ``b""`` (an
    empty body), its answer kept in memory so a request costs no look at the disk.
    ``ValueError`` when the store is not a ``FileBlobStore``.
    """

    def __init__(
        self,
        blobs: BlobStore,
        *,
        memory_bytes: int,
        file_bytes: int,
        accel_prefix: str | None = None,
    ) -> None:
        if accel_prefix is not None and not isinstance(blobs, FileBlobStore):
            raise ValueError("X-Accel-Redirect needs the file store")
        self._blobs = blobs
        self._accel_prefix = accel_prefix
        self._file_bytes = file_bytes if memory_bytes > 0 else -1
        self._memory: BytesLRU[tuple[str, str, str], tuple[StoredAsset, bytes]] = BytesLRU(
            memory_bytes
        )

    def find(
        self, sha256: str, extension: str, accept_encoding: str | None
    ) -> tuple[StoredAsset, bytes | None] | None:
        """The best representation ``accept-encoding`` allows (brotli, gzip, then the blob
        itself) and its bytes when they are (now) kept in memory; None when the blob is not
        stored."""
        content_type = content_type_for(extension)
        encodings = (
            acceptable_encodings(accept_encoding, ENCODINGS)
            if is_compressible(content_type, extension)
            else ()
        )
        for encoding in (*encodings, "identity"):
            kept = self._memory.get((sha256, encoding, content_type))
            if kept is not None:
                return kept
            name = sha256 if encoding == "identity" else variant_name(sha256, encoding)
            path = self._blobs.locate(name).path
            if path is None:
                return None
            try:
                stat = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not S_ISREG(stat.st_mode):
                continue
            accel = None
            if self._accel_prefix is not None:
                accel = self._accel_prefix + FileBlobStore.relative_path(name)
            asset = stored_asset(sha256, encoding, path, stat, content_type, accel=accel)
            return asset, self._keep(asset)
        return None

    def _keep(self, asset: StoredAsset) -> bytes | None:
        if asset.accel:
            if self._memory.limit > 0:
                key = (asset.sha256, asset.encoding, asset.content_type)
                self._memory.put(key, (asset, b""), ACCEL_ENTRY_BYTES)
            return b""
        # Small reads (a few MiB at most) from the page cache: cheaper than a thread hop.
        if asset.stat.st_size > self._file_bytes:
            return None
        try:
            data = asset.path.read_bytes()
        except OSError:
            return None
        if len(data) != asset.stat.st_size:
            return None
        key = (asset.sha256, asset.encoding, asset.content_type)
        self._memory.put(key, (asset, data), len(data))
        return data


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
    ctx.stats.record_asset(nbytes=size, variant=encoding)
    headers = {
        "cache-control": location.cache_control or IMMUTABLE,
        "vary": full_asset_vary(ctx, sha256),  # launch assets also vary on A-IM (#10)
    }
    return RedirectResponse(str(location.url), status_code=302, headers=headers)


def build_router(ctx: AppContext, files: AssetFiles) -> APIRouter:
    """The asset router, bound to ``ctx``, finding local files through ``files``."""
    router = APIRouter(tags=["device"])
    sizes = KnownSizes(ctx.blobs)

    async def published(sha256: str) -> bool:
        # Uploaded is not published: a file no update references (a publish that never
        # happened, or one still being prepared) is nobody's to download. Asked only about
        # stored files, so random names cost no database query.
        return await patch_index(ctx).is_published(sha256)

    # HEAD answers like GET without a body (FileResponse knows); one schema entry is enough.
    @router.head(ASSET.path, include_in_schema=False)
    @router.get(
        ASSET.path,
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
        identity = ctx.blobs.locate(sha256, content_type=content_type_for(extension))
        if identity.url is not None:
            if await sizes.size(sha256) is None or not await published(sha256):
                raise ProblemError(404, "asset not found")
            return await _redirect_to_store(ctx, sizes, request, sha256, extension, identity)
        found = files.find(sha256, extension, request.headers.get("accept-encoding"))
        if found is None or not await published(sha256):
            raise ProblemError(404, "asset not found")
        asset, _ = found
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in asset.headers
            if name != b"content-type"
        }
        headers["vary"] = full_asset_vary(ctx, sha256)  # launch assets also vary on A-IM (#10)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, asset.etag):
            return Response(status_code=304, headers=headers)
        record_asset_download(ctx, request.method, asset)
        if asset.accel:  # nginx sends the file (and answers a Range itself)
            headers.update((k.decode("latin-1"), v.decode("latin-1")) for k, v in asset.accel)
            return Response(status_code=200, headers=headers, media_type=asset.content_type)
        return FileResponse(
            asset.path, headers=headers, media_type=asset.content_type, stat_result=asset.stat
        )

    return router


def record_asset_download(ctx: AppContext, method: str, asset: StoredAsset) -> None:
    """Count a full asset answer in the statistics (GETs only: a HEAD moves no bytes)."""
    if method == "GET":
        ctx.stats.record_asset(nbytes=asset.stat.st_size, variant=asset.encoding)
