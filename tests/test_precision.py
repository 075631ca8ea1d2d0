"""softmax_lib.precision: the exact reference, ulp arithmetic and the naive formulas.

Oracles: numpy.spacing / numpy.nextafter (ulp), torch.finfo (bfloat16), scipy.special
(softmax, logsumexp, expit on well-conditioned inputs), closed forms evaluated in mpmath
independently of the library, and torch.log_softmax.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

import softmax_lib as sl
from softmax_lib import precision as P

NUMPY_FLOATS = [np.float64, np.float32, np.float16]


def _neighbours(threshold: float, dtype):
    """The dtype's largest value strictly below ``threshold`` and smallest strictly above."""
    v = dtype(threshold)
    down, up = dtype(-np.inf), dtype(np.inf)
    if float(v) > threshold:
        return np.nextafter(v, down), v
    if float(v) < threshold:
        return v, np.nextafter(v, up)
    return np.nextafter(v, down), np.nextafter(v, up)


# ---------------------------------------------------------------- ulp and ulp_error


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
def test_ulp_equals_numpy_spacing_for_representable_values(dtype):
    rng = np.random.default_rng(1)
    info = np.finfo(dtype)
    values = np.concatenate(
        [
            rng.normal(size=200) * 10.0 ** rng.integers(-3, 4, size=200),
            [1.0, 2.0, 0.5, -4.0, float(info.smallest_normal)],
            [float(info.smallest_subnormal), 3 * float(info.smallest_subnormal)],
        ]
    ).astype(dtype)
    values = values[np.isfinite(values) & (values != 0) & (np.abs(values) < info.max)]
    expected = np.spacing(np.abs(values)).astype(np.float64)
    np.testing.assert_array_equal(P.ulp(values, dtype), expected)
    # at the largest finite number the spacing is the step down to its neighbour
    top = info.max
    assert P.ulp(top, dtype) == float(top) - float(np.nextafter(top, dtype(0)))


def test_ulp_of_bfloat16_matches_torch_finfo():
    info = torch.finfo(torch.bfloat16)
    assert P.ulp(1.0, torch.bfloat16) == info.eps
    assert P.ulp(1.5 * 2.0**100, "bfloat16") == info.eps * 2.0**100
    # below the normal range the spacing is that of the subnormals
    assert P.ulp(info.tiny / 4, torch.bfloat16) == info.tiny * info.eps
    # torch.nextafter in bfloat16 steps by exactly one ulp
    one = torch.tensor(3.0, dtype=torch.bfloat16)
    step = torch.nextafter(one, torch.tensor(4.0, dtype=torch.bfloat16)) - one
    assert float(step) == P.ulp(3.0, "bfloat16")


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
@pytest.mark.parametrize("steps", [1, 3])
def test_ulp_error_counts_nextafter_steps(dtype, steps):
    rng = np.random.default_rng(2)
    exact = (rng.normal(size=50) * 100).astype(dtype)
    computed = exact.copy()
    for _ in range(steps):
        # away from zero: every step is one ulp of the exact value
        computed = np.nextafter(computed, np.copysign(np.inf, exact).astype(dtype))
    np.testing.assert_array_equal(P.ulp_error(computed, exact), float(steps))


def test_ulp_error_uses_the_dtype_of_computed_by_default():
    # 1 + 2^-23 is one float32 ulp away from 1, but 2^29 float64 ulps
    assert P.ulp_error(np.float32(1 + 2.0**-23), 1.0) == 1.0
    assert P.ulp_error(np.float32(1 + 2.0**-23), 1.0, dtype=np.float64) == 2.0**29
    half = torch.tensor(0.5, dtype=torch.bfloat16)
    assert P.ulp_error(half, 0.5 + 2.0**-9) == 0.5


def test_ulp_error_of_special_values():
    out = P.ulp_error([np.inf, np.nan, -np.inf, 1.0, -np.inf], [1.0, 1.0, -np.inf, np.inf, 0.0])
    np.testing.assert_array_equal(out, [np.inf, np.inf, 0.0, np.inf, np.inf])


def test_ulp_error_against_mpf_exact_values_sees_below_half_an_ulp():
    with mpmath.workdps(40):
        third = mpmath.mpf(1) / 3
    err = P.ulp_error(1 / 3, np.array([third], dtype=object))
    # float64(1/3) is the correctly rounded value: error below one half, above zero
    assert 0.0 < err[0] <= 0.5


