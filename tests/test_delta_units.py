"""Delta updates, pure parts: A-IM parsing, base selection, usefulness and negotiation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import bsdiff4
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumora_ota.client._internal.delta import (
    PatchBase,
    PatchError,
    apply_patch,
    is_patch_response,
)
from lumora_ota.client._internal.download import BlobCache, RetryPolicy
from lumora_ota.client._internal.fs import FileSystem
from lumora_ota.client._internal.manifest import ManifestAsset
from lumora_ota.client.errors import NetworkError
from lumora_ota.client.fetcher import FetcherInterface, FetchResponse
from lumora_ota.domain.delta import (
    BaseCandidate,
    LaunchRef,
    Outcome,
    PatchEntry,
    PatchIndexView,
    PatchRequest,
    accepts_bsdiff,
    decide,
    is_useful,
    patch_object_name,
    select_bases,
)
from lumora_ota.store.blobs import check_blob_name
from lumora_ota.store.variants import is_compressible

T_SHA = "b" * 64
B_SHA = "a" * 64


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("bsdiff", True),
        ("BSDIFF", True),
        ("gzip, bsdiff", True),
        ("bsdiff;q=0.5", True),
        ("vcdiff", False),
        ("bsdiff4", False),
        (" , ", False),
    ],
)
def test_a_im_header(header: str | None, expected: bool) -> None:
    assert accepts_bsdiff(header) is expected


def test_patch_object_names_are_valid_blob_names() -> None:
    name = patch_object_name(T_SHA, B_SHA)
    assert name == f"{T_SHA}.from-{B_SHA}.bsdiff"
    assert check_blob_name(name) == name


@pytest.mark.parametrize(
    ("patch", "full", "ratio", "useful"),
    [(27_000, 156_000, 0.5, True), (78_000, 156_000, 0.5, False), (10, 0, 0.5, False),
     (49, 100, 0.5, True), (50, 100, 0.5, False), (90, 100, 1.0, True)],
)  # fmt: skip
def test_usefulness(patch: int, full: int, ratio: float, useful: bool) -> None:
    assert is_useful(patch, full, ratio) is useful


def test_select_bases_skips_same_bundle_and_counts_distinct_bundles() -> None:
    history = [
        BaseCandidate("u5", "t"),  # same launch asset as the target: no patch needed
        BaseCandidate("u4", "x"),
        BaseCandidate("u3", "x"),  # a copy (promotion/rollback): its own row, same patch
        BaseCandidate("u2", "y"),
        BaseCandidate("u1", "z"),
    ]
    chosen = select_bases(history, "t", limit=2)
    assert [c.update_id for c in chosen] == ["u4", "u3", "u2"]
    assert select_bases(history, "t", limit=0) == []


@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=4), st.sampled_from("abcdt")), max_size=30),
    st.integers(min_value=0, max_value=5),
)
def test_select_bases_properties(raw: list[tuple[str, str]], limit: int) -> None:
    history = [BaseCandidate(u, sha) for u, sha in raw]
    chosen = select_bases(history, "t", limit)
    assert all(c.launch_sha256 != "t" for c in chosen)
    assert len({c.launch_sha256 for c in chosen}) <= limit
    # chosen is a prefix (in order) of the eligible history
    eligible = [c for c in history if c.launch_sha256 != "t"]
    assert chosen == eligible[: len(chosen)]


ENTRY = PatchEntry(target_sha256=T_SHA, base_sha256=B_SHA, size=100, useful=True)
C_SHA, D_SHA = "c" * 64, "d" * 64
VIEW = PatchIndexView(
    served={
        "new": LaunchRef("p1", T_SHA),
        "promoted-copy": LaunchRef("p1", T_SHA),  # same bundle, another update id
        "solo": LaunchRef("p1", D_SHA),
    },
    bases={
        ("p1", "old"): LaunchRef("p1", B_SHA),
        ("p1", "old-copy"): LaunchRef("p1", B_SHA),
        ("p1", "bad"): LaunchRef("p1", C_SHA),
        ("p1", "emb"): LaunchRef("p1", B_SHA),  # a registered embedded build
        ("p2", "foreign"): LaunchRef("p2", B_SHA),
    },
    patches={(B_SHA, T_SHA): ENTRY, (C_SHA, T_SHA): PatchEntry(T_SHA, C_SHA, 900, False)},
)


def request(**overrides: str | None) -> PatchRequest:
    fields: dict[str, str | None] = {
        "asset_sha256": T_SHA,
        "a_im": "bsdiff",
        "current_update_id": "old",
        "requested_update_id": "new",
    }
    fields.update(overrides)
    return PatchRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "outcome"),
    [
        ({}, Outcome.PATCH),
        ({"requested_update_id": "promoted-copy"}, Outcome.PATCH),
        ({"current_update_id": "old-copy"}, Outcome.PATCH),
        ({"current_update_id": "emb"}, Outcome.PATCH),
        ({"a_im": None}, Outcome.NOT_REQUESTED),
        ({"a_im": "vcdiff"}, Outcome.NOT_REQUESTED),
        ({"current_update_id": None}, Outcome.MISSING_IDS),
        ({"requested_update_id": None}, Outcome.MISSING_IDS),
        ({"current_update_id": "new"}, Outcome.SAME_UPDATE),
        ({"requested_update_id": "rolled-back-or-unknown"}, Outcome.NOT_SERVED),
        ({"asset_sha256": D_SHA}, Outcome.WRONG_ASSET),
        ({"current_update_id": "unknown-base"}, Outcome.UNKNOWN_BASE),
        ({"current_update_id": "foreign"}, Outcome.UNKNOWN_BASE),  # another project's
        ({"requested_update_id": "solo", "asset_sha256": D_SHA}, Outcome.NO_PATCH),
        ({"current_update_id": "bad"}, Outcome.NOT_USEFUL),
    ],
)
def test_decide(overrides: dict[str, str | None], outcome: Outcome) -> None:
    decision = decide(request(**overrides), VIEW)
    assert decision.outcome is outcome
    assert (decision.patch is not None) is (outcome is Outcome.PATCH)
    if outcome is Outcome.PATCH:
        assert decision.patch == ENTRY
        assert decision.base_update_id == request(**overrides).current_update_id


# ---------------------------------------------------------------- SDK side


def _asset(data: bytes) -> ManifestAsset:
    return ManifestAsset(
        path="index.js",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        url="http://127.0.0.1/x",
        key="index.js",
        content_type="application/javascript",
        file_extension=".js",
    )


def test_sdk_applies_and_verifies_patches(tmp_path: Path) -> None:
    old, new = b"console.log('one');\n" * 200, b"console.log('two');\n" * 200 + b"// more\n"
    (tmp_path / "base.js").write_bytes(old)
    base = PatchBase("u1", tmp_path / "base.js", "u2", "emb")
    assert base.request_headers() == {
        "a-im": "bsdiff",
        "expo-current-update-id": "u1",
        "expo-requested-update-id": "u2",
        "expo-embedded-update-id": "emb",
    }
    assert apply_patch(base, bsdiff4.diff(old, new), _asset(new)) == new
    with pytest.raises(PatchError):
        apply_patch(base, bsdiff4.diff(old, new + b"!"), _asset(new))  # wrong result
    with pytest.raises(PatchError):
        apply_patch(base, b"BSDIFF40 garbage", _asset(new))


def test_sdk_recognises_patch_answers(tmp_path: Path) -> None:
    base = PatchBase("u1", tmp_path / "base.js", "u2")
    patch_headers = {"im": "bsdiff", "expo-base-update-id": "u1"}
    assert is_patch_response(226, patch_headers, base)
    assert is_patch_response(200, patch_headers, base)
    assert not is_patch_response(200, {}, base)
    assert not is_patch_response(404, patch_headers, base)
    with pytest.raises(PatchError):
        is_patch_response(226, {"im": "bsdiff", "expo-base-update-id": "other"}, base)


@pytest.mark.parametrize(
    ("content_type", "extension", "compressible"),
    [
        ("application/javascript", ".js", True),
        ("application/javascript", ".hbc", True),  # Hermes bytecode
        ("application/octet-stream", ".hbc", True),
        ("application/vnd.facebook.hermes-bytecode", "", True),
        ("application/json", ".json", True),
        ("image/svg+xml", ".svg", True),
        ("font/ttf", ".ttf", True),
        ("font/otf", ".otf", True),
        ("font/collection", ".ttc", True),
        ("image/png", ".png", False),  # already compressed: served as is
        ("image/jpeg", ".jpg", False),
        ("image/webp", ".webp", False),
        ("image/gif", ".gif", False),
        ("font/woff2", ".woff2", False),
        ("application/octet-stream", ".png", False),
        ("video/mp4", ".mp4", False),
    ],
)
def test_compressible_asset_types(content_type: str, extension: str, compressible: bool) -> None:
    assert is_compressible(content_type, extension) is compressible


class PatchingFetcher(FetcherInterface):
    """Answers ``A-IM: bsdiff`` requests with a patch (optionally broken mid-body)."""

    def __init__(self, patch: bytes, full: bytes, *, break_patch: bool = False) -> None:
        self.patch, self.full, self.break_patch = patch, full, break_patch
        self.requests: list[dict[str, str]] = []

    def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> FetchResponse:
        self.requests.append(dict(headers))
        if headers.get("a-im") == "bsdiff":
            answer = {"im": "bsdiff", "expo-base-update-id": "u1"}
            return FetchResponse(226, answer, self._patch_chunks())
        return FetchResponse(200, {}, iter([self.full]))

    def _patch_chunks(self) -> Iterator[bytes]:
        yield self.patch[:10]
        if self.break_patch:
            raise NetworkError("connection dropped (test)")
        yield self.patch[10:]


@pytest.mark.parametrize("break_patch", [False, True])
def test_sdk_download_uses_the_patch_or_falls_back(tmp_path: Path, break_patch: bool) -> None:
    old, new = b"console.log('one');\n" * 300, b"console.log('two');\n" * 300
    (tmp_path / "base.js").write_bytes(old)
    fetcher = PatchingFetcher(bsdiff4.diff(old, new), new, break_patch=break_patch)
    cache = BlobCache(tmp_path / "data", FileSystem(), sleep=lambda _s: None)
    base = PatchBase("u1", tmp_path / "base.js", "u2")
    path = cache.download(fetcher, _asset(new), RetryPolicy(), lambda _n: None, base)
    assert path.read_bytes() == new
    assert [r.get("a-im") for r in fetcher.requests] == (
        ["bsdiff", None] if break_patch else ["bsdiff"]
    )
