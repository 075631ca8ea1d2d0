"""softmax_lib.core against independent oracles: mpmath, SciPy, torch, and the rules of API.md."""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_lib as sl
from softmax_lib import log_softmax, logsumexp, online_softmax, softmax

EPS64 = np.finfo(np.float64).eps


# ------------------------------------------------------------------ exact references


def mp_softmax(x: np.ndarray) -> list[mpmath.mpf]:
    """Softmax of float64 inputs in 60-digit arithmetic (the inputs are exact binary numbers)."""
    with mpmath.workdps(60):
        exps = [mpmath.exp(mpmath.mpf(float(v))) for v in x]
        total = mpmath.fsum(exps)
        return [e / total for e in exps]


def mp_logsumexp(x: np.ndarray) -> mpmath.mpf:
    with mpmath.workdps(60):
        return mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in x))


def conditioning_allowance(x: np.ndarray) -> np.ndarray:
    """Relative error (in eps) that rounding the exponents forces: grows with |x_i - max|."""
    p = scipy.special.softmax(x)
    spread = np.abs(x - x.max())
    return spread + np.sum(p * spread)


# ------------------------------------------------------------------ accuracy (mpmath)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 700.0, 1e4, 1e300])
def test_float64_softmax_is_within_a_few_ulp_of_mpmath_beyond_conditioning(scale):
    rng = np.random.default_rng(int(math.log10(scale) + 10))
    for _ in range(20):
        n = int(rng.integers(1, 40))
        x = rng.standard_normal(n) * scale
        p = softmax(x)
        exact = mp_softmax(x)
        allowed = (6 + np.log2(n) + conditioning_allowance(x)) * EPS64
        for i in range(n):
            ex = float(exact[i])
            if ex == 0.0:  # the exact value underflows: the result must be 0 (or the subnormal neighbour)
                assert p[i] <= np.finfo(np.float64).smallest_subnormal
                continue
            if ex < np.finfo(np.float64).tiny:  # subnormal results: absolute error of an ulp or two
                assert abs(p[i] - ex) <= 4 * np.finfo(np.float64).smallest_subnormal
                continue
            assert abs(p[i] - ex) / ex <= allowed[i], (x, i, p[i], ex)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0, 1e4, 1e300])
def test_float64_logsumexp_is_within_a_few_ulp_of_mpmath(scale):
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        x = rng.standard_normal(n) * scale
        exact = float(mp_logsumexp(x))
        got = logsumexp(x)
        # log-sum-exp is well conditioned in the absolute sense: error ~ eps * max|x|
        assert abs(got - exact) <= (4 + np.log2(n)) * EPS64 * max(abs(exact), np.max(np.abs(x)), 1.0)


def test_logsumexp_keeps_digits_when_the_sum_is_close_to_one():
    # LSE([0, -40]) = log(1 + e^-40) ~ 4.25e-18: summing first then taking log gives exactly 0.
    x = np.array([0.0, -40.0])
    exact = float(mp_logsumexp(x))
    assert exact > 0
    assert abs(logsumexp(x) - exact) <= 2 * EPS64 * exact
    lsm = log_softmax(x)
    with mpmath.workdps(60):
        exact_first = float(mpmath.mpf(0) - mp_logsumexp(x))
    assert abs(lsm[0] - exact_first) <= 2 * EPS64 * abs(exact_first)


def test_every_slice_sums_to_one_within_4_n_eps():
    rng = np.random.default_rng(3)
    for n in [1, 2, 7, 100, 1000, 10_000]:
        x = rng.standard_normal((5, n)) * 10
        p = softmax(x)
        assert np.all(np.abs(p.sum(axis=-1) - 1.0) <= 4 * n * EPS64)


