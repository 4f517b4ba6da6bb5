"""The management API client every command uses: httpx underneath, one-line errors on top.

Connection failures, timeouts and RFC 9457 problem documents all become ``ApiError`` with a
message fit for one terminal line, so no command has to handle httpx itself.

Answers are read as the models of ``lumora_ota.api_models`` (``LumoraApi.read``): commands
use typed attributes, and an answer of the wrong shape is one ``ApiError`` line, not a
traceback deep in a command.

Importing httpx and pydantic takes a good part of a command's start-up, so this module is
imported only when a client is made (``options.open_api``); keep it out of other modules'
top-level imports (commands import ``lumora_ota.api_models`` inside their functions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from lumora_ota.cli.errors import CliError, one_line

API_PREFIX = "/api/v1"
UPLOAD_CHUNK_BYTES = 256 * 1024
NO_KEY_HINT = "pass --api-key, set LUMORA_API_KEY or run `lumora configure`"

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class ApiError(CliError):
    """The server could not be reached or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(one_line(message))
        self.status = status
        self.body = body


class LumoraApi:
    """A client of one Lumora server's management API (paths are relative to ``/api/v1``)."""

    def __init__(
        self,
        server: str,
        api_key: str | None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.api_key = api_key
        if not self.server.startswith(("http://", "https://")):
            raise CliError(f"server URL must start with http:// or https://: {server!r}")
        self._http = httpx.Client(
            base_url=self.server + API_PREFIX,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            headers={"user-agent": "lumora-cli"},
        )

    def __enter__(self) -> LumoraApi:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def url(self, path: str) -> str:
        """The absolute URL of an API path, for showing to users."""
        return f"{self.server}{API_PREFIX}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: Iterator[bytes] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON answer (``None`` when empty)."""
        if not self.api_key:
            raise CliError(f"no API key: {NO_KEY_HINT}")
        path = encode_path(path)
        all_headers = {"authorization": f"Bearer {self.api_key}", **(headers or {})}
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, json=json, params=clean_params, content=content, headers=all_headers
            )
        except httpx.ConnectError as exc:
            raise ApiError(
                f"cannot reach the Lumora server at {self.server} ({_reason(exc)});"
                " is it running? (set --server or LUMORA_SERVER)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(f"the Lumora server at {self.server} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {self.server} failed: {_reason(exc)}") from exc
        if response.is_error:
            raise _error_from(response, self.server)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                f"{self.server} answered {method} {path} with something that is not JSON;"
                " is this a Lumora server?"
            ) from exc

    def read(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> M:
        """Send one request and return its answer as ``model`` (``ApiError`` when the answer
        does not have the model's shape)."""
        answer = self.request(method, path, json=json, params=params)
        return typed(model, answer, f"{self.server} answered {method} {path}")

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters (``None`` values are left out)."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        """POST a JSON body."""
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        """PUT a JSON body."""
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        """PATCH a JSON body."""
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        """DELETE a resource."""
        return self.request("DELETE", path)

    def upload_blob(
        self,
        project: str,
        sha256: str,
        path: Path,
        size: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Stream one file to ``PUT /assets/{sha256}``; ``on_progress`` gets each chunk's size."""
        return self.request(
            "PUT",
            f"/assets/{sha256}",
            params={"project": project},
            content=_read_chunks(path, on_progress),
            headers={"content-type": "application/octet-stream", "content-length": str(size)},
        )


def typed(model: type[M], value: Any, what: str) -> M:
    """``value`` (a decoded answer) as ``model``; an ``ApiError`` line naming the first
    member out of shape when it does not fit (``what``: whose answer, for the message)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ApiError(f"{what} with an unexpected answer: {_first_error(exc)}") from None


def typed_list(item: type[T], value: Any, what: str) -> list[T]:
    """``value`` as a list of ``item`` (a model), as ``typed``."""
    try:
        return TypeAdapter(list[item]).validate_python(value)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise ApiError(f"{what} with an unexpected answer: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the answer"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}; is the server a Lumora of another version?"


def encode_path(path: str) -> str:
    """``path`` with every segment percent-encoded, so an id or name a user typed stays one
    segment of it: ``x?y=1`` or ``a#b`` is not cut into a path and a query or fragment (the
    request would act on device ``x``), and a ``.`` or ``..`` segment, which would climb to
    another resource, is refused with a ``CliError``."""
    segments = path.split("/")
    for segment in segments[1:]:
        if segment in (".", ".."):
            raise CliError(f"{segment!r} is not a valid id or name")
    return "/".join(quote(segment, safe="") for segment in segments)


def _read_chunks(path: Path, on_progress: Callable[[int], None] | None) -> Iterator[bytes]:
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(UPLOAD_CHUNK_BYTES):
                if on_progress is not None:
                    on_progress(len(chunk))
                yield chunk
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # httpx wraps OS errors as "[Errno 111] Connection refused"; keep the readable part.
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text


def _error_from(response: httpx.Response, server: str) -> ApiError:
    """A one-line error for a 4xx/5xx answer, using its problem document when it has one."""
    status = response.status_code
    body: Any = None
    detail = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or "")
    if not detail:
        try:
            detail = HTTPStatus(status).phrase
        except ValueError:
            detail = f"HTTP {status}"
    if status == 401:
        message = f"the server rejected the API key: {detail} ({NO_KEY_HINT})"
    elif status == 403:
        message = f"permission denied: {detail}"
    elif status == 404:
        # The server's details say "... not found" themselves.
        message = detail if detail.lower().endswith("not found") else f"not found: {detail}"
    elif status == 507:
        message = f"the server at {server} is out of space ({status}): {detail}"
    elif status == 503:
        retry = response.headers.get("retry-after")
        later = f"; retry in {retry} s" if retry and retry.isdigit() else "; retry later"
        message = f"the server at {server} is unavailable ({status}): {detail}{later}"
    elif status >= 500:
        message = f"the server at {server} failed ({status}): {detail}"
    else:
        message = f"{detail} ({status})"
    return ApiError(message, status=status, body=body)
