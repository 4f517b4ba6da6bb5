"""In-process test doubles for the client SDK (no tests here): a fake update server behind
``FetcherInterface``, manifest builders and a fault-injecting file system."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lumora_ota.client import FetcherInterface, FetchResponse, NetworkError
from lumora_ota.client._internal.fs import FileSystem
from lumora_ota.domain.hashes import b64url_from_hex
from lumora_ota.freshness import Freshness, body_digest
from lumora_ota.signing import SigningIdentity

SERVER = "http://updates.test"
ASSET_BASE = f"{SERVER}/api/v1/assets"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def asset_entry(path: str, data: bytes) -> dict[str, Any]:
    digest = sha(data)
    ext = "." + path.rsplit(".", 1)[1] if "." in path.rsplit("/", 1)[-1] else ""
    return {
        "hash": b64url_from_hex(digest),
        "key": digest[:32],
        "contentType": "application/octet-stream",
        "fileExtension": ext,
        "url": f"{ASSET_BASE}/{digest}{ext}",
        "path": path,
        "sha256": digest,
        "size": len(data),
    }


def make_manifest(update_id: str, files: Mapping[str, bytes], launch: str) -> dict[str, Any]:
    """A Lumora check manifest for ``files`` (path -> bytes); ``launch`` is the launch asset."""
    return {
        "id": update_id,
        "createdAt": "2026-11-26T21:00:00.000Z",
        "runtimeVersion": "1",
        "launchAsset": asset_entry(launch, files[launch]),
        "assets": [asset_entry(p, d) for p, d in files.items() if p != launch],
        "metadata": {},
        "extra": {},
    }


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Offer:
    """What the fake server answers to checks."""

    manifest: dict[str, Any] | None = None
    mandatory: bool = False
    message: str = ""
    directive: dict[str, Any] | None = None


@dataclass
class FakeServer(FetcherInterface):
    """Serves checks, assets (Range, faults) and events from memory, counting requests."""

    blobs: dict[str, bytes] = field(default_factory=dict)  # url -> bytes
    offer: Offer = field(default_factory=Offer)
    signer: SigningIdentity | None = None
    sign_mode: str = "text"  # "text" (manifestText + signature), "none", "tampered"
    # The freshness statement of signed answers (``lumora_ota.freshness``).
    sequence: int = 1
    rollback: bool = False
    freshness: bool = True
    chunk_size: int = 16
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    check_bodies: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # fault knobs
    cut_after: dict[str, int] = field(default_factory=dict)  # url -> bytes before the cut (once)
    statuses: dict[str, list[int]] = field(default_factory=dict)  # url -> statuses to answer first
    ignore_range: bool = False
    wrong_content_range: bool = False
    extra_bytes: dict[str, bytes] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    events_down: bool = False

    def publish(self, manifest: dict[str, Any], files: Mapping[str, bytes], **offer: Any) -> None:
        for entry in [manifest["launchAsset"], *manifest["assets"]]:
            self.blobs[entry["url"]] = files[entry["path"]]
        self.offer = Offer(manifest=manifest, **offer)

    def asset_requests(self) -> list[str]:
        return [url for method, url, _ in self.requests if method == "GET"]

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        self.requests.append((method, url, dict(headers)))
        if method == "POST" and url.endswith("/api/v1/updates/check"):
            self.check_bodies.append(json.loads(body or b"{}"))
            return self._answer(200, {"content-type": "application/json"}, self._check_body())
        if method == "POST" and url.endswith("/api/v1/events"):
            if self.events_down:
                raise NetworkError("events endpoint down")
            self.events.extend(json.loads(body or b"{}")["events"])
            return self._answer(202, {}, b'{"accepted":1}')
        if method == "GET":
            return self._asset(url, headers)
        return self._answer(404, {}, b"")

    def _check_body(self) -> bytes:
        offer = self.offer
        doc: dict[str, Any] = {"updateAvailable": False, "isMandatory": offer.mandatory}
        if offer.directive is not None:
            doc["directive"] = offer.directive
            part, text = "directive", compact(offer.directive)
        elif offer.manifest is not None:
            doc.update(updateAvailable=True, manifest=offer.manifest, message=offer.message)
            part, text = "manifest", compact(offer.manifest)
        else:
            return compact(doc)
        if self.signer is not None and self.sign_mode != "none":
            doc[f"{part}Text"] = text.decode()
            doc.pop(part)
            doc["signature"] = self.signer.signature_header(text)
            if self.freshness:
                request = self.check_bodies[-1]
                issued = datetime.now(UTC)
                statement = Freshness(
                    project_id=request["projectId"],
                    channel=request["channel"],
                    platform=request["platform"],
                    sequence=self.sequence,
                    issued_at=issued,
                    expires=issued + timedelta(hours=1),
                    body_sha256=body_digest(text),
                    rollback=self.rollback,
                ).to_bytes()
                doc["freshnessText"] = statement.decode()
                doc["freshnessSignature"] = self.signer.signature_header(statement)
            if self.sign_mode == "tampered":
                doc[f"{part}Text"] = text.decode().replace('"size":', '"size": ')
        return compact(doc)

    def _asset(self, url: str, headers: Mapping[str, str]) -> FetchResponse:
        queued = self.statuses.get(url)
        if queued:
            return self._answer(queued.pop(0), {}, b"oops")
        data = self.blobs.get(url)
        if data is None:
            return self._answer(404, {}, b"not found")
        if url in self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        data = data + self.extra_bytes.get(url, b"")
        status, start = 200, 0
        range_header = headers.get("range")
        if range_header and not self.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return self._answer(416, {}, b"")
            status = 206
        response_headers = {"etag": f'"{url.rsplit("/", 1)[1]}"'}
        if status == 206:
            shown = start + 1 if self.wrong_content_range else start
            response_headers["content-range"] = f"bytes {shown}-{len(data) - 1}/{len(data)}"
        cut = self.cut_after.pop(url, None)
        return FetchResponse(status, response_headers, self._chunks(data[start:], cut))

    def _chunks(self, data: bytes, cut: int | None) -> Iterator[bytes]:
        sent = 0
        for i in range(0, len(data), self.chunk_size):
            chunk = data[i : i + self.chunk_size]
            if cut is not None and sent + len(chunk) > cut:
                if cut > sent:
                    yield chunk[: cut - sent]
                raise NetworkError("connection reset")
            sent += len(chunk)
            yield chunk

    @staticmethod
    def _answer(status: int, headers: dict[str, str], body: bytes) -> FetchResponse:
        return FetchResponse(status, headers, iter([body] if body else []))


class SimulatedCrash(BaseException):
    """The process 'dies' here (BaseException: no SDK code may catch it)."""


class CountingFileSystem(FileSystem):
    """Counts mutating operations; raises ``SimulatedCrash`` at the ``crash_at``-th one and at
    every later one (a dead process does nothing more)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.count = 0
        self.crash_at = crash_at
        self.log: list[tuple[str, str]] = []

    def _checkpoint(self, operation: str, path: Path) -> None:
        self.count += 1
        self.log.append((operation, path.name))
        if self.crash_at is not None and self.count >= self.crash_at:
            raise SimulatedCrash(f"{operation} {path}")


def tree(root: Path | None) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    if root is None:
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    delays: list[float] = []
    return delays, delays.append
