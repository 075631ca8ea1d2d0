"""Input handling shared by every module: one place for the conventions of API.md.

Array in, same kind out: a ``torch.Tensor`` stays a tensor (same device, autograd
intact); anything else goes through ``numpy.asarray``.  Half-precision inputs are
computed in float32 and rounded once; integers and booleans are promoted.  Bad
input raises ``TypeError`` or ``ValueError`` naming the argument.

torch is optional: it is imported only when the caller already passed a tensor.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any

import numpy as np

__all__ = [
    "is_torch",
    "as_float_array",
    "check_real_scalar",
    "check_temperature",
    "check_positive_int",
    "as_bool_mask",
    "prepare_where",
    "normalize_numpy_axis",
    "check_torch_dim",
    "to_output",
    "numpy_result",
]


def is_torch(x: Any) -> bool:
    """True when ``x`` is a ``torch.Tensor`` (without importing torch otherwise)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


_NUMPY_HALF = (np.dtype(np.float16),)


def as_float_array(x: Any, name: str = "x"):
    """Return ``(work, out_dtype)``: ``x`` as a floating array to compute in.

    ``work`` is float32 for half-precision input (float16; bfloat16 for torch),
    float64 (numpy) or torch's default dtype for integer and bool input, and the
    input's own dtype otherwise.  ``out_dtype`` is the dtype of the result.
    """
    if is_torch(x):
        import torch

        if x.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {x.dtype}")
        if x.is_floating_point():
            if x.dtype in (torch.float16, torch.bfloat16):
                return x.float(), x.dtype
            if x.dtype.itemsize == 1:  # float8 formats: compute in float32 too
                return x.float(), x.dtype
            return x, x.dtype
        default = torch.get_default_dtype()
        return x.to(default), default
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists and the like
        raise TypeError(f"{name} must be array-like of real numbers: {err}") from None
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype in _NUMPY_HALF:
            return arr.astype(np.float32), arr.dtype
        return arr, arr.dtype
    if kind in "biu":
        return arr.astype(np.float64), np.dtype(np.float64)
    raise TypeError(
        f"{name} must hold real numbers (bool, integer or floating dtype), "
        f"got an array of dtype {arr.dtype}"
    )


def check_real_scalar(value: Any, name: str, *, above: float | None = None, expected: str = "a real number") -> float:
    """A finite real scalar (0-d arrays and tensors unwrapped) as a Python float.

    ``TypeError`` for non-numbers (bools refused); ``ValueError`` for non-finite
    values, or values ``<= above`` when ``above`` is given.  Messages name ``name``.
    """
    if is_torch(value) or isinstance(value, np.ndarray):
        if value.ndim != 0 and getattr(value, "numel", lambda: value.size)() != 1:
            raise TypeError(f"{name} must be a real scalar, got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (above is not None and value <= above):
        bound = "" if above is None else f" and > {above:g}"
        raise ValueError(f"{name} must be finite{bound}, got {value!r}")
    return value


def check_temperature(temperature: Any, name: str = "temperature") -> float:
    """A finite, strictly positive real number, returned as a Python float."""
    if type(temperature) is float and 0.0 < temperature < math.inf:  # the common case, fast
        return temperature
    return check_real_scalar(temperature, name, above=0.0)


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def as_bool_mask(mask: Any, like, name: str = "where", meaning: str = ""):
    """``mask`` as a boolean array of the same kind (and device) as ``like``.

    ``TypeError`` naming ``name`` for a non-boolean mask; ``meaning`` is added to
    the message (e.g. ``" (True = may attend)"``).
    """
    if is_torch(like):
        import torch

        if not is_torch(mask):
            arr = np.asarray(mask)
            if arr.dtype.kind != "b":
                raise TypeError(f"{name} must be a boolean mask{meaning}, got dtype {arr.dtype}")
            mask = torch.from_numpy(arr)
        if mask.dtype != torch.bool:
            raise TypeError(f"{name} must be a boolean mask{meaning}, got dtype {mask.dtype}")
        return mask.to(like.device)
    if is_torch(mask):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype.kind != "b":
        raise TypeError(f"{name} must be a boolean mask{meaning}, got dtype {mask.dtype}")
    return mask


def prepare_where(where: Any, x, name: str = "where"):
    """Broadcast a boolean mask to ``x``'s shape (numpy or torch, matching ``x``)."""
    if where is None:
        return None
    mask = as_bool_mask(where, x, name)
    try:
        if is_torch(x):
            import torch

            return torch.broadcast_to(mask, x.shape)
        return np.broadcast_to(mask, x.shape)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to x's shape {tuple(x.shape)}"
        ) from None


def normalize_numpy_axis(axis: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """``axis`` (int, tuple of ints or None) as a sorted tuple of non-negative ints.

    Raises ``numpy.exceptions.AxisError`` for an axis out of range, as NumPy does.
    """
    from numpy.lib.array_utils import normalize_axis_tuple

    if type(axis) is int and -ndim <= axis < ndim:  # the common case, fast
        return (axis % ndim,)
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, a tuple of ints or None, got bool")
    if isinstance(axis, numbers.Integral):
        axis = (int(axis),)
    if not isinstance(axis, tuple) or not all(
        isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_)) for a in axis
    ):
        raise TypeError(f"{name} must be an int, a tuple of ints or None, got {axis!r}")
    return tuple(sorted(normalize_axis_tuple(axis, ndim, argname=name)))


def check_torch_dim(axis: Any, ndim: int, name: str = "axis") -> int:
    """A single int axis for torch tensors, normalised; ``IndexError`` when out of range."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int for torch tensors, got {axis!r}")
    axis = int(axis)
    size = max(ndim, 1)
    if not -size <= axis < size:
        raise IndexError(
            f"{name}={axis} is out of range for a tensor with {ndim} dimension(s) "
            f"(expected in [{-size}, {size - 1}])"
        )
    return axis % size


def numpy_result(arr: np.ndarray):
    """A 0-d result becomes a NumPy scalar, as NumPy's own reductions do."""
    if isinstance(arr, np.ndarray) and arr.ndim == 0:
        return arr[()]
    return arr


def to_output(result, out_dtype):
    """Round once to the output dtype; 0-d numpy results become NumPy scalars."""
    if is_torch(result):
        return result if result.dtype == out_dtype else result.to(out_dtype)
    if result.dtype != out_dtype:
        with np.errstate(over="ignore"):  # beyond the dtype's range: +-inf is the rounding
            result = result.astype(out_dtype)
    return numpy_result(result)
