"""The BlobStore contract, checked against the file store and the S3 store (SeaweedFS).

Every contract test runs on both backends; S3-only behaviour (multipart, pre-signed URLs,
public base, bucket creation, URL parsing) follows.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import brotli
import httpx
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumora_ota.store.blobs import (
    BlobStore,
    FileBlobStore,
    HashMismatch,
    SizeExceeded,
    open_blob_store,
    variant_name,
)
from lumora_ota.store.known_sizes import KnownSizes
from lumora_ota.store.s3 import (
    DEFAULT_PART_SIZE,
    IMMUTABLE,
    MIN_PART_SIZE,
    S3BlobStore,
    S3Config,
    normalize_prefix,
)
from s3_harness import SeaweedServer

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def put(store: BlobStore, data: bytes, *, name: str | None = None, chunk: int = 64 * 1024,
        max_bytes: int = 64 * MIB) -> Any:  # fmt: skip
    """Run ``put_stream`` of ``data`` (declared as ``name``, default its hash)."""
    return anyio.run(
        lambda: store.put_stream(name or sha(data), _chunks(data, chunk), max_bytes=max_bytes)
    )


def s3_leftovers(store: S3BlobStore) -> tuple[list[str], list[str]]:
    """Keys in the store's bucket and keys of its unfinished multipart uploads."""
    client, bucket = store.client, store.config.bucket
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return keys, uploads


def assert_nothing_left(store: BlobStore) -> None:
    if isinstance(store, S3BlobStore):
        assert s3_leftovers(store) == ([], [])
    else:
        assert isinstance(store, FileBlobStore)
        assert [p for p in store.root.rglob("*") if p.is_file()] == []


@pytest.fixture(scope="module")
def s3_env(seaweed: SeaweedServer) -> Iterator[None]:
    """This process talks to SeaweedFS with boto3's default credential chain, like a server."""
    saved = {k: os.environ.get(k) for k in seaweed.aws_env}
    os.environ.update(seaweed.aws_env)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_s3_store(seaweed: SeaweedServer, **params: str) -> S3BlobStore:
    store = open_blob_store(seaweed.storage_url(seaweed.new_bucket("blobs"), **params))
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """A fresh, empty store of each backend."""
    if request.param == "file":
        return open_blob_store(f"file://{tmp_path / 'blobs'}")
    request.getfixturevalue("s3_env")
    return make_s3_store(request.getfixturevalue("seaweed"), prefix="ota")


# ---------------------------------------------------------------- contract, both backends


def test_stored_blob_reads_back(store: BlobStore) -> None:
    data = os.urandom(300_000)
    stored = put(store, data)
    assert (stored.sha256, stored.size) == (sha(data), len(data))
    assert store.exists(sha(data))
    assert store.size(sha(data)) == len(data)
    assert store.read_bytes(sha(data)) == data
    assert b"".join(store.open_read(sha(data))) == data


def test_absent_blob(store: BlobStore) -> None:
    name = sha(uuid.uuid4().bytes)
    assert not store.exists(name)
    assert store.size(name) is None
    store.delete(name)  # deleting nothing is fine


def test_hash_mismatch_leaves_nothing(store: BlobStore) -> None:
    data = b"real bytes" * 1000
    with pytest.raises(HashMismatch):
        put(store, data, name=sha(b"other bytes"))
    assert not store.exists(sha(b"other bytes"))
    assert not store.exists(sha(data))
    assert_nothing_left(store)


def test_size_cap_leaves_nothing(store: BlobStore) -> None:
    data = os.urandom(200_000)
    with pytest.raises(SizeExceeded):
        put(store, data, max_bytes=100_000)
    assert not store.exists(sha(data))
    assert_nothing_left(store)


def test_failing_stream_leaves_nothing(store: BlobStore) -> None:
    """A client that goes away mid-upload leaves neither a blob nor a pending upload."""
    first = os.urandom(MIN_PART_SIZE + 1000)

    async def broken() -> AsyncIterator[bytes]:
        yield first
        raise ConnectionResetError("client went away")

    async def upload() -> None:
        await store.put_stream(sha(first), broken(), max_bytes=64 * MIB)

    with pytest.raises(ConnectionResetError):
        anyio.run(upload)
    assert_nothing_left(store)


def test_invalid_names_are_refused(store: BlobStore) -> None:
    for name in ("../etc/passwd", "ABC", sha(b"x") + "/x", "", sha(b"x")[:63], sha(b"x") + "/"):
        with pytest.raises(ValueError):
            store.exists(name)
    with pytest.raises(ValueError):
        put(store, b"data", name="not-a-hash")