# ---------------------------------------------------------------- the exact reference


def test_reference_softmax_matches_scipy_on_well_conditioned_inputs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 9)) * 3
    for axis in (-1, 0):
        np.testing.assert_allclose(
            P.reference_softmax(x, axis=axis), scipy.special.softmax(x, axis=axis), rtol=1e-14
        )
    lse = scipy.special.logsumexp(x, axis=-1)
    np.testing.assert_allclose(P.reference_logsumexp(x), lse, rtol=1e-14)
    np.testing.assert_allclose(
        P.reference_log_softmax(x), scipy.special.log_softmax(x, axis=-1), rtol=1e-13, atol=1e-15
    )


def test_reference_softmax_with_temperature_matches_scipy_of_scaled_logits():
    x = np.array([0.5, -1.25, 3.0, 2.0])
    np.testing.assert_allclose(
        P.reference_softmax(x, temperature=4.0), scipy.special.softmax(x / 4.0), rtol=1e-14
    )


def test_reference_softmax_of_two_logits_is_the_logistic_sigmoid():
    a = np.array([-30.0, -2.5, 0.0, 1e-8, 4.0, 35.0])
    x = np.stack([a, np.zeros_like(a)], axis=-1)
    np.testing.assert_allclose(P.reference_softmax(x)[:, 0], scipy.special.expit(a), rtol=1e-15)


def test_reference_is_exact_for_huge_logits():
    # differences of huge floats are formed exactly: only x - max matters
    big = np.array([1e300, 1e300 - 2.0**950, -1e300])
    p = P.reference_softmax(big)
    q = P.reference_softmax(np.array([0.0, -(2.0**950), -np.inf]))
    np.testing.assert_array_equal(p, q)
    assert P.reference_logsumexp(np.array([1e300, 1e300])) == 1e300  # + log 2 is below half an ulp
    lse = P.reference_logsumexp(np.array([700.0, 700.0]), exact=True)
    with mpmath.workdps(50):
        assert abs(lse - (700 + mpmath.log(2))) < mpmath.mpf(10) ** -40


def test_reference_rows_sum_to_one_in_exact_arithmetic():
    x = np.random.default_rng(4).normal(size=(3, 11)) * 50
    p = P.reference_softmax(x, exact=True, dps=60)
    for row in p:
        with mpmath.workdps(60):
            assert abs(mpmath.fsum(row) - 1) < mpmath.mpf(10) ** -55


