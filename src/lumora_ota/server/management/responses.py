"""How management routes declare their success answers: ``answer(Model)`` with a model of
``lumora_ota.api_models`` (shared with the CLI and the tests).

Routes build their answers as dictionaries (``*_json`` helpers); ``answer(Model)`` makes
FastAPI validate them against the model and serialise exactly the members set, so the bytes
are unchanged. Members a model does not list are kept rather than dropped (``extra="allow"``):
``tests/test_mgmt_responses.py`` asserts every answer matches its model with no extra member,
and that every JSON success answer of ``/openapi.json`` has a schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def answer(model: type[BaseModel]) -> dict[str, Any]:
    """Route keyword arguments documenting (and checking) a success answer as ``model``."""
    return {"response_model": model, "response_model_exclude_unset": True}


def also(status: int, model: type[BaseModel], description: str) -> dict[int | str, Any]:
    """A ``responses`` entry documenting another success status answered as ``model`` (a
    route answering 200 or 201, say)."""
    return {status: {"model": model, "description": description}}
