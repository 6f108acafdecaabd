"""docs/synthetic-data.md shows the visibility table that the renderer actually follows."""

from __future__ import annotations

from pathlib import Path

from echoprime.synth.render import visibility_table
from echoprime.synth.state import VISIBILITY
from echoprime.taxonomy import VIEWS

DOC = Path(__file__).resolve().parents[2] / "docs" / "synthetic-data.md"


def test_doc_table_is_the_visibility_table():
    text = DOC.read_text()
    start, end = "<!-- visibility-table:start -->\n", "\n<!-- visibility-table:end -->"
    assert text[text.index(start) + len(start) : text.index(end)] == visibility_table()


def test_visibility_table_marks_exactly_the_listed_views():
    rows = visibility_table().splitlines()[2:]
    assert len(rows) == len(VISIBILITY)
    for row, (key, views) in zip(rows, VISIBILITY.items(), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == f"`{key}`"
        assert [v for v, c in zip(VIEWS, cells[1:], strict=True) if c == "x"] == [
            v for v in VIEWS if v in views
        ]
