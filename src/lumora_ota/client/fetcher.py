"""The network boundary of the SDK: a pluggable fetcher with an httpx default.

Like python-tuf's ngclient, the SDK never talks to a socket directly: it goes through a
``FetcherInterface``, so an app can plug in its own network stack (proxies, client
certificates, a test double) by implementing one method, ``_fetch``.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from lumora_ota import __version__
from lumora_ota.client.errors import (
    HTTPStatusError,
    LumoraClientError,
    NetworkError,
    ServerResponseError,
)

USER_AGENT = f"lumora-ota-client/{__version__} httpx/{httpx.__version__}"


def _no_op() -> None:
    return None


@dataclass
class FetchResponse:
    """A streamed HTTP response.

    ``headers`` has lower-case names. ``chunks`` yields the body already decoded from any
    ``content-encoding`` (br, gzip). ``close`` releases the connection.
    """

    status: int
    headers: Mapping[str, str]
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=_no_op)


@dataclass(frozen=True)
class BufferedResponse:
    """A fully read (size-bounded) HTTP response."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class FetcherInterface(abc.ABC):
    """How the SDK performs HTTP requests.

    Implementations only implement ``_fetch``; the public methods wrap it so that callers
    only ever see ``LumoraClientError`` subclasses (``NetworkError`` for transport failures).
    """

    @abc.abstractmethod
    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        """Send one request and return the streamed response (any status).

        Raise ``NetworkError`` (or anything else, which gets wrapped) when the server cannot
        be reached. The returned ``chunks`` may also raise while iterating.
        """

    @contextlib.contextmanager
    def open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Iterator[FetchResponse]:
        """Send a request; yields the streamed response and closes it afterwards."""
        try:
            response = self._fetch(method, url, dict(headers or {}), body)
        except LumoraClientError:
            raise
        except Exception as exc:
            raise NetworkError(f"{method} {url} failed: {exc}") from exc
        wrapped = FetchResponse(
            response.status, response.headers, _wrap_errors(response.chunks, url)
        )
        try:
            yield wrapped
        finally:
            with contextlib.suppress(Exception):
                response.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_length: int,
    ) -> BufferedResponse:
        """Send a request and read the whole body, refusing more than ``max_length`` bytes."""
        with self.open(method, url, headers, body) as response:
            received = bytearray()
            for chunk in response.chunks:
                received += chunk
                if len(received) > max_length:
                    raise ServerResponseError(f"{url}: answer larger than {max_length} bytes")
            return BufferedResponse(response.status, response.headers, bytes(received))

    def post_json(
        self,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        max_length: int = 10 * 1024 * 1024,
    ) -> BufferedResponse:
        """POST ``payload`` as JSON; raises ``HTTPStatusError`` unless the status is 2xx."""
        all_headers = {"content-type": "application/json", "accept": "application/json"}
        all_headers.update(headers or {})
        body = json.dumps(payload, separators=(",", ":")).encode()
        response = self.request("POST", url, headers=all_headers, body=body, max_length=max_length)
        if not 200 <= response.status < 300:
            detail = response.body[:500].decode("utf-8", "replace")
            raise HTTPStatusError(f"POST {url}: HTTP {response.status}: {detail}", response.status)
        return response

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release pooled connections (optional)."""


def _wrap_errors(chunks: Iterator[bytes], url: str) -> Iterator[bytes]:
    try:
        yield from chunks
    except LumoraClientError:
        raise
    except Exception as exc:
        raise NetworkError(f"reading {url} failed: {exc}") from exc


class HttpxFetcher(FetcherInterface):
    """The default fetcher: one pooled ``httpx.Client``, streamed bodies.

    httpx decodes ``gzip`` itself and ``br`` through the ``brotli`` package, which the SDK
    depends on, so compressed asset variants arrive as plain bytes.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        chunk_size: int = 64 * 1024,
        app_user_agent: str | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        user_agent = f"{app_user_agent} {USER_AGENT}" if app_user_agent else USER_AGENT
        self._client = client or httpx.Client(
            timeout=timeout, headers={"user-agent": user_agent}, follow_redirects=True
        )
        self._chunk_size = chunk_size

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        try:
            request = self._client.build_request(method, url, headers=dict(headers), content=body)
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise NetworkError(f"{method} {url} failed: {exc}") from exc
        return FetchResponse(
            status=response.status_code,
            headers={name.lower(): value for name, value in response.headers.items()},
            chunks=response.iter_bytes(self._chunk_size),
            close=response.close,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
