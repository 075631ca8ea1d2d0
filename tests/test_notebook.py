"""softmax_lib.notebook: the Markdown tables every chapter prints, read back by
markdown-it (the parser MyST uses to build the website), and the numbers it glues
into the prose."""

from html.parser import HTMLParser

import numpy as np
import pytest

from softmax_lib.notebook import glue, markdown_table


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
    markdown_it = pytest.importorskip("markdown_it")
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


@pytest.fixture
def glued(monkeypatch):
    """What glue hands to MyST-NB, by name."""
    myst_nb = pytest.importorskip("myst_nb")
    record = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: record.__setitem__(name, value))
    return record


def test_glued_floats_a_few_ulp_apart_give_the_same_text(glued):
    # the last bits of a float64 result differ between processors (AVX2 and AVX-512
    # take other code paths through exp and the BLAS); the stored record must not
    rng = np.random.default_rng(0)
    for x in rng.normal(size=200) * 10.0 ** rng.integers(-12, 12, size=200):
        glue("a", x)
        glue("b", np.nextafter(np.nextafter(x, np.inf), np.inf))
        assert repr(glued["a"]) == repr(glued["b"])
        assert glued["a"] == pytest.approx(x, rel=5e-8)  # 8 significant digits


def test_glue_passes_numpy_scalars_as_python_numbers_and_leaves_exact_values_alone(glued):
    glue("f", np.float32(0.1))
    glue("i", np.int64(7))
    glue("b", True)
    glue("big", 2**60)
    glue("inf", -np.inf)
    glue("text", "bfloat16")
    assert type(glued["f"]) is float and repr(glued["f"]) == "0.1"
    assert type(glued["i"]) is int and glued["i"] == 7
    assert glued["b"] is True and glued["big"] == 2**60 and glued["text"] == "bfloat16"
    assert glued["inf"] == -np.inf
    glue("raw", 0.1 + 0.2, digits=None)
    assert glued["raw"] == 0.1 + 0.2 != 0.3
    glue("rounded", 0.1 + 0.2)
    assert glued["rounded"] == 0.3


def test_glue_returns_nothing_so_a_cell_ending_with_it_shows_no_stray_output(glued):
    assert glue("x", 1.5) is None


def test_glue_refuses_a_bad_number_of_digits(glued):
    with pytest.raises(ValueError, match="digits"):
        glue("x", 1.5, digits=0)
    with pytest.raises(TypeError, match="digits"):
        glue("x", 1.5, digits=2.5)