def test_log_softmax_never_takes_the_log_of_a_rounded_zero():
    np.testing.assert_array_equal(log_softmax([1000.0, 1.0]), [0.0, -999.0])
    out = log_softmax(np.array([0.0, -800.0, -1e5]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [0.0, -800.0, -1e5], rtol=0, atol=0)


def test_float64_huge_logits_do_not_overflow():
    np.testing.assert_array_equal(softmax([1e300, -1e300]), [1.0, 0.0])
    np.testing.assert_array_equal(softmax([1e300, 1e300]), [0.5, 0.5])
    assert logsumexp([1e300, 1e300]) == pytest.approx(1e300)
    np.testing.assert_allclose(softmax([1e4, 1e4 - 1.0]), scipy.special.expit([1.0, -1.0]), rtol=1e-15)


def test_float16_logits_of_1e4_are_handled_in_float32_and_rounded_once():
    x = np.array([1e4, 1e4 - 1.0, 0.0], dtype=np.float16)
    p = softmax(x)
    assert p.dtype == np.float16
    expected = scipy.special.softmax(x.astype(np.float64)).astype(np.float16)
    np.testing.assert_array_equal(p, expected)


# ------------------------------------------------------------------ SciPy and torch agreement


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), None])
def test_numpy_results_match_scipy_for_every_axis_form(axis):
    x = np.random.default_rng(1).standard_normal((3, 4, 5)) * 5
    np.testing.assert_allclose(softmax(x, axis=axis), scipy.special.softmax(x, axis=axis), rtol=1e-13)
    np.testing.assert_allclose(log_softmax(x, axis=axis), scipy.special.log_softmax(x, axis=axis), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(logsumexp(x, axis=axis), scipy.special.logsumexp(x, axis=axis), rtol=1e-13)
    np.testing.assert_allclose(
        logsumexp(x, axis=axis, keepdims=True), scipy.special.logsumexp(x, axis=axis, keepdims=True), rtol=1e-13
    )


@pytest.mark.parametrize("temperature", [0.01, 0.5, 1.0, 3.0, 1e6])
def test_temperature_equals_dividing_the_logits(temperature):
    x = np.random.default_rng(2).standard_normal((4, 9))
    np.testing.assert_allclose(
        softmax(x, temperature=temperature), scipy.special.softmax(x / temperature, axis=-1), rtol=1e-12, atol=1e-300
    )
    np.testing.assert_allclose(
        log_softmax(x, temperature=temperature),
        scipy.special.log_softmax(x / temperature, axis=-1),
        rtol=1e-12,
        atol=1e-15,  # near 0 we keep digits SciPy rounds away (log1p): -3e-29 where SciPy says 0
    )


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_torch_matches_torch_softmax_and_keeps_device_and_dtype(dim):
    x = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(softmax(x, axis=dim), torch.softmax(x, dim=dim))
    torch.testing.assert_close(log_softmax(x, axis=dim), torch.log_softmax(x, dim=dim))
    torch.testing.assert_close(logsumexp(x, axis=dim), torch.logsumexp(x, dim=dim))
    torch.testing.assert_close(logsumexp(x, axis=dim, keepdims=True), torch.logsumexp(x, dim=dim, keepdim=True))
    assert softmax(x, axis=dim).device == x.device


def test_torch_autograd_matches_gradcheck_in_float64():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, False, True, True, False, True])
    assert torch.autograd.gradcheck(lambda t: softmax(t, temperature=0.7), (x,))
    assert torch.autograd.gradcheck(lambda t: log_softmax(t, axis=0), (x,))
    assert torch.autograd.gradcheck(lambda t: logsumexp(t, where=mask), (x,))
    assert torch.autograd.gradcheck(lambda t: softmax(t, where=mask), (x,))


def test_torch_gradient_equals_torch_softmax_gradient():
    x = torch.randn(4, 10, dtype=torch.float64)
    w = torch.randn(4, 10, dtype=torch.float64)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    (softmax(a) * w).sum().backward()
    (torch.softmax(b, -1) * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_floating_dtypes_are_kept(dtype):
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=dtype)
    for fn in (softmax, log_softmax, logsumexp):
        out = fn(x)
        assert out.dtype == dtype
    if dtype in (torch.float16, torch.bfloat16):  # computed in float32, rounded once
        torch.testing.assert_close(softmax(x), torch.softmax(x.float(), -1).to(dtype), rtol=0, atol=0)
    else:
        torch.testing.assert_close(softmax(x), torch.softmax(x, -1))


