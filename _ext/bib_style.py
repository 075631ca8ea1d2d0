"""Sphinx extension: the bibliography's style, a pybtex style named ``book``.

The chapters cite author-year ("Bridle (1990)", sphinxcontrib-bibtex's
``author_year`` reference style), so the bibliography is labelled the same way,
``[Bridle, 1990]``, ``[Vaswani et al., 2017]``, instead of pybtex's numbers, which a
reader cannot match to an author-year citation, and sorted by those labels.  Two
more changes to pybtex's ``plain`` style: titles keep the capitals they are written
with (``plain`` lower-cases every word after the first, so "Attention Is All You Need"
lost its capitals and a subtitle after a colon began in lower case), and a work with
no author or editor is labelled by its publisher.
"""

from __future__ import annotations

from collections import Counter
from string import ascii_lowercase

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting import BaseSortingStyle
from pybtex.style.template import field, sentence


def _plain(latex: str) -> str:
    """BibTeX text (braces, accents as LaTeX) as plain text."""
    return Text.from_latex(latex).render_as("text")


def author_year(entry) -> str:
    """``"Bridle, 1990"``, ``"Gao and Pavel, 2017"``, ``"Vaswani et al., 2017"``."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_plain(" ".join(p.prelast_names + p.last_names)) for p in people]
    if not names:
        who = _plain(entry.fields.get("organization") or entry.fields.get("howpublished") or entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    year = entry.fields.get("year", "n.d.")
    return f"{who}, {year}"


class AuthorYearLabels(BaseLabelStyle):
    """Author-year labels; the same label twice becomes ``2022a``, ``2022b``."""

    def format_labels(self, sorted_entries):
        labels = [author_year(e) for e in sorted_entries]
        repeated = Counter(labels)
        seen: Counter = Counter()
        for label in labels:
            if repeated[label] > 1:
                yield label + ascii_lowercase[seen[label]]
                seen[label] += 1
            else:
                yield label


class AuthorYearSorting(BaseSortingStyle):
    """In the order of the labels (a work without an author under its publisher's
    name), then by title."""

    def sorting_key(self, entry):
        return author_year(entry).casefold(), _plain(entry.fields.get("title", "")).casefold()


class BookStyle(PlainStyle):
    default_label_style = "author_year"
    default_sorting_style = "author_year"

    def format_title(self, e, which_field, as_sentence=True):
        title = field(which_field)  # as written: no change of case
        return sentence[title] if as_sentence else title


register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
register_plugin("pybtex.style.sorting", "author_year", AuthorYearSorting)
register_plugin("pybtex.style.formatting", "book", BookStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
