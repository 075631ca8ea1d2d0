r"""Measuring floating-point error, and the textbook formulas that suffer from it (Chapter 2).

Three kinds of tools live here:

* **An arbitrary-precision reference.**  :func:`reference_softmax`,
  :func:`reference_log_softmax` and :func:`reference_logsumexp` evaluate the exact
  formulas in ``mpmath`` with ``dps`` decimal digits, after forming every difference
  ``x_i - max x`` *exactly*, so that logits of any size (``1e300`` included) are
  handled without loss.  Rounded once to float64, they are the truth against which the
  book measures every floating-point implementation.
* **Units in the last place.**  :func:`ulp` is the spacing of a floating-point format
  at a real number, and :func:`ulp_error` the distance of a computed value from the
  exact one in those units: 0.5 means correctly rounded, a few means a good algorithm,
  thousands means digits lost, ``inf`` means an overflow or a NaN where a number
  belonged.
* **Formulas that are wrong on purpose.**  :func:`naive_softmax`,
  :func:`naive_log_softmax` and :func:`naive_logsumexp` are the one-line textbook
  versions.  They are exact in real arithmetic and break in floating point; Chapter 2
  shows where.  Never use them for anything but that demonstration: use
  :func:`softmax_lib.softmax`, :func:`softmax_lib.log_softmax` and
  :func:`softmax_lib.logsumexp`.

References: N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
SIAM 2002 (ulp and error analysis); P. Blanchard, D. J. Higham and N. J. Higham,
"Accurately computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 41
(2021), doi:10.1093/imanum/draa038.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import mpmath
import numpy as np

from ._array import as_float_array, check_temperature, is_torch, numpy_result
from .core import float_format, softmax

__all__ = [
    "reference_softmax",
    "reference_log_softmax",
    "reference_logsumexp",
    "ulp",
    "ulp_error",
    "naive_softmax",
    "naive_log_softmax",
    "naive_logsumexp",
]


# --------------------------------------------------------------------------------------
# The arbitrary-precision reference
# --------------------------------------------------------------------------------------


def _check_dps(dps: Any) -> int:
    if isinstance(dps, (bool, np.bool_)) or not isinstance(dps, numbers.Integral):
        raise TypeError(f"dps must be an integer (decimal digits), got {type(dps).__name__}")
    if dps < 20:
        raise ValueError(f"dps must be >= 20 (more than float64's 16 digits), got {dps}")
    return int(dps)


def _float64_rows(x, axis: int, name: str = "x"):
    """``x`` as float64 (exactly: every narrower format embeds in float64), the
    normalised axis moved last and flattened to rows: returns ``(rows, shape)``."""
    if is_torch(x):
        x = x.detach().cpu().double().numpy()
    work, _ = as_float_array(x, name)
    work = np.asarray(work, dtype=np.float64)
    if work.ndim == 0:
        work = work.reshape(1)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {axis!r}")
    moved = np.moveaxis(work, int(axis), -1)  # AxisError for a bad axis, as NumPy
    if np.isnan(moved).any() or np.isposinf(moved).any():
        raise ValueError(f"{name} must hold finite numbers or -inf for the exact reference")
    return moved.reshape(-1, moved.shape[-1]), moved.shape


def _exact_row(row: np.ndarray, temperature: float):
    """Exact shifted logits ``(x_i - m) / T`` (None for ``-inf``) and ``log sum exp``.

    The subtraction is done with ``exact=True``: two float64 numbers differ by a number
    that needs at most about 2,100 bits, which mpmath stores without rounding.
    """
    finite = [mpmath.mpf(float(v)) for v in row if v != -math.inf]
    if not finite:
        return [None] * len(row), None, mpmath.mpf("-inf")
    m = max(finite)
    z = [
        None if v == -math.inf else mpmath.fsub(mpmath.mpf(float(v)), m, exact=True) / temperature
        for v in row
    ]
    total = mpmath.fsum(mpmath.exp(zi) for zi in z if zi is not None)
    return z, m / temperature, mpmath.log(total)


def _reference(x, axis, temperature, dps, exact, kind):
    dps = _check_dps(dps)
    temperature = check_temperature(temperature)
    rows, shape = _float64_rows(x, axis)
    out = np.empty(rows.shape, dtype=object)
    lse = np.empty(rows.shape[0], dtype=object)
    with mpmath.workdps(dps):
        t = mpmath.mpf(temperature)
        for r, row in enumerate(rows):
            z, m, lognorm = _exact_row(row, t)
            lse[r] = m + lognorm if m is not None else lognorm
            for i, zi in enumerate(z):
                if kind == "softmax":
                    out[r, i] = mpmath.mpf(0) if zi is None else mpmath.exp(zi - lognorm)
                else:
                    out[r, i] = mpmath.mpf("-inf") if zi is None else zi - lognorm
    if kind == "logsumexp":
        result = lse.reshape(shape[:-1])
    else:
        result = np.moveaxis(out.reshape(shape), -1, axis)
    if exact:
        return numpy_result(result) if isinstance(result, np.ndarray) else result
    return numpy_result(np.vectorize(float, otypes=[np.float64])(result))


def reference_softmax(x, axis=-1, *, temperature=1.0, dps=50, exact=False):
    r"""Softmax in arbitrary precision: the truth that Chapter 2 measures errors against.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{(x_i - m)/T}}{\sum_j e^{(x_j - m)/T}},
        \qquad m = \max_j x_j,

    with every ``x_i - m`` formed exactly and the rest evaluated in ``mpmath`` with
    ``dps`` significant decimal digits.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Finite logits or ``-inf`` (probability 0).  Any floating dtype; values are
        taken exactly.  NaN and ``+inf`` raise ``ValueError``.
    axis : int, default -1
    temperature : float, default 1.0
    dps : int, default 50
        Decimal digits of working precision (at least 20).
    exact : bool, default False
        ``False``: a float64 ndarray, each entry the correctly rounded exact value.
        ``True``: an object ndarray of ``mpmath.mpf`` (for :func:`ulp_error`, which
        then measures the error without the half-ulp of rounding the reference).

    Notes
    -----
    A row of ``-inf`` gives zeros, as :func:`softmax_lib.softmax` does.  Cost: one
    ``mpmath.exp`` per entry, so keep inputs to a few thousand entries.

    Examples
    --------
    >>> reference_softmax([1.0, 2.0, 8.0]).round(4).tolist()
    [0.0009, 0.0025, 0.9966]
    """
    return _reference(x, axis, temperature, dps, exact, "softmax")


def reference_log_softmax(x, axis=-1, *, temperature=1.0, dps=50, exact=False):
    r"""Log-softmax in arbitrary precision, :math:`(x_i - m)/T - \log\sum_j e^{(x_j - m)/T}`.

    Arguments as :func:`reference_softmax`; ``-inf`` entries give ``-inf``.

    Examples
    --------
    >>> reference_log_softmax([1000.0, 1.0])
    array([   0., -999.])
    """
    return _reference(x, axis, temperature, dps, exact, "log_softmax")


def reference_logsumexp(x, axis=-1, *, dps=50, exact=False):
    r"""Log-sum-exp in arbitrary precision, :math:`m + \log\sum_j e^{x_j - m}`.

    Arguments as :func:`reference_softmax`; the result has ``axis`` removed (a NumPy
    scalar for a vector).  A slice of ``-inf`` gives ``-inf``.

    Examples
    --------
    >>> float(reference_logsumexp([0.0, -40.0]))  # log(1 + e^-40)
    4.248354255291589e-18
    """
    return _reference(x, axis, 1.0, dps, exact, "logsumexp")


# --------------------------------------------------------------------------------------
# Units in the last place
# --------------------------------------------------------------------------------------


def _ulp_of(value, fmt) -> float:
    """Spacing of ``fmt`` at the real number ``value`` (a float or an mpf)."""
    if isinstance(value, mpmath.mpf):
        if not mpmath.isfinite(value):
            value = mpmath.mpf(fmt.largest)
        exponent = mpmath.frexp(value)[1] - 1 if value != 0 else fmt.min_exponent
    else:
        value = float(value)
        if not math.isfinite(value):
            value = fmt.largest
        exponent = math.frexp(value)[1] - 1 if value != 0 else fmt.min_exponent
    exponent = min(max(int(exponent), fmt.min_exponent), fmt.max_exponent)
    return math.ldexp(1.0, exponent - fmt.significand_bits + 1)


def _dtype_of(x):
    if is_torch(x):
        return x.dtype
    return np.asarray(x).dtype


def _as_float64(x) -> np.ndarray:
    if is_torch(x):
        return x.detach().cpu().double().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        return arr
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"expected real numbers, got an array of dtype {arr.dtype}")
    return arr.astype(np.float64)


def ulp(x, dtype=np.float64):
    r"""The unit in the last place of ``dtype`` at the real number(s) ``x``.

    For :math:`2^e \le |x| < 2^{e+1}` and a format with ``p`` significand bits,

    .. math::

        \operatorname{ulp}(x) = 2^{\max(e,\, e_{min}) - p + 1},

    the gap between consecutive numbers of the format around ``x`` (the subnormal
    spacing below the normal range, the spacing at the largest finite number above
    it).  Where ``x`` is itself representable this is ``numpy.spacing(|x|)``.

    Parameters
    ----------
    x : array_like, torch.Tensor or mpmath.mpf values (object array)
    dtype : NumPy or torch floating dtype, or its name
        Any format :func:`softmax_lib.float_format` knows (bfloat16 and float8_e5m2
        too, which NumPy lacks).

    Returns
    -------
    ndarray of float64 (a NumPy scalar for scalar input)
    """
    fmt = float_format(dtype)
    values = _as_float64(x)
    flat = np.asarray(values).reshape(-1)
    out = np.array([_ulp_of(v, fmt) for v in flat], dtype=np.float64)
    return numpy_result(out.reshape(np.shape(values)))


def ulp_error(computed, exact, dtype=None):
    r"""The error of ``computed`` in units in the last place of ``dtype`` at ``exact``.

    .. math::

        \operatorname{err}(\hat y) = \frac{|\hat y - y|}{\operatorname{ulp}(y)}

    A correctly rounded result has error at most 0.5; Chapter 2 plots this quantity for
    the naive, max-shifted and log-domain softmax.

    Parameters
    ----------
    computed : array_like or torch.Tensor
        Floating-point results (bfloat16 tensors are fine).
    exact : array_like
        The true values: float64 numbers, or ``mpmath.mpf`` values as returned by the
        ``reference_*`` functions with ``exact=True`` (then the difference is taken in
        exact arithmetic).  Broadcast against ``computed``.
    dtype : floating dtype, optional
        The format whose ulp is the unit; by default the dtype of ``computed``.

    Returns
    -------
    ndarray of float64 (a NumPy scalar for scalar input)
        0 where the two agree exactly (``-inf`` and ``-inf`` included), ``inf`` where
        ``computed`` is NaN or infinite and ``exact`` is not the same infinity.
    """
    fmt = float_format(_dtype_of(computed) if dtype is None else dtype)
    got = _as_float64(computed)
    want = _as_float64(exact)
    got, want = np.broadcast_arrays(np.asarray(got), np.asarray(want))
    out = np.empty(got.shape, dtype=np.float64)
    for index in np.ndindex(got.shape):
        c, e = float(got[index]), want[index]
        e_mp = e if isinstance(e, mpmath.mpf) else mpmath.mpf(float(e))
        if mpmath.isnan(e_mp):
            out[index] = math.nan
        elif not math.isfinite(c) or not mpmath.isfinite(e_mp):
            out[index] = 0.0 if (not math.isnan(c) and mpmath.mpf(c) == e_mp) else math.inf
        else:
            diff = abs(mpmath.fsub(mpmath.mpf(c), e_mp, exact=True))
            out[index] = float(diff / _ulp_of(e_mp, fmt))
    return numpy_result(out)


# --------------------------------------------------------------------------------------
# Wrong on purpose: the textbook formulas
# --------------------------------------------------------------------------------------


def _exp_sum(x, axis):
    """``(exp(x), sum exp(x))`` in the input's own dtype, silently."""
    if is_torch(x):
        e = x.exp()
        return e, e.sum(axis, keepdim=True)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        e = np.exp(x)
        return e, np.sum(e, axis=axis, keepdims=True, dtype=e.dtype)


