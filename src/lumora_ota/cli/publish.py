"""``lumora publish``: hash a directory, upload what the server lacks, publish an update."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.expo_tools import CONFIG_COMMAND, export_app
from lumora_ota.cli.options import (
    ApiKeyOption,
    JsonOption,
    NonInteractiveOption,
    ProjectOption,
    ServerOption,
    YesOption,
    open_api,
    pick_project,
)
from lumora_ota.cli.output import (
    confirm,
    human_bytes,
    note,
    print_fields,
    print_json,
    print_table,
    stderr_console,
    yes_no,
)
from lumora_ota.cli.plans import plan_body
from lumora_ota.cli.publish_plan import (
    ALL_PLATFORMS,
    FileDigest,
    PublishPlan,
    digest_files,
    plan_publishes,
    publish_request,
)

if TYPE_CHECKING:
    from lumora_ota.api_models import PublishAnswer
    from lumora_ota.cli.api import LumoraApi

MISSING_BATCH = 10_000


def publish(
    directory: Annotated[
        Path, typer.Argument(help="`expo export` output, or any directory with --launch-asset.")
    ] = Path("dist"),
    channel: Annotated[str, typer.Option("--channel", "-c", help="Channel to publish to.")] = (
        "production"
    ),
    platform: Annotated[
        str,
        typer.Option(
            "--platform",
            help="ios, android, web or all (every platform of the export; ios, android and"
            " web for a plain directory).",
        ),
    ] = ALL_PLATFORMS,
    launch_asset: Annotated[
        str | None,
        typer.Option(
            "--launch-asset",
            help="Publish a plain directory: this file (inside DIR) is the launch asset and"
            " every other non-hidden file an asset.",
        ),
    ] = None,
    runtime_version: Annotated[
        str | None,
        typer.Option(
            "--runtime-version",
            help="Runtime version [default: from expoConfig.json].",
        ),
    ] = None,
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Update message [default: last git commit subject]."),
    ] = None,
    rollout: Annotated[
        int, typer.Option("--rollout", min=0, max=100, help="Percent of devices that get it.")
    ] = 100,
    mandatory: Annotated[
        bool, typer.Option("--mandatory", help="Clients should apply it right away.")
    ] = False,
    rollout_plan: Annotated[
        str | None,
        typer.Option(
            "--rollout-plan",
            help="Roll out by itself through these percentages (e.g. 1,10,50,100): see"
            " lumora updates plan.",
        ),
    ] = None,
    plan_step: Annotated[
        str, typer.Option("--step", help="With --rollout-plan: soak time per step (1h, 30m).")
    ] = "1h",
    plan_min_launches: Annotated[
        int,
        typer.Option(
            "--min-launches", min=0, help="With --rollout-plan: launches needed to advance."
        ),
    ] = 0,
    plan_max_failure_rate: Annotated[
        str,
        typer.Option(
            "--max-failure-rate", help="With --rollout-plan: halt above this failure rate."
        ),
    ] = "2%",
    expo: Annotated[
        Path | None,
        typer.Option(
            "--expo",
            metavar="APP_DIR",
            help="Bundle the Expo app in APP_DIR first (needs Node.js): runs `npx expo export`"
            " and `npx expo config --json --type public > dist/expoConfig.json` there, then"
            " publishes APP_DIR/dist.",
        ),
    ] = None,
    private_key: Annotated[
        Path | None,
        typer.Option(
            "--private-key",
            help="Sign the update here with this PEM key (projects whose key is publisher-held:"
            " `lumora codesigning publisher-held`).",
        ),
    ] = None,
    yes: YesOption = False,
    non_interactive: NonInteractiveOption = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Publish a new update from an `expo export` directory or any directory of files.

    Hashes every file once, asks the server which files it lacks, uploads only those and
    publishes one update per platform.

    Example: npx expo export && npx expo config --json --type public > dist/expoConfig.json
    && lumora publish dist --project my-app --channel staging

    Example: lumora publish --expo . --project my-app (runs both npx commands for you)

    Example: lumora publish build/ --launch-asset main.py --runtime-version 1.0 --platform all

    Example: lumora publish dist --rollout-plan 1,10,50,100 --step 1h --max-failure-rate 2%
    """
    chosen_project = pick_project(project)
    plan: dict[str, Any] | None = None
    if rollout_plan is not None:
        plan = plan_body(rollout_plan, plan_step, plan_min_launches, plan_max_failure_rate)
        rollout = plan["steps"][0]  # never served wider than the first step
    if expo is not None:
        if launch_asset is not None:
            raise CliError("choose either --expo or --launch-asset, not both", exit_code=2)
        directory = export_app(expo, platform, show=not as_json)
    plans = plan_publishes(
        directory,
        platform=platform,
        launch_asset=launch_asset,
        runtime_version=runtime_version,
        project_dir=expo,
    )
    if not as_json and plans[0].source == "expo-export" and "expoClient" not in plans[0].extra:
        note(
            f"{directory} has no expoConfig.json: the update's extra.expoClient is empty (run"
            f" `{CONFIG_COMMAND}` in the app first, as Expo's self-hosting guide does)"
        )
    update_message = message if message is not None else last_commit_subject(directory)
    reports: list[dict[str, Any]] = []
    for one in plans:  # one per runtime version (fingerprints may differ per platform)
        report, result = _publish_plan(
            one,
            project=chosen_project,
            channel=channel,
            message=update_message,
            rollout=rollout,
            mandatory=mandatory,
            yes=yes,
            non_interactive=non_interactive,
            as_json=as_json,
            server=server,
            api_key=api_key,
            private_key=_read_key(private_key),
            rollout_plan=plan,
        )
        reports.append(report)
        if not as_json:
            _print_result(report, result)
    if as_json:
        print_json(_merge_reports(reports))


