"""Triton GPU kernels: a fused softmax (Chapters 8 and 9) and FlashAttention (Chapter 10).

On a machine with a CUDA GPU the kernels are compiled for it.  On a machine without
one they run on CPU tensors through Triton's interpreter: importing this package
sets ``TRITON_INTERPRET=1`` before any kernel is defined, so there is nothing for
the user to set.  Triton reads the variable when a function is decorated; its own
``triton.language`` helpers are decorated when triton is first imported, so the
kernels here avoid calling those helpers (see ``_common.py``) and work on the
interpreter even when triton was imported before this package.

``SOFTMAX_LIB_COMPILE_ONLY=1`` in the environment keeps the kernels as compiled Triton
functions on a machine without a GPU: they cannot run there, but
:mod:`softmax_lib.kernels.compiled` can compile them for a GPU architecture and read
the machine code (it starts such a process itself; nobody needs to set this).
"""

from __future__ import annotations

import importlib
import os


def _gpu_available() -> bool:
    try:
        import torch
    except ImportError as err:  # pragma: no cover - torch is required for kernels
        raise ImportError("softmax_lib.kernels needs torch and triton: pip install 'softmax_lib[gpu]'") from err
    return torch.cuda.is_available()


#: Kernels compiled for inspection only (no GPU, no interpreter): see compiled.py.
COMPILE_ONLY = os.environ.get("SOFTMAX_LIB_COMPILE_ONLY") == "1"
#: True when the kernels run through Triton's CPU interpreter (no GPU here).
INTERPRETED = not COMPILE_ONLY and not _gpu_available()
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"


def check_runnable() -> None:
    """Raise ``RuntimeError`` when the kernels were imported compile-only (they cannot run)."""
    if COMPILE_ONLY:
        raise RuntimeError("softmax_lib.kernels was imported with SOFTMAX_LIB_COMPILE_ONLY=1: its kernels "
                           "can be compiled and inspected (softmax_lib.kernels.compiled) but not run here")


def launch_context():
    """Context for a kernel launch.  The interpreter evaluates both sides of every
    ``tl.where`` with NumPy, so IEEE results a GPU produces silently (``-inf - -inf`` in a
    masked lane, ``1/0`` in a discarded branch, NaN inputs) would raise NumPy warnings;
    they are expected, and silenced there.  On a GPU it does nothing."""
    import contextlib

    import numpy as np

    return np.errstate(all="ignore") if INTERPRETED else contextlib.nullcontext()


_EXPORTS = {
    "softmax": ".fused_softmax",
    "flash_attention": ".flash",
    "compiled": ".compiled",
}

__all__ = ["INTERPRETED", "COMPILE_ONLY", "check_runnable", "launch_context", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