def test_variants_live_beside_the_blob(store: BlobStore) -> None:
    data = b"console.log('compress me');\n" * 2000
    put(store, data)
    br_name, gz_name = variant_name(sha(data), "br"), variant_name(sha(data), "gzip")
    store.put_bytes(br_name, brotli.compress(data))
    store.put_bytes(gz_name, gzip.compress(data))
    assert brotli.decompress(store.read_bytes(br_name)) == data
    assert gzip.decompress(store.read_bytes(gz_name)) == data
    assert store.size(br_name) == len(brotli.compress(data))
    store.delete(br_name)
    assert not store.exists(br_name)
    assert store.exists(sha(data))


def test_same_blob_uploaded_twice_at_once(store: BlobStore) -> None:
    data = os.urandom(100_000)

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(
                    lambda: store.put_stream(sha(data), _chunks(data, 4096), max_bytes=MIB)
                )

    anyio.run(both)
    assert store.read_bytes(sha(data)) == data


def test_check_answers(store: BlobStore) -> None:
    store.check()


@given(data=st.binary(min_size=0, max_size=20_000), chunk=st.integers(min_value=1, max_value=7000))
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_chunking_stores_the_same_bytes(store: BlobStore, data: bytes, chunk: int) -> None:
    stored = put(store, data, chunk=chunk)
    assert stored.size == len(data)
    assert store.read_bytes(sha(data)) == data


# ---------------------------------------------------------------- locate


