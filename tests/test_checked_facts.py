"""The facts on the page chapters/back/checked_facts.md, each checked here.

Every fact on that page names the test below that checks it, and every number the
page prints is checked by that test too (``_page_says``), so the page cannot drift
from the truth. The oracles are independent of ``softmax_lib`` wherever the fact is
about mathematics (mpmath at 50 digits, NumPy's eigensolver, SciPy, torch
autograd); ``softmax_lib`` itself is only the subject of the facts that are about
what the book's library does (masked rows).
"""

from __future__ import annotations

import math
import pathlib
import re

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

import softmax_lib as sl

PAGE = pathlib.Path(__file__).resolve().parents[1] / "chapters" / "back" / "checked_facts.md"


def _page_text() -> str:
    return PAGE.read_text(encoding="utf-8")


def _page_says(text: str) -> None:
    """The page states ``text`` verbatim (so the number checked here is the one printed)."""
    assert text in _page_text(), f"checked_facts.md should say {text!r}"


def _exact_softmax(z, dps: int = 50) -> list:
    """Softmax in arbitrary precision (mpmath), the oracle for values."""
    with mpmath.workdps(dps):
        e = [mpmath.exp(mpmath.mpf(v)) for v in z]
        total = mpmath.fsum(e)
        return [v / total for v in e]


def _jacobian(z: np.ndarray) -> np.ndarray:
    """diag(p) - p p^T from a float64 softmax computed here (not by softmax_lib)."""
    e = np.exp(z - z.max())
    p = e / e.sum()
    return np.diag(p) - np.outer(p, p)


# ---------------------------------------------------------------------------------------
# The page and this module agree
# ---------------------------------------------------------------------------------------


def test_every_test_the_page_names_exists_and_every_fact_test_is_on_the_page():
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", _page_text()))
    defined = {name for name in globals() if name.startswith("test_")}
    defined.discard("test_every_test_the_page_names_exists_and_every_fact_test_is_on_the_page")
    assert named, "checked_facts.md names no test"
    assert named <= defined, f"the page names tests that do not exist: {sorted(named - defined)}"
    assert defined <= named, f"tests not cited on the page: {sorted(defined - named)}"


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def test_softmax_of_1_2_8_rounds_to_0009_0025_9966():
    exact = _exact_softmax([1, 2, 8])
    four = tuple(round(float(v), 4) for v in exact)
    three = tuple(round(float(v), 3) for v in exact)
    assert four == (0.0009, 0.0025, 0.9966)
    assert three == (0.001, 0.002, 0.997)  # the often-quoted values: three decimals
    # the library agrees with the exact values to float64 rounding
    np.testing.assert_allclose(sl.softmax([1.0, 2.0, 8.0]), [float(v) for v in exact], rtol=1e-15)
    _page_says("(0.0009, 0.0025, 0.9966)")
    _page_says("(0.001, 0.002, 0.997)")
    _page_says("0.000909")


def test_temperature_100_makes_0_10_nearly_uniform():
    cold = _exact_softmax([0, 10])
    hot = _exact_softmax([0, 10 / 100])
    assert (round(float(cold[0]), 7), round(float(cold[1]), 5)) == (0.0000454, 0.99995)
    assert (round(float(hot[0]), 3), round(float(hot[1]), 3)) == (0.475, 0.525)
    np.testing.assert_allclose(sl.softmax([0.0, 10.0], temperature=100.0), [float(v) for v in hot], rtol=1e-14)
    _page_says("(0.0000454, 0.99995)")
    _page_says("(0.475, 0.525)")


# ---------------------------------------------------------------------------------------
# Lipschitz constant and the Jacobian
# ---------------------------------------------------------------------------------------


def test_jacobian_largest_eigenvalue_is_at_most_one_half_and_approaches_it():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(2000):
        k = int(rng.integers(2, 9))
        z = rng.normal(scale=float(rng.choice([0.1, 1.0, 5.0])), size=k)
        worst = max(worst, float(np.linalg.eigvalsh(_jacobian(z))[-1]))
    assert worst <= 0.5 + 1e-15
    # two equal leading scores and the rest far below: p -> (1/2, 1/2, 0, ...)
    lam = float(np.linalg.eigvalsh(_jacobian(np.array([0.0, 0.0, -40.0, -40.0])))[-1])
    assert 0.5 - 1e-15 < lam <= 0.5 + 1e-15


