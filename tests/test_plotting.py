"""softmax_lib.plotting: the animation player the book embeds in its pages."""

from __future__ import annotations

from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402

from softmax_lib import plotting  # noqa: E402


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.stylesheets = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs.get("href", ""))


def _player(**kwargs) -> _Tags:
    fig, ax = plt.subplots(figsize=(2, 2))
    (line,) = ax.plot([0, 1], [0, 0])
    animation = FuncAnimation(fig, lambda k: line.set_ydata([0, k]), frames=3)
    try:
        html = plotting.animation_html(animation, **kwargs).data
    finally:
        plt.close(fig)
    tags = _Tags()
    tags.feed(html)
    return tags


def test_animation_player_loads_nothing_from_outside_and_labels_its_picture():
    tags = _player(alt='Three frames of a line "rising" <slowly> & evenly')
    assert not [href for href in tags.stylesheets if href.startswith(("http:", "https:"))]
    (image,) = tags.images
    # the parser undoes the escaping: the text comes back exactly, quotes and all
    assert image["alt"] == 'Three frames of a line "rising" <slowly> & evenly'


def test_animation_player_without_alt_has_no_alt_and_bad_alt_is_refused():
    (image,) = _player().images
    assert "alt" not in image
    # refused before any frame is drawn (so no animation is needed to find out)
    for bad in ("", "   ", 3):
        with pytest.raises(TypeError, match="alt"):
            plotting.animation_html(object(), alt=bad)
