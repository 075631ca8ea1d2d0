r"""Derivatives of softmax and of the cross-entropy loss (Chapter 3).

With :math:`p = \operatorname{softmax}(x / T)` over one axis of length ``K``:

.. math::

    J = \frac{\partial p}{\partial x} = \frac{1}{T}\big(\operatorname{diag}(p) - p p^\top\big),
    \qquad
    J v = \frac{1}{T}\, p \odot \big(v - \langle p, v\rangle \mathbf 1\big).

``J`` is symmetric, so the Jacobian-vector product (JVP) and the vector-Jacobian
product (VJP) are the same O(K) formula; the dense matrix (O(K^2)) is only needed to
look at it.  For the cross-entropy loss :math:`\ell(x, y) = -\sum_k y_k \log p_k`
(``T = 1``) the gradient is :math:`p - y` and the Hessian is
:math:`\operatorname{diag}(p) - p p^\top`, whatever the target.

Every function follows API.md: NumPy-like input gives ndarrays (NumPy scalars for
0-d results), a ``torch.Tensor`` gives a tensor that autograd can differentiate.
``axis`` is a single int here.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._array import (
    as_float_array,
    check_temperature,
    check_torch_dim,
    is_torch,
    normalize_numpy_axis,
    to_output,
)
from .core import log_softmax, softmax

__all__ = [
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_hessian",
    "softmax_regression_loss_and_grad",
]

_REDUCTIONS = ("mean", "sum", "none")


def _single_axis(work, axis, name: str = "axis") -> int:
    """``axis`` as one non-negative int for ``work`` (numpy array or tensor)."""
    if is_torch(work):
        if work.ndim == 0:
            raise ValueError(f"{name}: the input must have at least one dimension (the class axis)")
        return check_torch_dim(axis, work.ndim, name)
    if isinstance(axis, tuple) or axis is None or isinstance(axis, (bool, np.bool_)) or not isinstance(
        axis, numbers.Integral
    ):
        raise TypeError(f"{name} must be a single int here, got {axis!r}")
    if work.ndim == 0:
        raise ValueError(f"{name}: the input must have at least one dimension (the class axis)")
    (axis,) = normalize_numpy_axis(int(axis), work.ndim, name)
    return axis


def _movedim(a, source: int, destination: int):
    if is_torch(a):
        return a.movedim(source, destination)
    return np.moveaxis(a, source, destination)


def _match_kind(value, like, name: str):
    """``value`` as a floating array of ``like``'s kind (numpy/torch) and device.

    Returns ``(work, out_dtype)`` as :func:`as_float_array` does; ``work`` is promoted
    to at least ``like``'s dtype.
    """
    if is_torch(like):
        import torch

        work, out_dtype = as_float_array(value if is_torch(value) else torch.as_tensor(np.asarray(value)), name)
        return work.to(device=like.device, dtype=torch.promote_types(work.dtype, like.dtype)), out_dtype
    if is_torch(value):
        value = value.detach().cpu().numpy()
    work, out_dtype = as_float_array(value, name)
    return work.astype(np.result_type(work.dtype, like.dtype), copy=False), out_dtype


def _promote(a, b):
    """The result dtype of two output dtypes (numpy or torch)."""
    if isinstance(a, np.dtype):
        return np.result_type(a, b)
    import torch

    return torch.promote_types(a, b)


# --------------------------------------------------------------------------------------
# The softmax Jacobian and its products
# --------------------------------------------------------------------------------------


def softmax_jacobian(x, axis=-1, *, temperature=1.0):
    r"""Dense Jacobian of ``softmax(x / T)`` over ``axis``.

    .. math::

        J_{ij} = \frac{\partial p_i}{\partial x_j} = \frac{1}{T}\, p_i(\delta_{ij} - p_j),
        \qquad J = \frac{1}{T}\big(\operatorname{diag}(p) - p p^\top\big).

    Parameters
    ----------
    x : array_like or torch.Tensor
        Logits.
    axis : int, default -1
        The softmax axis, of length ``K``.
    temperature : float, default 1.0

    Returns
    -------
    ndarray or torch.Tensor
        Shape: ``x``'s shape with ``axis`` moved to the end, followed by another axis
        of length ``K`` (``x.shape + (K,)`` for ``axis=-1``).  Symmetric, positive
        semi-definite, rows summing to 0 (``J 1 = 0``, shift invariance), largest
        eigenvalue at most ``1 / (2T)`` (Chapters 3 and 4).

    Notes
    -----
    Costs O(K^2) memory; use :func:`softmax_jvp` to apply it to a vector in O(K).

    References
    ----------
    I. Goodfellow, Y. Bengio, A. Courville, *Deep Learning*, MIT Press, 2016, Sec. 6.2.2.3.
    """
    work, out_dtype = as_float_array(x)
    temperature = check_temperature(temperature)
    axis = _single_axis(work, axis)
    p = _movedim(softmax(work, axis=axis, temperature=temperature), axis, -1)  # (..., K)
    if is_torch(p):
        import torch

        jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (..., K, K)
    else:
        p = np.asarray(p)
        jac = -p[..., :, None] * p[..., None, :]  # (..., K, K)
        diag = np.einsum("...ii->...i", jac)  # a writeable view of the diagonal
        diag += p
    if temperature != 1.0:
        jac = jac / temperature
    return to_output(jac, out_dtype)


def softmax_jvp(x, v, axis=-1, *, temperature=1.0):
    r"""Jacobian-vector product :math:`J v` of ``softmax(x / T)``, in O(K).

    .. math::

        (J v)_i = \frac{1}{T}\, p_i \Big(v_i - \sum_j p_j v_j\Big)

    The dense Jacobian is never formed.  ``v`` (a tangent: a direction in logit
    space) must broadcast to ``x``'s shape; the result has the broadcast shape.
    Because ``J`` is symmetric this is also the vector-Jacobian product
    (:func:`softmax_vjp`), which is what backpropagation through softmax computes.
    """
    work, out_dtype = as_float_array(x)
    temperature = check_temperature(temperature)
    axis = _single_axis(work, axis)
    v, v_dtype = _match_kind(v, work, "v")
    try:
        if is_torch(work):
            import torch

            torch.broadcast_shapes(work.shape, v.shape)
        else:
            np.broadcast_shapes(work.shape, v.shape)
    except (ValueError, RuntimeError):
        raise ValueError(f"v of shape {tuple(v.shape)} does not broadcast to x's shape {tuple(work.shape)}") from None
    p = softmax(work, axis=axis, temperature=temperature)
    if is_torch(p):
        centred = v - (p * v).sum(axis, keepdim=True)
    else:
        centred = v - np.sum(p * v, axis=axis, keepdims=True)
    out = p * centred
    if temperature != 1.0:
        out = out / temperature
    return to_output(out, _promote(out_dtype, v_dtype))


def softmax_vjp(x, u, axis=-1, *, temperature=1.0):
    r"""Vector-Jacobian product :math:`u^\top J` of ``softmax(x / T)``, in O(K).

    :math:`J` is symmetric, so :math:`u^\top J = (J u)^\top`: the same formula as
    :func:`softmax_jvp`.  Given the upstream gradient ``u = dL/dp`` it returns
    ``dL/dx``, the backward pass of a softmax layer.
    """
    return softmax_jvp(x, u, axis=axis, temperature=temperature)


# --------------------------------------------------------------------------------------
# Cross-entropy
# --------------------------------------------------------------------------------------


def _prepare_target(work, target, axis: int):
    """Validate ``target``; return ``("index", t)`` or ``("prob", y)`` in ``work``'s backend."""
    batch_shape = tuple(work.shape[:axis]) + tuple(work.shape[axis + 1 :])
    n_classes = work.shape[axis]
    if is_torch(work):
        import torch

        t = target if is_torch(target) else torch.as_tensor(np.asarray(target))
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"target must hold integer class indices or float probabilities, got dtype {t.dtype}")
        integer = not t.is_floating_point()
    else:
        t = target.detach().cpu().numpy() if is_torch(target) else np.asarray(target)
        if t.dtype.kind not in "iuf":
            raise TypeError(
                f"target must hold integer class indices or float probabilities, got dtype {t.dtype}"
            )
        integer = t.dtype.kind in "iu"
    shape = tuple(t.shape)
    if integer:
        if shape != batch_shape:
            raise ValueError(
                f"target holds class indices, so its shape must be the logits' shape without "
                f"axis {axis}, {batch_shape}; got {shape}"
            )
        if t.numel() if is_torch(t) else t.size:
            low, high = int(t.min()), int(t.max())
            if low < 0 or high >= n_classes:
                raise ValueError(
                    f"target holds class indices that must lie in [0, {n_classes - 1}], "
                    f"got values from {low} to {high}"
                )
        if is_torch(t):
            return "index", t.to(device=work.device, dtype=torch.long)
        return "index", t.astype(np.intp, copy=False)
    if shape == batch_shape:
        raise TypeError(
            f"target has the shape of class indices {batch_shape} but a floating dtype "
            f"({t.dtype}); class indices must be integers (probability targets have the logits' shape)"
        )
    if shape != tuple(work.shape):
        raise ValueError(
            f"target must have shape {batch_shape} (class indices) or {tuple(work.shape)} "
            f"(probabilities), got {shape}"
        )
    y, _ = _match_kind(t, work, "target")
    return "prob", y.to(work.dtype) if is_torch(y) else y.astype(work.dtype, copy=False)