def test_file_store_locates_a_path(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"abc"
    put(store, data)
    location = store.locate(sha(data), content_type="image/png")
    assert location.url is None
    assert location.path is not None and location.path.read_bytes() == data


@pytest.mark.s3
def test_presigned_url_fetches_the_bytes_with_the_asked_headers(
    seaweed: SeaweedServer, s3_env: None
) -> None:
    store = make_s3_store(seaweed, presign_ttl="300")
    data = os.urandom(50_000)
    put(store, data)
    location = store.locate(sha(data), content_type="image/png")
    assert location.url is not None and location.path is None
    assert location.cache_control == "private, max-age=100"
    resp = httpx.get(location.url)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["cache-control"] == IMMUTABLE
    assert resp.content == data
    # Anonymous requests without the signature are refused: the bucket stays private.
    assert httpx.get(location.url.split("?", 1)[0]).status_code == 403
    # A Range request is answered by the store itself.
    partial = httpx.get(location.url, headers={"range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == data[10:20]


@pytest.mark.s3
def test_presigned_variant_url_carries_its_content_encoding(
    seaweed: SeaweedServer, s3_env: None
) -> None:
    store = make_s3_store(seaweed)
    data = b"function app() { return 42; }\n" * 5000
    put(store, data)
    store.put_bytes(variant_name(sha(data), "br"), brotli.compress(data))
    location = store.locate(
        variant_name(sha(data), "br"), content_type="application/javascript", content_encoding="br"
    )
    assert location.url is not None
    resp = httpx.get(location.url, headers={"accept-encoding": "br"})
    assert resp.headers["content-encoding"] == "br"
    assert resp.headers["content-type"] == "application/javascript"
    assert sha(resp.content) == sha(data)  # httpx decoded it: the bytes the manifest hashes


@pytest.mark.s3
def test_presigned_url_is_reused_briefly_and_is_local(seaweed: SeaweedServer, s3_env: None) -> None:
    store = make_s3_store(seaweed, presign_ttl="600")
    name = sha(b"never uploaded")
    first = store.locate(name, content_type="font/ttf")
    assert store.locate(name, content_type="font/ttf").url == first.url
    assert store.locate(name, content_type="image/png").url != first.url
    assert first.url is not None
    query = parse_qs(urlsplit(first.url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["response-content-type"] == ["font/ttf"]
    assert first.cache_control == "private, max-age=200"


@pytest.mark.s3
def test_public_base_locates_a_stable_url(seaweed: SeaweedServer, s3_env: None) -> None:
    store = make_s3_store(seaweed, prefix="lumora", public_base="https://cdn.example.com/")
    name = sha(b"a")
    location = store.locate(variant_name(name, "br"), content_type="text/plain")
    assert location.url == f"https://cdn.example.com/lumora/{name}.br"
    assert location.cache_control == IMMUTABLE


# ---------------------------------------------------------------- S3 specifics


@pytest.mark.s3
def test_large_upload_goes_multipart_and_stays_invisible_until_complete(
    seaweed: SeaweedServer, s3_env: None
) -> None:
    store = make_s3_store(seaweed, part_size=str(MIN_PART_SIZE))
    data = os.urandom(2 * MIN_PART_SIZE + 12345)
    stored = put(store, data, chunk=MIB)
    assert stored.size == len(data)
    assert store.read_bytes(sha(data)) == data
    # S3 ETags of multipart objects end in "-<parts>".
    head = store.client.head_object(Bucket=store.config.bucket, Key=store.key_for(sha(data)))
    assert head["ETag"].strip('"').endswith("-3")
    assert head["CacheControl"] == IMMUTABLE
    assert s3_leftovers(store) == ([store.key_for(sha(data))], [])


@pytest.mark.s3
def test_large_upload_with_a_wrong_hash_is_aborted(seaweed: SeaweedServer, s3_env: None) -> None:
    store = make_s3_store(seaweed, part_size=str(MIN_PART_SIZE))
    data = os.urandom(2 * MIN_PART_SIZE + 1)
    with pytest.raises(HashMismatch):
        put(store, data, name=sha(b"declared"), chunk=MIB)
    assert s3_leftovers(store) == ([], [])


@pytest.mark.s3
def test_variants_are_stored_with_their_content_encoding(
    seaweed: SeaweedServer, s3_env: None
) -> None:
    store = make_s3_store(seaweed)
    name = variant_name(sha(b"x"), "gzip")
    store.put_bytes(name, gzip.compress(b"x"))
    head = store.client.head_object(Bucket=store.config.bucket, Key=store.key_for(name))
    assert head["ContentEncoding"] == "gzip"
    assert head["CacheControl"] == IMMUTABLE


@pytest.mark.s3
def test_check_creates_a_missing_bucket(seaweed: SeaweedServer, s3_env: None) -> None:
    bucket = f"lumora-new-{uuid.uuid4().hex[:10]}"
    store = S3BlobStore.from_url(seaweed.storage_url(bucket))
    store.check()
    store.client.head_bucket(Bucket=bucket)
    store.check()  # and is fine once it exists


@pytest.mark.s3
def test_check_fails_with_bad_credentials(seaweed: SeaweedServer, s3_env: None) -> None:
    store = make_s3_store(seaweed)
    store.check()
    impostor = SeaweedServer(seaweed.data_dir, secret_key="wrong", s3_port=seaweed.s3_port)
    with pytest.raises(ClientError):
        S3BlobStore(store.config, client=impostor.client()).check()


# ---------------------------------------------------------------- storage URLs (pure)


def test_storage_url_parsing() -> None:
    config = S3Config.from_url(
        "s3://my-bucket?endpoint=http://127.0.0.1:8333&region=eu-west-1&addressing=virtual"
        "&prefix=/ota/blobs&presign_ttl=120&public_base=https://cdn.example.com/x/"
    )
    assert config.bucket == "my-bucket"
    assert config.endpoint_url == "http://127.0.0.1:8333"
    assert config.region == "eu-west-1"
    assert config.addressing == "virtual"
    assert config.prefix == "ota/blobs/"
    assert config.presign_ttl == 120
    assert config.public_base == "https://cdn.example.com/x"
    assert config.part_size == DEFAULT_PART_SIZE


def test_storage_url_defaults() -> None:
    assert S3Config.from_url("s3://b-1").addressing == "auto"
    assert S3Config.from_url("s3://b-1?endpoint=http://x").addressing == "path"
    assert S3Config.from_url("s3://b-1/some/prefix").prefix == "some/prefix/"
    assert S3Config.from_url("s3://b-1").prefix == ""


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://b?nope=1",
        "s3://b?addressing=sideways",
        "s3://b?presign_ttl=5",
        "s3://b?presign_ttl=9999999",
        "s3://b?part_size=1024",
        "http://b",
    ],
)
def test_bad_storage_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        S3Config.from_url(url)


@given(st.text(alphabet="abc/", max_size=12))
def test_prefix_normalisation(raw: str) -> None:
    prefix = normalize_prefix(raw)
    assert not prefix.startswith("/")
    assert prefix == "" or (prefix.endswith("/") and not prefix.endswith("//"))


# ---------------------------------------------------------------- the asset route's size memo


def test_known_sizes_remember_present_objects_and_recheck_absent_ones(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    now = [0.0]
    sizes = KnownSizes(store, absent_ttl=10, clock=lambda: now[0])
    data = b"variant bytes"
    name = sha(data)
    assert anyio.run(sizes.size, name) is None
    put(store, data)
    assert anyio.run(sizes.size, name) is None  # absence is remembered for a while...
    now[0] = 11
    assert anyio.run(sizes.size, name) == len(data)  # ...then asked again
    store.delete(name)
    assert anyio.run(sizes.size, name) == len(data)  # presence is remembered for good
    assert sizes.cached(name) == (True, len(data))
    assert sizes.cached(sha(b"never asked")) == (False, None)


def test_file_store_sweeps_only_stale_temp_files(tmp_path: Path) -> None:
    from lumora_ota.store.blobs import FileBlobStore

    store = FileBlobStore(tmp_path / "blobs")
    stale = tmp_path / "blobs" / ".tmp" / "up-stale"
    fresh = tmp_path / "blobs" / ".tmp" / "up-fresh"
    stale.write_bytes(b"left by a killed upload")
    fresh.write_bytes(b"an upload in progress")
    old = time.time() - 2 * FileBlobStore.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    FileBlobStore(tmp_path / "blobs")  # a restart sweeps
    assert not stale.exists()
    assert fresh.exists()
    assert store.sweep_stale_temp_files(older_than=0) == 1
    assert not fresh.exists()