def test_integer_and_bool_inputs_are_promoted():
    assert softmax([1, 2, 3]).dtype == np.float64
    assert softmax(np.array([True, False])).dtype == np.float64
    assert softmax(torch.tensor([1, 2, 3])).dtype == torch.get_default_dtype()
    np.testing.assert_allclose(softmax([1, 2, 3]), scipy.special.softmax([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_floating_dtypes_are_kept(dtype):
    x = np.array([0.1, 2.0, -3.0], dtype=dtype)
    assert softmax(x).dtype == dtype
    assert log_softmax(x).dtype == dtype
    assert logsumexp(x).dtype == dtype


def test_numpy_scalars_come_back_as_numpy_scalars():
    out = logsumexp([1.0, 2.0])
    assert isinstance(out, np.float64) and not isinstance(out, np.ndarray)
    assert out == pytest.approx(scipy.special.logsumexp([1.0, 2.0]))
    one = softmax(3.0, axis=None)
    assert isinstance(one, np.float64) and one == 1.0
    assert isinstance(log_softmax(3.0, axis=None), np.float64)


# ------------------------------------------------------------------ masks, -inf, NaN, +inf


def test_where_false_entries_get_exactly_zero_and_are_never_read():
    x = np.array([[1.0, np.nan, 3.0], [np.inf, 2.0, -1.0]])
    mask = np.array([[True, False, True], [False, True, True]])
    p = softmax(x, where=mask)
    assert p[0, 1] == 0.0 and p[1, 0] == 0.0
    np.testing.assert_allclose(p[0, [0, 2]], scipy.special.softmax([1.0, 3.0]))
    np.testing.assert_allclose(p[1, 1:], scipy.special.softmax([2.0, -1.0]))
    lp = log_softmax(x, where=mask)
    assert lp[0, 1] == -np.inf and lp[1, 0] == -np.inf
    np.testing.assert_allclose(logsumexp(x, where=mask), [scipy.special.logsumexp([1.0, 3.0]), scipy.special.logsumexp([2.0, -1.0])])


def test_where_broadcasts_like_numpy():
    x = np.random.default_rng(0).standard_normal((4, 5))
    mask = np.array([True, True, False, True, False])
    p = softmax(x, where=mask)
    np.testing.assert_allclose(p[:, mask], scipy.special.softmax(x[:, mask], axis=-1))
    assert np.all(p[:, ~mask] == 0)


def test_minus_inf_entries_behave_like_masked_ones():
    x = np.array([2.0, -np.inf, 0.5])
    np.testing.assert_array_equal(softmax(x), softmax(x, where=np.isfinite(x)))
    np.testing.assert_array_equal(log_softmax(x), log_softmax(x, where=np.isfinite(x)))


def test_fully_masked_row_is_zero_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = np.array([[-np.inf, -np.inf], [1.0, 2.0]])
        p = softmax(x)
        np.testing.assert_array_equal(p[0], [0.0, 0.0])
        np.testing.assert_array_equal(log_softmax(x)[0], [-np.inf, -np.inf])
        assert logsumexp(x)[0] == -np.inf
        mask = np.array([[False, False], [True, True]])
        np.testing.assert_array_equal(softmax(np.ones((2, 2)), where=mask)[0], [0.0, 0.0])
        assert logsumexp(np.ones((2, 2)), where=mask)[0] == -np.inf


def test_fully_masked_torch_row_is_zero_with_finite_gradients():
    x = torch.tensor([[-math.inf, -math.inf, -math.inf], [1.0, 2.0, 3.0]], requires_grad=True)
    p = softmax(x)
    assert torch.equal(p[0].detach(), torch.zeros(3))
    assert torch.isnan(torch.softmax(x.detach(), -1)[0]).all()  # the behaviour we deliberately differ from
    (p * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[0], torch.zeros(3))


def test_masked_entries_get_zero_gradient_even_when_nan():
    x = torch.tensor([1.0, float("nan"), 2.0], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, False, True])
    out = log_softmax(x, where=mask)
    out[0].backward()
    assert torch.isfinite(x.grad).all() and x.grad[1] == 0
    ref = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    torch.log_softmax(ref, -1)[0].backward()
    torch.testing.assert_close(x.grad[[0, 2]], ref.grad)


def test_nan_among_active_entries_makes_only_its_slice_nan():
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]])
    for fn in (softmax, log_softmax):
        out = fn(x)
        assert np.isnan(out[0]).all()
        assert np.isfinite(out[1]).all()
    lse = logsumexp(x)
    assert np.isnan(lse[0]) and np.isfinite(lse[1])
    assert torch.isnan(softmax(torch.tensor(x))[0]).all()
    # NaN wins over +inf in the same slice
    assert np.isnan(softmax([np.inf, np.nan])).all()


def test_plus_inf_entries_share_the_mass_evenly():
    x = np.array([[np.inf, 1.0, np.inf, np.inf], [np.inf, -np.inf, 0.0, 5.0]])
    p = softmax(x)
    np.testing.assert_allclose(p, [[1 / 3, 0, 1 / 3, 1 / 3], [1.0, 0, 0, 0]], rtol=1e-15)
    lp = log_softmax(x)
    np.testing.assert_allclose(lp[0, [0, 2, 3]], -np.log(3.0))
    assert lp[0, 1] == -np.inf
    np.testing.assert_array_equal(logsumexp(x), [np.inf, np.inf])
    pt = softmax(torch.tensor(x))
    torch.testing.assert_close(pt, torch.tensor(p))


