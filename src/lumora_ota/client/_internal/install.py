"""Building an update directory from cached blobs, atomically.

The directory is assembled under ``staging/`` (files hard-linked, or copied, from the blob
cache under their manifest ``path``), made durable, then moved to ``updates/<id>`` with one
rename. It only becomes launchable when the caller records it in the state file afterwards,
so an interruption at any point leaves, at worst, an unreferenced directory that garbage
collection removes.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from lumora_ota.client._internal.download import BlobCache
from lumora_ota.client._internal.fs import FileSystem, safe_join
from lumora_ota.client._internal.manifest import Manifest
from lumora_ota.client.errors import InstallError


def build_update_dir(
    manifest: Manifest, blobs: BlobCache, updates_dir: Path, staging_dir: Path, fs: FileSystem
) -> Path:
    """Assemble ``updates/<manifest.id>`` from the cache; returns its path.

    The caller guarantees no state references ``updates/<id>`` yet (a leftover from an
    interrupted install is replaced).
    """
    fs.mkdir(staging_dir)
    fs.mkdir(updates_dir)
    staging = staging_dir / f"{manifest.id}.{secrets.token_hex(4)}"
    target = updates_dir / manifest.id
    try:
        fs.mkdir(staging)
        created_dirs = {staging}
        for asset in manifest.files:
            destination = safe_join(staging, asset.path)
            if destination.parent not in created_dirs:
                fs.mkdir(destination.parent)
                for ancestor in destination.parents:
                    if ancestor == staging:
                        break
                    created_dirs.add(ancestor)
            fs.link_or_copy(blobs.blob_path(asset.sha256), destination)
        # Children before parents, so each directory entry is durable before the rename.
        for directory in sorted(created_dirs, key=lambda p: len(p.parts), reverse=True):
            fs.fsync_dir(directory)
        if target.exists():
            fs.rmtree(target)
        fs.replace(staging, target)
        fs.fsync_dir(updates_dir)
    except Exception as exc:
        fs.rmtree(staging)
        if isinstance(exc, OSError):
            raise InstallError(f"installing update {manifest.id} failed: {exc}") from exc
        raise
    return target