def _publish_plan(
    plan: PublishPlan,
    *,
    project: str,
    channel: str,
    message: str,
    rollout: int,
    mandatory: bool,
    yes: bool,
    non_interactive: bool,
    as_json: bool,
    server: str | None,
    api_key: str | None,
    private_key: bytes | None = None,
    rollout_plan: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], PublishAnswer]:
    """Hash, upload what is missing and publish one plan; its report and the server's answer."""
    from lumora_ota.api_models import Items, PlanAnswer, PublishAnswer, SigningAnswer

    digests = digest_files(plan.unique_paths())
    by_hash = {d.sha256: d for d in digests.values()}
    total_bytes = sum(d.size for d in by_hash.values())
    if not as_json:
        files = f"{len(by_hash)} distinct, {human_bytes(total_bytes)}"
        _print_summary(plan, project, channel, message, rollout, mandatory, files)
    confirm(f"Publish this update to {channel}?", assume_yes=yes, non_interactive=non_interactive)
    with open_api(server, api_key) as api:
        if private_key is not None:
            signing = api.read(SigningAnswer, "GET", f"/projects/{project}/signing")
            if signing.mode != "publisher":
                raise CliError(
                    f"--private-key signs for publisher-held keys, and {project}'s is not"
                    " (lumora codesigning publisher-held)"
                )
        missing = _missing_hashes(api, project, sorted(by_hash))
        to_upload = [by_hash[h] for h in sorted(missing)]
        paths = {d.sha256: path for path, d in digests.items()}
        _upload(api, project, to_upload, paths, show_progress=not as_json)
        body = publish_request(
            plan,
            digests,
            project=project,
            channel=channel,
            message=message,
            rollout=rollout,
            mandatory=mandatory,
        )
        result = api.read(PublishAnswer, "POST", "/updates/publish", json=body)
        plans: list[PlanAnswer] | None = None
        if rollout_plan is not None:
            path = f"/updates/{result.group_id}/rollout-plan"
            plans = api.read(Items[PlanAnswer], "PUT", path, json=rollout_plan).items
        manifest_url = api.url(f"/expo/{project}/manifest")
        if private_key is not None:
            from lumora_ota.cli.publisher_signing import sign_pending

            ids = [u.id for u in result.updates]
            published = frozenset(by_hash)
            sign_pending(
                api,
                project,
                private_key,
                update_ids=ids,
                expected_sha256=dict.fromkeys(ids, published),
                exact=False,
            )
        else:
            from lumora_ota.cli.publisher_signing import note_awaiting_signature

            note_awaiting_signature(api, project, [u.id for u in result.updates])
    uploaded_bytes = sum(d.size for d in to_upload)
    report = _report(result, plans, plan, project, channel, manifest_url)
    report.update(
        uploadedBytes=uploaded_bytes,
        skippedBytes=total_bytes - uploaded_bytes,
        uploadedFiles=len(to_upload),
        skippedFiles=len(by_hash) - len(to_upload),
    )
    return report, result


