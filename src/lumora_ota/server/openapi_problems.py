"""Declare the API's error answers in its OpenAPI document.

Every error leaves the server as an RFC 9457 ``application/problem+json`` document
(server/problems.py), but FastAPI documents only its own validation error shape. This module
rewrites the generated document once: a ``Problem`` schema, every declared 4xx/5xx answer
pointing at it, and a ``4XX`` range on every operation (any operation can answer 400 for a
malformed body, 401 without a key, 404 for an unknown object, 413 past a limit, 429 when rate
limited), so clients and schema-driven fuzzers see what the server really sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from lumora_ota.server.problems import PROBLEM_CONTENT_TYPE

PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "missing": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": True,
}

_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }


def add_problem_responses(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every error answer declared as a problem document (in place)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    # FastAPI's own validation error shapes are never sent: validation errors are problems.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if status[:1] in ("4", "5"):
                    description = response.get("description") or "Problem"
                    if status == "422":
                        description = "Invalid request (problem document with `errors`)"
                    responses[status] = _problem_response(description)
            responses.setdefault("4XX", _problem_response("Client error (problem document)"))
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) declare problem responses."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_problem_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
