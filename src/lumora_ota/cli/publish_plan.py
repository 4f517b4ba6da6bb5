"""What ``lumora publish`` sends: a directory turned into per-platform launch assets and assets.

Two kinds of directory are understood:

* the output of ``npx expo export``, recognised by its ``metadata.json``: each platform's
  bundle becomes that platform's launch asset, its ``assets`` keep their extension and get a
  content type from it, ``expoConfig.json`` becomes ``extra.expoClient`` and gives the
  runtime version when none is passed;
* any directory with ``--launch-asset FILE``: that file is the launch asset and every other
  file (except hidden ones, whose names start with a dot) is an asset of every platform.

Platform ``all`` means every platform in ``metadata.json`` for an export, and ios, android
and web for a plain directory (its files serve every platform alike).

Everything here is pure except reading the directory; hashing lives in ``digest_files``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import mimetypes
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.expo_tools import CONFIG_COMMAND

PLATFORMS = ("ios", "android", "web")
ALL_PLATFORMS = "all"
LAUNCH_CONTENT_TYPE = "application/javascript"
FALLBACK_CONTENT_TYPE = "application/octet-stream"

# Python's built-in table (not the host's /etc/mime.types, so results do not vary by
# machine; see ``_builtin_types``), corrected where Expo clients expect other names.
_CONTENT_TYPE_OVERRIDES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".hbc": "application/javascript",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".json": "application/json",
    ".webp": "image/webp",
}

SourceKind = Literal["expo-export", "directory"]


@dataclass(frozen=True)
class PlannedFile:
    """One file of an update: where it is on disk and how the update names it."""

    key: str
    path: Path
    content_type: str
    file_extension: str


@dataclass(frozen=True)
class PlatformPlan:
    """One platform's launch asset and other assets."""

    launch_asset: PlannedFile
    assets: tuple[PlannedFile, ...]


@dataclass(frozen=True)
class PublishPlan:
    """Everything ``lumora publish`` will send, before hashing."""

    source: SourceKind
    root: Path
    runtime_version: str
    platforms: dict[str, PlatformPlan]
    extra: dict[str, Any]

    def unique_paths(self) -> list[Path]:
        """Every file once, in a stable order (files shared by platforms appear once)."""
        seen: dict[Path, None] = {}
        for plan in self.platforms.values():
            for planned in (plan.launch_asset, *plan.assets):
                seen.setdefault(planned.path, None)
        return list(seen)


@dataclass(frozen=True)
class FileDigest:
    """A file's SHA-256 (lowercase hex) and size in bytes."""

    sha256: str
    size: int


def content_type_for(file_extension: str) -> str:
    """The content type for an extension such as ``.png`` (``application/octet-stream`` if
    unknown)."""
    ext = file_extension.lower()
    if ext in _CONTENT_TYPE_OVERRIDES:
        return _CONTENT_TYPE_OVERRIDES[ext]
    guessed, _encoding = _builtin_types().guess_type(f"file{ext}", strict=False)
    return guessed or FALLBACK_CONTENT_TYPE


@functools.cache
def _builtin_types() -> mimetypes.MimeTypes:
    # Made on first use: building it reads the host's tables too (mimetypes.init), which
    # commands that never publish, and ``--help``, need not pay for.
    return mimetypes.MimeTypes()


def plan_publish(
    root: Path,
    *,
    platform: str = ALL_PLATFORMS,
    launch_asset: str | None = None,
    runtime_version: str | None = None,
    project_dir: Path | None = None,
) -> PublishPlan:
    """Read ``root`` into one plan; raises ``CliError`` on anything that cannot be published
    (including platforms that resolve to different runtime versions)."""
    plans = plan_publishes(
        root,
        platform=platform,
        launch_asset=launch_asset,
        runtime_version=runtime_version,
        project_dir=project_dir,
    )
    if len(plans) > 1:
        listed = ", ".join(f"{name}={p.runtime_version}" for p in plans for name in p.platforms)
        raise CliError(
            f"the platforms have different runtime versions ({listed});"
            " publish them one at a time with --platform"
        )
    return plans[0]


