"""The book's figure style and the plot helpers more than one chapter uses.

Call :func:`use_book_style` once at the top of a notebook (``softmax_lib.notebook.setup``
does it); every figure in the book then shares one palette, one font size and one
look.  Helpers for the probability simplex (Chapters 1, 4 and 7) live here too.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PALETTE",
    "use_book_style",
    "simplex_to_xy",
    "simplex_grid",
    "draw_simplex",
    "label_bars",
    "animation_html",
    "cooperative_tuning",
]

#: A colour-blind-safe palette (Okabe and Ito, 2008), in the order the book uses it.
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)


def use_book_style() -> None:
    """Set matplotlib's rcParams to the book's style (idempotent)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.8),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "figure.constrained_layout.use": True,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "axes.prop_cycle": cycler(color=PALETTE),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "grid.linewidth": 0.6,
            "lines.linewidth": 1.8,
            "legend.frameon": False,
            "image.cmap": "viridis",
            "animation.html": "jshtml",
            "animation.embed_limit": 30.0,
        }
    )


# Corners of the K = 3 simplex drawn as an equilateral triangle: e1 bottom left,
# e2 bottom right, e3 on top.
_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0]])


def simplex_to_xy(p) -> np.ndarray:
    """Barycentric coordinates ``(..., 3)`` on the simplex to 2-D points ``(..., 2)``."""
    p = np.asarray(p, dtype=float)
    if p.shape[-1] != 3:
        raise ValueError(f"p must have a last axis of length 3, got shape {p.shape}")
    return p @ _CORNERS


def simplex_grid(n: int = 60, *, interior: bool = True) -> np.ndarray:
    """Points of a triangular grid on the K = 3 simplex, shape ``(m, 3)``.

    With ``interior=True`` the boundary is left out (softmax never reaches it).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    k = n - i - j
    keep = k >= (1 if interior else 0)
    if interior:
        keep &= (i >= 1) & (j >= 1)
    return np.stack([i[keep], j[keep], k[keep]], axis=-1) / n


def draw_simplex(ax, labels=("$p_1$", "$p_2$", "$p_3$"), *, boundary_color="0.3") -> None:
    """Draw the triangle, label its corners and switch the axes frame off."""
    tri = np.vstack([_CORNERS, _CORNERS[:1]])
    ax.plot(tri[:, 0], tri[:, 1], color=boundary_color, lw=1.0)
    offsets = [(-0.04, -0.05), (0.04, -0.05), (0.0, 0.04)]
    for corner, label, (dx, dy) in zip(_CORNERS, labels, offsets):
        ax.text(corner[0] + dx, corner[1] + dy, label, ha="center", va="center")
    ax.set_aspect("equal")
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-0.1, 0.96)
    ax.axis("off")


def label_bars(ax, bars, fmt: str = "{:.4f}") -> None:
    """Write each bar's height above it."""
    for bar in bars:
        height = bar.get_height()
        ax.annotate(
            fmt.format(height),
            (bar.get_x() + bar.get_width() / 2, height),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )


def animation_html(animation, *, alt: str | None = None):
    """An animation as self-contained HTML for a notebook or the static website.

    ``Animation.to_jshtml`` embeds every frame and a small JavaScript player, so the
    animation plays on the static site with no kernel.  Matplotlib's player also
    links a Font Awesome stylesheet from a CDN; the site must work offline (and the
    browser tests forbid outside requests), so that link is removed: the player's
    buttons still draw from the page's own icon font.  ``alt`` is the text a screen
    reader gives for the player's picture (what the animation shows).
    """
    import html as html_escape
    import re

    from IPython.display import HTML

    if alt is not None and (not isinstance(alt, str) or not alt.strip()):
        raise TypeError(f"alt must be a non-empty string, got {alt!r}")
    html = animation.to_jshtml()
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*"\s*/?>', "", html)
    if alt is not None:
        attribute = f' alt="{html_escape.escape(alt, quote=True)}"'
        html, count = re.subn(r'(<img id="_anim_img[0-9a-f]*")', lambda m: m.group(1) + attribute, html)
        if count != 1:
            raise RuntimeError("matplotlib's player changed: no single frame <img> to label")
    return HTML(html)


def _best_fractions(settings, prefetch: bool) -> dict[int, float]:
    """Per row length, the best fraction of copy bandwidth among ``settings`` (entries of
    a tuning file's ``measured`` list) with this ``prefetch``; failed runs (None) skipped."""
    best: dict[int, float] = {}
    for setting in settings:
        if bool(setting["prefetch"]) != prefetch:
            continue
        for n, fraction in setting["fraction_of_copy"].items():
            if fraction is not None:
                best[int(n)] = max(best.get(int(n), 0.0), fraction)
    return dict(sorted(best.items()))


def cooperative_tuning(tuning, keys=("forward:float32", "forward:bfloat16", "backward:float32",
                                     "backward:bfloat16")):
    """Chapter 9's tuning figure from ``softmax_cooperative_tuning.json``
    (``make tune-gpu``): one panel per ``"pass:dtype"`` key, the best fraction of the copy
    bandwidth at each row length among the settings with prefetch and among those
    without.  Keys the file does not hold are left out.  Returns the figure."""
    import matplotlib.pyplot as plt

    keys = [key for key in keys if key in tuning["measured"]]
    if not keys:
        raise ValueError("the tuning file holds none of the keys asked for")
    # two panels to a row, 7.4 in wide: the book's figures fit its text column
    cols = min(2, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.4, 3.2 * rows), sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.remove()
    for ax, key in zip(axes.flat, keys):
        for prefetch, color, style in ((False, PALETTE[1], "s--"), (True, PALETTE[0], "o-")):
            best = _best_fractions(tuning["measured"][key], prefetch)
            ax.plot(list(best), list(best.values()), style, color=color, ms=4,
                    label="best with prefetch" if prefetch else "best without")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="row length N", title=key.replace(":", ", "), ylim=(0, 1.05))
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of copy bandwidth")
    axes[0, 0].legend(loc="lower left")
    gpu = tuning.get("provenance", {}).get("gpu", "a GPU")
    fig.suptitle(f"Cooperative kernel settings on {gpu}")
    return fig
