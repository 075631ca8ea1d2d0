"""Sphinx extension: punctuation stays on the line of the formula it touches.

The theme displays inline math as an ``inline-flex`` box, and a browser may break a
line on either side of such a box, so "where $x_t$, the ..." could end one line with
the formula and start the next with the comma.  After the document is resolved, an
inline formula and the punctuation that touches it (a closing mark right after it, an
opening bracket or quote right before it) are wrapped together in
``<span class="nobreak">``, which ``_css/book.css`` keeps on one line; so is a formula
ending in a relation and the number glued after it ("$T =$ 2.06").
"""

from __future__ import annotations

import re

from docutils import nodes

_AFTER = re.compile(r"^[,.;:!?)\]\u2019\u201d'\"]+")
_BEFORE = re.compile(r"[(\[\u2018\u201c]+$")


# a formula that ends in a relation, "$T =$ {glue}" or "($x_i <$ {glue})", stays with
# the number glued after it
_RELATION = re.compile(r"(=|<|>|\\le|\\ge|\\leq|\\geq|\\approx|\\sim|\\ne|\\neq)\s*$")


def _glued(node) -> bool:
    return isinstance(node, nodes.inline) and "pasted-text" in node["classes"]


def _keep_relation_with_number(doctree):
    for math in list(doctree.findall(nodes.math)):
        parent = math.parent
        if parent is None or not _RELATION.search(math.astext()):
            continue
        index = parent.index(math)
        if index + 2 >= len(parent):
            continue
        space, number = parent[index + 1], parent[index + 2]
        if not (isinstance(space, nodes.Text) and space.astext() == " " and _glued(number)):
            continue
        group = nodes.inline(classes=["nobreak"])
        group += [math.deepcopy(), nodes.Text(" "), number.deepcopy()]
        parent[index:index + 3] = [group]


def _keep_together(app, doctree, docname):
    _keep_relation_with_number(doctree)
    _keep_punctuation(doctree)


def _keep_punctuation(doctree):
    for math in list(doctree.findall(nodes.math)):
        parent = math.parent
        if parent is None or isinstance(parent, nodes.inline) and "nobreak" in parent["classes"]:
            continue
        index = parent.index(math)
        after = parent[index + 1] if index + 1 < len(parent) else None
        before = parent[index - 1] if index > 0 else None
        tail = _AFTER.match(after.astext()) if isinstance(after, nodes.Text) else None
        head = _BEFORE.search(before.astext()) if isinstance(before, nodes.Text) else None
        if not (tail or head):
            continue
        group = nodes.inline(classes=["nobreak"])
        if head:
            group += nodes.Text(head.group())
        group += math.deepcopy()
        if tail:
            group += nodes.Text(tail.group())
        pieces = []
        if head and head.start() > 0:
            pieces.append(("before", nodes.Text(before.astext()[: head.start()])))
        pieces.append(("group", group))
        if tail and tail.end() < len(after.astext()):
            pieces.append(("after", nodes.Text(after.astext()[tail.end():])))
        start = index - 1 if head else index
        stop = index + 2 if tail else index + 1
        parent[start:stop] = [node for _, node in pieces]


def setup(app):
    app.connect("doctree-resolved", _keep_together)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
