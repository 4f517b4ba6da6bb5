"""API fuzzing with schemathesis against the server's own OpenAPI document.

Every operation of ``/openapi.json`` (fetched from a real server process) gets generated
requests — valid ones and deliberately invalid ones — with no key and with the admin key.
Each answer must be no 5xx, carry a documented status and content type, and match its
documented schema (errors are problem+json documents).

``LUMORA_FUZZ_EXAMPLES`` sets the examples per operation and mode with the admin key (default
15, a third of that without a key; LUMORA_LONG_TESTS=1 makes it 100).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from harness import ServerProcess

LONG = os.environ.get("LUMORA_LONG_TESTS") == "1"
EXAMPLES = int(os.environ.get("LUMORA_FUZZ_EXAMPLES", "100" if LONG else "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Not API operations: the dashboard page (HTML) and its session endpoints have their own tests.
SKIPPED_PREFIXES = ("/dashboard",)


def _fuzz_operation(
    operation: Any,
    server: ServerProcess,
    session: requests.Session,
    headers: dict[str, str],
    mode: GenerationMode,
    examples: int,
) -> list[str]:
    """Run generated cases of one operation; returns the failure reports."""
    failures: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, do not minimise
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=server.url, session=session, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except AssertionError as exc:  # schemathesis failures are AssertionErrors
            failures.append(str(exc)[:1500])

    # Unsatisfiable: nothing to make invalid (an operation without parameters or body).
    with contextlib.suppress(Unsatisfiable):
        run()
    return failures


@pytest.mark.parametrize("auth", ["no key", "admin key"])
def test_every_operation_answers_as_documented(server: ServerProcess, auth: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"authorization": f"Bearer {server.admin_key}"} if auth == "admin key" else {}
    # Without a key the management API answers 401 before looking at the input: fewer cases.
    examples = EXAMPLES if headers else max(3, EXAMPLES // 3)
    report: dict[str, list[str]] = {}
    operations = 0
    session = requests.Session()  # keep-alive: one connection for the whole run
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(SKIPPED_PREFIXES):
            continue
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures = _fuzz_operation(operation, server, session, headers, mode, examples)
            if failures:
                report[f"{operation.method.upper()} {operation.path} ({mode.value})"] = failures
    assert operations >= 30  # the whole API was covered
    assert not report, "\n\n".join(f"== {op}\n" + "\n--\n".join(f[:3]) for op, f in report.items())
