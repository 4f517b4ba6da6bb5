"""Every file-system mutation of the SDK, in one place.

The download and install code never call ``os`` directly for anything that changes the disk:
they go through a ``FileSystem``. That gives one place to get durability right (fsync the file,
then rename, then fsync the directory) and one seam where the fault-injection tests interrupt
the SDK at every single write, fsync, rename and link.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import IO

from lumora_ota.client.errors import ServerResponseError

MAX_PATH_BYTES = 1024


class FileSystem:
    """Durable file operations. Subclass and override ``_checkpoint`` to inject faults."""

    def _checkpoint(self, operation: str, path: Path) -> None:
        """Called before every mutating operation (a no-op outside tests)."""

    def write(self, handle: IO[bytes], data: bytes, path: Path) -> None:
        """Append ``data`` to an open file."""
        self._checkpoint("write", path)
        handle.write(data)

    def fsync(self, handle: IO[bytes], path: Path) -> None:
        """Flush an open file to stable storage."""
        self._checkpoint("fsync", path)
        handle.flush()
        os.fsync(handle.fileno())

    def fsync_dir(self, path: Path) -> None:
        """Make a directory's entries (renames, new files) durable; no-op where unsupported."""
        self._checkpoint("fsync_dir", path)
        if os.name != "posix":  # Windows cannot open directories; NTFS journals renames
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, source: Path, target: Path) -> None:
        """Atomically move ``source`` over ``target`` (same file system)."""
        self._checkpoint("replace", target)
        os.replace(source, target)

    def link_or_copy(self, source: Path, target: Path) -> bool:
        """Hard-link ``source`` to ``target``, copying (with fsync) when links are unsupported.

        Returns whether a copy was made (a copy needs its own fsync, done here).
        """
        self._checkpoint("link", target)
        try:
            os.link(source, target)
            return False
        except OSError:
            pass
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            self.fsync(dst, target)
        return True

    def mkdir(self, path: Path) -> None:
        """Create a directory (parents included; existing is fine)."""
        self._checkpoint("mkdir", path)
        path.mkdir(parents=True, exist_ok=True)

    def unlink(self, path: Path) -> None:
        """Remove a file if present."""
        self._checkpoint("unlink", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def rmtree(self, path: Path) -> None:
        """Remove a directory tree if present."""
        self._checkpoint("rmtree", path)
        shutil.rmtree(path, ignore_errors=True)

    def atomic_write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix.

        Temp file in the same directory, write, fsync, rename over, fsync the directory.
        """
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temp, "wb") as handle:
                self.write(handle, data, temp)
                self.fsync(handle, temp)
            self.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        self.fsync_dir(path.parent)


def validate_relative_path(value: object) -> str:
    """Check that a manifest ``path`` stays inside the update directory; returns it.

    Rejects absolute paths, drive letters, backslashes, NUL, empty, ``.`` and ``..``
    segments, and overlong names — the same rules the server applies at publish time.
    """
    if not isinstance(value, str) or not value:
        raise ServerResponseError(f"unsafe asset path {value!r}: empty or not a string")
    problems = [
        (len(value.encode("utf-8", "replace")) > MAX_PATH_BYTES, "too long"),
        (value.startswith("/"), "absolute"),
        ("\\" in value or "\x00" in value, "backslash or NUL"),
        (len(value) >= 2 and value[1] == ":", "drive letter"),
        (any(part in ("", ".", "..") for part in value.split("/")), "empty, . or .. segment"),
    ]
    for failed, reason in problems:
        if failed:
            raise ServerResponseError(f"unsafe asset path {value!r}: {reason}")
    return value


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative`` after validation, guaranteed not to leave ``root``."""
    validate_relative_path(relative)
    target = root.joinpath(*PurePosixPath(relative).parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise ServerResponseError(f"unsafe asset path {relative!r}: escapes the update directory")
    return target