def plan_publishes(
    root: Path,
    *,
    platform: str = ALL_PLATFORMS,
    launch_asset: str | None = None,
    runtime_version: str | None = None,
    project_dir: Path | None = None,
) -> list[PublishPlan]:
    """Read ``root`` into plans, one per runtime version: an export whose runtime version
    is a ``fingerprint`` policy resolves per platform (``project_dir`` is the app, by
    default the export's parent when it holds a package.json), and platforms whose
    fingerprints differ are published as separate updates. Raises ``CliError`` on anything
    that cannot be published."""
    if not root.is_dir():
        raise CliError(f"not a directory: {root}")
    if platform != ALL_PLATFORMS and platform not in PLATFORMS:
        raise CliError(f"unknown platform {platform!r}: choose ios, android, web or all")
    if launch_asset is not None:
        return [_plan_directory(root, platform, launch_asset, runtime_version)]
    if (root / "metadata.json").is_file():
        return _plan_expo_export(root, platform, runtime_version, project_dir)
    raise CliError(
        f"{root} is not an `expo export` output (no metadata.json);"
        " pass --launch-asset FILE to publish any directory"
    )


def _plan_expo_export(
    root: Path, platform: str, runtime_version: str | None, project_dir: Path | None
) -> list[PublishPlan]:
    metadata = _read_json_object(root / "metadata.json")
    file_metadata = metadata.get("fileMetadata")
    if not isinstance(file_metadata, dict) or not file_metadata:
        raise CliError(f"{root / 'metadata.json'} has no fileMetadata")
    present = [p for p in PLATFORMS if p in file_metadata]
    if platform == ALL_PLATFORMS:
        chosen = present
    elif platform in present:
        chosen = [platform]
    else:
        raise CliError(
            f"the export has no {platform} bundle (it has: {', '.join(present) or 'none'})"
        )
    if not chosen:
        raise CliError(f"{root / 'metadata.json'} lists no ios, android or web bundle")
    expo_config: dict[str, Any] | None = None
    if (root / "expoConfig.json").is_file():
        expo_config = _read_json_object(inside(root, root / "expoConfig.json"))
    if runtime_version is None and expo_config is None:
        raise CliError(
            f"no runtime version: {root} has no expoConfig.json (`npx expo export` does not"
            f" write it). In the app, run `{CONFIG_COMMAND}` as Expo's self-hosting guide does"
            " (or use `lumora publish --expo APP_DIR`), or pass --runtime-version (then the"
            " update's extra.expoClient is empty and expo-constants sees no app config)"
        )
    if runtime_version is not None:
        by_platform = dict.fromkeys(chosen, runtime_version)
    else:
        assert expo_config is not None
        by_platform = {
            name: _runtime_version_for(expo_config, name, app_dir=project_dir or root.parent)
            for name in chosen
        }
    platforms = {name: _platform_from_metadata(root, name, file_metadata[name]) for name in chosen}
    extra: dict[str, Any] = {"expoClient": expo_config} if expo_config is not None else {}
    plans: list[PublishPlan] = []
    for version in dict.fromkeys(by_platform.values()):
        subset = {n: platforms[n] for n in chosen if by_platform[n] == version}
        plans.append(PublishPlan("expo-export", root, version, subset, extra))
    return plans


