"""Bytes a device downloads for the real fixture pair's android bundle: raw, gzip, brotli,
and the bsdiff patch from the older export, made with ``bsdiff4.diff`` exactly as the server's
patch worker makes it (tests/test_delta_e2e.py asserts the served patch end to end)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import brotli
import bsdiff4

NEW_EXPORT = "expo-export-1674170951"
OLD_EXPORT = "expo-export-1666629107"


def fixtures_dir(repo_root: Path) -> Path:
    """``LUMORA_FIXTURES_DIR`` or ``../shared/fixtures`` beside the repository."""
    return Path(
        os.environ.get("LUMORA_FIXTURES_DIR", str(repo_root.parent / "shared" / "fixtures"))
    )


def _android_bundle(export: Path) -> bytes:
    meta = json.loads((export / "metadata.json").read_text())
    return (export / meta["fileMetadata"]["android"]["bundle"]).read_bytes()


def delta_sizes(fixtures: Path) -> dict[str, Any] | None:
    """The sizes, or None when the fixtures are absent."""
    new_dir, old_dir = fixtures / NEW_EXPORT, fixtures / OLD_EXPORT
    if not (new_dir / "metadata.json").exists() or not (old_dir / "metadata.json").exists():
        return None
    new, old = _android_bundle(new_dir), _android_bundle(old_dir)
    return {
        "bundle": f"{NEW_EXPORT} android",
        "rawBytes": len(new),
        "gzipBytes": len(gzip.compress(new, compresslevel=9)),
        "brotliBytes": len(brotli.compress(new, quality=11)),
        "patchBytes": len(bsdiff4.diff(old, new)),
        "patchNote": (
            f"bsdiff4 patch from {OLD_EXPORT}, computed as the server's patch worker does "
            "(served with A-IM: bsdiff to expo-updates 55+ and the Lumora SDK)"
        ),
    }
