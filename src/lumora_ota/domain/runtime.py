"""Runtime-version matching.

An update declares the runtime version it needs; a device states the one it runs. They match
when the strings are equal. When the update's runtime version is a *range* (CodePush's
``targetBinaryVersion`` style), the device's version matches when it is a semantic version
satisfying that range with npm semantics (``semantic_version.NpmSpec``).

What counts as a range, precisely: a string that contains an operator character
(``^ ~ < > =``), a wildcard component (``*``, ``x`` or ``X`` as a whole dot-separated part,
as in ``1.2.x``), an alternative (``||``) or a hyphen range (``1.0.0 - 2.0.0``), and that
``NpmSpec`` accepts. Anything else — ``1``, ``1.0.0``, ``exposdk:47.0.0``, a fingerprint hash —
is an exact string, compared byte for byte.

A device version takes part in range matching when it is ``MAJOR[.MINOR[.PATCH]]`` (missing
parts are zero: ``1.2`` is ``1.2.0``) or a full semantic version with pre-release/build parts.
Other device strings only ever match exactly, so even ``*`` never matches ``exposdk:47``.
Pre-release versions follow npm: ``^1.2.0`` does not match ``1.3.0-beta.1``.
"""

from __future__ import annotations

import functools
import re

import semantic_version

_OPERATOR_RE = re.compile(r"[\^~<>=]|\|\||\s-\s")
_WILDCARD_PART_RE = re.compile(r"(?:^|[.\s])[*xX](?=$|[.\s])")
_SHORT_VERSION_RE = re.compile(r"^\d+(?:\.\d+){0,2}$")


def looks_like_range(declared: str) -> bool:
    """Whether ``declared`` uses range syntax (see the module docstring)."""
    return bool(_OPERATOR_RE.search(declared) or _WILDCARD_PART_RE.search(declared))


@functools.lru_cache(maxsize=1024)
def parse_range(declared: str) -> semantic_version.NpmSpec | None:
    """The npm range ``declared`` stands for, or None when it is an exact runtime version."""
    if not looks_like_range(declared):
        return None
    try:
        return semantic_version.NpmSpec(declared.strip())
    except (ValueError, AttributeError):
        # semantic_version raises AttributeError for some malformed hyphen ranges
        # (``1.0.0 - ^2.0.0``): an exact string like any other unparsable one.
        return None


def is_runtime_range(declared: str) -> bool:
    """Whether an update's runtime version is a range rather than an exact string."""
    return parse_range(declared) is not None


@functools.lru_cache(maxsize=4096)
def parse_device_version(requested: str) -> semantic_version.Version | None:
    """The semantic version a device's runtime string stands for, if any."""
    if _SHORT_VERSION_RE.fullmatch(requested):
        parts = [int(p) for p in requested.split(".")]
        parts += [0] * (3 - len(parts))
        return semantic_version.Version(major=parts[0], minor=parts[1], patch=parts[2])
    try:
        return semantic_version.Version(requested)
    except ValueError:
        return None


def runtime_matches(declared: str, requested: str) -> bool:
    """Whether an update declaring ``declared`` may run on a device reporting ``requested``."""
    if declared == requested:
        return True
    spec = parse_range(declared)
    if spec is None:
        return False
    version = parse_device_version(requested)
    return version is not None and spec.match(version)