def _platform_from_metadata(root: Path, platform: str, entry: Any) -> PlatformPlan:
    where = f"metadata.json fileMetadata.{platform}"
    if not isinstance(entry, dict) or not isinstance(entry.get("bundle"), str):
        raise CliError(f"{where} has no bundle")
    bundle_key = _normalise_key(entry["bundle"], where)
    launch = PlannedFile(
        key=bundle_key,
        path=_existing_file(root, bundle_key, where),
        content_type=LAUNCH_CONTENT_TYPE,
        file_extension=PurePosixPath(bundle_key).suffix,
    )
    assets: list[PlannedFile] = []
    seen_keys = {bundle_key}
    raw_assets = entry.get("assets") or []
    if not isinstance(raw_assets, list):
        raise CliError(f"{where}.assets is not a list")
    for raw in raw_assets:
        if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
            raise CliError(f"{where}.assets has an entry without a path")
        key = _normalise_key(raw["path"], where)
        if key in seen_keys:
            continue
        seen_keys.add(key)
        ext = str(raw.get("ext") or PurePosixPath(key).suffix.lstrip("."))
        file_extension = f".{ext.lstrip('.')}" if ext else ""
        assets.append(
            PlannedFile(
                key=key,
                path=_existing_file(root, key, where),
                content_type=content_type_for(file_extension),
                file_extension=file_extension,
            )
        )
    return PlatformPlan(launch, tuple(assets))


def _plan_directory(
    root: Path, platform: str, launch_asset: str, runtime_version: str | None
) -> PublishPlan:
    if not runtime_version:
        raise CliError("no runtime version: pass --runtime-version when using --launch-asset")
    # Accept the path relative to DIR, or relative to where the command runs.
    given = Path(launch_asset)
    candidates = [given] if given.is_absolute() else [root / given, given]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CliError(f"launch asset not found: {launch_asset}")
    launch_path = found.resolve()
    resolved_root = root.resolve()
    if not launch_path.is_relative_to(resolved_root):
        if Path(os.path.normpath(found.absolute())).is_relative_to(root.absolute()):
            inside(root, found)  # a file of DIR that links out of it: name the link
        raise CliError(f"the launch asset {launch_asset} is not inside {root}")
    files = [
        inside(resolved_root, p)
        for p in _visible_files(resolved_root)
        if p.resolve() != launch_path
    ]
    launch_key = launch_path.relative_to(resolved_root).as_posix()
    launch_ext = launch_path.suffix
    launch = PlannedFile(launch_key, launch_path, content_type_for(launch_ext), launch_ext)
    assets = tuple(
        PlannedFile(
            key=path.relative_to(resolved_root).as_posix(),
            path=path,
            content_type=content_type_for(path.suffix),
            file_extension=path.suffix,
        )
        for path in files
    )
    chosen = list(PLATFORMS) if platform == ALL_PLATFORMS else [platform]
    platforms = {name: PlatformPlan(launch, assets) for name in chosen}
    return PublishPlan("directory", root, runtime_version, platforms, {})


