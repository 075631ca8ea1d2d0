"""What every chapter notebook does at the top, and the bridge to MyST-NB's ``glue``.

``setup(seed)`` applies the book's figure style and NumPy print options and returns
a seeded ``numpy.random.Generator`` (torch is seeded too when it is installed).
``glue(name, value)`` hands a computed number to the prose (``{glue:text}`name```)
when MyST-NB is installed (the book build); elsewhere (Colab) it does nothing, so
the same notebook runs everywhere.  ``table`` shows a list of rows as a Markdown
table, which the website renders as a real table.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

import numpy as np

from ._array import check_positive_int
from .plotting import use_book_style

__all__ = ["setup", "glue", "table", "markdown_table", "in_colab", "GLUE_DIGITS"]

#: Significant digits a glued float keeps (see :func:`glue`).
GLUE_DIGITS = 8


def in_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules


def setup(seed: int = 0) -> np.random.Generator:
    """Style, print options and seeds for a chapter notebook; returns a Generator."""
    _inline_figures()
    use_book_style()
    np.set_printoptions(precision=4, suppress=False, linewidth=88)
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch = None
    if torch is not None:
        torch.manual_seed(seed)
        # The book's tensors are small: one thread is faster than several fighting over
        # two cores (CI runs two notebooks at once), and results do not depend on it.
        torch.set_num_threads(1)
    return np.random.default_rng(seed)


def _inline_figures() -> None:
    """Inside IPython, make sure figures are shown inline whatever MPLBACKEND says."""
    try:
        ip = get_ipython()  # type: ignore[name-defined]  # noqa: F821
    except NameError:
        return
    if ip is not None and hasattr(ip, "kernel"):
        ip.run_line_magic("matplotlib", "inline")


def glue(name: str, value: Any, display: bool = False, *, digits: int | None = GLUE_DIGITS) -> None:
    """Make ``value`` available to the prose as ``{glue:text}`name```.

    Uses ``myst_nb.glue`` when MyST-NB is importable, and is a no-op otherwise.
    NumPy scalars are turned into Python numbers first, so the glued text is
    ``0.0025`` rather than ``np.float64(0.0025)``.  A float is glued rounded to
    ``digits`` significant digits (``None``: as computed): the prose shows at most
    a few, and the last bits of a float64 result differ between processors (NumPy's
    ``exp`` and the BLAS take other code paths with AVX2 than with AVX-512), so
    the stored record, which the notebook tests compare, would otherwise depend on
    the machine that ran the notebook.  Returns nothing, so a cell that ends with
    ``glue`` shows no stray output.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if digits is not None:
        check_positive_int(digits, "digits")
        if isinstance(value, float) and math.isfinite(value):
            value = float(f"{value:.{digits}g}")
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


def markdown_table(rows: Sequence[Sequence[Any]], columns: Sequence[str], *, floatfmt: str = "{:.6g}") -> str:
    """Rows as a Markdown (GitHub-style) table: floats formatted with ``floatfmt``, and
    ``|`` inside a heading or a cell escaped, so that it cannot split the cell."""

    def cell(v):
        text = floatfmt.format(float(v)) if isinstance(v, (float, np.floating)) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    rows = [list(row) for row in rows]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"rows[{i}] has {len(row)} cells, but there are {len(columns)} columns")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "|".join(["---"] * len(columns)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def table(rows: Sequence[Sequence[Any]], columns: Sequence[str], *, floatfmt: str = "{:.6g}") -> None:
    """Display rows as a Markdown table (:func:`markdown_table`)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(rows, columns, floatfmt=floatfmt)))
