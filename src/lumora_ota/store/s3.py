"""Blobs in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, SeaweedFS, Ceph).

Selected by a storage URL such as
``s3://bucket?endpoint=http://127.0.0.1:8333&region=us-east-1&addressing=path&prefix=ota/``;
credentials come from boto3's default chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles, ...), never from the URL.

Objects live at ``{prefix}{name}``: a blob at ``{prefix}{sha256}``, its compressed variants
and patches beside it at ``{prefix}{sha256}.br`` and so on.

Why uploads never leave a partial blob under a final name: an upload is buffered in memory
up to one part (``part_size``, at least 8 MiB by default) while it is hashed and size-capped.
A blob that fits in one part is written with a single PutObject only after its hash has been
checked. A larger one becomes a multipart upload addressed to the final key; S3 makes a
multipart object visible only at CompleteMultipartUpload, which is sent only after the whole
stream hashed right, and any failure (bad hash, size cap, cancelled request, store error)
sends AbortMultipartUpload instead. This needs no temporary object and no server-side copy,
so the CopyObject 5 GB limit never applies. A process killed mid-upload leaves an invisible
incomplete upload; a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` reclaims it
(see docs/DEPLOYMENT.md).

boto3 is synchronous, so every network call of ``put_stream`` runs in a worker thread; memory
per upload stays bounded by about two parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from lumora_ota.store.blobs import (
    CHUNK_SIZE,
    BlobLocation,
    HashMismatch,
    SizeExceeded,
    StoredBlob,
    check_blob_name,
    is_sha256,
)
from lumora_ota.store.outage import DependencyUnavailable, StorageFull, describe

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

T = TypeVar("T")

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB
MIN_PART_SIZE = 5 * MIB  # the S3 minimum for every part but the last
MAX_PARTS = 10_000  # the S3 maximum number of parts of one upload
DEFAULT_PRESIGN_TTL = 300
MAX_PRESIGN_TTL = 7 * 24 * 3600  # SigV4 pre-signed URLs live at most a week
IMMUTABLE = "public, max-age=31536000, immutable"
OCTET_STREAM = "application/octet-stream"
# A derived object's name suffix -> the Content-Encoding its bytes are stored in.
ENCODING_OF_SUFFIX = {".br": "br", ".gzip": "gzip"}
_URL_CACHE_LIMIT = 4096

Addressing = Literal["path", "virtual", "auto"]
_KNOWN_PARAMS = {
    "endpoint",
    "region",
    "addressing",
    "prefix",
    "presign_ttl",
    "public_base",
    "part_size",
    "max_connections",
}


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the bucket; parsed from a storage URL by ``from_url``."""

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    addressing: Addressing = "auto"
    prefix: str = ""
    presign_ttl: int = DEFAULT_PRESIGN_TTL
    public_base: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    max_connections: int = 32

    @classmethod
    def from_url(cls, url: str) -> S3Config:
        """Parse ``s3://bucket[/prefix]?endpoint=&region=&addressing=&prefix=&presign_ttl=
        &public_base=&part_size=&max_connections=``; raises ValueError on anything unknown."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket URL: {url!r}")
        raw = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        unknown = set(raw) - _KNOWN_PARAMS
        if unknown:
            raise ValueError(f"unknown storage URL parameters: {', '.join(sorted(unknown))}")
        params = {name: values[-1] for name, values in raw.items()}
        addressing = params.get("addressing") or ("path" if params.get("endpoint") else "auto")
        if addressing not in ("path", "virtual", "auto"):
            raise ValueError("addressing must be path, virtual or auto")
        presign_ttl = int(params.get("presign_ttl") or DEFAULT_PRESIGN_TTL)
        if not 30 <= presign_ttl <= MAX_PRESIGN_TTL:
            raise ValueError(f"presign_ttl must be between 30 and {MAX_PRESIGN_TTL} seconds")
        part_size = int(params.get("part_size") or DEFAULT_PART_SIZE)
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        return cls(
            bucket=parts.netloc,
            endpoint_url=params.get("endpoint") or None,
            region=params.get("region") or None,
            addressing=addressing,  # type: ignore[arg-type]  # checked just above
            prefix=normalize_prefix(params.get("prefix") or parts.path),
            presign_ttl=presign_ttl,
            public_base=(params.get("public_base") or "").rstrip("/") or None,
            part_size=part_size,
            max_connections=int(params.get("max_connections") or 32),
        )


# S3 error codes (AWS and the common self-hosted stores) meaning "no room" and "try later".
_FULL_CODES = frozenset({"XMinioStorageFull", "InsufficientStorage", "QuotaExceeded"})
_UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
)


def normalize_prefix(prefix: str) -> str:
    """A key prefix without a leading slash and, unless empty, with one trailing slash."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def _is_not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or error.get("Code") in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