def _visible_files(root: Path) -> list[Path]:
    """Regular files under ``root``, skipping anything hidden (``.git``, ``.DS_Store``)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def runtime_version_from_config(expo_config: Mapping[str, Any], platforms: Iterable[str]) -> str:
    """The runtime version an Expo config declares for ``platforms``.

    ``runtimeVersion`` may be a string or a policy object: ``appVersion`` gives the config's
    ``version``; ``nativeVersion`` gives ``version(buildNumber)`` on iOS and
    ``version(versionCode)`` on Android; ``sdkVersion`` gives ``exposdk:<sdkVersion>``.
    A platform section's own ``runtimeVersion`` wins over the top-level one. The
    ``fingerprint`` policy needs Expo's tooling, so it asks for ``--runtime-version`` here
    (``plan_publishes`` resolves it with the app's own tooling).
    """
    values = {name: _runtime_version_for(expo_config, name) for name in platforms}
    distinct = set(values.values())
    if len(distinct) > 1:
        listed = ", ".join(f"{name}={value}" for name, value in values.items())
        raise CliError(
            f"the platforms have different runtime versions ({listed});"
            " publish them one at a time with --platform"
        )
    if not distinct:
        raise CliError("no platform to publish")
    return distinct.pop()


def _runtime_version_for(
    config: Mapping[str, Any], platform: str, *, app_dir: Path | None = None
) -> str:
    section = config.get(platform)
    section = section if isinstance(section, dict) else {}
    declared = section.get("runtimeVersion", config.get("runtimeVersion"))
    if isinstance(declared, str) and declared:
        return declared
    if declared is None:
        raise CliError("no runtime version: pass --runtime-version (expoConfig.json has none)")
    policy = declared.get("policy") if isinstance(declared, dict) else None
    version = config.get("version")
    if policy == "appVersion" and isinstance(version, str):
        return version
    if policy == "nativeVersion" and isinstance(version, str):
        build_field = "buildNumber" if platform == "ios" else "versionCode"
        build = section.get(build_field, "1")
        return f"{version}({build})"
    sdk_version = config.get("sdkVersion")
    if policy == "sdkVersion" and isinstance(sdk_version, str):
        return f"exposdk:{sdk_version}"
    if policy == "fingerprint":
        if app_dir is None or not (app_dir / "package.json").is_file():
            raise CliError(
                "the runtime version policy is fingerprint: pass --expo APP_DIR (the app whose"
                " expo-updates computes it) or --runtime-version"
            )
        from lumora_ota.cli.expo_tools import resolve_runtime_version

        return resolve_runtime_version(app_dir, platform)
    raise CliError(
        f"cannot work out the runtime version from policy {declared!r} in expoConfig.json;"
        " pass --runtime-version"
    )


def digest_files(paths: Iterable[Path]) -> dict[Path, FileDigest]:
    """SHA-256 and size of each file, reading each once."""
    digests: dict[Path, FileDigest] = {}
    for path in paths:
        if path in digests:
            continue
        try:
            with path.open("rb") as fh:
                hasher = hashlib.file_digest(fh, "sha256")
                size = fh.tell()  # the bytes hashed: file_digest reads to the end
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
        digests[path] = FileDigest(hasher.hexdigest(), size)
    return digests


def publish_request(
    plan: PublishPlan,
    digests: Mapping[Path, FileDigest],
    *,
    project: str,
    channel: str,
    message: str,
    rollout: int,
    mandatory: bool,
) -> dict[str, Any]:
    """The ``POST /updates/publish`` body for a hashed plan."""

    def entry(planned: PlannedFile) -> dict[str, Any]:
        return {
            "key": planned.key,
            "sha256": digests[planned.path].sha256,
            "contentType": planned.content_type,
            "fileExtension": planned.file_extension,
        }

    return {
        "project": project,
        "channel": channel,
        "runtimeVersion": plan.runtime_version,
        "message": message,
        "rollout": rollout,
        "mandatory": mandatory,
        "platforms": {
            name: {
                "launchAsset": entry(p.launch_asset),
                "assets": [entry(a) for a in p.assets],
            }
            for name, p in plan.platforms.items()
        },
        "extra": plan.extra,
        "metadata": {},
    }


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CliError(f"{path} does not hold a JSON object")
    return value


def _normalise_key(raw: str, where: str) -> str:
    """A metadata path as a safe relative key (the server re-checks; this gives a clearer
    message before any upload)."""
    key = raw.replace("\\", "/").removeprefix("./")
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or ".." in parts or "\x00" in key:
        raise CliError(f"{where} names an unsafe path: {raw!r}")
    return key


def _existing_file(root: Path, key: str, where: str) -> Path:
    path = root / key
    if not path.is_file():
        raise CliError(f"{where} names {key}, which does not exist in {root}")
    return inside(root, path)


def inside(root: Path, path: Path) -> Path:
    """``path`` when it (after following every symbolic link on the way) is inside ``root``;
    else ``CliError`` naming it. Whatever is published is downloadable by anyone, so a link
    out of the directory (to ``~/.aws/credentials``, say) must never be followed; links
    within it are fine."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise CliError(
            f"{path} is a symbolic link leading outside {root} (to {path.resolve()}):"
            " refusing to publish it"
        )
    return path
