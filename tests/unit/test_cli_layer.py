"""What the command-line tools share (kaext._cli): the table printer, the name a tool speaks under."""

from __future__ import annotations

import pytest

from kaext import _cli


def test_table_pads_each_column_to_its_widest_cell() -> None:
    lines = _cli.table(["A", "BB"], [["xxx", "y"], ["z", ""]])
    assert lines == ["A    BB", "xxx  y", "z"]


def test_table_rule_and_groups() -> None:
    rows = [["one", "1"], ["one", "2"], ["two", "3"]]
    assert _cli.table(["name", "n"], rows, rule=True, group=True) == [
        "name  n",
        "----  -",
        "one   1",
        "one   2",
        "",
        "two   3",
    ]


def test_table_without_rows_is_the_head() -> None:
    assert _cli.table(["a", "b"], []) == ["a  b"]


def test_started_as_names_every_tool_within_only() -> None:
    before = _cli.prog_name("kaext-inspect", "kaext.inspect")
    with _cli.started_as("kaext inspect"):
        assert _cli.prog_name("kaext-inspect", "kaext.inspect") == "kaext inspect"
        with pytest.raises(RuntimeError, match="^$"), _cli.started_as("kaext verify"):
            raise RuntimeError
        assert _cli.prog_name("kaext-verify", "kaext.verify") == "kaext inspect"
    assert _cli.prog_name("kaext-inspect", "kaext.inspect") == before
