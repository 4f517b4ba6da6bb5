"""CLI tables stay readable at any width: one line per row when they fit, else one block
per row; ids are never cut (issue 17, point 5)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumora_ota.cli.output import print_table

words = st.text(alphabet="abcdefghij klmnop", min_size=0, max_size=120)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.sampled_from([60, 80, 120, 200]),
    rows=st.lists(st.tuples(words, words), min_size=1, max_size=4),
)
def test_rows_fit_the_width_and_ids_stay_whole(
    width: int, rows: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", str(width))
        ids = [str(uuid.uuid4()) for _ in rows]
        print_table(
            ["id", "channel", "message"],
            [[i, channel, message] for i, (channel, message) in zip(ids, rows, strict=True)],
        )
        out = capsys.readouterr().out
    assert all(len(line) <= width for line in out.splitlines()), out
    for update_id in ids:
        assert update_id in out


def test_narrow_tables_become_one_block_per_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    update_id, group_id = str(uuid.uuid4()), str(uuid.uuid4())
    print_table(
        ["id", "group", "channel", "platform", "message"],
        [[update_id, group_id, "production", "ios", "hotfix"]],
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines if line.strip()] == [
        ["id", update_id],
        ["group", group_id],
        ["channel", "production"],
        ["platform", "ios"],
        ["message", "hotfix"],
    ]
