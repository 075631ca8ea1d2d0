r"""Attention: softmax over similarity scores, used as soft look-up (Chapter 5).

A query asks a question, every key answers with a score, softmax turns the scores
into weights, and the output is the weighted average of the values:

.. math::

    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\big(s\, Q K^\top\big) V,
    \qquad s = 1/\sqrt{d}.

This module holds the reference (NumPy and torch) implementation the book uses:
:func:`scaled_dot_product_attention` with boolean and causal masks,
:func:`multi_head_attention`, the Nadaraya-Watson kernel regressor that attention
generalises (:func:`nadaraya_watson`, :func:`kernel_regression_as_attention`), and
helpers that count and measure the memory of the ``L x L`` score matrix, the cost
that FlashAttention (Chapter 10) removes.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any, Callable

import numpy as np

from ._array import (
    as_bool_mask,
    as_float_array,
    check_positive_int,
    check_real_scalar,
    check_temperature,
    is_torch,
    to_output,
)
from .core import softmax

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "multi_head_attention",
    "nadaraya_watson",
    "kernel_regression_as_attention",
    "score_matrix_bytes",
    "peak_allocated_bytes",
]


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------


def _as_matching_arrays(named: dict[str, Any]):
    """Floating arrays of one kind and one dtype; returns ``(arrays, out_dtype)``.

    When any input is a tensor every input becomes a tensor on its device (numpy
    arrays are converted); otherwise everything is numpy.
    """
    works, out_dtypes = {}, []
    for name, value in named.items():
        work, out_dtype = as_float_array(value, name)
        works[name] = work
        out_dtypes.append(out_dtype)
    tensors = [w for w in works.values() if is_torch(w)]
    if tensors:
        import torch

        device = tensors[0].device
        out_dtype = out_dtypes[0]
        for dt in out_dtypes[1:]:
            out_dtype = torch.promote_types(out_dtype, dt if isinstance(dt, torch.dtype) else _torch_dtype(dt))
        work_dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
        works = {n: torch.as_tensor(w, device=device).to(work_dtype) for n, w in works.items()}
        return works, out_dtype
    out_dtype = np.result_type(*out_dtypes)
    work_dtype = np.float32 if out_dtype == np.float16 else out_dtype
    works = {n: w.astype(work_dtype, copy=False) for n, w in works.items()}
    return works, out_dtype


def _torch_dtype(np_dtype):
    import torch

    return {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}.get(
        np.dtype(np_dtype), torch.float64
    )


def _check_scale(scale: Any, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d) if d > 0 else 1.0
    return check_real_scalar(scale, "scale", expected="a real number or None")


def _check_mask(mask: Any, like):
    """``mask`` as a boolean array of the same kind (and device) as ``like``."""
    if mask is None:
        return None
    return as_bool_mask(mask, like, "mask", " (True = may attend)")


def causal_mask(lq: int, lk: int | None = None, *, like=None):
    """Boolean ``(lq, lk)`` mask, ``True`` where key ``j <= i`` (query ``i``).

    Top-left aligned, as ``torch.nn.functional.scaled_dot_product_attention(...,
    is_causal=True)``: query 0 sees key 0 whatever ``lk`` is.  A tensor on
    ``like``'s device when ``like`` is a tensor, an ndarray otherwise.
    """
    lk = lq if lk is None else lk
    if is_torch(like):
        import torch

        return torch.ones(lq, lk, dtype=torch.bool, device=like.device).tril()
    return np.tri(lq, lk, dtype=bool)


# --------------------------------------------------------------------------------------
# Scaled dot-product attention
# --------------------------------------------------------------------------------------


def scaled_dot_product_attention(q, k, v, *, mask=None, causal=False, scale=None, return_weights=False):
    r"""Scaled dot-product attention, :math:`\operatorname{softmax}(s\,QK^\top)V`.

    .. math::

        o_i = \sum_j w_{ij} v_j, \qquad
        w_{ij} = \frac{m_{ij}\, e^{s\, q_i \cdot k_j}}{\sum_l m_{il}\, e^{s\, q_i \cdot k_l}},
        \qquad s = \frac{1}{\sqrt{d}}

    with :math:`m_{ij} \in \{0, 1\}` the mask.  The factor :math:`1/\sqrt{d}` keeps
    the variance of the scores near 1 when the entries of ``q`` and ``k`` have unit
    variance, so that softmax does not saturate as ``d`` grows (Chapter 5).

    Parameters
    ----------
    q : array_like or torch.Tensor, shape ``(..., Lq, d)``
    k : array_like or torch.Tensor, shape ``(..., Lk, d)``
    v : array_like or torch.Tensor, shape ``(..., Lk, dv)``
        Leading (batch, head) dimensions broadcast against each other.
    mask : bool array_like, optional
        Broadcastable to ``(..., Lq, Lk)``; ``True`` means the query may attend to
        the key.  Non-boolean masks raise ``TypeError``.
    causal : bool, default False
        Query ``i`` sees keys ``j <= i`` (top-left aligned, as torch, also when
        ``Lq != Lk``).  Combined with ``mask`` by logical AND.
    scale : float, optional
        Multiplies the scores; defaults to ``1/sqrt(d)``.
    return_weights : bool, default False
        Also return the attention weights, shape ``(..., Lq, Lk)``.

    Returns
    -------
    output : ndarray or torch.Tensor, shape ``(..., Lq, dv)``
    weights : ndarray or torch.Tensor, shape ``(..., Lq, Lk)``, only with ``return_weights``

    Notes
    -----
    A query that may attend to no key at all (a fully masked row) gets zero weights
    and a zero output row, not NaN: the normalisation is
    :func:`softmax_lib.core.softmax` with ``where=mask``, which leaves an empty row
    at zero (and its gradient finite).  Agrees with
    ``torch.nn.functional.scaled_dot_product_attention`` wherever that is finite.
    The ``(..., Lq, Lk)`` score matrix is materialised: memory grows like ``L^2``
    (see :func:`score_matrix_bytes`; Chapter 10 avoids it).

    References
    ----------
    A. Vaswani et al., "Attention is all you need", NeurIPS 2017. arXiv:1706.03762
    """
    arrays, out_dtype = _as_matching_arrays({"q": q, "k": k, "v": v})
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., L, d), got shape {tuple(x.shape)}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have the feature size of q: q has d={q.shape[-1]}, k has d={k.shape[-1]}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have one row per key: k has Lk={k.shape[-2]}, v has {v.shape[-2]} rows")
    try:
        np.broadcast_shapes(tuple(q.shape[:-2]), tuple(k.shape[:-2]), tuple(v.shape[:-2]))
    except ValueError:
        raise ValueError(
            f"the batch dimensions of q, k and v do not broadcast: q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        ) from None
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    lq, lk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = _check_scale(scale, d)

    scores = (q @ k.swapaxes(-1, -2)) * scale  # (..., Lq, Lk)
    allowed = _check_mask(mask, scores)
    if causal:
        tri = causal_mask(lq, lk, like=scores)
        allowed = tri if allowed is None else allowed & tri
    if allowed is not None:
        try:
            shape = np.broadcast_shapes(tuple(scores.shape), tuple(allowed.shape))
        except ValueError:
            shape = None
        if shape is None or shape[-2:] != (lq, lk):
            raise ValueError(
                f"mask of shape {tuple(allowed.shape)} does not broadcast to the scores' shape "
                f"(..., Lq, Lk) = {tuple(scores.shape)}"
            )
        if tuple(scores.shape) != shape:
            scores = scores.expand(shape) if is_torch(scores) else np.broadcast_to(scores, shape)
    weights = softmax(scores, axis=-1, where=allowed)  # (..., Lq, Lk); empty rows are 0
    output = weights @ v  # (..., Lq, dv)
    if return_weights:
        return to_output(output, out_dtype), to_output(weights, out_dtype)
    return to_output(output, out_dtype)


# --------------------------------------------------------------------------------------
# Multi-head attention
# --------------------------------------------------------------------------------------


def multi_head_attention(
    x, w_q, w_k, w_v, w_o, n_heads, *, context=None, mask=None, causal=False, return_weights=False
):
    r"""Multi-head attention, functional form (no biases), as in Vaswani et al. (2017).

    .. math::

        \operatorname{head}_h = \operatorname{Attention}(X W_Q^{(h)}, C W_K^{(h)}, C W_V^{(h)}),
        \qquad \operatorname{MHA}(X) = [\operatorname{head}_1, \dots, \operatorname{head}_H] W_O

    where :math:`W_Q^{(h)}` is the ``h``-th block of ``d_model / H`` columns of
    ``w_q`` and :math:`C` is ``context`` (``x`` itself for self-attention).
    Projections multiply on the right (``x @ w_q``); for ``torch.nn.MultiheadAttention``
    the weights are the transposes (``in_proj_weight = cat(w_q.T, w_k.T, w_v.T)``).

    Parameters
    ----------
    x : shape ``(..., Lq, d_model)``
    w_q, w_k, w_v : shape ``(d_model, d_model)``
    w_o : shape ``(d_model, d_out)``
    n_heads : int, divides ``d_model``
    context : shape ``(..., Lk, d_model)``, optional (cross-attention); default ``x``
    mask, causal : as in :func:`scaled_dot_product_attention`; ``mask`` broadcasts to
        ``(..., H, Lq, Lk)``
    return_weights : bool
        Also return the per-head weights ``(..., H, Lq, Lk)``.

    Chapter 5 draws the attention maps of each head.
    """
    n_heads = check_positive_int(n_heads, "n_heads")
    context = x if context is None else context
    arrays, out_dtype = _as_matching_arrays(
        {"x": x, "context": context, "w_q": w_q, "w_k": w_k, "w_v": w_v, "w_o": w_o}
    )
    x, context = arrays["x"], arrays["context"]
    d_model = x.shape[-1]
    if d_model % n_heads:
        raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
    if context.shape[-1] != d_model:
        raise ValueError(f"context must have d_model={d_model} features, got shape {tuple(context.shape)}")
    for name in ("w_q", "w_k", "w_v"):
        if tuple(arrays[name].shape) != (d_model, d_model):
            raise ValueError(f"{name} must have shape ({d_model}, {d_model}), got {tuple(arrays[name].shape)}")
    if arrays["w_o"].ndim != 2 or arrays["w_o"].shape[0] != d_model:
        raise ValueError(f"w_o must have shape ({d_model}, d_out), got {tuple(arrays['w_o'].shape)}")
    d_head = d_model // n_heads

    def split_heads(t):  # (..., L, d_model) -> (..., H, L, d_head)
        t = t.reshape(*t.shape[:-1], n_heads, d_head)
        return t.swapaxes(-2, -3)

    q = split_heads(x @ arrays["w_q"])  # (..., H, Lq, d_head)
    k = split_heads(context @ arrays["w_k"])  # (..., H, Lk, d_head)
    v = split_heads(context @ arrays["w_v"])  # (..., H, Lk, d_head)
    heads, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, return_weights=True)
    heads = heads.swapaxes(-2, -3)  # (..., Lq, H, d_head)
    merged = heads.reshape(*heads.shape[:-2], d_model)  # (..., Lq, d_model)
    output = merged @ arrays["w_o"]  # (..., Lq, d_out)
    if return_weights:
        return to_output(output, out_dtype), to_output(weights, out_dtype)
    return to_output(output, out_dtype)


# --------------------------------------------------------------------------------------
# Nadaraya-Watson kernel regression: attention before attention
# --------------------------------------------------------------------------------------


def _as_points(x, name: str):
    """Points as a 2-D array ``(n, p)``: a 1-D input is ``n`` points in one dimension."""
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n,) or (n, p), got {tuple(x.shape)}")
    return x


def nadaraya_watson(x_query, x_train, y_train, bandwidth, *, return_weights=False):
    r"""Nadaraya-Watson kernel regression with a Gaussian kernel.

    .. math::

        \hat y(x) = \sum_i w_i(x)\, y_i, \qquad
        w_i(x) = \frac{\exp(-\lVert x - x_i\rVert^2 / 2h^2)}
                      {\sum_j \exp(-\lVert x - x_j\rVert^2 / 2h^2)}
               = \operatorname{softmax}_i\Big(-\frac{\lVert x - x_i\rVert^2}{2h^2}\Big).

    The weights are a softmax over (negative, scaled) squared distances: this is
    attention with query ``x``, keys ``x_i`` and values ``y_i``, and no learned
    parameters (Chapter 5; :func:`kernel_regression_as_attention` gives the
    equivalent dot-product form).

    Parameters
    ----------
    x_query : shape ``(m,)`` or ``(m, p)``
    x_train : shape ``(n,)`` or ``(n, p)``
    y_train : shape ``(n,)`` or ``(n, dy)``
    bandwidth : float > 0
        The kernel width ``h``.

    Returns
    -------
    prediction : shape ``(m,)`` or ``(m, dy)`` (as ``y_train``)
    weights : shape ``(m, n)``, only with ``return_weights``

    Notes
    -----
    Computed through softmax, so no weight underflows to a 0/0 even when every
    training point is many bandwidths away from the query.

    References
    ----------
    E. A. Nadaraya, "On estimating regression", Theory Probab. Appl. 9 (1964).
    G. S. Watson, "Smooth regression analysis", Sankhya A 26 (1964).
    """
    h = check_temperature(bandwidth, "bandwidth")
    arrays, out_dtype = _as_matching_arrays({"x_query": x_query, "x_train": x_train, "y_train": y_train})
    xq = _as_points(arrays["x_query"], "x_query")  # (m, p)
    xt = _as_points(arrays["x_train"], "x_train")  # (n, p)
    y = arrays["y_train"]
    if xq.shape[1] != xt.shape[1]:
        raise ValueError(f"x_query has {xq.shape[1]} features but x_train has {xt.shape[1]}")
    if y.ndim not in (1, 2) or y.shape[0] != xt.shape[0]:
        raise ValueError(f"y_train must have shape (n,) or (n, dy) with n={xt.shape[0]}, got {tuple(y.shape)}")
    diff = xq[:, None, :] - xt[None, :, :]  # (m, n, p)
    scores = -(diff**2).sum(-1) / (2.0 * h * h)  # (m, n)
    weights = softmax(scores, axis=-1)
    prediction = weights @ y
    if return_weights:
        return to_output(prediction, out_dtype), to_output(weights, out_dtype)
    return to_output(prediction, out_dtype)


def kernel_regression_as_attention(x_query, x_train, bandwidth):
    r"""Queries, keys and scale that make dot-product attention a Gaussian-kernel regressor.

    Expanding the square,
    :math:`-\lVert x - x_i\rVert^2/2h^2 = (x\cdot x_i - \lVert x_i\rVert^2/2)/h^2 - \lVert x\rVert^2/2h^2`.
    The last term is the same for every key, and softmax ignores constant shifts, so
    with the augmented vectors :math:`q = [x, 1]` and
    :math:`k_i = [x_i, -\lVert x_i\rVert^2/2]` and scale :math:`1/h^2`,
    ``scaled_dot_product_attention(q, k, y_train, scale=scale)`` equals
    ``nadaraya_watson(x_query, x_train, y_train, bandwidth)`` (to rounding).

    Returns ``(q, k, scale)`` with ``q`` of shape ``(m, p + 1)`` and ``k`` of shape
    ``(n, p + 1)``.  (Expanding the square loses digits when the points are far from
    the origin compared with ``h``; :func:`nadaraya_watson` itself does not.)
    """
    h = check_temperature(bandwidth, "bandwidth")
    arrays, _ = _as_matching_arrays({"x_query": x_query, "x_train": x_train})
    xq = _as_points(arrays["x_query"], "x_query")
    xt = _as_points(arrays["x_train"], "x_train")
    if is_torch(xq):
        import torch

        q = torch.cat([xq, torch.ones_like(xq[:, :1])], dim=1)
        k = torch.cat([xt, -0.5 * (xt**2).sum(1, keepdim=True)], dim=1)
    else:
        q = np.concatenate([xq, np.ones_like(xq[:, :1])], axis=1)
        k = np.concatenate([xt, -0.5 * (xt**2).sum(1, keepdims=True)], axis=1)
    return q, k, 1.0 / (h * h)


# --------------------------------------------------------------------------------------
# The memory of the score matrix
# --------------------------------------------------------------------------------------


def score_matrix_bytes(batch, heads, lq, lk=None, dtype=np.float32) -> int:
    r"""Bytes of the ``(B, H, Lq, Lk)`` score (or weight) matrix: :math:`B H L_q L_k \cdot` itemsize.

    ``dtype`` is a NumPy or torch dtype (or a name NumPy understands).  With
    ``B = 1``, ``H = 32``, ``L = 32768`` in bfloat16 that is 64 GiB for one layer's
    scores: the quadratic cost that FlashAttention (Chapter 10) never stores.
    """
    batch = check_positive_int(batch, "batch")
    heads = check_positive_int(heads, "heads")
    lq = check_positive_int(lq, "lq")
    lk = lq if lk is None else check_positive_int(lk, "lk")
    itemsize = getattr(dtype, "itemsize", None)
    if not isinstance(itemsize, int):
        itemsize = np.dtype(dtype).itemsize
    return batch * heads * lq * lk * itemsize


def peak_allocated_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated (and tracked by ``tracemalloc``) while ``fn()`` runs.

    NumPy reports its array buffers to ``tracemalloc``, so for NumPy code this
    measures the arrays a computation creates (Chapter 5 compares it with
    :func:`score_matrix_bytes`).  The result of ``fn`` is dropped before the
    measurement ends only if ``fn`` does not return it; return ``None`` to count
    temporaries alone.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.clear_traces()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak - base