def test_reference_treats_minus_inf_as_probability_zero_and_empty_rows_as_zeros():
    p = P.reference_softmax([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]])
    np.testing.assert_array_equal(p, [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(P.reference_log_softmax([0.0, -np.inf]), [0.0, -np.inf])
    assert P.reference_logsumexp([-np.inf, -np.inf]) == -np.inf


def test_reference_log_softmax_matches_torch_where_probabilities_underflow():
    x = torch.tensor([1000.0, 1.0, -500.0], dtype=torch.float64)
    expected = torch.log_softmax(x, -1).numpy()
    np.testing.assert_allclose(P.reference_log_softmax(x), expected, rtol=1e-15)


def test_reference_rejects_bad_arguments_by_name():
    with pytest.raises(ValueError, match="x"):
        P.reference_softmax([1.0, np.nan])
    with pytest.raises(ValueError, match="dps"):
        P.reference_softmax([1.0], dps=10)
    with pytest.raises(TypeError, match="dps"):
        P.reference_softmax([1.0], dps=50.0)
    with pytest.raises(TypeError, match="x"):
        P.reference_softmax(["a", "b"])
    with pytest.raises(ValueError, match="temperature"):
        P.reference_softmax([1.0], temperature=0.0)


def test_library_softmax_is_within_a_few_ulp_plus_conditioning_of_reference():
    # the error of the max-shifted algorithm grows with |x_i - max| (rounded subtraction,
    # then exp turns an absolute error into a relative one); beyond that, a few ulp
    x = np.random.default_rng(5).normal(size=(20, 16)) * 8
    err = P.ulp_error(sl.softmax(x), P.reference_softmax(x, exact=True))
    allowed = 4 + np.abs(x - x.max(axis=-1, keepdims=True))
    assert (err <= allowed).all()


# ---------------------------------------------------------------- the naive formulas


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
def test_naive_softmax_overflows_exactly_above_the_overflow_threshold(dtype):
    below, above = _neighbours(sl.overflow_threshold(dtype), dtype)
    zero = dtype(0)
    ok = P.naive_softmax(np.array([below, zero], dtype=dtype))
    assert np.isfinite(ok).all()
    assert np.isnan(P.naive_softmax(np.array([above, zero], dtype=dtype))[0])
    # and where it works, it agrees with the stable softmax of the same dtype
    stable = sl.softmax(np.array([below, zero], dtype=dtype))
    np.testing.assert_allclose(ok.astype(float), stable.astype(float))


@pytest.mark.parametrize("dtype", NUMPY_FLOATS)
def test_naive_softmax_gives_nan_exactly_below_the_underflow_threshold(dtype):
    below, above = _neighbours(sl.underflow_threshold(dtype), dtype)
    # a long row exercises numpy's vectorised exp too
    assert np.isnan(P.naive_softmax(np.full(64, below, dtype=dtype))).all()
    np.testing.assert_array_equal(P.naive_softmax(np.full(64, above, dtype=dtype)), dtype(1 / 64))


def test_naive_softmax_in_bfloat16_breaks_at_the_bfloat16_thresholds():
    over, under = sl.overflow_threshold(torch.bfloat16), sl.underflow_threshold(torch.bfloat16)
    # bfloat16 steps by 0.5 near 90: the neighbours of the thresholds
    assert 88.5 < over < 89.0 and -93.0 < under < -92.5
    ok = P.naive_softmax(torch.tensor([88.5, 0.0], dtype=torch.bfloat16))
    bad = P.naive_softmax(torch.tensor([89.0, 0.0], dtype=torch.bfloat16))
    assert ok.dtype == torch.bfloat16 and torch.isfinite(ok).all() and torch.isnan(bad[0])
    assert (P.naive_softmax(torch.full((4,), -92.5, dtype=torch.bfloat16)) == 0.25).all()
    assert torch.isnan(P.naive_softmax(torch.full((4,), -93.0, dtype=torch.bfloat16))).all()


def test_naive_softmax_agrees_with_scipy_on_small_logits():
    x = np.random.default_rng(6).normal(size=(4, 5))
    np.testing.assert_allclose(P.naive_softmax(x), scipy.special.softmax(x, axis=-1), rtol=1e-14)
    expected = scipy.special.softmax(x, axis=0)
    np.testing.assert_allclose(P.naive_softmax(x, axis=0), expected, rtol=1e-14)


def test_naive_log_softmax_is_minus_inf_where_the_probability_underflows():
    x = np.array([1000.0, 1.0])
    np.testing.assert_array_equal(P.naive_log_softmax(x), [0.0, -np.inf])
    expected = torch.log_softmax(torch.from_numpy(x), -1).numpy()
    assert expected[1] == -999.0  # torch, like softmax_lib, gets it right
    t = P.naive_log_softmax(torch.tensor([1000.0, 1.0]))
    assert torch.isneginf(t[1])


def test_naive_log_softmax_loses_the_log_of_probabilities_that_round_to_one():
    x = np.array([0.0, -40.0])
    assert P.naive_log_softmax(x)[0] == 0.0
    true_value = -math.log1p(math.exp(-40.0))
    assert true_value < 0 and sl.log_softmax(x)[0] == pytest.approx(true_value, rel=1e-15)


def test_naive_logsumexp_overflows_and_its_shifted_version_rounds_away_tiny_terms():
    assert P.naive_logsumexp([1000.0, 1.0]) == np.inf
    assert P.naive_logsumexp([1000.0, 1.0], shift=True) == 1000.0
    x = [0.0, -40.0]
    assert P.naive_logsumexp(x, shift=True) == 0.0
    assert float(sl.logsumexp(x)) == pytest.approx(math.log1p(math.exp(-40.0)), rel=1e-15)
    t = torch.tensor([[0.0, -40.0], [3.0, 3.0]], dtype=torch.float64)
    np.testing.assert_allclose(
        P.naive_logsumexp(t, shift=True).numpy(), [0.0, 3 + math.log(2)], rtol=1e-15
    )
    t = torch.tensor([3.0, 3.0, 800.0], dtype=torch.float64)
    expected = float(torch.logsumexp(t[:2], -1))
    assert float(P.naive_logsumexp(t[:2])) == pytest.approx(expected, rel=1e-15)
    assert torch.isposinf(P.naive_logsumexp(t))
