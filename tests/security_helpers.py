"""Helpers for the security and reliability tests: raw HTTP requests that no client library
normalises, blob-store listings and problem-document checks."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness import ServerProcess


@dataclass
class RawResponse:
    """A response read off the socket: status, lower-cased headers and body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def raw_request(
    server: ServerProcess,
    method: str,
    target: bytes,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> RawResponse:
    """Send one HTTP/1.1 request with ``target`` byte for byte (no normalisation, no
    re-encoding) and read the whole answer (``Connection: close``)."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers or []]
    lines.append(b"Connection: close")
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return parse_raw_response(data)


def parse_raw_response(data: bytes) -> RawResponse:
    """Split a raw HTTP/1.1 answer (a chunked body is returned still chunked)."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP response: {data[:200]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return RawResponse(status=int(parts[1]), headers=headers, body=body)


def blob_files(server: ServerProcess) -> set[str]:
    """Every file under the server's blob folder (relative paths), temporary ones included."""
    root = server.data_dir / "blobs"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def temp_blob_files(server: ServerProcess) -> list[Path]:
    """Leftover temporary upload files of the server's blob store."""
    tmp = server.data_dir / "blobs" / ".tmp"
    return [p for p in tmp.iterdir() if p.is_file()] if tmp.is_dir() else []


def assert_problem(resp: httpx.Response | RawResponse, *statuses: int) -> dict[str, Any]:
    """Assert a problem+json answer with one of ``statuses``; returns the parsed document."""
    status = resp.status_code if isinstance(resp, httpx.Response) else resp.status
    body = resp.content if isinstance(resp, httpx.Response) else resp.body
    assert status in statuses, (status, body[:300])
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == status and doc["title"] and "detail" in doc
    return doc


def server_errors_in_log(server: ServerProcess) -> list[str]:
    """Lines of the server log that show an unhandled error (a 500 or a traceback)."""
    markers = ("Traceback", "unhandled error", " 500 ")
    return [line for line in server.log().splitlines() if any(m in line for m in markers)]
