"""Faults injected into real server processes from outside the package (see sitecustomize).

``LUMORA_FAULTS`` is a comma-separated list of:

``publish-before-commit``
    The process exits at once (status 137, as if SIGKILLed) when the database is about to
    commit a publish (the transaction that wrote the ``update.publish`` audit entry): the
    atomic-publish test proves such a crash leaves no visible update.
"""

from __future__ import annotations

import os
from typing import Any

_PUBLISHING = "lumora_fault_publishing"


def _publish_before_commit() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def mark(conn: Any, _cursor: Any, statement: str, params: Any, *_args: Any) -> None:
        if "audit_log" in statement.lower() and "update.publish" in repr(params):
            conn.info[_PUBLISHING] = True

    def crash(conn: Any) -> None:
        # Engine "commit" events fire before the database commits.
        if conn.info.pop(_PUBLISHING, False):
            os._exit(137)

    def forget(conn: Any) -> None:
        conn.info.pop(_PUBLISHING, None)

    event.listen(Engine, "before_cursor_execute", mark)
    event.listen(Engine, "commit", crash)
    event.listen(Engine, "rollback", forget)


FAULTS = {"publish-before-commit": _publish_before_commit}


def install(names: str) -> None:
    """Install every fault in the comma-separated ``names``; unknown names are refused."""
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in FAULTS:
            raise SystemExit(f"LUMORA_FAULTS: unknown fault {name!r} (known: {sorted(FAULTS)})")
        FAULTS[name]()
