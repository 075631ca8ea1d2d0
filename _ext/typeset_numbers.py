"""Sphinx extension: typeset the numbers glued into the prose.

A notebook glues a computed number into a sentence with myst-nb's role,
``{glue:text}`key:.1e```, and Python's format spec decides the digits.  Python writes
scientific notation as ``1.5e-05`` and a negative number with a hyphen, which reads as
code in a sentence full of typeset math.  After the document is resolved, every glued
text that is exactly one number is rewritten: ``1.5e-05`` becomes 1.5 × 10⁻⁵ (the
exponent as a superscript, leading zeros and a ``+`` dropped; ``1e+20`` becomes 10²⁰)
and a leading hyphen becomes a minus sign (U+2212).  A table cell that holds nothing
but a number, or a list of numbers (``0, 4.941e-324``), is typeset the same way (the
tables ``sl.notebook.table`` prints).  Anything else (words, ``inf``,
versions such as ``3.6.0``) is left alone.  The notebooks keep their format specs, so
Jupyter and Colab see the same source.
"""

from __future__ import annotations

import re

from docutils import nodes

MINUS = "\u2212"
TIMES = "\u00a0\u00d7\u00a0"  # "×" between no-break spaces
_NUMBER = re.compile(r"^(-?)(\d[\d,]*(?:\.\d*)?)(?:[eE]([+-]?)(\d+))?(%?)$")
_WORDS = {"inf", "-inf", "nan"}  # may stand in a list of numbers; left as they are


def typeset(text: str) -> tuple[str, str | None]:
    """``(base, exponent)`` for glued ``text``: ``"1.5e-05"`` -> ``("1.5 × 10", "−5")``,
    ``"-0.25"`` -> ``("−0.25", None)``; text that is not one number comes back as it is."""
    match = _NUMBER.match(text.strip())
    if match is None:
        return text, None
    sign, mantissa, exp_sign, exp_digits, percent = match.groups()
    sign = MINUS if sign else ""
    if exp_digits is None or int(exp_digits) == 0:
        return f"{sign}{mantissa}{percent}", None
    if percent:  # "1e-05%" is not something a format spec writes
        return text, None
    exponent = (MINUS if exp_sign == "-" else "") + str(int(exp_digits))
    if mantissa == "1":  # 1e+20 -> 10^20 (1.0e+20 keeps its stated digits)
        return f"{sign}10", exponent
    return f"{sign}{mantissa}{TIMES}10", exponent


def _typeset_nodes(text: str) -> list[nodes.Node] | None:
    """The nodes that show ``text`` typeset, or None if it is not one number to change."""
    base, exponent = typeset(text)
    if base == text and exponent is None:
        return None
    new: list[nodes.Node] = [nodes.Text(base)]
    if exponent is not None:
        new.append(nodes.superscript(exponent, exponent))
    return new


def _typeset_glued(app, doctree, docname):
    for node in list(doctree.findall(nodes.inline)):
        if "pasted-text" not in node["classes"] or len(node.children) != 1:
            continue
        child = node.children[0]
        if not isinstance(child, nodes.Text):
            continue
        new = _typeset_nodes(child.astext())
        if new is not None:
            node.children = []
            node.extend(new)
    # a table cell that holds one number, or a list of them ("0, 4.941e-324"), as
    # sl.notebook.table prints them
    for entry in list(doctree.findall(nodes.entry)):
        for paragraph in entry.findall(nodes.paragraph):
            if len(paragraph.children) != 1 or not isinstance(paragraph[0], nodes.Text):
                continue
            parts = paragraph[0].astext().split(", ")
            if not all(_NUMBER.match(p) or p in _WORDS for p in parts):
                continue
            typeset_parts = [_typeset_nodes(p) for p in parts]
            if all(t is None for t in typeset_parts):
                continue
            paragraph.children = []
            for i, (part, new) in enumerate(zip(parts, typeset_parts)):
                if i:
                    paragraph += nodes.Text(", ")
                paragraph += nodes.inline("", "", *(new or [nodes.Text(part)]), classes=["typeset-number"])


def setup(app):
    app.connect("doctree-resolved", _typeset_glued)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
