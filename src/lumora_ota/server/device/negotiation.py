"""Header parsing shared by the device endpoints: ``accept`` / ``accept-encoding`` q-values
and structured-field lists."""

from __future__ import annotations

import functools
import re

_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value.strip())))
            except ValueError:
                return 0.0
    return 1.0


def _media_ranges(accept: str) -> list[tuple[str, str, float]]:
    ranges = []
    for item in accept.split(","):
        media, *params = item.split(";")
        kind, _, subtype = media.strip().lower().partition("/")
        if kind and subtype:
            ranges.append((kind, subtype, _quality(params)))
    return ranges


@functools.lru_cache(maxsize=512)
def acceptable_media_types(accept: str | None, offered: tuple[str, ...]) -> tuple[str, ...]:
    """The ``offered`` media types ``accept`` allows, best first (ties keep offer order).

    Proactive negotiation per RFC 9110: the most specific matching range gives a type its
    quality (``type/subtype`` over ``type/*`` over ``*/*``); quality 0 means not acceptable.
    A missing ``accept`` accepts everything.
    """
    if accept is None or not accept.strip():
        return offered
    ranges = _media_ranges(accept)
    scored: list[tuple[float, int, str]] = []
    for order, media_type in enumerate(offered):
        kind, _, subtype = media_type.partition("/")
        best: tuple[int, float] | None = None
        for r_kind, r_subtype, quality in ranges:
            if (r_kind, r_subtype) == (kind, subtype):
                specificity = 2
            elif r_kind == kind and r_subtype == "*":
                specificity = 1
            elif (r_kind, r_subtype) == ("*", "*"):
                specificity = 0
            else:
                continue
            if best is None or specificity > best[0]:
                best = (specificity, quality)
        if best is not None and best[1] > 0:
            scored.append((-best[1], order, media_type))
    return tuple(media_type for _, _, media_type in sorted(scored))


@functools.lru_cache(maxsize=512)
def acceptable_encodings(accept_encoding: str | None, offered: tuple[str, ...]) -> tuple[str, ...]:
    """The ``offered`` content codings ``accept-encoding`` allows, best first.

    ``*`` covers codings not named; quality 0 refuses. Ties keep offer order (the server's
    preference). ``identity`` is handled by the caller: it is always the fallback.
    """
    if not accept_encoding:
        return ()
    named: dict[str, float] = {}
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = _quality(params)
        if coding == "*":
            wildcard = quality
        else:
            named[coding] = quality
    scored = []
    for order, coding in enumerate(offered):
        quality = named.get(coding, wildcard if wildcard is not None else 0.0)
        if quality > 0:
            scored.append((-quality, order, coding))
    return tuple(coding for _, _, coding in sorted(scored))


def parse_string_list(value: str | None, *, limit: int) -> tuple[str, ...]:
    """The strings of a structured-field list (``"a", "b"``); bare tokens are accepted too."""
    if not value:
        return ()
    quoted = _QUOTED_RE.findall(value)
    items = quoted if quoted else [part.strip() for part in value.split(",")]
    return tuple(item for item in items if item)[:limit]