def test_the_plus_inf_rule_is_the_limit_of_large_equal_logits():
    big = 1e300
    np.testing.assert_allclose(softmax([np.inf, 1.0, np.inf]), softmax([big, 1.0, big]))


def test_empty_axis_gives_empty_probabilities_and_minus_inf_logsumexp():
    x = np.zeros((3, 0))
    assert softmax(x).shape == (3, 0)
    np.testing.assert_array_equal(logsumexp(x), [-np.inf] * 3)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("bad", [["a", "b"], np.array([1 + 2j]), np.array([object()], dtype=object)])
def test_unsupported_kinds_raise_type_error(bad):
    with pytest.raises(TypeError, match="x"):
        softmax(bad)


def test_complex_tensor_raises_type_error():
    with pytest.raises(TypeError, match="real"):
        softmax(torch.tensor([1 + 1j]))


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature_values_raise_value_error(temperature):
    with pytest.raises(ValueError, match="temperature"):
        softmax([1.0, 2.0], temperature=temperature)


@pytest.mark.parametrize("temperature", ["1", None, True, [1.0]])
def test_bad_temperature_kinds_raise_type_error(temperature):
    with pytest.raises(TypeError, match="temperature"):
        log_softmax([1.0, 2.0], temperature=temperature)


def test_mask_that_does_not_broadcast_raises_value_error():
    with pytest.raises(ValueError, match="where"):
        softmax(np.ones((2, 3)), where=np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="where"):
        softmax(torch.ones(2, 3), where=torch.ones(4, dtype=torch.bool))


def test_non_boolean_mask_raises_type_error():
    with pytest.raises(TypeError, match="where"):
        softmax(np.ones(3), where=np.ones(3))
    with pytest.raises(TypeError, match="where"):
        softmax(torch.ones(3), where=torch.ones(3))


def test_bad_axis_raises_numpy_axis_error_and_torch_index_error():
    with pytest.raises(np.exceptions.AxisError):
        softmax(np.ones((2, 3)), axis=2)
    with pytest.raises(np.exceptions.AxisError):
        logsumexp(np.ones((2, 3)), axis=(0, 5))
    with pytest.raises(IndexError):
        softmax(torch.ones(2, 3), axis=2)
    with pytest.raises(TypeError, match="axis"):
        softmax(np.ones(3), axis=1.5)


# ------------------------------------------------------------------ online softmax


