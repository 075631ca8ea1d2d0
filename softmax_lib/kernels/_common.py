"""Small Triton helpers shared by the softmax kernels (Chapters 8 and 9).

Reductions call ``tl.reduce`` directly rather than ``tl.max`` and ``tl.sum``: those
two are ``@triton.jit`` functions inside ``triton.language``, compiled for the GPU
when triton was imported before ``TRITON_INTERPRET`` was set, and the interpreter
cannot call them then.  We pass triton's own combine functions, which the
interpreter recognises and replaces by NumPy's vectorised (pairwise) reductions;
on a GPU the generated code is exactly that of ``tl.max`` and ``tl.sum``.
"""

import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _larger(a, b):
    return tl.maximum(a, b)


# triton's own combine functions where this version has them (3.x does).
_SUM_COMBINE = getattr(tl.standard, "_sum_combine", _add)
_MAX_COMBINE = getattr(tl.standard, "_elementwise_max", _larger)


@triton.jit
def row_sum(x, axis: tl.constexpr):
    """Sum along ``axis``."""
    return tl.reduce(x, axis, _SUM_COMBINE)


@triton.jit
def row_max(x, axis: tl.constexpr):
    """Maximum along ``axis``."""
    return tl.reduce(x, axis, _MAX_COMBINE)


@triton.jit
def exp_shifted(x, m):
    """exp(x - m) with the core's edge rules: 0 when the maximum m is -inf (an empty
    row), 1 where x == m (so x = m = +inf gives 1, not exp(nan))."""
    e = tl.where(x == m, 1.0, tl.exp(x - m))
    return tl.where(m == float("-inf"), 0.0, e)


@triton.jit
def row_shift(m):
    """Per-row constants of the fast exponential ``exp2(x * log2(e) - shift)``.

    Returns ``(shift, top)``: ``shift = m * log2(e)`` (0 for an empty row, m = -inf,
    whose entries are all -inf and give exp2(-inf) = 0), and ``top``, equal to m only
    when m is +inf (NaN otherwise, so ``x == top`` is never true for a finite row):
    the +inf entries of such a row get 1, the rest 0 (the limit, as in the core)."""
    shift = tl.where((m == float("-inf")) | (m == float("inf")), 0.0, m * 1.4426950408889634)
    top = tl.where(m == float("inf"), m, float("nan"))
    return shift, top


@triton.jit
def exp_rows(x, shift, top):
    """exp(x - m) for a tile, from :func:`row_shift`'s per-row constants: one fused
    multiply-add and one ``ex2`` per entry (the special-function unit's instruction)."""
    e = tl.math.exp2(x * 1.4426950408889634 - shift)
    return tl.where(x == top, 1.0, tl.where(top == top, 0.0, e))


@triton.jit
def reciprocal(d):
    """1 / d, and 0 for an empty row (d == 0); a NaN stays NaN."""
    return tl.where(d == 0.0, 0.0, 1.0 / d)