def naive_softmax(x, axis=-1):
    r"""The textbook softmax, ``exp(x) / sum(exp(x))``, **wrong on purpose** (Chapter 2).

    Exact in real arithmetic, broken in floating point:

    * **overflow**: once any ``x_i`` exceeds :func:`softmax_lib.overflow_threshold` of
      the dtype (709.78 in float64, 88.72 in float32, 11.09 in float16),
      ``exp(x_i)`` is ``inf`` and the slice becomes ``inf / inf = nan``;
    * **underflow**: once every ``x_i`` is below
      :func:`softmax_lib.underflow_threshold` (-745.13 in float64), every ``exp`` is 0
      and the slice is ``0 / 0 = nan``.

    Computed in the input's dtype (float16 stays float16, a bfloat16 tensor stays
    bfloat16) with NumPy's floating-point warnings silenced, so the failure shows up as
    values.  Use :func:`softmax_lib.softmax`, which subtracts the maximum first.
    """
    e, total = _exp_sum(x, axis)
    if is_torch(e):
        return e / total
    with np.errstate(all="ignore"):
        return numpy_result(e / total)


def naive_log_softmax(x, axis=-1):
    r"""``log(softmax(x))``, **wrong on purpose** (Chapter 2).

    Even with the max-shifted :func:`softmax_lib.softmax` inside, taking the log of a
    probability rounded to float fails in two places:

    * a probability that underflows to 0 (``x_i - max x`` below the
      :func:`softmax_lib.underflow_threshold`) gives ``-inf`` instead of the finite
      ``x_i - LSE(x)``: ``naive_log_softmax([1000., 1.])`` is ``[0, -inf]``, the true
      value ``[-e^{-999}, -999]``;
    * a probability that rounds to 1 gives exactly 0, losing the tiny negative value
      ``log p`` that cross-entropy needs.

    Use :func:`softmax_lib.log_softmax`, which never takes the log of a probability.
    """
    p = softmax(x, axis=axis)
    if is_torch(p):
        return p.log()
    with np.errstate(divide="ignore"):
        return numpy_result(np.log(p))


