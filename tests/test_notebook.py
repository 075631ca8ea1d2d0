"""softmax_lib.notebook: the Markdown tables every chapter prints, read back by
markdown-it (the parser MyST uses to build the website)."""

from html.parser import HTMLParser

import numpy as np
import pytest

from softmax_lib.notebook import markdown_table

markdown_it = pytest.importorskip("markdown_it")


class _Cells(HTMLParser):
    """The text of every table row, cell by cell."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parsed(text):
    parser = _Cells()
    parser.feed(markdown_it.MarkdownIt("commonmark").enable("table").render(text))
    return parser.rows


def test_a_table_reads_back_cell_by_cell_with_floats_formatted():
    rows = [["float32", 0.123456789, 3], ["bfloat16", np.float64(2.5e-7), -1]]
    assert _parsed(markdown_table(rows, ["format", "error", "n"])) == [
        ["format", "error", "n"], ["float32", "0.123457", "3"], ["bfloat16", "2.5e-07", "-1"]]
    assert _parsed(markdown_table(rows, ["format", "error", "n"], floatfmt="{:.2f}"))[1][1] == "0.12"


def test_a_pipe_or_a_newline_inside_a_cell_does_not_split_it():
    text = markdown_table([["a|b", "`x | y`", "two\nlines"]], ["|x_t|", "code", "text"])
    assert _parsed(text) == [["|x_t|", "code", "text"], ["a|b", "x | y", "two lines"]]


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells, but there are 2 columns"):
        markdown_table([[1, 2], [3]], ["a", "b"])
