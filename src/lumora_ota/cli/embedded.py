"""``lumora embedded``: register a store build's embedded bundle as a delta-patch base.

A device that still runs the bundle embedded in its build asks for the first update with
``Expo-Current-Update-ID`` equal to ``Expo-Embedded-Update-ID``; once that bundle is
registered, the server diffs from it and the download is a small patch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.options import (
    ApiKeyOption,
    JsonOption,
    ProjectOption,
    ServerOption,
    open_api,
    pick_project,
)
from lumora_ota.cli.output import human_bytes, note, print_fields, print_json, print_table
from lumora_ota.cli.publish_plan import PLATFORMS, digest_files, plan_publish

if TYPE_CHECKING:
    from lumora_ota.api_models import DeltaAnswer

app = typer.Typer(
    rich_markup_mode="markdown",
    name="embedded",
    help="Embedded bundles of store builds (bases of delta patches).",
    no_args_is_help=True,
)


def embedded_bundle_file(source: Path, platform: str, runtime_version: str) -> Path:
    """The launch asset to register: ``source`` itself when it is a file, else the
    ``platform`` bundle of the ``expo export`` directory ``source``."""
    if source.is_file():
        return source
    plan = plan_publish(source, platform=platform, runtime_version=runtime_version)
    return plan.platforms[platform].launch_asset.path


@app.command("register")
def register(
    source: Annotated[
        Path, typer.Argument(help="The build's `expo export` directory, or the bundle file.")
    ],
    platform: Annotated[str, typer.Option("--platform", help="ios or android.")],
    runtime_version: Annotated[str, typer.Option("--runtime-version", help="The build's.")],
    embedded_update_id: Annotated[
        str, typer.Option("--embedded-update-id", help="The build's embedded update id.")
    ],
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload the build's embedded bundle (if the server lacks it) and register it, so the
    first update after a store install can be delivered as a patch.

    Example: lumora embedded register dist/ --platform android --runtime-version 1
    --embedded-update-id 6f1c2a9e-0b1d-4c2e-9a7f-3d5e8b0c1a2f
    """
    if platform not in PLATFORMS:
        raise CliError(f"unknown platform {platform!r}: choose ios, android or web", exit_code=2)
    chosen = pick_project(project)
    bundle = embedded_bundle_file(source, platform, runtime_version)
    digest = digest_files([bundle])[bundle]
    from lumora_ota.api_models import EmbeddedAnswer, MissingAnswer

    with open_api(server, api_key) as api:
        query = {"project": chosen, "hashes": [digest.sha256]}
        answer = api.read(MissingAnswer, "POST", "/assets/missing", json=query)
        if digest.sha256 in answer.missing:
            api.upload_blob(chosen, digest.sha256, bundle, digest.size)
        registered = api.read(
            EmbeddedAnswer,
            "POST",
            f"/projects/{chosen}/embedded",
            json={
                "platform": platform,
                "runtimeVersion": runtime_version,
                "embeddedUpdateId": embedded_update_id,
                "sha256": digest.sha256,
            },
        )
    if as_json:
        print_json(registered)
        return
    note(f"registered {bundle.name} ({human_bytes(digest.size)}) as {embedded_update_id}")


@app.command("list")
def list_embedded(
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The project's registered embedded bundles.

    Example: lumora embedded list --project my-app
    """
    chosen = pick_project(project)
    from lumora_ota.api_models import EmbeddedAnswer, Items

    with open_api(server, api_key) as api:
        answer = api.read(Items[EmbeddedAnswer], "GET", f"/projects/{chosen}/embedded")
    if as_json:
        print_json(answer)
        return
    rows = [
        [
            item.embedded_update_id,
            item.platform,
            item.runtime_version,
            item.sha256[:12],
            human_bytes(item.size or 0),
            item.created_at,
        ]
        for item in answer.items
    ]
    print_table(["embedded update id", "platform", "runtime", "sha256", "size", "created"], rows)


def delta_fields(delta: DeltaAnswer) -> list[tuple[str, Any]]:
    """Rows for ``lumora updates view``: download sizes, patches and bytes saved."""
    sizes = delta.launch_asset.sizes if delta.launch_asset is not None else None
    measured = (
        [("raw", sizes.raw), ("gzip", sizes.gzip), ("br", sizes.br)] if sizes is not None else []
    )
    savings = delta.savings
    rows: list[tuple[str, Any]] = [
        (
            "bundle download",
            ", ".join(f"{name} {human_bytes(size)}" for name, size in measured if size is not None)
            or "-",
        ),
    ]
    for patch in delta.patches:
        useful = "" if patch.useful else " (not served: too large)"
        rows.append((f"patch from {patch.base_update_id}", human_bytes(patch.size) + useful))
    rows.append(("saved by patches", human_bytes(savings.patch_bytes_saved)))
    rows.append(("patch downloads", savings.patch_downloads))
    rows.append(("saved by compression", human_bytes(savings.compression_bytes_saved)))
    return rows


@app.command("delta")
def show_delta(
    update_id: Annotated[str, typer.Argument(help="Update id.")],
    as_json: JsonOption = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """An update's delta patches and the bytes patches and compression saved.

    Example: lumora embedded delta 0b7e6c1e-3f2a-4a8e-9d55-2f7f0c1c9a10
    """
    from lumora_ota.api_models import DeltaAnswer

    with open_api(server, api_key) as api:
        delta = api.read(DeltaAnswer, "GET", f"/updates/{update_id}/delta")
    if as_json:
        print_json(delta)
        return
    print_fields(delta_fields(delta), title=f"update {update_id}")