def naive_logsumexp(x, axis=-1, *, shift=False):
    r"""Log-sum-exp by the textbook formulas, **wrong on purpose** (Chapter 2).

    ``shift=False``: :math:`\log\sum_i e^{x_i}`, which overflows to ``inf`` above the
    overflow threshold and is ``-inf`` when every ``exp`` underflows.

    ``shift=True``: :math:`m + \log\sum_i e^{x_i - m}` with :math:`m = \max x`, which
    never overflows but rounds the sum, which is close to 1, before taking its log:
    when every other term is tiny (``[0., -40.]``) the result is ``0`` instead of
    ``log1p(e^{-40})``, about ``4.2e-18``, a relative error of 100%.
    :func:`softmax_lib.logsumexp` keeps the largest term out of the sum and uses
    ``log1p`` (Blanchard, Higham and Higham, 2021).
    """
    if shift:
        if is_torch(x):
            m = x.amax(axis, keepdim=True)
            e, total = _exp_sum(x - m, axis)
            return (m + total.log()).squeeze(axis)
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        m = np.max(x, axis=axis, keepdims=True)
        _, total = _exp_sum(x - m, axis)
        with np.errstate(all="ignore"):
            return numpy_result(np.squeeze(m + np.log(total), axis=axis))
    _, total = _exp_sum(x, axis)
    if is_torch(total):
        return total.log().squeeze(axis)
    with np.errstate(all="ignore"):
        return numpy_result(np.squeeze(np.log(total), axis=axis))