class _MultipartUpload:
    """One multipart upload to a final key: parts, then complete — or abort."""

    def __init__(self, client: S3Client, bucket: str, key: str, upload_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._parts: list[CompletedPartTypeDef] = []

    def upload_part(self, data: bytes) -> None:
        number = len(self._parts) + 1
        answer = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def complete(self) -> None:
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        self._client.abort_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
        )


class S3BlobStore:
    """``BlobStore`` over one bucket (and optional key prefix) of an S3-compatible store."""

    def __init__(self, config: S3Config, client: S3Client | None = None) -> None:
        self.config = config
        self.client: S3Client = client or make_s3_client(config)
        self._bucket_ready = False
        self.name = f"the object store (S3 bucket {config.bucket})"
        # (name, content type, content encoding) -> (fresh until, pre-signed URL). Signing
        # costs ~0.2 ms of CPU, so a URL is reused for a third of its lifetime.
        self._signed: dict[tuple[str, str | None, str | None], tuple[float, str]] = {}

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """The store for an ``s3://`` storage URL (see ``S3Config.from_url``)."""
        return cls(S3Config.from_url(url))

    def key_for(self, name: str) -> str:
        """The object key of a blob or derived object."""
        return self.config.prefix + check_blob_name(name)

    # ------------------------------------------------------------------ writing

    async def put_stream(
        self, sha256: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredBlob:
        """See ``BlobStore.put_stream``; the module docstring says why it is atomic."""
        with self._answering():
            return await self._put_stream(sha256, chunks, max_bytes=max_bytes)

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Turn "the store cannot be reached" and "the store is full" into ``store.outage``'s
        errors, which the API answers 503 and 507 naming this store."""
        try:
            yield
        except (BotoConnectionError, HTTPClientError, NoCredentialsError) as exc:
            raise DependencyUnavailable(self.name, describe(exc)) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status == 507 or code in _FULL_CODES:
                raise StorageFull(self.name) from exc
            if status >= 500 or code in _UNAVAILABLE_CODES:
                raise DependencyUnavailable(self.name, f"{code or status}") from exc
            raise

    async def _put_stream(
        self, sha256: str, chunks: AsyncIterator[bytes], *, max_bytes: int
    ) -> StoredBlob:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        key = self.key_for(sha256)
        part_size = self._part_size_for(max_bytes)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload: _MultipartUpload | None = None
        completed = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise SizeExceeded(f"upload exceeds the {max_bytes}-byte limit")
                digest.update(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    if upload is None:
                        upload = await _in_thread(self._start_multipart, key)
                    part = bytes(buffer[:part_size])
                    del buffer[:part_size]
                    await _in_thread(upload.upload_part, part)
            if digest.hexdigest() != sha256:
                raise HashMismatch(
                    f"uploaded bytes hash to {digest.hexdigest()}, not the declared {sha256}"
                )
            if upload is None:
                await _in_thread(self._put_object, key, bytes(buffer), None)
            else:
                if buffer:
                    await _in_thread(upload.upload_part, bytes(buffer))
                await _in_thread(upload.complete)
            completed = True
        finally:
            if upload is not None and not completed:
                # Shielded: a cancelled request (client went away) must still abort.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await _in_thread(upload.abort)
        return StoredBlob(sha256=sha256, size=size)

    def put_bytes(self, name: str, data: bytes) -> None:
        """See ``BlobStore.put_bytes``. PutObject is atomic: readers see all or nothing."""
        encoding = next(
            (enc for suffix, enc in ENCODING_OF_SUFFIX.items() if name.endswith(suffix)), None
        )
        with self._answering():
            self._put_object(self.key_for(name), data, encoding)

    def _part_size_for(self, max_bytes: int) -> int:
        """The configured part size, raised when needed to fit ``max_bytes`` in 10000 parts."""
        return max(self.config.part_size, math.ceil(max_bytes / MAX_PARTS))

    def _put_object(self, key: str, data: bytes, content_encoding: str | None) -> None:
        self._ensure_bucket()
        extra: dict[str, Any] = {"ContentEncoding": content_encoding} if content_encoding else {}
        self.client.put_object(
            Bucket=self.config.bucket,
            Key=key,
            Body=data,
            ContentType=OCTET_STREAM,
            CacheControl=IMMUTABLE,
            **extra,
        )

    def _start_multipart(self, key: str) -> _MultipartUpload:
        self._ensure_bucket()
        answer = self.client.create_multipart_upload(
            Bucket=self.config.bucket, Key=key, ContentType=OCTET_STREAM, CacheControl=IMMUTABLE
        )
        return _MultipartUpload(self.client, self.config.bucket, key, answer["UploadId"])

    # ------------------------------------------------------------------ reading

    def exists(self, name: str) -> bool:
        """See ``BlobStore.exists``."""
        return self.size(name) is not None

    def size(self, name: str) -> int | None:
        """See ``BlobStore.size``."""
        try:
            with self._answering():
                head = self.client.head_object(Bucket=self.config.bucket, Key=self.key_for(name))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        return int(head["ContentLength"])

    def open_read(self, name: str) -> Iterator[bytes]:
        """See ``BlobStore.open_read``."""
        body = self.client.get_object(Bucket=self.config.bucket, Key=self.key_for(name))["Body"]
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        finally:
            body.close()

    def read_bytes(self, name: str) -> bytes:
        """See ``BlobStore.read_bytes``: ``FileNotFoundError`` when absent, as on disk."""
        try:
            with self._answering():
                got = self.client.get_object(Bucket=self.config.bucket, Key=self.key_for(name))
        except ClientError as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(f"{name} is not in the bucket") from None
            raise
        body = got["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def locate(
        self, name: str, *, content_type: str | None = None, content_encoding: str | None = None
    ) -> BlobLocation:
        """See ``BlobStore.locate``: a public/CDN URL when configured, else a pre-signed GET.

        Signing is local (no network). A pre-signed URL is handed out for at most a third of
        its lifetime and its redirect may be cached for another third, so a device following
        a cached redirect always meets a valid signature.
        """
        key = self.key_for(name)
        if self.config.public_base:
            return BlobLocation(
                url=f"{self.config.public_base}/{quote(key)}", cache_control=IMMUTABLE
            )
        reuse_for = self.config.presign_ttl // 3
        cache_key = (name, content_type, content_encoding)
        now = time.monotonic()
        cached = self._signed.get(cache_key)
        if cached is not None and cached[0] > now:
            url = cached[1]
        else:
            url = self._presign(key, content_type, content_encoding)
            if len(self._signed) >= _URL_CACHE_LIMIT:
                self._signed.clear()
            self._signed[cache_key] = (now + reuse_for, url)
        return BlobLocation(url=url, cache_control=f"private, max-age={reuse_for}")

    def _presign(self, key: str, content_type: str | None, content_encoding: str | None) -> str:
        params: dict[str, str] = {"Bucket": self.config.bucket, "Key": key}
        if content_type:
            params["ResponseContentType"] = content_type
        if content_encoding:
            params["ResponseContentEncoding"] = content_encoding
        return self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.config.presign_ttl
        )

    # ------------------------------------------------------------------ upkeep

    def delete(self, name: str) -> None:
        """See ``BlobStore.delete`` (S3 deletes are idempotent)."""
        self.client.delete_object(Bucket=self.config.bucket, Key=self.key_for(name))

    def check(self) -> None:
        """See ``BlobStore.check``: the bucket answers (it is created when missing).

        A HEAD on the bucket proves reachability and credentials without writing on every
        ``/health`` poll.
        """
        self._bucket_ready = False
        self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        """Create the bucket on first use when it does not exist yet (once per process).

        Creating it spares a setup step in development; in production the bucket usually
        exists and the credentials need no CreateBucket permission, since HEAD answers first.
        """
        if self._bucket_ready:
            return
        try:
            self.client.head_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise
            self._create_bucket()
        self._bucket_ready = True

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        try:
            if region and region != "us-east-1":
                self.client.create_bucket(
                    Bucket=self.config.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.client.create_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            # Another process created it between our HEAD and our PUT.
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def make_s3_client(config: S3Config) -> S3Client:
    """A thread-safe boto3 S3 client for ``config`` (credentials from the default chain)."""
    client_config = Config(
        s3={"addressing_style": config.addressing},
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=config.max_connections,
        # Third-party S3 stores do not all speak the newer default integrity checksums;
        # uploads are verified by their SHA-256 before they become visible anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    client: S3Client = session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region or session.region_name or "us-east-1",
        config=client_config,
    )
    return client


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking boto3 call in a worker thread."""
    return await anyio.to_thread.run_sync(fn, *args)
