"""The content-addressed blob cache and resumable, bounded, verified downloads.

A blob lives at ``blobs/<sha256>`` only once its bytes hash to that name, so anything in the
cache can be used without a second download. A download in progress is ``downloads/<sha256>.part``;
when interrupted it is resumed with ``Range`` (a ``206`` appends, a ``200`` starts over).
Bodies are bounded by the manifest's size: one byte too many aborts the download.

The launch asset may come as a bsdiff patch against the running update's (``delta.py``): the
first request then asks for one, and a full answer is used as is. A patch that fails in any
way is dropped and the asset downloaded again in full, without asking for a patch.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lumora_ota.client._internal.delta import PatchBase, PatchError, apply_patch, is_patch_response
from lumora_ota.client._internal.fs import FileSystem
from lumora_ota.client._internal.manifest import ManifestAsset
from lumora_ota.client.errors import (
    DownloadError,
    DownloadLengthError,
    HashMismatchError,
    HTTPStatusError,
    LumoraClientError,
    NetworkError,
)
from lumora_ota.client.fetcher import FetcherInterface

_CONTENT_RANGE_PREFIX = "bytes "


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter between attempts of one download."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return rng.uniform(ceiling / 2, ceiling)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


ProgressSink = Callable[[int], None]  # called with the bytes of the asset held so far


class _ContentError(Exception):
    """The bytes are wrong (too many, bad hash): the partial file cannot be trusted."""

    def __init__(self, error: DownloadError) -> None:
        super().__init__(str(error))
        self.error = error


class BlobCache:
    """Verified blobs by SHA-256 plus the partial downloads that lead to them."""

    def __init__(
        self,
        root: Path,
        fs: FileSystem,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.blobs_dir = root / "blobs"
        self.downloads_dir = root / "downloads"
        self._fs = fs
        self._sleep = sleep
        self._rng = rng or random.Random()

    def blob_path(self, sha256: str) -> Path:
        """Where a verified blob lives."""
        return self.blobs_dir / sha256

    def part_path(self, sha256: str) -> Path:
        """Where a partial download lives."""
        return self.downloads_dir / f"{sha256}.part"

    def has(self, asset: ManifestAsset) -> bool:
        """Whether the blob is cached with the right size (hash checked at download time)."""
        try:
            return self.blob_path(asset.sha256).stat().st_size == asset.size
        except FileNotFoundError:
            return False

    def verify_cached(self, asset: ManifestAsset) -> bool:
        """Re-hash a cached blob; a corrupt one is deleted so it gets downloaded again."""
        if not self.has(asset):
            return False
        if file_sha256(self.blob_path(asset.sha256)) == asset.sha256:
            return True
        self._fs.unlink(self.blob_path(asset.sha256))
        return False

    def partial_size(self, sha256: str) -> int:
        """Bytes already held in a partial download."""
        try:
            return self.part_path(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def remove_stale_parts(self, keep: set[str], max_age: float = 7 * 24 * 3600) -> None:
        """Delete partial downloads untouched for ``max_age`` seconds (unless in ``keep``)."""
        if not self.downloads_dir.is_dir():
            return
        cutoff = time.time() - max_age
        for part in self.downloads_dir.iterdir():
            if part.name.removesuffix(".part") in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < cutoff:
                    self._fs.unlink(part)

    def download(
        self,
        fetcher: FetcherInterface,
        asset: ManifestAsset,
        retry: RetryPolicy,
        progress: ProgressSink,
        patch_base: PatchBase | None = None,
    ) -> Path:
        """Download ``asset`` into the cache (resuming, retrying); returns the blob path.

        With ``patch_base`` the first request asks for a patch from it (see ``delta.py``).
        """
        self._fs.mkdir(self.blobs_dir)
        self._fs.mkdir(self.downloads_dir)
        failures = 0
        while True:
            resumed_from = self.partial_size(asset.sha256)
            try:
                return self._attempt(fetcher, asset, resumed_from, progress, patch_base)
            except PatchError:
                # Whatever went wrong with the patch, the full asset is still a request away.
                patch_base = None
                self._fs.unlink(self.part_path(asset.sha256))
                progress(0)
                continue
            except _ContentError as exc:
                self._fs.unlink(self.part_path(asset.sha256))
                progress(0)
                if resumed_from == 0:
                    raise exc.error from None
                failure: LumoraClientError = exc.error  # a stale partial file: start over
            except HTTPStatusError as exc:
                if not exc.retriable:
                    raise DownloadError(f"{asset.url}: {exc}") from exc
                failure = exc
            except NetworkError as exc:
                failure = exc
            failures += 1
            if failures >= retry.attempts:
                raise DownloadError(
                    f"{asset.url}: giving up after {failures} attempts: {failure}"
                ) from failure
            self._sleep(retry.delay(failures, self._rng))

    def _attempt(
        self,
        fetcher: FetcherInterface,
        asset: ManifestAsset,
        offset: int,
        progress: ProgressSink,
        patch_base: PatchBase | None,
    ) -> Path:
        part = self.part_path(asset.sha256)
        if offset > asset.size:
            raise _ContentError(DownloadLengthError(f"{part.name} is larger than the asset"))
        if offset < asset.size:
            self._fetch_into(fetcher, asset, part, offset, progress, patch_base)
        if self.partial_size(asset.sha256) < asset.size:
            raise NetworkError(f"{asset.url}: the body ended early")
        if file_sha256(part) != asset.sha256:
            raise _ContentError(
                HashMismatchError(
                    f"{asset.url}: the downloaded bytes do not hash to {asset.sha256}"
                )
            )
        blob = self.blob_path(asset.sha256)
        self._fs.replace(part, blob)
        self._fs.fsync_dir(self.blobs_dir)
        return blob

    def _apply_patch_into(
        self,
        chunks: Iterable[bytes],
        asset: ManifestAsset,
        part: Path,
        patch_base: PatchBase,
        progress: ProgressSink,
    ) -> None:
        try:
            patch = _read_patch(chunks, max(asset.size, 1))
        except NetworkError as exc:
            raise PatchError(f"reading the patch failed: {exc}") from exc
        result = apply_patch(patch_base, patch, asset)
        with open(part, "wb") as handle:
            self._fs.write(handle, result, part)
            self._fs.fsync(handle, part)
        progress(len(result))

    def _fetch_into(
        self,
        fetcher: FetcherInterface,
        asset: ManifestAsset,
        part: Path,
        offset: int,
        progress: ProgressSink,
        patch_base: PatchBase | None = None,
    ) -> None:
        # A resumed request asks for the identity encoding: a byte range of a compressed
        # variant would not line up with the decoded bytes kept in the .part file.
        headers = (
            {"range": f"bytes={offset}-", "accept-encoding": "identity"}
            if offset
            else {"accept-encoding": "br, gzip"}
        )
        if patch_base is not None and not offset:
            headers.update(patch_base.request_headers())
        with fetcher.open("GET", asset.url, headers) as response:
            if patch_base is not None and is_patch_response(
                response.status, response.headers, patch_base
            ):
                self._apply_patch_into(response.chunks, asset, part, patch_base, progress)
                return
            if response.status == 206 and offset:
                if _range_start(response.headers) != offset:
                    raise _ContentError(DownloadError(f"{asset.url}: unexpected Content-Range"))
                mode = "ab"
            elif response.status == 200:
                offset, mode = 0, "wb"  # no (usable) range answer: start over
            elif response.status == 416:
                raise _ContentError(DownloadError(f"{asset.url}: range not satisfiable"))
            else:
                raise HTTPStatusError(f"GET {asset.url}: HTTP {response.status}", response.status)
            received = offset
            with open(part, mode) as handle:
                try:
                    for chunk in response.chunks:
                        received += len(chunk)
                        if received > asset.size:
                            raise _ContentError(
                                DownloadLengthError(
                                    f"{asset.url}: more than the announced {asset.size} bytes"
                                )
                            )
                        self._fs.write(handle, chunk, part)
                        progress(received)
                finally:
                    # Whatever arrived is kept durably for the next attempt to resume from.
                    handle.flush()
                self._fs.fsync(handle, part)


def _read_patch(chunks: Iterable[bytes], limit: int) -> bytes:
    """The whole patch body; a patch as large as the asset itself is refused."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) >= limit:
            raise PatchError("the patch is not smaller than the asset")
    return bytes(body)


def _range_start(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-range")
    if value is None or not value.startswith(_CONTENT_RANGE_PREFIX):
        return None
    try:
        return int(value[len(_CONTENT_RANGE_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return None
