r"""Softmax, log-softmax and log-sum-exp, computed stably (Chapters 1 and 2).

Every function here takes NumPy-like input or a ``torch.Tensor`` and returns the
same kind.  The rules (API.md) in brief:

* the normalisation runs over ``axis`` (default ``-1``); every other axis is a batch;
* entries excluded by ``where=False`` or equal to ``-inf`` get probability exactly 0
  and log-probability ``-inf``; a slice with no active entry gives all zeros (and
  ``-inf`` log-probabilities and log-sum-exp), never NaN;
* a NaN among the active entries makes its whole slice NaN;
* ``+inf`` entries share the slice's mass evenly (the limit as they grow);
* float16 and bfloat16 are computed in float32 and rounded once.

The algorithm is the max-shift of Chapter 2: with ``m = max_i x_i``,

.. math::

    \operatorname{softmax}(x)_i = \frac{e^{(x_i - m)/T}}{\sum_j e^{(x_j - m)/T}},
    \qquad
    \log\sum_j e^{x_j} = m + \operatorname{log1p}\Big(\sum_{j \ne j^*} e^{x_j - m}\Big),

where the largest term, exactly 1 after the shift, is kept out of the sum passed
to ``log1p`` so that a normaliser close to 1 loses no digits.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import (
    as_float_array,
    check_positive_int,
    check_temperature,
    check_torch_dim,
    is_torch,
    normalize_numpy_axis,
    prepare_where,
    to_output,
)
from .formats import FloatFormat, float_format, overflow_threshold, underflow_threshold

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "online_softmax",
    "online_normalizer",
    "merge_normalizers",
    "overflow_threshold",
    "underflow_threshold",
    "FloatFormat",
    "float_format",
]


# --------------------------------------------------------------------------------------
# The shared reduction: everything softmax, log_softmax and logsumexp need of a slice.
# --------------------------------------------------------------------------------------


@dataclass
class _Slices:
    """Per-slice quantities of the shifted exponentials (keepdims shapes)."""

    z: Any  # (x - m) / T over active, finite entries; -inf elsewhere
    e: Any  # exp(z)
    m: Any  # max of active finite entries (-inf when none)
    lognorm: Any  # log(sum_j e_j), 0 for slices without any finite active entry
    total: Any  # sum_j e_j (0 for such slices)
    has_finite: Any  # slice has at least one active finite entry
    posinf: Any  # active +inf entries (None when there are none at all)
    n_posinf: Any
    has_nan: Any  # slice has an active NaN (None when there are none at all)


def _numpy_slices(x: np.ndarray, axes: tuple[int, ...], temperature: float, where) -> _Slices:
    active = where
    m = None
    if active is None:
        # One reduction tells whether any NaN (max is NaN) or +inf (max is +inf) is present.
        m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
        if np.isnan(m).any() or np.isposinf(m).any():
            m = None
    if m is not None:  # common case: every entry is finite or -inf
        x_work, any_nan, any_posinf = x, False, False
    else:
        nan = np.isnan(x)
        posinf = np.isposinf(x)
        any_nan = bool(nan.any()) if active is None else bool((nan & active).any())
        any_posinf = bool(posinf.any()) if active is None else bool((posinf & active).any())
        keep = ~(nan | posinf)
        if active is not None:
            keep &= active
        x_work = np.where(keep, x, -np.inf)
    with np.errstate(over="ignore", under="ignore"):
        if m is None:
            m = np.max(x_work, axis=axes, keepdims=True, initial=-np.inf)
        has_finite = m > -np.inf
        shift = np.where(has_finite, m, 0.0).astype(x.dtype, copy=False)
        z = x_work - shift
        if temperature != 1.0:
            z /= temperature
        e = np.exp(z)
        is_max = z == 0
        n_max = np.sum(is_max, axis=axes, keepdims=True)
        rest = np.sum(np.where(is_max, 0.0, e), axis=axes, keepdims=True, dtype=x.dtype)
        extra = (n_max - 1).astype(x.dtype) + rest
        lognorm = np.where(has_finite, np.log1p(np.where(has_finite, extra, 0.0)), 0.0)
        total = n_max.astype(x.dtype) + rest
    result = _Slices(z, e, m, lognorm.astype(x.dtype, copy=False), total, has_finite, None, None, None)
    if any_posinf:
        pos = posinf if active is None else posinf & active
        result.posinf = pos
        result.n_posinf = np.sum(pos, axis=axes, keepdims=True)
    if any_nan:
        result.has_nan = np.any(nan if active is None else nan & active, axis=axes, keepdims=True)
    return result


def _torch_slices(x, dim: int, temperature: float, where) -> _Slices:
    import torch

    nan = torch.isnan(x)
    posinf = torch.isposinf(x)
    if where is not None:
        nan = nan & where
        posinf = posinf & where
    any_nan = bool(nan.any())
    any_posinf = bool(posinf.any())
    if x.ndim == 0:
        x, nan, posinf = x.reshape(1), nan.reshape(1), posinf.reshape(1)
        where = where.reshape(1) if where is not None else None
    keep = ~(torch.isnan(x) | torch.isposinf(x))
    if where is not None:
        keep = keep & where
    neg_inf = torch.tensor(-math.inf, dtype=x.dtype, device=x.device)
    x_work = torch.where(keep, x, neg_inf)
    if x.shape[dim] == 0:
        m = torch.full_like(x_work.sum(dim, keepdim=True), -math.inf)
    else:
        m = x_work.detach().amax(dim, keepdim=True)
    has_finite = m > -math.inf
    shift = torch.where(has_finite, m, torch.zeros_like(m))
    z = x_work - shift
    if temperature != 1.0:
        z = z / temperature
    e = torch.exp(z)
    is_max = (z == 0) & has_finite
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    top = torch.where(is_max, e, zero).sum(dim, keepdim=True)  # equals the count of maxima
    rest = torch.where(is_max, zero, e).sum(dim, keepdim=True)
    extra = (top - 1) + rest
    lognorm = torch.where(has_finite, torch.log1p(torch.where(has_finite, extra, zero)), zero)
    total = top + rest
    result = _Slices(z, e, m, lognorm, total, has_finite, None, None, None)
    if any_posinf:
        result.posinf = posinf
        result.n_posinf = posinf.sum(dim, keepdim=True)
    if any_nan:
        result.has_nan = nan.any(dim, keepdim=True)
    return result


def _setup(x, axis, temperature, where, name="x"):
    """Validate arguments; return (work array, out dtype, axes/dim, temperature, mask)."""
    work, out_dtype = as_float_array(x, name)
    temperature = check_temperature(temperature)
    mask = prepare_where(where, work)
    if is_torch(work):
        return work, out_dtype, check_torch_dim(axis, work.ndim), temperature, mask
    return work, out_dtype, normalize_numpy_axis(axis, work.ndim), temperature, mask


def _slices(work, axes, temperature, mask) -> _Slices:
    if is_torch(work):
        return _torch_slices(work, axes, temperature, mask)
    return _numpy_slices(work, axes, temperature, mask)


def _where(cond, a, b):
    if is_torch(cond):
        import torch

        if not is_torch(a):
            a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
        if not is_torch(b):
            b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _cast(value, like):
    """``value`` in the dtype of ``like`` (numpy array or tensor)."""
    if is_torch(like):
        return value.to(like.dtype)
    return np.asarray(value).astype(like.dtype, copy=False)


def _restore_shape(out, work):
    """Torch 0-d inputs are computed as length-1 vectors; give the 0-d shape back."""
    if is_torch(out) and work.ndim == 0:
        return out.reshape(())
    return out


def _fix_special(out, s: _Slices, posinf_value, nan_value=math.nan):
    """Apply the +inf and NaN slice rules to a full-shape output."""
    if s.posinf is not None:
        out = _where(s.n_posinf > 0, posinf_value(s), out)
    if s.has_nan is not None:
        out = _where(s.has_nan, nan_value, out)
    return out


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def softmax(x, axis=-1, *, temperature=1.0, where=None):
    r"""Softmax: exponentiate, then normalise over ``axis``.

    .. math::

        \operatorname{softmax}(x)_i = \frac{\exp(x_i / T)}{\sum_j \exp(x_j / T)}

    computed as :math:`\exp((x_i - m)/T) / \sum_j \exp((x_j - m)/T)` with
    :math:`m = \max_j x_j`, so that no exponential overflows (Chapter 2).

    Parameters
    ----------
    x : array_like or torch.Tensor
        Logits.  Integers and booleans are promoted to float64 (torch: the default
        float dtype); float16 and bfloat16 are computed in float32 and rounded once.
    axis : int, tuple of ints or None, default -1
        Axis (axes) to normalise over; ``None`` means all axes.  Torch: an int.
    temperature : float, default 1.0
        ``T > 0``.  Small ``T`` sharpens towards argmax, large ``T`` flattens
        towards uniform (Chapter 4).
    where : bool array_like, optional
        Mask broadcastable to ``x``; ``False`` entries get probability exactly 0 and
        their value is never used (NaN there is ignored).

    Returns
    -------
    ndarray, NumPy scalar or torch.Tensor
        Probabilities with the shape and dtype of ``x``.

    Notes
    -----
    Edge cases: ``-inf`` entries behave like masked ones; a slice with no active
    entry gives zeros (not NaN); a NaN among active entries makes its slice NaN; the
    mass of a slice with ``+inf`` entries is split evenly among them.  In float64
    each result is within a few ulp of the exact value, apart from the error that the
    conditioning of ``exp`` forces (it grows with ``|x_i - m|``); each slice sums to
    1 within ``4 n eps``.

    References
    ----------
    J. S. Bridle, "Probabilistic interpretation of feedforward classification network
    outputs", Neurocomputing, 1990.  doi:10.1007/978-3-642-76153-9_28

    Examples
    --------
    >>> softmax([1.0, 2.0, 8.0]).round(4).tolist()
    [0.0009, 0.0025, 0.9966]
    >>> softmax([1000.0, 1.0])  # the naive formula gives nan here
    array([1., 0.])
    """
    if type(x) is np.ndarray and where is None and x.dtype in _FAST_DTYPES and type(axis) is int and x.ndim:
        # Fast entry for the most common call: a float32/float64 ndarray, one axis.
        fast = _numpy_softmax_fast(x, normalize_numpy_axis(axis, x.ndim), check_temperature(temperature))
        if fast is not None:
            return fast
    work, out_dtype, axes, temperature, mask = _setup(x, axis, temperature, where)
    if mask is None:
        fast = (_torch_softmax_fast if is_torch(work) else _numpy_softmax_fast)(work, axes, temperature)
        if fast is not None:
            return to_output(fast, out_dtype)
    s = _slices(work, axes, temperature, mask)
    denominator = _where(s.has_finite, s.total, 1.0)
    p = s.e / denominator
    p = _fix_special(p, s, lambda s: _cast(s.posinf, p) / _cast(_where(s.n_posinf > 0, s.n_posinf, 1), p))
    return to_output(_restore_shape(p, work), out_dtype)


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _torch_softmax_fast(x, dim: int, temperature: float):
    """torch's own fused softmax when every slice has a finite (scaled) max, else None.

    Such slices hold only finite and ``-inf`` entries, where ``torch.softmax`` and the
    general path agree; torch's kernel and its backward are much faster on CPU.
    """
    if x.ndim == 0 or x.numel() == 0:
        return None
    import torch

    m = x.detach().amax(dim, keepdim=True)
    if not bool(torch.isfinite(m).all()):
        return None
    # subtract the max before dividing by T, as the NumPy path does: (x - m) / T is
    # rounded once, where x / T would carry an error that grows with |x| / T
    shifted = x - m
    return torch.softmax(shifted if temperature == 1.0 else shifted / temperature, dim)


def _numpy_shifted(x: np.ndarray, axes, temperature: float):
    """``((x - max) / T, max)`` when every slice has a finite max, else None.

    Call inside ``np.errstate(over="ignore", under="ignore")``: a difference of two
    huge finite numbers may round to -inf, which is the right limit here.
    """
    if x.size == 0:
        return None
    m = np.maximum.reduce(x, axis=axes, keepdims=True)
    if not np.isfinite(m).all():
        return None
    z = np.subtract(x, m, out=np.empty_like(x))
    if temperature != 1.0:
        z /= temperature
    return z, m


def _numpy_log_fast(x: np.ndarray, axes, temperature: float):
    """``(z, log normaliser, max)`` when every slice has a finite max, else None.

    The same log1p arithmetic as the general path, with fewer passes and in-place
    updates: the maxima (exactly 1 after the shift) are counted and zeroed out of
    the exponentials before the rest is summed.
    """
    with np.errstate(over="ignore", under="ignore"):
        shifted = _numpy_shifted(x, axes, temperature)
        if shifted is None:
            return None
        z, m = shifted
        e = np.exp(z, out=np.empty_like(z))
        is_max = z == 0
        n_max = np.add.reduce(is_max, axis=axes, keepdims=True, dtype=x.dtype)
        np.putmask(e, is_max, 0.0)
        rest = np.add.reduce(e, axis=axes, keepdims=True)
        lognorm = np.log1p((n_max - 1) + rest)
    return z, lognorm, m


def _numpy_softmax_fast(x: np.ndarray, axes, temperature: float):
    """The common case (every slice has a finite max): three passes, in place."""
    with np.errstate(over="ignore", under="ignore"):
        shifted = _numpy_shifted(x, axes, temperature)
        if shifted is None:
            return None
        z, _ = shifted
        np.exp(z, out=z)
        z /= np.add.reduce(z, axis=axes, keepdims=True)
    return z


def log_softmax(x, axis=-1, *, temperature=1.0, where=None):
    r"""Logarithm of :func:`softmax`, computed without ever taking ``log`` of a
    rounded probability.

    .. math::

        \log \operatorname{softmax}(x)_i = \frac{x_i - m}{T}
            - \log \sum_j \exp\Big(\frac{x_j - m}{T}\Big)

    Parameters are those of :func:`softmax`.  Masked and ``-inf`` entries give
    ``-inf``; a slice with no active entry is all ``-inf``; ``+inf`` entries get
    ``-log(count of +inf entries)`` and the others ``-inf``.

    Examples
    --------
    >>> log_softmax([1000.0, 1.0])  # log(softmax) would give [0, -inf]
    array([   0., -999.])
    """
    work, out_dtype, axes, temperature, mask = _setup(x, axis, temperature, where)
    if not is_torch(work) and mask is None:
        fast = _numpy_log_fast(work, axes, temperature)
        if fast is not None:
            z, lognorm, _ = fast
            z -= lognorm
            return to_output(z, out_dtype)
    s = _slices(work, axes, temperature, mask)
    out = s.z - s.lognorm

    def posinf_value(s):
        n = _cast(_where(s.n_posinf > 0, s.n_posinf, 1), s.z)
        return _where(s.posinf, -(np.log(n) if not is_torch(n) else n.log()), -math.inf)

    out = _fix_special(out, s, posinf_value)
    return to_output(_restore_shape(out, work), out_dtype)


def logsumexp(x, axis=-1, *, keepdims=False, where=None):
    r"""Log of the sum of exponentials, :math:`\log \sum_i e^{x_i}`, without overflow.

    .. math::

        \operatorname{LSE}(x) = m + \operatorname{log1p}\Big(\sum_{i \ne i^*} e^{x_i - m}\Big),
        \qquad m = x_{i^*} = \max_i x_i

    A smooth maximum: :math:`\max x \le \operatorname{LSE}(x) \le \max x + \log K`,
    and its gradient is :func:`softmax` (Chapter 1).

    Parameters
    ----------
    x : array_like or torch.Tensor
    axis : int, tuple of ints or None, default -1
    keepdims : bool, default False
        Keep the reduced axes with length 1.
    where : bool array_like, optional
        ``False`` entries are left out of the sum.

    Returns
    -------
    ndarray, NumPy scalar or torch.Tensor
        ``-inf`` for a slice with no active entry (the log of an empty sum), ``+inf``
        when an active entry is ``+inf``, NaN when an active entry is NaN.

    References
    ----------
    P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp
    and softmax functions", IMA J. Numer. Anal. 41 (2021).  doi:10.1093/imanum/draa038

    Examples
    --------
    >>> float(logsumexp([1000.0, 1000.0]))  # 1000 + log 2; the naive formula overflows
    1000.6931471805599
    """
    if not isinstance(keepdims, (bool, np.bool_, numbers.Integral)):
        raise TypeError(f"keepdims must be a bool, got {type(keepdims).__name__}")
    if keepdims not in (0, 1):  # NumPy accepts 0 and 1 for False and True; nothing else
        raise ValueError(f"keepdims must be a bool (or 0 or 1), got {keepdims!r}")
    keepdims = bool(keepdims)
    work, out_dtype, axes, _, mask = _setup(x, axis, 1.0, where)
    if not is_torch(work) and mask is None:
        fast = _numpy_log_fast(work, axes, 1.0)
        if fast is not None:
            _, lognorm, m = fast
            out = m + lognorm
            if not keepdims:
                out = np.squeeze(out, axis=axes)
            return to_output(out, out_dtype)
    s = _slices(work, axes, 1.0, mask)
    out = s.m + s.lognorm
    out = _where(s.has_finite, out, -math.inf)
    out = _fix_special(out, s, lambda s: math.inf)
    if not keepdims:
        if is_torch(work):
            out = out.reshape(()) if work.ndim == 0 else out.squeeze(axes)
        else:
            out = np.squeeze(out, axis=axes)
    return to_output(out, out_dtype)


# --------------------------------------------------------------------------------------
# Online (streaming) softmax
# --------------------------------------------------------------------------------------


def merge_normalizers(m1, d1, m2, d2):
    r"""Merge two partial results ``(m, d)`` of the online softmax.

    Each pair describes a block of logits by its maximum ``m`` and its normaliser
    ``d = sum_i exp(x_i - m)``.  The merged pair describes the union:

    .. math::

        m = \max(m_1, m_2), \qquad d = d_1 e^{m_1 - m} + d_2 e^{m_2 - m}.

    The operation is associative and commutative (up to rounding), which is why the
    reduction can be split across threads, blocks or devices (Chapters 2 and 9).
    An empty block is ``(-inf, 0)``, the identity.  Works elementwise on NumPy
    arrays, tensors and Python floats.
    """
    if is_torch(m1) or is_torch(m2):
        import torch

        m = torch.maximum(torch.as_tensor(m1), torch.as_tensor(m2))
        safe = torch.where(m > -math.inf, m, torch.zeros_like(m))
        return m, d1 * torch.exp(m1 - safe) + d2 * torch.exp(m2 - safe)
    with np.errstate(over="ignore", under="ignore"):
        m = np.maximum(m1, m2)
        safe = np.where(m > -np.inf, m, 0.0)
        d = d1 * np.exp(m1 - safe) + d2 * np.exp(m2 - safe)
    if np.ndim(m) == 0:
        return float(m), float(d)
    return m, d


def _blocks_along(work, axis: int, block_size: int):
    length = work.shape[axis]
    for start in range(0, length, block_size):
        stop = min(start + block_size, length)
        if is_torch(work):
            yield work.narrow(axis, start, stop - start)
        else:
            index = [slice(None)] * work.ndim
            index[axis] = slice(start, stop)
            yield work[tuple(index)]


def online_normalizer(x, axis=-1, *, block_size=1024):
    r"""One streaming pass: the running maximum and normaliser of each slice.

    Reads ``x`` once, ``block_size`` entries of each slice at a time, and keeps
    only ``(m, d)``: the largest logit so far and ``sum exp(x_i - m)`` over what has
    been read.  Each block is reduced on its own and merged with
    :func:`merge_normalizers` (Milakov and Gimelshein, 2018).

    Returns ``(m, d)`` with the reduced axis kept (length 1).  Only an int ``axis``.
    """
    work, _ = as_float_array(x)
    block_size = check_positive_int(block_size, "block_size")
    if is_torch(work):
        import torch

        axis = check_torch_dim(axis, work.ndim)
        if work.ndim == 0:
            work = work.reshape(1)
        shape = list(work.shape)
        shape[axis] = 1
        m = torch.full(shape, -math.inf, dtype=work.dtype, device=work.device)
        d = torch.zeros(shape, dtype=work.dtype, device=work.device)
        for block in _blocks_along(work, axis, block_size):
            bm = block.amax(axis, keepdim=True)
            bsafe = torch.where(bm > -math.inf, bm, torch.zeros_like(bm))
            bd = torch.exp(block - bsafe).sum(axis, keepdim=True)
            m, d = merge_normalizers(m, d, bm, bd)
        return m, d
    if isinstance(axis, tuple) or axis is None:
        raise TypeError("online_normalizer streams along one axis: axis must be an int")
    (axis,) = normalize_numpy_axis(axis, work.ndim)
    shape = list(work.shape)
    shape[axis] = 1
    m = np.full(shape, -np.inf, dtype=work.dtype)
    d = np.zeros(shape, dtype=work.dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for block in _blocks_along(work, axis, block_size):
            bm = np.max(block, axis=axis, keepdims=True)
            bsafe = np.where(bm > -np.inf, bm, 0.0)
            bd = np.sum(np.exp(block - bsafe), axis=axis, keepdims=True)
            m, d = merge_normalizers(m, d, bm, bd)
    return m, d


def online_softmax(x, axis=-1, *, block_size=1024):
    r"""Softmax by the single-pass streaming algorithm (Chapter 2; Chapter 9 on a GPU).

    First pass: :func:`online_normalizer` reads each slice once, ``block_size``
    entries at a time, keeping the running maximum ``m`` and normaliser ``d``.
    Second pass: ``p_i = exp(x_i - m) / d``.  The naive safe softmax needs three
    passes (max, sum, normalise); this needs two, and the first can be split across
    processors because merging partial ``(m, d)`` pairs is associative.

    Same results as :func:`softmax` to rounding for any ``block_size >= 1``, with
    the same edge rules (``-inf`` entries, empty slices, NaN, ``+inf``).
    """
    work, out_dtype = as_float_array(x)
    block_size = check_positive_int(block_size, "block_size")
    if work.ndim == 0:  # one entry: nothing to stream
        return softmax(x, axis=axis)
    if is_torch(work):
        axis = check_torch_dim(axis, work.ndim)
    else:
        axes = normalize_numpy_axis(axis, work.ndim)
        if not axes:  # axis=(): every entry is a slice of its own, nothing to stream
            return softmax(x, axis=axis)
        if len(axes) != 1:  # several axes (or None): stream over them as one flattened axis
            k = len(axes)
            moved = np.moveaxis(work, axes, range(-k, 0))
            flat = moved.reshape(moved.shape[:-k] + (math.prod(moved.shape[-k:]),))
            p = np.asarray(online_softmax(flat, axis=-1, block_size=block_size)).reshape(moved.shape)
            return to_output(np.moveaxis(p, range(-k, 0), axes), out_dtype)
        (axis,) = axes
    # NaN and +inf follow the core rules: let softmax handle such inputs exactly.
    special = (work != work) | (work == math.inf)
    if bool(special.any()):
        return softmax(x, axis=axis)
    m, d = online_normalizer(work, axis=axis, block_size=block_size)
    if is_torch(work):
        import torch

        safe_m = torch.where(m > -math.inf, m, torch.zeros_like(m))
        p = torch.exp(work - safe_m) / torch.where(d > 0, d, torch.ones_like(d))
    else:
        with np.errstate(over="ignore", under="ignore"):
            safe_m = np.where(m > -np.inf, m, 0.0)
            p = np.exp(work - safe_m) / np.where(d > 0, d, 1.0)
    return to_output(p, out_dtype)