def _one_hot(index, like, axis: int):
    """One-hot encoding of ``index`` along ``axis`` with ``like``'s shape and dtype."""
    if is_torch(like):
        import torch

        y = torch.zeros_like(like).movedim(axis, -1)
        y.scatter_(-1, index.unsqueeze(-1), 1.0)
        return y.movedim(-1, axis)
    y = np.zeros(np.moveaxis(like, axis, -1).shape, dtype=like.dtype)
    np.put_along_axis(y, index[..., None], 1.0, axis=-1)
    return np.moveaxis(y, -1, axis)


def cross_entropy(logits, target, axis=-1, *, reduction="mean"):
    r"""Cross-entropy between ``softmax(logits)`` and a target, as torch computes it.

    .. math::

        \ell(x, y) = -\sum_k y_k \log \operatorname{softmax}(x)_k
                   = \operatorname{LSE}(x) - \langle y, x \rangle
        \quad\text{(for } \textstyle\sum_k y_k = 1\text{)}.

    Minimising its mean over a data set is maximum likelihood for a categorical
    model, and equals minimising :math:`\mathrm{KL}(y \,\|\, p)` up to the entropy
    of ``y`` (Chapter 3).

    Parameters
    ----------
    logits : array_like or torch.Tensor
        Scores with the classes along ``axis``.
    target : array_like or torch.Tensor
        Either integer class indices, shape of ``logits`` without ``axis``, each in
        ``[0, K)``; or probabilities (any floats, e.g. soft or smoothed labels) of
        ``logits``' shape.
    axis : int, default -1
        The class axis (torch's ``cross_entropy`` uses dimension 1).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` averages over every sample (batch position), for both kinds of
        target, like :func:`torch.nn.functional.cross_entropy`.

    Returns
    -------
    NumPy scalar, ndarray or torch.Tensor

    Raises
    ------
    ValueError
        A class index outside ``[0, K)``, a target of the wrong shape, an unknown
        ``reduction``.
    TypeError
        Float targets with the shape of class indices, boolean or complex targets.

    Notes
    -----
    Computed from :func:`~softmax_lib.core.log_softmax`, so logits of any finite
    size give a finite loss.  Zero-probability targets contribute exactly 0.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    work, out_dtype = as_float_array(logits, "logits")
    axis = _single_axis(work, axis)
    kind, t = _prepare_target(work, target, axis)
    logp = log_softmax(work, axis=axis)
    if is_torch(work):
        import torch

        if kind == "index":
            loss = 0.0 - logp.movedim(axis, -1).gather(-1, t.unsqueeze(-1)).squeeze(-1)
        else:
            loss = 0.0 - torch.where(t != 0, t * logp, torch.zeros_like(logp)).sum(axis)
        if reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
        return to_output(loss, out_dtype)
    logp = np.asarray(logp)
    if kind == "index":
        loss = 0.0 - np.take_along_axis(np.moveaxis(logp, axis, -1), t[..., None], axis=-1)[..., 0]
    else:
        with np.errstate(invalid="ignore"):
            loss = 0.0 - np.sum(np.where(t != 0, t * logp, 0.0), axis=axis)
    if reduction == "mean":
        loss = np.asarray(np.mean(loss) if loss.size else np.nan, dtype=loss.dtype)
    elif reduction == "sum":
        loss = np.asarray(np.sum(loss), dtype=loss.dtype)
    return to_output(loss, out_dtype)


def cross_entropy_grad(logits, target, axis=-1):
    r"""Per-sample gradient of :func:`cross_entropy` with respect to the logits.

    .. math::

        \frac{\partial \ell}{\partial x} = \operatorname{softmax}(x) - y

    (for probability targets the general form is :math:`p \sum_k y_k - y`, equal to
    :math:`p - y` when ``y`` sums to 1).  Same shape as ``logits``; no reduction: the
    gradient of the ``"mean"`` loss is this divided by the number of samples.
    Targets are validated as in :func:`cross_entropy`.
    """
    work, out_dtype = as_float_array(logits, "logits")
    axis = _single_axis(work, axis)
    kind, t = _prepare_target(work, target, axis)
    p = softmax(work, axis=axis)
    if kind == "index":
        grad = p - _one_hot(t, p, axis)
    elif is_torch(p):
        grad = p * t.sum(axis, keepdim=True) - t
    else:
        grad = p * np.sum(t, axis=axis, keepdims=True) - t
    return to_output(grad, out_dtype)


def cross_entropy_hessian(logits, axis=-1):
    r"""Per-sample Hessian of :func:`cross_entropy` with respect to the logits.

    .. math::

        \nabla^2_x \ell = \operatorname{diag}(p) - p p^\top, \qquad p = \operatorname{softmax}(x),

    for any target that sums to 1 (it does not depend on the target, so none is
    taken).  It is the softmax Jacobian: positive semi-definite (the loss is convex
    in the logits), with a zero eigenvalue along the all-ones vector, largest
    eigenvalue at most 1/2, and all eigenvalues tending to 0 as ``p`` tends to a
    vertex of the simplex (saturation, Chapter 3).  Shape as in
    :func:`softmax_jacobian`.
    """
    return softmax_jacobian(logits, axis=axis)


# --------------------------------------------------------------------------------------
# Softmax regression
# --------------------------------------------------------------------------------------


def softmax_regression_loss_and_grad(weights, bias, features, labels, *, l2=0.0):
    r"""Loss and gradient of softmax (multinomial logistic) regression.

    With logits :math:`Z = X W + b` (``X`` of shape ``(N, d)``, ``W`` of shape
    ``(d, K)``, ``b`` of shape ``(K,)``) and one-hot labels ``Y``:

    .. math::

        L = \frac1N \sum_n \ell(z_n, y_n) + \frac{\lambda}{2}\lVert W \rVert_F^2, \quad
        \nabla_W L = \frac1N X^\top (P - Y) + \lambda W, \quad
        \nabla_b L = \frac1N \mathbf 1^\top (P - Y),

    the chain rule applied to :func:`cross_entropy_grad` (the bias is not
    regularised).  NumPy arrays only (the book checks it against torch autograd).

    Returns
    -------
    (float, ndarray, ndarray)
        ``(L, dL/dW, dL/db)``.
    """
    features = np.asarray(features, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {features.shape}")
    if weights.ndim != 2 or weights.shape[0] != features.shape[1]:
        raise ValueError(f"weights must have shape ({features.shape[1]}, K), got {weights.shape}")
    if bias.shape != (weights.shape[1],):
        raise ValueError(f"bias must have shape ({weights.shape[1]},), got {bias.shape}")
    l2 = float(l2)
    if not np.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be finite and >= 0, got {l2}")
    logits = features @ weights + bias  # (N, K)
    n = features.shape[0]
    loss = float(cross_entropy(logits, labels)) + 0.5 * l2 * float(np.sum(weights**2))
    g = cross_entropy_grad(logits, labels) / n  # (N, K)
    return loss, features.T @ g + l2 * weights, g.sum(axis=0)
