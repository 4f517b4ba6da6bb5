"""Request guards shared by the management routers.

``GuardedJSONRoute`` reads a JSON body itself before FastAPI does: it enforces
``settings.max_json_bytes`` while reading (413), rejects malformed JSON and JSON nested deeper
than ``MAX_JSON_DEPTH`` with a 400 problem, and hands the parsed value on so FastAPI does not
parse twice. Without it a body nested 10,000 deep reaches Python's recursive JSON decoder and
deeply nested values could overflow the encoder when echoed back. Strings holding NUL are
refused as bad values (422): PostgreSQL text cannot store them. A body refused as too large is still
drained (up to ``DRAIN_LIMIT``) so the client reads the 413 instead of a reset.

``store_errors`` turns the store's ``StoreError`` into problem documents, and
``RequestModel`` is the base of every request body (camelCase, unknown fields rejected).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from lumora_ota.server.context import app_context
from lumora_ota.server.problems import ProblemError
from lumora_ota.store.repository import StoreError

MAX_JSON_DEPTH = 32
# How much of an unwanted body is still read before answering (see ``drain_body``).
DRAIN_LIMIT = 8 * 1024 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def json_has_nul(value: Any) -> bool:
    """Whether any string (key or value) of a parsed JSON value contains a NUL character,
    which no database text column can store (iterative, no recursion)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


async def drain_body(body: AsyncIterator[bytes], cap: int) -> None:
    """Read and drop what is left of a body we answer without using (up to ``cap`` bytes),
    so a client that is still sending reads our answer instead of a connection reset."""
    drained = 0
    async for chunk in body:
        drained += len(chunk)
        if drained > cap:
            break


async def _read_limited(request: Request, limit: int) -> bytes:
    too_large = ProblemError(413, f"the JSON body exceeds the {limit}-byte limit")
    stream = request.stream()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await drain_body(stream, DRAIN_LIMIT)
        raise too_large
    body = bytearray()
    async for chunk in stream:
        body.extend(chunk)
        if len(body) > limit:
            await drain_body(stream, DRAIN_LIMIT)
            raise too_large
    return bytes(body)


def parse_json_body(body: bytes) -> Any:
    """The parsed body; 400 problems for malformed or too deeply nested JSON."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise ProblemError(400, "JSON nested too deeply", title="Invalid JSON") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProblemError(400, f"malformed JSON: {exc}", title="Invalid JSON") from None
    if json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise ProblemError(
            400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", title="Invalid JSON"
        )
    if json_has_nul(value):
        raise ProblemError(
            422, "JSON strings must not contain NUL characters", title="Invalid request"
        )
    return value


class GuardedJSONRoute(APIRoute):
    """An ``APIRoute`` that size-caps and depth-checks JSON bodies before validation."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler with the body guard."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method in _BODY_METHODS:
                limit = app_context(request).settings.max_json_bytes
                body = await _read_limited(request, limit)
                # Starlette caches both on the request; FastAPI then reuses them.
                request._body = body
                if body.strip():
                    request._json = parse_json_body(body)
            return await handler(request)

        return guarded


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Re-raise the store's client errors as problem documents with the same status."""
    try:
        yield
    except StoreError as exc:
        raise ProblemError(exc.status, exc.detail, **exc.extensions) from None


class RequestModel(BaseModel):
    """Base of management request bodies: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)
