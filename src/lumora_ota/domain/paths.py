"""Where an update's files go: the rule that no file path is also a directory of another.

An update's files are installed under their paths (the Lumora SDK's update directory); a
path that is a file and, with more segments after it, a directory (``a`` and ``a/b``) can
never be installed. The server refuses such a publish and the SDK such a manifest, before
any byte is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable


def file_and_directory(paths: Iterable[str]) -> tuple[str, str] | None:
    """The first ``(path, nested)`` where ``path`` is a file and also a directory of
    ``nested`` (``("a", "a/b")``); None when the paths can all be files at once."""
    listed = list(paths)
    files = set(listed)
    for nested in listed:
        parts = nested.split("/")
        for end in range(1, len(parts)):
            parent = "/".join(parts[:end])
            if parent in files:
                return parent, nested
    return None


def file_and_directory_problem(paths: Iterable[str]) -> str | None:
    """A one-line reason when ``file_and_directory`` finds a clash, else None."""
    clash = file_and_directory(paths)
    if clash is None:
        return None
    path, nested = clash
    return f"the path {path[:80]!r} is a file and also a directory (of {nested[:80]!r})"
