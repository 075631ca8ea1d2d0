r"""Alternatives to softmax that live on the simplex: sparsemax, entmax, Gumbel-softmax (Chapter 7).

Softmax never outputs an exact zero.  The maps here can:

* :func:`sparsemax` is the Euclidean projection of the logits onto the simplex
  (Martins and Astudillo, 2016);
* :func:`entmax15` and :func:`entmax_bisect` solve the same problem with a Tsallis
  entropy regulariser of index :math:`\alpha` (Peters, Niculae and Martins, 2019):
  :math:`\alpha \to 1` is softmax, :math:`\alpha = 2` is sparsemax;
* :func:`gumbel_softmax` draws a relaxed (or, with ``hard=True``, an exact one-hot)
  sample from ``softmax(logits)`` (Jang et al., 2017; Maddison et al., 2017).

The large-vocabulary approximations (hierarchical softmax, sampled softmax) live in
:mod:`softmax_lib.large_vocab` and are re-exported here on first use.

Edge rules, shared with :func:`softmax_lib.softmax`: ``-inf`` entries get probability
exactly 0 (masking with ``-inf`` equals truncating the input); a slice with no
finite entry gives zeros; a NaN makes its slice NaN; ``+inf`` entries share the
slice's mass evenly.  Torch inputs get the true gradient through a custom
``torch.autograd.Function`` whose backward uses the support of the output.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ._array import (
    as_float_array,
    check_positive_int,
    check_real_scalar,
    check_temperature,
    check_torch_dim,
    is_torch,
    normalize_numpy_axis,
    to_output,
)
from .core import softmax

__all__ = [
    "sparsemax",
    "entmax15",
    "entmax_bisect",
    "gumbel_softmax",
    # re-exported from softmax_lib.large_vocab (loaded on first use: it needs torch)
    "huffman_code",
    "HierarchicalSoftmax",
    "sampled_softmax_loss",
    "zipf_probabilities",
]

_LARGE_VOCAB = ("huffman_code", "HierarchicalSoftmax", "sampled_softmax_loss", "zipf_probabilities")


def __getattr__(name: str):
    if name in _LARGE_VOCAB:
        from . import large_vocab

        return getattr(large_vocab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# Private numeric helpers.  They work on the LAST axis of a numpy array or a tensor.
# --------------------------------------------------------------------------------------


def _sort_desc(a):
    if is_torch(a):
        return a.sort(dim=-1, descending=True).values
    return -np.sort(-a, axis=-1)


def _cumsum(a):
    return a.cumsum(-1) if is_torch(a) else np.cumsum(a, axis=-1)


def _sum(a):
    return a.sum(-1, keepdim=True) if is_torch(a) else np.sum(a, axis=-1, keepdims=True)


def _any(mask):
    return mask.any(-1, keepdim=True) if is_torch(mask) else np.any(mask, axis=-1, keepdims=True)


def _as_dtype(mask, like):
    """A boolean mask as 0/1 numbers in the dtype of ``like``."""
    return mask.to(like.dtype) if is_torch(mask) else mask.astype(like.dtype)


def _zeros_like(a):
    return a.new_zeros(a.shape) if is_torch(a) else np.zeros_like(a)


def _where(cond, a, b):
    if is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _namespace(a):
    """``torch`` for a tensor, ``numpy`` otherwise (for the elementwise functions)."""
    if is_torch(a):
        import torch

        return torch
    return np


def _take_last(a, index):
    """``a[..., index]`` for a per-slice integer index of shape ``(..., 1)``."""
    if is_torch(a):
        return a.gather(-1, index)
    return np.take_along_axis(a, index, axis=-1)


def _positions(a):
    """1, 2, ..., K in the dtype of ``a``, shape ``(K,)``."""
    k = a.shape[-1]
    if is_torch(a):
        import torch

        return torch.arange(1, k + 1, dtype=a.dtype, device=a.device)
    return np.arange(1, k + 1, dtype=a.dtype)


def _shifted(x):
    """Split a slice into the finite part and the special entries.

    Returns ``(z, active, special)``: ``z = x - max(finite x)`` on finite entries and
    0 elsewhere, ``active`` marks finite entries (``None`` when every entry is finite:
    the common case skips all masking), and ``special`` applies the +inf / NaN rules
    to a result ``p``.
    """
    finite = x.isfinite() if is_torch(x) else np.isfinite(x)
    if bool(finite.all()):
        m = x.amax(-1, keepdim=True).detach() if is_torch(x) else np.max(x, axis=-1, keepdims=True)
        return x - m, None, lambda p: p
    if is_torch(x):
        import torch

        m = torch.where(finite, x, torch.full_like(x, -math.inf)).amax(-1, keepdim=True).detach()
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        z = torch.where(finite, x - m, torch.zeros_like(x))
        posinf, nan = torch.isposinf(x), torch.isnan(x)
    else:
        m = np.max(np.where(finite, x, -np.inf), axis=-1, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0.0).astype(x.dtype)
        z = np.where(finite, x - m, 0.0).astype(x.dtype)
        posinf, nan = np.isposinf(x), np.isnan(x)

    def special(p):
        if bool(posinf.any()):  # +inf entries share the mass evenly (the limit)
            count = _sum(_as_dtype(posinf, p))
            even = _as_dtype(posinf, p) / _where(count > 0, count, 1 + 0 * count)
            p = _where(count > 0, even, p)
        if bool(nan.any()):  # a NaN makes its whole slice NaN
            p = _where(_any(nan), math.nan + 0 * p, p)
        return p

    return z, finite, special


def _masked(active, a):
    """``a`` where ``active``, 0 elsewhere (``active=None``: everything is active)."""
    return a if active is None else _where(active, a, _zeros_like(a))


def _sorted_active(z, active):
    """Sorted (descending) values, with inactive entries last and set to 0, and their mask."""
    if active is None:
        return _sort_desc(z), True
    key = _sort_desc(_where(active, z, -math.inf + 0 * z))
    valid = key > -math.inf
    return _where(valid, key, _zeros_like(key)), valid


def _support_threshold(cond, candidates):
    """The threshold at the largest ``k`` where ``cond`` holds (a prefix), and ``k``."""
    kstar = _sum(cond.long() if is_torch(cond) else cond.astype(np.int64))  # (..., 1)
    index = _where(kstar > 0, kstar - 1, 0 * kstar)
    return _take_last(candidates, index), kstar


def _sparsemax_forward(x):
    r"""Sparsemax along the last axis: ``p = [z - tau]_+`` with ``sum p = 1``."""
    z, active, special = _shifted(x)
    s, valid = _sorted_active(z, active)  # (..., K) descending
    k = _positions(s)
    cumulative = _cumsum(s)
    # Entry k (1-based) of the sorted logits is in the support iff 1 + k s_k > sum_{j<=k} s_j.
    cond = valid & (1 + k * s > cumulative)
    total, kstar = _support_threshold(cond, cumulative)
    size = _where(kstar > 0, kstar, 1 + 0 * kstar)
    tau = (total - 1) / _as_dtype(size, s)
    p = _masked(active, z - tau)
    p = p.clamp_min(0) if is_torch(p) else np.maximum(p, 0)
    return special(p)


def _entmax15_forward(x):
    r"""1.5-entmax along the last axis: ``p = [z/2 - tau]_+^2`` with ``sum p = 1``."""
    z, active, special = _shifted(x)
    z = z / 2
    s, valid = _sorted_active(z, active)
    k = _positions(s)
    mean = _cumsum(s) / k
    mean_sq = _cumsum(s * s) / k
    # On a support of size k, sum (s_j - tau)^2 = 1 is a quadratic in tau; take the
    # smaller root (tau below every supported value).
    delta = (1 - k * (mean_sq - mean * mean)) / k
    delta = delta.clamp_min(0) if is_torch(delta) else np.maximum(delta, 0)
    tau_k = mean - (delta.sqrt() if is_torch(delta) else np.sqrt(delta))
    cond = valid & (tau_k <= s)
    tau, _ = _support_threshold(cond, tau_k)
    p = _masked(active, z - tau)
    p = p.clamp_min(0) if is_torch(p) else np.maximum(p, 0)
    return special(p * p)


def _entmax_bisect_forward(x, alpha: float, n_iter: int):
    r"""alpha-entmax along the last axis: bisection on the threshold of ``p = [(alpha-1) z - tau]_+^{1/(alpha-1)}``.

    With ``tau = delta - 1`` the base is ``1 + u``, ``u = (alpha - 1) z - delta``, and
    ``p = exp(log1p(u) / (alpha - 1))``.  Bisecting on ``delta`` (not ``tau``, which sits
    next to -1) keeps ``u`` free of the cancellation against 1 that a large power
    ``1/(alpha - 1)`` would amplify as alpha approaches 1; small powers use
    ``(1 + u) ** power`` directly, which is as accurate there and faster.
    """
    z, active, special = _shifted(x)
    xp = _namespace(z)
    eps = alpha - 1
    z = eps * z  # max over active entries is 0
    # f(delta) = sum p(delta) - 1 decreases in delta; f(0) >= 0 (the top entry alone
    # gives 1) and f(1 - n^(1 - alpha)) <= 0 with n finite entries (each is then at most
    # 1/n).  Counting only finite entries makes -inf entries change nothing (truncation).
    if active is None:
        n = x.shape[-1] + 0 * _sum(z[..., :1])
    else:
        n = _sum(_as_dtype(active, z))
        n = _where(n > 0, n, 1 + 0 * n)
    lo = 0 * n
    hi = -xp.expm1(-eps * xp.log(n))

    power = 1.0 / eps

    def mass(delta):
        u = z - delta
        inside = u > -1 if active is None else (u > -1) & active
        if power <= 16:  # forming 1 + u costs at most 16 rounding errors: the plain power
            base = _where(inside, 1 + u, _zeros_like(u))
            return base**power  # (a Python exponent: torch squares when alpha = 1.5)
        safe = _where(inside, u, _zeros_like(u))  # log1p(-1) would warn
        return _where(inside, xp.exp(xp.log1p(safe) * power), _zeros_like(u))

    for _ in range(n_iter):
        mid = (lo + hi) / 2
        above = _sum(mass(mid)) >= 1
        lo = _where(above, mid, lo)
        hi = _where(above, hi, mid)
    p = mass(lo)
    total = _sum(p)
    p = p / _where(total > 0, total, 1 + 0 * total)
    return special(p)


# --------------------------------------------------------------------------------------
# torch.autograd.Function classes: the forward above, the true (support) backward.
# --------------------------------------------------------------------------------------

_FUNCTIONS: dict[str, Any] = {}


def _autograd_functions():
    """Build the autograd Functions once, on first use (torch is optional)."""
    if _FUNCTIONS:
        return _FUNCTIONS
    import torch

    def tsallis_backward(p, grad, alpha):
        # dp/dx = diag(s) - s s^T / sum(s) with s = p^(2 - alpha) on the support, 0 off it.
        if alpha == 2.0:
            s = (p > 0).to(p.dtype)
        elif alpha == 1.5:
            s = p.sqrt()
        else:
            s = torch.where(p > 0, p.clamp_min(0) ** (2 - alpha), torch.zeros_like(p))
        gs = grad * s
        norm = s.sum(-1, keepdim=True)
        q = gs.sum(-1, keepdim=True) / torch.where(norm > 0, norm, torch.ones_like(norm))
        return gs - q * s

    class SparsemaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            p = _sparsemax_forward(x)
            ctx.save_for_backward(p)
            return p

        @staticmethod
        def backward(ctx, grad):
            (p,) = ctx.saved_tensors
            return tsallis_backward(p, grad, 2.0)

    class Entmax15Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            p = _entmax15_forward(x)
            ctx.save_for_backward(p)
            return p

        @staticmethod
        def backward(ctx, grad):
            (p,) = ctx.saved_tensors
            return tsallis_backward(p, grad, 1.5)

    class EntmaxBisectFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha, n_iter):
            p = _entmax_bisect_forward(x, alpha, n_iter)
            ctx.save_for_backward(p)
            ctx.alpha = alpha
            return p

        @staticmethod
        def backward(ctx, grad):
            (p,) = ctx.saved_tensors
            return tsallis_backward(p, grad, ctx.alpha), None, None

    _FUNCTIONS.update(
        sparsemax=SparsemaxFunction, entmax15=Entmax15Function, bisect=EntmaxBisectFunction
    )
    return _FUNCTIONS


# --------------------------------------------------------------------------------------
# Dispatch: move the normalised axis (axes) to the end, run, move back.
# --------------------------------------------------------------------------------------


def _apply_last_axis(x, axis, numpy_fn, torch_fn, name="x"):
    work, out_dtype = as_float_array(x, name)
    if is_torch(work):
        dim = check_torch_dim(axis, work.ndim)
        if work.ndim == 0:
            return to_output(torch_fn(work.reshape(1)).reshape(()), out_dtype)
        if work.numel() == 0:
            return to_output(work.detach().clone().zero_() + 0 * work, out_dtype)
        out = torch_fn(work.movedim(dim, -1).contiguous()).movedim(-1, dim)
        return to_output(out, out_dtype)
    axes = normalize_numpy_axis(axis, work.ndim)
    if work.size == 0:
        return to_output(np.zeros_like(work), out_dtype)
    moved = np.moveaxis(work, axes, range(work.ndim - len(axes), work.ndim))
    batch_shape = moved.shape[: work.ndim - len(axes)]
    flat = moved.reshape(batch_shape + (-1,))
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        out = numpy_fn(flat)
    out = np.moveaxis(out.reshape(moved.shape), range(work.ndim - len(axes), work.ndim), axes)
    return to_output(np.ascontiguousarray(out) if out.ndim else out, out_dtype)


def sparsemax(x, axis=-1):
    r"""Sparsemax: the Euclidean projection of the logits onto the probability simplex.

    .. math::

        \operatorname{sparsemax}(x) = \operatorname*{arg\,min}_{p \in \Delta^{K-1}} \lVert p - x \rVert^2
        = [x - \tau(x)]_+ ,

    where :math:`\tau` is the unique threshold with :math:`\sum_i [x_i - \tau]_+ = 1`.
    Sorting :math:`x_{(1)} \ge \dots \ge x_{(K)}`, the support has size
    :math:`k^* = \max\{k : 1 + k x_{(k)} > \sum_{j \le k} x_{(j)}\}` and
    :math:`\tau = (\sum_{j \le k^*} x_{(j)} - 1) / k^*`: :math:`O(K \log K)`.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Logits.
    axis : int, tuple of ints or None, default -1
        Axis (axes) to normalise over (torch: an int).

    Returns
    -------
    ndarray or torch.Tensor
        Probabilities, with exact zeros outside the support.  For torch inputs the
        backward pass is the true Jacobian-vector product: on the support ``S``,
        ``grad_x = g - mean_S(g)``, and 0 off it.

    Notes
    -----
    Shift invariant like softmax, but not smooth: the Jacobian jumps when an entry
    enters the support.  ``-inf`` entries get exactly 0 (as if the input were
    truncated); a slice with no finite entry gives zeros; NaN makes its slice NaN;
    ``+inf`` entries share the mass evenly.  Explained in Chapter 7.

    References
    ----------
    A. F. T. Martins and R. F. Astudillo, "From softmax to sparsemax: a sparse model of
    attention and multi-label classification", ICML 2016.  arXiv:1602.02068

    Examples
    --------
    >>> sparsemax([1.0, 0.5, -1.0])
    array([0.75, 0.25, 0.  ])
    """
    return _apply_last_axis(
        x, axis, _sparsemax_forward, lambda t: _autograd_functions()["sparsemax"].apply(t)
    )


def entmax15(x, axis=-1):
    r"""1.5-entmax: the Tsallis-entropy projection with :math:`\alpha = 1.5`, exact.

    .. math::

        \operatorname{entmax}_{1.5}(x) = \operatorname*{arg\,max}_{p \in \Delta^{K-1}}
            \langle p, x \rangle + \mathsf{H}^{T}_{1.5}(p)
        = \big[x/2 - \tau\big]_+^2,
        \qquad \mathsf{H}^{T}_{\alpha}(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)}.

    On a support of size :math:`k` the condition :math:`\sum_i (x_{(i)}/2 - \tau)^2 = 1`
    is a quadratic in :math:`\tau`; after one sort the candidate thresholds for every
    :math:`k` come from running sums, and the support is the largest :math:`k` whose
    threshold lies below :math:`x_{(k)}/2` (Peters et al., 2019, Algorithm 2).

    Parameters and edge rules are those of :func:`sparsemax`.  The torch backward is
    the true gradient: with :math:`s = \sqrt{p}`,
    :math:`\nabla_x = s \odot g - s \,\langle s, g\rangle / \sum_i s_i`.

    References
    ----------
    B. Peters, V. Niculae and A. F. T. Martins, "Sparse sequence-to-sequence models",
    ACL 2019.  doi:10.18653/v1/P19-1146

    Examples
    --------
    >>> entmax15([2.0, 1.0, -2.0]).round(4)
    array([0.8307, 0.1693, 0.    ])
    """
    return _apply_last_axis(
        x, axis, _entmax15_forward, lambda t: _autograd_functions()["entmax15"].apply(t)
    )


def _check_alpha(alpha) -> float:
    # alpha = 1 is softmax; the Tsallis family here needs alpha > 1
    return check_real_scalar(alpha, "alpha", above=1.0, expected="a real number > 1")


def entmax_bisect(x, alpha=1.5, axis=-1, *, n_iter=50):
    r"""alpha-entmax for any :math:`\alpha > 1`, by bisection on the threshold.

    .. math::

        \operatorname{entmax}_\alpha(x) = \operatorname*{arg\,max}_{p \in \Delta^{K-1}}
            \langle p, x \rangle + \mathsf{H}^{T}_{\alpha}(p)
        = \big[(\alpha - 1)x - \tau\big]_+^{1/(\alpha - 1)},

    with :math:`\tau` the root of :math:`\sum_i p_i(\tau) = 1`.  The sum decreases in
    :math:`\tau`, and after shifting :math:`\max_i x_i` to 0 the root lies in
    :math:`[-1, -n^{1-\alpha}]` for :math:`n` finite entries; ``n_iter`` halvings of
    that interval are followed by one renormalisation.  :math:`\alpha \to 1^+` approaches softmax (the
    :math:`q`-exponential tends to ``exp``), with a distance that shrinks in proportion to
    :math:`\alpha - 1` down to :math:`10^{-12}` and below (the bisection runs on
    :math:`\tau + 1`, so rounding does not set a floor), :math:`\alpha = 1.5` is :func:`entmax15`
    and :math:`\alpha = 2` is :func:`sparsemax`.

    Parameters
    ----------
    x : array_like or torch.Tensor
    alpha : float, default 1.5
        Tsallis index, finite and > 1 (``ValueError`` otherwise).
    axis : int, tuple of ints or None, default -1
    n_iter : int, default 50
        Bisection steps; the threshold's bracket shrinks by :math:`2^{-n}`.

    Returns
    -------
    ndarray or torch.Tensor
        Edge rules as :func:`sparsemax`.  Torch backward: the true gradient
        :math:`s \odot g - s\,\langle s, g\rangle/\sum_i s_i` with
        :math:`s = p^{2-\alpha}` on the support (implicit differentiation; it does not
        backpropagate through the iterations).

    References
    ----------
    B. Peters, V. Niculae and A. F. T. Martins, "Sparse sequence-to-sequence models",
    ACL 2019.  C. Tsallis, "Possible generalization of Boltzmann-Gibbs statistics",
    J. Stat. Phys. 52 (1988).  doi:10.1007/BF01016429
    """
    alpha = _check_alpha(alpha)
    n_iter = check_positive_int(n_iter, "n_iter")
    return _apply_last_axis(
        x,
        axis,
        lambda a: _entmax_bisect_forward(a, alpha, n_iter),
        lambda t: _autograd_functions()["bisect"].apply(t, alpha, n_iter),
    )


# --------------------------------------------------------------------------------------
# Gumbel-softmax
# --------------------------------------------------------------------------------------


def _gumbel_noise(work, rng):
    """Standard Gumbel noise shaped like ``work`` (numpy array or tensor), from ``rng``."""
    if rng is not None and not (
        isinstance(rng, (numbers.Integral, np.random.Generator)) or type(rng).__name__ == "Generator"
    ):
        raise TypeError(
            "rng must be None, an int seed, a numpy.random.Generator or a torch.Generator, "
            f"got {type(rng).__name__}"
        )
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError("rng must be None, an int seed or a generator, got bool")
    if isinstance(rng, numbers.Integral) and rng < 0:
        raise ValueError(f"rng must be a non-negative int seed (or None, or a generator), got {rng}")
    if is_torch(work):
        import torch

        if isinstance(rng, np.random.Generator):
            noise = torch.from_numpy(rng.gumbel(size=tuple(work.shape)))
            return noise.to(device=work.device, dtype=work.dtype)
        if isinstance(rng, numbers.Integral):
            rng = torch.Generator().manual_seed(int(rng))
        device = rng.device if rng is not None else work.device
        # -log(E) with E ~ Exp(1) is standard Gumbel; clamp guards log(0).
        exponential = torch.empty(work.shape, dtype=work.dtype, device=device)
        exponential.exponential_(generator=rng)
        noise = -exponential.clamp_min(torch.finfo(work.dtype).tiny).log()
        return noise.to(work.device)
    if type(rng).__name__ == "Generator" and not isinstance(rng, np.random.Generator):
        import torch

        exponential = torch.empty(work.shape, dtype=torch.float64).exponential_(generator=rng)
        noise = -exponential.clamp_min(np.finfo(np.float64).tiny).log()
        return noise.numpy().astype(work.dtype)
    generator = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    return generator.gumbel(size=work.shape).astype(work.dtype, copy=False)


def gumbel_softmax(logits, temperature=1.0, *, hard=False, axis=-1, rng=None):
    r"""A relaxed sample from ``softmax(logits)``: softmax of Gumbel-perturbed logits.

    .. math::

        y = \operatorname{softmax}\big((x + g) / T\big), \qquad g_i = -\log(-\log U_i),
        \; U_i \sim \mathcal U(0, 1) \text{ i.i.d.}

    As :math:`T \to 0`, :math:`y` tends to the one-hot vector of
    :math:`\operatorname{argmax}_i (x_i + g_i)`, which is an exact sample of
    :math:`\operatorname{softmax}(x)` (the Gumbel-max trick).

    Parameters
    ----------
    logits : array_like or torch.Tensor
    temperature : float, default 1.0
        ``T > 0`` of the relaxation.
    hard : bool, default False
        Return the one-hot ``argmax`` instead.  For torch the gradient is the relaxed
        one (straight-through estimator, Bengio et al. 2013): the forward value is
        exactly one-hot, the backward pass is that of ``y``.
    axis : int, tuple of ints or None, default -1
    rng : None, int, numpy.random.Generator or torch.Generator
        Source of the noise.  An int seeds a fresh generator (numpy's for array
        input, torch's CPU generator for tensors), so the same seed gives the same
        sample.  ``None`` uses fresh entropy (numpy) or torch's global generator.

    Returns
    -------
    ndarray or torch.Tensor
        Same shape as ``logits``.  ``-inf`` logits are never sampled (probability 0);
        a slice with no finite logit gives zeros (also with ``hard=True``); NaN makes
        the slice NaN.

    References
    ----------
    E. Jang, S. Gu and B. Poole, "Categorical reparameterization with Gumbel-softmax",
    ICLR 2017.  C. J. Maddison, A. Mnih and Y. W. Teh, "The Concrete distribution",
    ICLR 2017.  Explained in Chapter 7 (the Gumbel-max trick in Chapter 6).
    """
    temperature = check_temperature(temperature)
    if not isinstance(hard, (bool, np.bool_)):
        raise TypeError(f"hard must be a bool, got {type(hard).__name__}")
    work, out_dtype = as_float_array(logits, "logits")
    noise = _gumbel_noise(work, rng)
    if is_torch(work):
        noise = noise.detach()
    y = softmax(work + noise, axis=axis, temperature=temperature)
    if not hard:
        return to_output(y, out_dtype)
    one_hot = _apply_last_axis(y, axis, _hard_one_hot, _hard_one_hot)
    if is_torch(y):
        one_hot = one_hot.detach() + (y - y.detach())  # value exactly one-hot; gradient of y
    return to_output(one_hot, out_dtype)


def _hard_one_hot(y):
    """One-hot of the argmax along the last axis; zeros for all-zero slices, NaN kept."""
    if is_torch(y):
        import torch

        y = y.detach()
        index = y.argmax(-1, keepdim=True)
        out = torch.zeros_like(y).scatter_(-1, index, 1.0)
        out = torch.where(y.sum(-1, keepdim=True) > 0, out, torch.zeros_like(out))
        return torch.where(torch.isnan(y), torch.full_like(y, math.nan), out)
    index = np.argmax(np.where(np.isnan(y), -np.inf, y), axis=-1)[..., None]
    out = np.zeros_like(y)
    np.put_along_axis(out, index, 1.0, axis=-1)
    out = np.where(np.sum(y, axis=-1, keepdims=True) > 0, out, 0.0)
    return np.where(np.isnan(y), np.nan, out).astype(y.dtype)