def test_lipschitz_constant_of_softmax_with_temperature_is_one_over_two_t():
    rng = np.random.default_rng(1)
    for temperature in (0.25, 1.0, 4.0):

        def f(z):
            return torch.softmax(torch.as_tensor(z, dtype=torch.float64) / temperature, dim=-1).numpy()

        ratios = []
        for _ in range(3000):
            x = rng.normal(scale=3.0 * temperature, size=3)
            y = x + rng.normal(scale=rng.choice([1e-3, 0.1, 1.0]) * temperature, size=3)
            ratios.append(np.linalg.norm(f(x) - f(y)) / np.linalg.norm(x - y))
        assert max(ratios) <= 1 / (2 * temperature) * (1 + 1e-9)
        # the bound is reached: a small step along (1, -1, 0) at (0, 0, -inf-ish)
        x = np.array([0.0, 0.0, -60.0]) * temperature
        step = np.array([1e-6, -1e-6, 0.0]) * temperature
        ratio = np.linalg.norm(f(x + step) - f(x)) / np.linalg.norm(step)
        assert ratio == pytest.approx(1 / (2 * temperature), rel=1e-6)
        assert ratio < 0.51 / temperature  # so 1/T is a bound, not the constant
    _page_says("1/(2T)")


def test_jacobian_has_zero_eigenvalue_along_the_ones_vector():
    rng = np.random.default_rng(2)
    for _ in range(100):
        z = rng.normal(size=5)
        jac = _jacobian(z)
        np.testing.assert_allclose(jac @ np.ones(5), 0.0, atol=1e-15)
        assert np.linalg.eigvalsh(jac)[0] > -1e-15  # positive semi-definite


def test_cross_entropy_gradient_is_p_minus_one_hot():
    rng = np.random.default_rng(3)
    z = torch.tensor(rng.normal(size=(6, 4)), dtype=torch.float64, requires_grad=True)
    target = torch.tensor(rng.integers(0, 4, size=6))
    torch.nn.functional.cross_entropy(z, target, reduction="sum").backward()
    expected = scipy.special.softmax(z.detach().numpy(), axis=-1) - np.eye(4)[target.numpy()]
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------
# The image of softmax
# ---------------------------------------------------------------------------------------


def test_softmax_image_is_the_open_simplex_not_its_boundary():
    # exactly, every entry is positive however low its score ...
    exact = _exact_softmax([0, -1000])
    assert exact[1] > 0
    assert float(mpmath.log(exact[1])) == pytest.approx(-1000.0, rel=1e-12)
    # ... and every point of the open simplex is reached: softmax(log p) = p
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5), size=200)
    np.testing.assert_allclose(scipy.special.softmax(np.log(p), axis=-1), p, rtol=1e-12)
    # in float64 an entry more than about 745 below the maximum rounds to zero:
    # a property of the number format, not of the function
    threshold = sl.underflow_threshold(np.float64)
    assert round(threshold, 2) == -745.13
    assert scipy.special.softmax([0.0, threshold - 0.01])[1] == 0.0
    assert scipy.special.softmax([0.0, threshold + 1.0])[1] > 0.0
    _page_says("-745.13")


# ---------------------------------------------------------------------------------------
# Masks and sentinels
# ---------------------------------------------------------------------------------------


def test_minus_1e9_is_minus_inf_in_float16_but_finite_in_bfloat16():
    largest = float(np.finfo(np.float16).max)
    assert largest == 65504.0
    with np.errstate(over="ignore"):
        assert np.float64(-1e9).astype(np.float16) == -np.inf
    assert torch.tensor(-1e9).to(torch.float16).item() == -math.inf
    assert math.isfinite(torch.tensor(-1e9).to(torch.bfloat16).item())
    # torch refuses the sentinel outright when filling a float16 tensor
    with pytest.raises(RuntimeError, match="overflow"):
        torch.zeros(3, dtype=torch.float16).masked_fill(torch.ones(3, dtype=torch.bool), -1e9)
    _page_says("65504")


def test_minus_1e4_sentinel_turns_a_fully_masked_float16_row_uniform():
    scores = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16)
    masked = scores.masked_fill(torch.ones(3, dtype=torch.bool), -1e4)
    p = torch.softmax(masked.float(), dim=-1)
    np.testing.assert_allclose(p.numpy(), np.full(3, 1 / 3), rtol=1e-6)


def test_torch_softmax_of_fully_masked_row_is_nan_and_softmax_lib_gives_zeros():
    row = torch.full((4,), -math.inf)
    assert torch.isnan(torch.softmax(row, dim=-1)).all()
    np.testing.assert_array_equal(sl.softmax(row).numpy(), np.zeros(4))
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(sl.softmax(x, where=np.zeros(3, dtype=bool)), np.zeros(3))
    assert np.all(sl.log_softmax(x, where=np.zeros(3, dtype=bool)) == -np.inf)