@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 64, 1024, 5000])
def test_online_softmax_equals_softmax_for_any_block_size(block_size):
    x = np.random.default_rng(block_size).standard_normal((3, 257)) * 20
    np.testing.assert_allclose(online_softmax(x, block_size=block_size), scipy.special.softmax(x, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(online_softmax(x, axis=0, block_size=block_size), scipy.special.softmax(x, axis=0), rtol=1e-13)
    t = torch.tensor(x)
    torch.testing.assert_close(online_softmax(t, block_size=block_size), torch.softmax(t, -1))


def test_online_softmax_follows_the_core_edge_rules():
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 0.0, np.inf], [1.0, np.nan, 0.0], [3.0, -np.inf, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(online_softmax(x, block_size=1), softmax(x))


def test_online_softmax_rejects_bad_block_sizes():
    with pytest.raises(ValueError, match="block_size"):
        online_softmax([1.0, 2.0], block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        online_softmax([1.0, 2.0], block_size=2.5)


def test_merging_partial_normalizers_is_associative_and_matches_one_pass():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(300) * 15
    parts = np.split(x, [50, 120, 121, 300])
    stats = [(p.max() if p.size else -np.inf, np.exp(p - p.max()).sum() if p.size else 0.0) for p in parts]
    (a, b, c, d, e) = stats
    left = sl.merge_normalizers(*sl.merge_normalizers(*sl.merge_normalizers(*a, *b), *c), *sl.merge_normalizers(*d, *e))
    right = sl.merge_normalizers(*a, *sl.merge_normalizers(*b, *sl.merge_normalizers(*c, *sl.merge_normalizers(*d, *e))))
    m, dsum = x.max(), np.exp(x - x.max()).sum()
    for mm, dd in (left, right):
        assert mm == m
        assert dd == pytest.approx(dsum, rel=1e-13)
    # the empty block (-inf, 0) is the identity
    assert sl.merge_normalizers(-np.inf, 0.0, 2.0, 3.0) == (2.0, 3.0)


# ------------------------------------------------------------------ float thresholds


FORMATS = [("float64", np.float64), ("float32", np.float32), ("float16", np.float16)]


@pytest.mark.parametrize("name,dtype", FORMATS)
def test_exp_overflows_exactly_above_the_overflow_threshold(name, dtype):
    t = sl.overflow_threshold(dtype)
    assert sl.overflow_threshold(name) == t
    # Independent check: mpmath's exact exp, rounded to the format by numpy's own conversion.
    with mpmath.workdps(50):
        below = mpmath.mpf(t) * (1 - mpmath.mpf(10) ** -12)
        above = mpmath.mpf(t) * (1 + mpmath.mpf(10) ** -12)
        big_below, big_above = mpmath.exp(below), mpmath.exp(above)
    if dtype is np.float64:
        assert math.isfinite(float(big_below)) and float(big_below) <= np.finfo(np.float64).max
        assert float(big_above) == math.inf  # mpmath rounds to nearest: past max + ulp/2 is inf
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert np.isfinite(np.array(float(big_below)).astype(dtype))
            assert np.isinf(np.array(float(big_above)).astype(dtype))
    assert t >= math.log(np.finfo(dtype).max)  # equal in float64 to the last digit


@pytest.mark.parametrize("name,dtype", FORMATS)
def test_exp_rounds_to_zero_exactly_below_the_underflow_threshold(name, dtype):
    t = sl.underflow_threshold(dtype)
    with mpmath.workdps(50):
        above = float(mpmath.exp(mpmath.mpf(t) * (1 - mpmath.mpf(10) ** -9)))
        below = float(mpmath.exp(mpmath.mpf(t) * (1 + mpmath.mpf(10) ** -9)))
    if dtype is np.float64:
        assert above > 0.0 and below == 0.0
    else:
        assert np.array(above).astype(dtype) > 0
        assert np.array(below).astype(dtype) == 0


def test_thresholds_for_torch_dtypes_including_bfloat16():
    assert sl.overflow_threshold(torch.float32) == sl.overflow_threshold(np.float32)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        over = sl.overflow_threshold(dtype)
        under = sl.underflow_threshold(dtype)
        vals = torch.tensor([over * (1 - 1e-6), over * (1 + 1e-6), under * (1 - 1e-6), under * (1 + 1e-6)], dtype=torch.float64)
        out = torch.exp(vals).to(dtype)
        assert torch.isfinite(out[0]) and torch.isinf(out[1])
        assert out[2] > 0 and out[3] == 0
    # known values: log of the largest float64 and (e_min - p) ln 2
    assert sl.overflow_threshold(np.float64) == pytest.approx(709.782712893384, abs=1e-12)
    assert sl.underflow_threshold(np.float64) == pytest.approx(-1075 * math.log(2), abs=1e-12)
    assert sl.overflow_threshold(torch.bfloat16) == pytest.approx(sl.overflow_threshold(torch.float32), abs=1e-2)


def test_thresholds_reject_non_floating_dtypes():
    with pytest.raises(TypeError, match="dtype"):
        sl.overflow_threshold(np.int32)
    with pytest.raises(TypeError, match="dtype"):
        sl.underflow_threshold("not-a-dtype")
    with pytest.raises(TypeError, match="dtype"):  # np.dtype(None) would mean float64
        sl.overflow_threshold(None)


def test_logsumexp_keepdims_takes_zero_and_one_as_numpy_does():
    x = np.random.default_rng(3).standard_normal((2, 5))
    for flag in (0, 1, np.bool_(True)):
        np.testing.assert_allclose(
            logsumexp(x, keepdims=flag), scipy.special.logsumexp(x, axis=-1, keepdims=bool(flag)), rtol=1e-14
        )
    with pytest.raises(ValueError, match="keepdims"):
        logsumexp(x, keepdims=2)
    with pytest.raises(TypeError, match="keepdims"):
        logsumexp(x, keepdims="yes")


# ------------------------------------------------------------------ properties (hypothesis)


finite_rows = hnp.arrays(
    np.float64,
    st.integers(1, 30),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=150, deadline=None)
@given(finite_rows, st.floats(-1e3, 1e3))
def test_shift_invariance(x, c):
    np.testing.assert_allclose(softmax(x + c), softmax(x), rtol=1e-9, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(finite_rows)
def test_probabilities_are_in_unit_interval_and_sum_to_one(x):
    p = softmax(x)
    assert np.all((p >= 0) & (p <= 1))
    assert abs(p.sum() - 1.0) <= 4 * x.size * EPS64


@settings(max_examples=150, deadline=None)
@given(finite_rows)
def test_softmax_preserves_the_order_of_the_logits(x):
    p = softmax(x)
    i, j = np.argsort(x)[0], np.argsort(x)[-1]
    assert p[i] <= p[j]
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(p[order]) >= -1e-300)


@settings(max_examples=150, deadline=None)
@given(finite_rows, st.data())
def test_masking_equals_truncation(x, data):
    mask = data.draw(hnp.arrays(bool, x.shape))
    p = softmax(x, where=mask)
    assert np.all(p[~mask] == 0)
    if mask.any():
        np.testing.assert_allclose(p[mask], scipy.special.softmax(x[mask]), rtol=1e-12, atol=1e-300)
        assert logsumexp(x, where=mask) == pytest.approx(scipy.special.logsumexp(x[mask]), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(finite_rows, st.integers(1, 40))
def test_online_equals_offline_for_any_block_size(x, block_size):
    np.testing.assert_allclose(online_softmax(x, block_size=block_size), softmax(x), rtol=1e-12, atol=1e-300)


@settings(max_examples=100, deadline=None)
@given(finite_rows)
def test_softmax_is_the_gradient_of_logsumexp(x):
    t = torch.tensor(x, requires_grad=True)
    logsumexp(t).backward()
    np.testing.assert_allclose(t.grad.numpy(), scipy.special.softmax(x), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype, offset", [(torch.float64, 1e6), (torch.float64, 50.0), (torch.float32, 1e4)])
def test_torch_temperature_error_grows_with_distance_from_the_max_not_with_size(dtype, offset):
    # (x - max) / T, not x / T - max(x / T): the latter carries an error of |x| / T ulp
    rng = np.random.default_rng(11)
    x = offset + rng.uniform(-2, 2, size=(4, 6))
    x = torch.tensor(x, dtype=dtype).to(torch.float64).numpy()  # the values the tensor holds
    t = 0.3
    got = softmax(torch.tensor(x, dtype=dtype), temperature=t).double().numpy()
    eps = float(torch.finfo(dtype).eps)
    with mpmath.workdps(60):
        for row, p in zip(x, got):
            m = max(row)
            e = [mpmath.exp((mpmath.mpf(v) - mpmath.mpf(m)) / t) for v in row]
            z = mpmath.fsum(e)
            for v, ei, pi in zip(row, e, p):
                exact = ei / z
                bound = 8 * eps * (1 + abs(v - m) / t)  # a few ulp plus the conditioning
                assert abs(pi - float(exact)) <= bound * float(exact), (v, pi, float(exact))


def test_float16_log_probabilities_beyond_the_range_round_to_minus_inf_silently():
    x = np.array([6e4, -6e4], dtype=np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = log_softmax(x)
    assert out.dtype == np.float16 and out[0] == 0 and np.isneginf(out[1])  # -1.2e5 < -65504


@pytest.mark.parametrize("axis", [None, (0, 2), (2, 0), (1,), -1])
def test_online_softmax_takes_the_same_axes_as_softmax(axis):
    x = np.random.default_rng(2).normal(size=(3, 4, 5)) * 4
    x[1, 2, 3] = -np.inf
    got = online_softmax(x, axis=axis, block_size=3)
    assert got.shape == x.shape
    assert np.allclose(got, scipy.special.softmax(x, axis=axis), rtol=1e-13, atol=0)


def test_online_softmax_over_no_axis_normalises_each_entry_alone_as_scipy():
    x = np.array([[0.0, 1.0, -np.inf], [2.0, np.nan, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SciPy's own exp(-inf - -inf)
        expected = scipy.special.softmax(np.where(np.isfinite(x), x, 0.0), axis=())
    expected = np.where(np.isnan(x), np.nan, np.where(np.isneginf(x), 0.0, expected))
    got = online_softmax(x, axis=(), block_size=2)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, softmax(x, axis=()))


def test_online_softmax_of_a_scalar_is_a_scalar_as_softmax():
    assert online_softmax(3.0, axis=None) == softmax(3.0, axis=None) == 1.0
    t = torch.tensor(3.0)
    assert online_softmax(t).shape == softmax(t).shape == ()
