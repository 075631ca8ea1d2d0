"""softmax_lib: the tested library behind *The Softmax Book*.

The core functions are re-exported here (``sl.softmax``, ``sl.logsumexp``, ...);
each later chapter's module is imported on first use (``sl.gradients``,
``sl.attention``, ``sl.kernels``, ...), so importing the package stays light and
torch and triton are loaded only by the modules that need them.
"""

from __future__ import annotations

import importlib

from ._meta import REPOSITORY_URL, __version__
from .core import (
    FloatFormat,
    float_format,
    log_softmax,
    logsumexp,
    merge_normalizers,
    online_normalizer,
    online_softmax,
    overflow_threshold,
    softmax,
    underflow_threshold,
)

_SUBMODULES = (
    "core",
    "formats",
    "gradients",
    "temperature",
    "attention",
    "physics",
    "alternatives",
    "large_vocab",
    "precision",
    "kernels",
    "plotting",
    "notebook",
    "bench",
    "bench_cpu",
    "bench_attention",
    "bench_softmax",
)

__all__ = [
    "REPOSITORY_URL",
    "__version__",
    "FloatFormat",
    "float_format",
    "log_softmax",
    "logsumexp",
    "merge_normalizers",
    "online_normalizer",
    "online_softmax",
    "overflow_threshold",
    "softmax",
    "underflow_threshold",
    *_SUBMODULES,
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
