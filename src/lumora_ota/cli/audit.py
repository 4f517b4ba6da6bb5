"""``lumora audit``: the audit log, who did what and when (admin keys)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from lumora_ota.cli.options import ApiKeyOption, JsonOption, ProjectOption, ServerOption, open_api
from lumora_ota.cli.output import note, print_json, print_table


def audit(
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=500, help="At most this many, newest first.")
    ] = 50,
    action: Annotated[
        str | None,
        typer.Option(
            "--action", help="Only actions starting with this, e.g. update. or deployment.pause."
        ),
    ] = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show the audit log: every management action (publish, rollback, delete, pause,
    key changes, auto-pauses...) with its time, key and target. Needs an admin key.

    Without --project (nor LUMORA_PROJECT / the config file's project) it lists every project
    the key may see.

    Example: lumora audit --project my-app --action update. --limit 20
    """
    from lumora_ota.cli.config import CliConfig, resolve_config

    chosen = resolve_config(CliConfig(project=project)).project
    from lumora_ota.api_models import AuditAnswer, Items

    params = {"project": chosen, "limit": limit if action is None else 500}
    with open_api(server, api_key) as api:
        rows = api.read(Items[AuditAnswer], "GET", "/audit", params=params).items
    if action is not None:
        rows = [e for e in rows if e.action.startswith(action)][:limit]
    if as_json:
        print_json(rows)
        return
    if not rows:
        note("no audit entries match")
        return
    print_table(
        ["at", "action", "target", "key", "detail"],
        (
            [
                e.at[:19].replace("T", " "),
                e.action,
                e.target,
                e.key_id,
                _detail(e.detail),
            ]
            for e in rows
        ),
    )


def _detail(detail: Any) -> str:
    if not isinstance(detail, dict) or not detail:
        return ""
    return json.dumps(detail)  # spaces: long details wrap between values, never inside an id
