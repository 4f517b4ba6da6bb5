"""Runtime-version matching: exact strings, and npm-style ranges declared by updates."""

from __future__ import annotations

import pytest

from lumora_ota.domain.runtime import is_runtime_range, runtime_matches


@pytest.mark.parametrize(
    "declared",
    ["1.2.x", "1.x", "^1.2.0", "~1.2", ">=1.0.0 <2.0.0", "*", "1.0.0 - 2.0.0", "^1 || ^2"],
)
def test_ranges(declared: str) -> None:
    assert is_runtime_range(declared)


@pytest.mark.parametrize(
    "declared", ["1", "1.0.0", "exposdk:47.0.0", "abc123def", "1.0.0-beta.1", "v2", "a=b"]
)
def test_exact_strings(declared: str) -> None:
    assert not is_runtime_range(declared)


@pytest.mark.parametrize(
    ("declared", "requested", "expected"),
    [
        ("1", "1", True),
        ("1", "1.0.0", False),  # exact strings compare byte for byte
        ("1.0.0", "1.0", False),
        ("exposdk:47.0.0", "exposdk:47.0.0", True),
        ("exposdk:47.0.0", "47.0.0", False),
        ("1.2.x", "1.2.7", True),
        ("1.2.x", "1.3.0", False),
        ("^1.2.0", "1.9.3", True),
        ("^1.2.0", "2.0.0", False),
        ("^1.2.0", "1.1.9", False),
        ("~1.2", "1.2.9", True),
        ("~1.2", "1.3.0", False),
        (">=1.0.0 <2.0.0", "1.5", True),  # short device versions are zero-padded
        (">=1.0.0 <2.0.0", "2", False),
        ("1.0.0 - 2.0.0", "2.0.0", True),
        ("*", "3", True),
        ("*", "exposdk:47", False),  # non-semver device strings only match exactly
        ("^1.2.0", "1.3.0-beta.1", False),  # npm: pre-releases need an explicit opt-in
        ("^1.2.0", "not a version", False),
        ("^1.2.0", "^1.2.0", True),  # the same string is always a match
    ],
)
def test_matching(declared: str, requested: str, expected: bool) -> None:
    assert runtime_matches(declared, requested) is expected


def test_a_malformed_hyphen_range_is_an_exact_string() -> None:
    """``semantic_version`` raises AttributeError (not ValueError) for some hyphen ranges
    whose ends are not versions; such a declaration is an exact string, never a crash (found
    by the range index's property test, issue 21)."""
    from lumora_ota.domain.runtime import is_runtime_range, parse_range, runtime_matches

    for declared in ("1.0.0 - ^2.0.0", "1.2.3 - ~1.4.0"):
        assert parse_range(declared) is None
        assert not is_runtime_range(declared)
        assert runtime_matches(declared, declared)
        assert not runtime_matches(declared, "1.5.0")
