"""An index over a channel's declared runtime-version *ranges*: which of them a device's
runtime version satisfies, at a cost that does not grow with how many there are.

Matching a version against every distinct declared range one by one (``runtime_matches``)
costs one ``NpmSpec.match`` per range: with 2,000 ranges in a channel's history, a device
sending a version no update declares exactly paid 2,000 matches per request (security issue,
item 14; performance issue 21, target 4). Devices can send any version, so a memo keyed by
the version string does not help either: random versions miss it every time.

What makes an index possible: every range is a tree of comparisons (``Range`` leaves under
``AllOf``/``AnyOf``) against a finite set of target versions. For a *release* version (no
pre-release, no build part) each comparison only depends on where the version falls among the
sorted distinct targets: on a target, or strictly between two neighbours. So the targets cut
the version line into at most ``2 * targets + 1`` *cells*, and every release version in a cell
matches exactly the same ranges. Building the index matches each range once per segment of
its own targets (a few matches a range, at a release version of the segment), which gives the
runs of cells it accepts; a lookup is a binary search for the cell, and the cell's answer is
collected from those runs once and remembered (bounded by the history, not by what devices
send).

The rarer shapes stay exact without the cell shortcut:

* a version with a pre-release part can only match a comparison set that names the same
  ``major.minor.patch`` in each of its "same patch" comparisons (npm's rule, as
  ``semantic_version`` implements it): only the ranges that could are matched one by one;
* a release version with build metadata matches every range without build-strict comparisons
  as its release part does (those comparisons drop the build first); the build-strict ranges
  are matched one by one;
* a string that is no semantic version matches no range at all.

The answers are equal to matching every range one by one; ``tests/test_runtime_ranges.py``
checks it over random ranges and versions.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import semantic_version
from semantic_version.base import AllOf, Always, AnyOf, Never, Range

from lumora_ota.domain.runtime import parse_device_version, parse_range

T = TypeVar("T")

# Remembered cell answers per index. A channel has at most 2 * targets + 1 cells, so this
# only bites for histories with thousands of distinct range targets; past it the memo starts
# over (answers are recomputed, never wrong).
MAX_CELL_ANSWERS = 4096

PatchKey = tuple[int, int, int]


def _leaves(clause: Any, out: list[Range]) -> bool:
    """Collect the ``Range`` comparisons of ``clause`` into ``out``; False for a clause shape
    this module does not know (then the range is always matched one by one)."""
    if isinstance(clause, Range):
        out.append(clause)
        return True
    if isinstance(clause, AllOf | AnyOf):
        return all(_leaves(sub, out) for sub in clause.clauses)
    return isinstance(clause, Always | Never)


def _same_patch_keys(clause: Any) -> frozenset[PatchKey] | None:
    """The ``major.minor.patch`` a pre-release version must have for ``clause`` to be able to
    match it; None when any could (an over-approximation: never misses a match)."""
    if isinstance(clause, Range):
        if clause.prerelease_policy == Range.PRERELEASE_SAMEPATCH:
            t = clause.target
            return frozenset({(t.major, t.minor, t.patch)})
        return None
    if isinstance(clause, Never):
        return frozenset()
    if isinstance(clause, AllOf):  # every part must match: the tightest part bounds it
        found: frozenset[PatchKey] | None = None
        for sub in clause.clauses:
            keys = _same_patch_keys(sub)
            if keys is not None:
                found = keys if found is None else found & keys
        return found
    if isinstance(clause, AnyOf):  # one part matching is enough: any part's keys
        union: set[PatchKey] = set()
        for sub in clause.clauses:
            keys = _same_patch_keys(sub)
            if keys is None:
                return None
            union |= keys
        return frozenset(union)
    return None  # Always, or a shape this module does not know


class RangeIndex(Generic[T]):
    """Which of ``declared`` (range strings, each accepted by ``parse_range``) a device's
    runtime version matches, as ``answer(indices)``: ``indices`` ascending positions in
    ``declared``. ``answer`` is called once per cell for release versions (its result is
    remembered and returned as is), per lookup for the rarer shapes."""

    __slots__ = (
        "_answer",
        "_build_strict",
        "_cells",
        "_opaque",
        "_points",
        "_prerelease_any",
        "_prerelease_by_patch",
        "_span_starts",
        "_spans",
        "_specs",
    )

    def __init__(
        self,
        declared: Sequence[str],
        answer: Callable[[tuple[int, ...]], T],
        parsed: Sequence[semantic_version.NpmSpec | None] | None = None,
    ) -> None:
        """``parsed``: ``parse_range`` of each of ``declared``, when the caller has them."""
        specs: list[semantic_version.NpmSpec] = []
        targets: list[semantic_version.Version] = []
        build_strict: list[int] = []
        opaque: list[int] = []
        by_patch: dict[PatchKey, list[int]] = {}
        prerelease_any: list[int] = []
        own_targets: list[list[semantic_version.Version]] = []
        for i, text in enumerate(declared):
            spec = parsed[i] if parsed is not None else parse_range(text)
            if spec is None:
                raise ValueError(f"{text!r} is not a runtime-version range")
            specs.append(spec)
            leaves: list[Range] = []
            if not _leaves(spec.clause, leaves):
                opaque.append(i)
            own_targets.append([leaf.target for leaf in leaves if not leaf.target.build])
            targets += own_targets[-1]
            if any(leaf.build_policy == Range.BUILD_STRICT for leaf in leaves):
                build_strict.append(i)
            keys = _same_patch_keys(spec.clause)
            if keys is None:
                prerelease_any.append(i)
            else:
                for key in keys:
                    by_patch.setdefault(key, []).append(i)
        points: list[semantic_version.Version] = []
        for target in sorted(targets):
            if not points or points[-1] != target:
                points.append(target)
        self._specs = tuple(specs)
        self._answer = answer
        self._points = points
        self._build_strict = frozenset(build_strict)
        self._opaque = frozenset(opaque)
        self._prerelease_by_patch = by_patch
        self._prerelease_any = tuple(prerelease_any)
        self._cells: dict[int, tuple[tuple[int, ...], T]] = {}
        spans = self._accepting_spans(own_targets) if not opaque else []
        self._spans = spans
        self._span_starts = [lo for lo, _hi, _i in spans]

    def _accepting_spans(
        self, own_targets: list[list[semantic_version.Version]]
    ) -> list[tuple[int, int, int]]:
        """(first cell, last cell, range) of every run of cells whose release versions a
        range matches, sorted by first cell.

        A range's own targets cut the cells into segments on which its answer for release
        versions cannot change, so it is matched once per segment (at a release version in
        it; segments with none are never asked about): a few matches per range in all.
        """
        points = self._points
        cells = 2 * len(points) + 1
        # A release version in each cell, None when the cell holds none (a pre-release
        # target, or the gap between a pre-release and its release).
        reps: list[semantic_version.Version | None] = []
        below = semantic_version.Version("0.0.0")  # the smallest release version
        for point in points:
            reps.append(below if below < point else None)
            reps.append(None if point.prerelease else point)
            below = (
                semantic_version.Version(major=point.major, minor=point.minor, patch=point.patch)
                if point.prerelease
                else point.next_patch()
            )
        reps.append(below)
        # The first cell at or after each cell that holds a release version.
        next_rep = [cells] * (cells + 1)
        for cell in range(cells - 1, -1, -1):
            next_rep[cell] = cell if reps[cell] is not None else next_rep[cell + 1]
        spans: list[tuple[int, int, int]] = []
        for i, own in enumerate(own_targets):
            at = sorted({bisect.bisect_left(points, t) for t in own})
            segments = []
            start = 0
            for g in at:
                segments += [(start, 2 * g), (2 * g + 1, 2 * g + 1)]
                start = 2 * g + 2
            segments.append((start, cells - 1))
            for lo, hi in segments:
                cell = next_rep[lo]
                if lo <= hi and cell <= hi and self._specs[i].match(reps[cell]):
                    spans.append((lo, hi, i))
        spans.sort()
        return spans

    def __len__(self) -> int:
        return len(self._specs)

    def lookup(self, requested: str) -> T:
        """``answer`` of the ranges ``requested`` (a device's runtime string) satisfies."""
        version = parse_device_version(requested)
        if version is None:
            return self._answer(())
        if version.prerelease:
            candidates = {*self._prerelease_any, *self._opaque}
            candidates.update(
                self._prerelease_by_patch.get((version.major, version.minor, version.patch), ())
            )
            return self._answer(self._scan(version, candidates))
        if version.build:
            loose, _ = self._cell(version.truncate("prerelease"))
            exact = self._build_strict | self._opaque  # the build part may matter to these
            strict = self._scan(version, exact)
            return self._answer(tuple(sorted({*(i for i in loose if i not in exact), *strict})))
        return self._cell(version)[1]

    def _scan(self, version: semantic_version.Version, indices: Iterable[int]) -> tuple[int, ...]:
        """The ranges among ``indices`` matching ``version``, one by one (ascending)."""
        return tuple(i for i in sorted(indices) if self._specs[i].match(version))

    def _cell(self, release: semantic_version.Version) -> tuple[tuple[int, ...], T]:
        """(indices, answer) of a release version, remembered per cell."""
        if self._opaque:  # ranges of unknown shape: no cell shortcut for any version
            indices = self._scan(release, range(len(self._specs)))
            return indices, self._answer(indices)
        at = bisect.bisect_left(self._points, release)
        on_point = at < len(self._points) and self._points[at] == release
        cell = 2 * at + 1 if on_point else 2 * at
        found = self._cells.get(cell)
        if found is None:
            if len(self._cells) >= MAX_CELL_ANSWERS:
                self._cells.clear()
            last = bisect.bisect_right(self._span_starts, cell)
            indices = tuple(sorted(i for _lo, hi, i in self._spans[:last] if hi >= cell))
            found = self._cells[cell] = (indices, self._answer(indices))
        return found
