"""Floating-point formats and where ``exp`` leaves them (Chapter 2).

``overflow_threshold`` and ``underflow_threshold`` are part of ``softmax_lib.core``'s
public API (re-exported there and at the top level); they live here because they
are about number formats, not about softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FloatFormat", "float_format", "overflow_threshold", "underflow_threshold"]



@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: ``significand_bits`` counts the hidden bit.

    Normal numbers are ``1.f * 2^e`` with ``min_exponent <= e <= max_exponent``;
    subnormals extend below ``2^min_exponent`` in steps of
    ``2^(min_exponent - significand_bits + 1)``.
    """

    name: str
    significand_bits: int
    min_exponent: int
    max_exponent: int

    @property
    def largest(self) -> float:
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.significand_bits), self.max_exponent)

    @property
    def smallest_subnormal(self) -> float:
        return math.ldexp(1.0, self.min_exponent - self.significand_bits + 1)

    @property
    def eps(self) -> float:
        return math.ldexp(1.0, 1 - self.significand_bits)


_FORMATS = {
    "float64": FloatFormat("float64", 53, -1022, 1023),
    "float32": FloatFormat("float32", 24, -126, 127),
    "bfloat16": FloatFormat("bfloat16", 8, -126, 127),
    "float16": FloatFormat("float16", 11, -14, 15),
    # OCP fp8 E5M2 has infinities like IEEE formats; E4M3 (no inf) saturates instead.
    "float8_e5m2": FloatFormat("float8_e5m2", 3, -14, 15),
}


def float_format(dtype) -> FloatFormat:
    """The :class:`FloatFormat` of a NumPy or torch floating dtype (or its name)."""
    if isinstance(dtype, FloatFormat):
        return dtype
    name = None
    if dtype is None:  # NumPy reads None as float64 (deprecated in np.finfo): say so instead
        raise TypeError("dtype must be a floating dtype, got None")
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
    elif type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be a floating dtype, got {dtype!r}") from None
        name = np_dtype.name
    if name in ("half",):
        name = "float16"
    if name in ("float", "double"):
        name = {"float": "float32", "double": "float64"}[name]
    if name not in _FORMATS:
        raise TypeError(
            f"dtype must be one of {', '.join(_FORMATS)} (a NumPy or torch dtype or its name), got {dtype!r}"
        )
    return _FORMATS[name]


def overflow_threshold(dtype) -> float:
    r"""The real number above which ``exp(x)`` rounds to ``+inf`` in ``dtype``.

    Round-to-nearest sends a value to infinity once it reaches the largest finite
    number plus half an ulp, :math:`2^{e_{max}+1}(1 - 2^{-p-1})` for ``p``
    significand bits, so the threshold is

    .. math::

        x_{over} = (e_{max} + 1)\ln 2 + \operatorname{log1p}(-2^{-p-1}),

    a little above ``log(largest finite value)``: about 709.78 in float64, 88.72 in
    float32 and bfloat16's 88.72 too (same exponent range), 11.09 in float16.
    """
    fmt = float_format(dtype)
    return (fmt.max_exponent + 1) * math.log(2.0) + math.log1p(-math.ldexp(1.0, -fmt.significand_bits - 1))


def underflow_threshold(dtype) -> float:
    r"""The real number below which ``exp(x)`` rounds to zero in ``dtype``.

    Subnormals count: the smallest positive value is
    :math:`s = 2^{e_{min} - p + 1}`, and anything at or below ``s / 2`` rounds to
    zero (ties go to the even neighbour, 0), so

    .. math::

        x_{under} = \ln(s/2) = (e_{min} - p)\ln 2,

    about -745.13 in float64, -103.97 in float32, -92.88 in bfloat16 and -17.33 in
    float16.
    """
    fmt = float_format(dtype)
    return (fmt.min_exponent - fmt.significand_bits) * math.log(2.0)