def test_torch_sdpa_gives_zeros_for_a_query_that_sees_no_key():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 3, 4, generator=gen)
    mask = torch.tensor([[True, True, True], [False, False, False], [True, False, False]])
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    np.testing.assert_array_equal(out[0, 1].numpy(), np.zeros(4))
    assert torch.isfinite(out).all()
    # the hand-written softmax(Q K^T / sqrt d) V gives NaN on that row
    scores = (q @ q.transpose(-1, -2) / 2.0).masked_fill(~mask, -math.inf)
    assert torch.isnan(torch.softmax(scores, dim=-1) @ q)[0, 1].all()
    _page_says(f"PyTorch {torch.__version__.split('+')[0].rsplit('.', 1)[0]}")


# ---------------------------------------------------------------------------------------
# Where exp leaves each format
# ---------------------------------------------------------------------------------------


def _rounds_to_inf(value: float, dtype: str) -> bool:
    if dtype == "bfloat16":
        return math.isinf(torch.tensor(value, dtype=torch.float64).to(torch.bfloat16).item())
    with np.errstate(over="ignore"):
        return bool(np.isinf(np.float64(value).astype(dtype)))


@pytest.mark.parametrize(
    ("dtype", "printed"),
    [("float32", "88.72"), ("bfloat16", "88.72"), ("float16", "11.09")],
)
def test_exp_overflows_above_the_printed_threshold(dtype, printed):
    threshold = sl.overflow_threshold(dtype)
    with mpmath.workdps(50):
        below = float(mpmath.exp(mpmath.mpf(threshold) - mpmath.mpf("1e-6")))
        above = float(mpmath.exp(mpmath.mpf(threshold) + mpmath.mpf("1e-6")))
    assert not _rounds_to_inf(below, dtype)
    assert _rounds_to_inf(above, dtype)
    assert f"{threshold:.2f}" == printed
    _page_says(printed)


def test_exp_overflows_float64_above_709_78():
    threshold = sl.overflow_threshold(np.float64)
    assert math.isfinite(math.exp(math.nextafter(threshold, 0.0) - 1e-12))
    with pytest.raises(OverflowError):
        math.exp(threshold + 1e-12)
    assert f"{threshold:.2f}" == "709.78"
    _page_says("709.78")


# ---------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------


def test_two_class_softmax_is_the_logistic_sigmoid_of_the_difference():
    rng = np.random.default_rng(6)
    a, b = rng.normal(scale=5, size=(2, 500))
    p = sl.softmax(np.stack([a, b], axis=-1))
    np.testing.assert_allclose(p[:, 0], scipy.special.expit(a - b), rtol=1e-13)


def test_logsumexp_is_a_smooth_maximum_within_log_k():
    rng = np.random.default_rng(7)
    for k in (2, 5, 50):
        z = rng.normal(scale=10, size=(200, k))
        lse = scipy.special.logsumexp(z, axis=-1)
        assert np.all(z.max(-1) <= lse)
        assert np.all(lse <= z.max(-1) + np.log(k) + 1e-12)
        # the upper bound is reached when all entries are equal
        assert scipy.special.logsumexp(np.full(k, 3.0)) == pytest.approx(3.0 + math.log(k), rel=1e-15)


def test_softmax_is_the_gradient_of_logsumexp():
    rng = np.random.default_rng(8)
    z = torch.tensor(rng.normal(size=7), dtype=torch.float64, requires_grad=True)
    torch.logsumexp(z, dim=0).backward()
    np.testing.assert_allclose(z.grad.numpy(), sl.softmax(z.detach().numpy()), rtol=1e-14)


def test_softmax_is_shift_invariant_but_not_scale_invariant():
    z = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(scipy.special.softmax(z + 100.0), scipy.special.softmax(z), rtol=1e-14)
    assert not np.allclose(scipy.special.softmax(2 * z), scipy.special.softmax(z), rtol=1e-3)


def test_low_temperature_splits_ties_evenly():
    p = _exact_softmax([1 / 0.01, 1 / 0.01, 0])
    assert float(p[0]) == float(p[1]) == pytest.approx(0.5, abs=1e-40)
    assert float(p[2]) < 1e-40


def test_gumbel_max_samples_from_softmax():
    rng = np.random.default_rng(9)
    z = np.array([1.0, 2.0, 0.5, -1.0])
    n = 200_000
    winners = np.argmax(z + rng.gumbel(size=(n, 4)), axis=-1)
    freq = np.bincount(winners, minlength=4) / n
    p = scipy.special.softmax(z)
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 5 * sigma)
