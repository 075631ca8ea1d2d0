"""The book's own Sphinx extensions under ``_ext/`` (no Sphinx build needed)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


typeset_numbers = _load("typeset_numbers")


def _document(*children):
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    document = new_document("test", get_default_settings(Parser))
    for child in children:
        document += child
    return document


def _value(base: str, exponent: str | None) -> float:
    """Read a typeset number back (the inverse the reader performs)."""
    base = base.replace("\u2212", "-").replace(",", "")
    if exponent is None:
        return float(base)
    exponent = int(exponent.replace("\u2212", "-"))
    mantissa, _, ten = base.partition("\u00a0\u00d7\u00a0")
    if not ten:  # "10" alone: a mantissa of exactly 1
        mantissa, ten = ("-1" if mantissa.startswith("-") else "1"), mantissa.lstrip("-")
    assert ten == "10"
    return float(mantissa) * 10.0**exponent


@pytest.mark.parametrize("value", [1.5e-5, -1.5e-5, 2.5e-300, 6.02e23, 1e20, 1e-7, 0.25, -0.31, 3.0, -1234.5])
@pytest.mark.parametrize("spec", [".1e", ".2e", ".3g", "g", ".2f", ",.1f", ".0e", "E"])
def test_glued_numbers_keep_their_value_when_typeset(value, spec):
    text = format(value, spec)
    base, exponent = typeset_numbers.typeset(text)
    assert "e" not in base.lower() and "-" not in base and "+" not in (exponent or "")
    assert _value(base, exponent) == pytest.approx(float(text.replace(",", "")), rel=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5e-05", ("1.5\u00a0\u00d7\u00a010", "\u22125")),
        ("5.51e+15", ("5.51\u00a0\u00d7\u00a010", "15")),
        ("1e+20", ("10", "20")),
        ("1.0e-07", ("1.0\u00a0\u00d7\u00a010", "\u22127")),  # the stated digits stay
        ("-0.25", ("\u22120.25", None)),
        ("2.5e+00", ("2.5", None)),
        ("12%", ("12%", None)),
    ],
)
def test_scientific_notation_becomes_a_power_of_ten_and_hyphens_minus_signs(text, expected):
    assert typeset_numbers.typeset(text) == expected


@pytest.mark.parametrize("text", ["float32", "3.6.0", "inf", "-inf", "nan", "1e-05%", "N = 4", "e-5", "1.5e"])
def test_text_that_is_not_one_number_is_left_alone(text):
    assert typeset_numbers.typeset(text) == (text, None)


def test_the_extension_rewrites_only_glued_text_in_a_doctree():
    from docutils import nodes

    paragraph = nodes.paragraph()
    paragraph += nodes.Text("error -1.5e-05 and ")
    paragraph += nodes.inline("1.5e-05", "1.5e-05", classes=["pasted-text"])
    paragraph += nodes.Text(" and ")
    paragraph += nodes.inline("float32", "float32", classes=["pasted-text"])
    document = _document(paragraph)
    typeset_numbers._typeset_glued(None, document, "test")
    glued, word = [n for n in document.findall(nodes.inline)]
    assert glued.astext() == "1.5\u00a0\u00d7\u00a010\u22125"
    assert isinstance(glued.children[-1], nodes.superscript)
    assert word.astext() == "float32" and len(word.children) == 1
    assert paragraph.children[0].astext() == "error -1.5e-05 and "  # prose is not glue


bib_style = _load("bib_style")


def _bibliography(bibtex: str | None = None):
    from pybtex.database import parse_file, parse_string
    from pybtex.plugin import find_plugin

    db = parse_string(bibtex, "bibtex") if bibtex else parse_file(ROOT / "references.bib")
    style = find_plugin("pybtex.style.formatting", "book")()
    return db, list(style.format_bibliography(db))


def test_the_bibliography_is_labelled_by_first_author_and_year_in_label_order():
    db, entries = _bibliography()
    labels = [e.label for e in entries]
    assert len(set(labels)) == len(labels) == len(db.entries)
    assert labels == sorted(labels, key=str.casefold)
    for formatted in entries:
        entry = db.entries[formatted.key]
        first = entry.persons["author"][0]
        assert formatted.label.startswith(bib_style._plain(" ".join(first.prelast_names + first.last_names)))
        assert formatted.label.endswith(", " + entry.fields["year"])
        n = len(entry.persons["author"])
        assert (" et al., " in formatted.label) == (n > 2) and (" and " in formatted.label) == (n == 2)


def test_titles_keep_their_capitals_and_a_shared_label_gets_a_letter():
    _, entries = _bibliography("""
        @article{a, author = {Ada Lovelace and Charles Babbage}, title = {Notes on the Engine: A Sketch},
                 journal = {J}, year = {1843}}
        @article{b, author = {Ada Lovelace and Charles Babbage}, title = {Attention Is All You Need},
                 journal = {J}, year = {1843}}
        @misc{c, author = {{IEEE Computer Society}}, title = {{IEEE} Standard}, year = {2019}}
    """)
    text = {e.key: e.text.render_as("text") for e in entries}
    assert "Attention Is All You Need." in text["b"] and "Notes on the Engine: A Sketch." in text["a"]
    assert [e.label for e in entries] == ["IEEE Computer Society, 2019", "Lovelace and Babbage, 1843a",
                                          "Lovelace and Babbage, 1843b"]


math_punctuation = _load("math_punctuation")


def test_punctuation_touching_inline_math_is_kept_on_its_line():
    from docutils import nodes

    paragraph = nodes.paragraph()
    for node in (nodes.Text("where ("), nodes.math("x", "x"), nodes.Text("), then "),
                 nodes.math("y", "y"), nodes.Text(" and "), nodes.math("z", "z"), nodes.Text(".")):
        paragraph += node
    document = _document(paragraph)
    before = paragraph.astext()
    math_punctuation._keep_together(None, document, "test")
    math_punctuation._keep_together(None, document, "test")  # a second pass changes nothing
    assert paragraph.astext() == before  # no character lost, doubled or moved
    groups = [n for n in paragraph.children if isinstance(n, nodes.inline)]
    assert [g.astext() for g in groups] == ["(x),", "z."]
    assert all("nobreak" in g["classes"] for g in groups)
    assert isinstance(paragraph.children[2], nodes.Text) and paragraph.children[2].astext() == " then "
    assert isinstance(paragraph.children[3], nodes.math)  # y touches no punctuation


def test_a_table_cell_that_is_one_number_is_typeset_and_other_cells_are_not():
    from docutils import nodes

    def row(*texts):
        r = nodes.row()
        for text in texts:
            entry = nodes.entry()
            entry += nodes.paragraph(text, text)
            r += entry
        return r

    body = nodes.tbody()
    body += row("4.94066e-324", "-745.133", "float8_e5m2", "1,024", "0, 4.941e-324", "1.798e+308, inf",
                "2 or 3, 1e-05")
    code = nodes.entry()
    code += nodes.paragraph("", "", nodes.literal("-1e-05", "-1e-05"))
    body[0] += code
    document = _document(body)
    typeset_numbers._typeset_glued(None, document, "test")
    cells = [entry.astext() for entry in document.findall(nodes.entry)]
    assert cells == ["4.94066\u00a0\u00d7\u00a010\u2212324", "\u2212745.133", "float8_e5m2", "1,024",
                     "0, 4.941\u00a0\u00d7\u00a010\u2212324", "1.798\u00a0\u00d7\u00a010308, inf",
                     "2 or 3, 1e-05",  # not a list of numbers: left alone
                     "-1e-05"]  # code is code
    numbers = [n for n in document.findall(nodes.inline) if "typeset-number" in n["classes"]]
    assert len(numbers) == 6 and isinstance(numbers[0].children[-1], nodes.superscript)


def test_a_formula_ending_in_a_relation_keeps_the_glued_number_after_it():
    from docutils import nodes

    paragraph = nodes.paragraph()
    for node in (nodes.Text("The fitted temperature "), nodes.math("T =", "T ="), nodes.Text(" "),
                 nodes.inline("2.06", "2.06", classes=["pasted-text"]), nodes.Text(" and "),
                 nodes.math("x", "x"), nodes.Text(" "), nodes.inline("3", "3", classes=["pasted-text"])):
        paragraph += node
    document = _document(paragraph)
    before = paragraph.astext()
    math_punctuation._keep_together(None, document, "test")
    assert paragraph.astext() == before
    groups = [n for n in paragraph.children if isinstance(n, nodes.inline) and "nobreak" in n["classes"]]
    assert [g.astext() for g in groups] == ["T = 2.06"]  # x is no relation: left alone