def _read_key(path: Path | None) -> bytes | None:
    """The PEM private key of ``--private-key`` (read before anything is published)."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the private key {path}: {exc.strerror or exc}") from exc
    if len(data) > 64 * 1024:
        raise CliError(f"the private key {path} is not a PEM file (over 64 KiB)")
    return data


def _merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``--json`` document for the updates of several runtime versions (the shape of a
    single publish; ``groupIds`` and ``runtimeVersions`` list each group's)."""
    merged = dict(reports[0])
    if len(reports) == 1:
        return merged
    for report in reports[1:]:
        merged["updates"] = {**merged["updates"], **report["updates"]}
        merged["updateIds"] = [*merged["updateIds"], *report["updateIds"]]
        merged["manifestUrls"] = {**merged["manifestUrls"], **report["manifestUrls"]}
        for key in ("uploadedBytes", "skippedBytes", "uploadedFiles", "skippedFiles"):
            merged[key] += report[key]
    merged["groupIds"] = [r["groupId"] for r in reports]
    merged["runtimeVersions"] = {
        platform: r["runtimeVersion"] for r in reports for platform in r["updates"]
    }
    return merged


def last_commit_subject(directory: Path) -> str:
    """The subject of the last commit of the git repository holding ``directory``, or ``""``."""
    git = shutil.which("git")
    if git is None:
        return ""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [git, "-C", str(directory), "log", "-1", "--pretty=%s"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _missing_hashes(api: LumoraApi, project: str, hashes: list[str]) -> set[str]:
    from lumora_ota.api_models import MissingAnswer

    missing: set[str] = set()
    for start in range(0, len(hashes), MISSING_BATCH):
        query = {"project": project, "hashes": hashes[start : start + MISSING_BATCH]}
        missing.update(api.read(MissingAnswer, "POST", "/assets/missing", json=query).missing)
    unknown = missing - set(hashes)
    if unknown:
        raise CliError("the server reported missing files that were never asked about")
    return missing


def _upload(
    api: LumoraApi,
    project: str,
    digests: list[FileDigest],
    paths: dict[str, Path],
    *,
    show_progress: bool,
) -> None:
    if not digests:
        return
    # Only here: a re-publish (nothing to upload) never loads the progress bar.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    total = sum(d.size for d in digests)
    console = stderr_console()
    with Progress(
        TextColumn("[bold]uploading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (show_progress and console.is_terminal),
        transient=False,
    ) as progress:
        task = progress.add_task("upload", total=total, files=f"0/{len(digests)} files")
        for done, digest in enumerate(digests, start=1):
            api.upload_blob(
                project,
                digest.sha256,
                paths[digest.sha256],
                digest.size,
                on_progress=lambda n: progress.advance(task, n),
            )
            progress.update(task, files=f"{done}/{len(digests)} files")


def _report(
    result: PublishAnswer,
    plans: list[Any] | None,
    plan: PublishPlan,
    project: str,
    channel: str,
    manifest_url: str,
) -> dict[str, Any]:
    updates = result.updates
    return {
        "groupId": result.group_id,
        **({"rolloutPlans": plans} if plans is not None else {}),
        "project": project,
        "channel": channel,
        "runtimeVersion": plan.runtime_version,
        "updates": {u.platform: u.id for u in updates},
        "updateIds": [u.id for u in updates],
        "manifestUrl": manifest_url,
        "manifestUrls": {u.platform: u.manifest_url for u in updates},
    }


def _print_summary(
    plan: PublishPlan,
    project: str,
    channel: str,
    message: str,
    rollout: int,
    mandatory: bool,
    files: str,
) -> None:
    print_fields(
        [
            ("project", project),
            ("channel", channel),
            ("runtime version", plan.runtime_version),
            ("platforms", ", ".join(plan.platforms)),
            ("source", f"{plan.source} {plan.root}"),
            ("message", message),
            ("rollout", f"{rollout}%"),
            ("mandatory", yes_no(mandatory)),
            ("files", files),
        ],
        title="Publishing",
    )


def _print_result(report: dict[str, Any], result: PublishAnswer) -> None:
    print_table(
        ["platform", "update id", "runtime", "rollout"],
        ([u.platform, u.id, u.runtime_version, f"{u.rollout}%"] for u in result.updates),
        title=f"Published group {report['groupId']}",
    )
    saved = report["skippedBytes"]
    print_fields(
        [
            (
                "uploaded",
                f"{report['uploadedFiles']} files, {human_bytes(report['uploadedBytes'])}",
            ),
            (
                "already on server",
                f"{report['skippedFiles']} files, {human_bytes(saved)} saved by deduplication",
            ),
            ("manifest URL", report["manifestUrl"]),
        ]
    )
