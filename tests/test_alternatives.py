"""Sparsemax, entmax and Gumbel-softmax (softmax_lib.alternatives), checked against the
entmax package, SciPy, torch.autograd.gradcheck and sampling frequencies."""

from __future__ import annotations

import math

import entmax
import numpy as np
import pytest
import scipy.special
import torch

import softmax_lib as sl
from softmax_lib.alternatives import entmax15, entmax_bisect, gumbel_softmax, sparsemax

# (ours, the entmax package's) pairs; the package is torch-only.
MAPS = {
    "sparsemax": (sparsemax, entmax.sparsemax),
    "entmax15": (entmax15, entmax.entmax15),
    "bisect_1.5": (lambda x, axis=-1: entmax_bisect(x, 1.5, axis), lambda x, dim=-1: entmax.entmax_bisect(x, 1.5, dim)),
    "bisect_1.25": (lambda x, axis=-1: entmax_bisect(x, 1.25, axis), lambda x, dim=-1: entmax.entmax_bisect(x, 1.25, dim)),
    "bisect_2": (lambda x, axis=-1: entmax_bisect(x, 2.0, axis), lambda x, dim=-1: entmax.entmax_bisect(x, 2.0, dim)),
    "bisect_3": (lambda x, axis=-1: entmax_bisect(x, 3.0, axis), lambda x, dim=-1: entmax.entmax_bisect(x, 3.0, dim)),
}
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}  # float32: a few dozen ulp of 1


@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e4])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_agrees_with_entmax_package_on_random_logits(name, dtype, scale, axis):
    ours, theirs = MAPS[name]
    gen = torch.Generator().manual_seed(int(scale * 1000) % 9973)
    x = (torch.randn(6, 11, 5, generator=gen, dtype=torch.float64) * scale).to(dtype)
    expected = theirs(x, dim=axis)
    got_torch = ours(x, axis=axis)
    got_numpy = ours(x.numpy(), axis=axis)
    assert got_torch.dtype == dtype and got_numpy.dtype == x.numpy().dtype
    # alpha = 3 gives p = sqrt(z - tau): an entry just above the threshold amplifies the
    # last-bit error of tau (both bisections' and ours), so only there a looser bound.
    tol = TOL[dtype] if name != "bisect_3" else {torch.float64: 1e-9, torch.float32: 1e-3}[dtype]
    torch.testing.assert_close(got_torch, expected, atol=tol, rtol=0)
    np.testing.assert_allclose(got_numpy, expected.numpy(), atol=tol, rtol=0)


@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_agrees_with_entmax_package_on_ties_and_masks(name, dtype):
    ours, theirs = MAPS[name]
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-3, 3, (200, 9), generator=gen).to(dtype) / 2  # many exact ties
    x[torch.rand(200, 9, generator=gen) < 0.3] = -math.inf
    x[:, 0] = torch.where(torch.isinf(x[:, 0]), torch.zeros_like(x[:, 0]), x[:, 0])  # one finite per row
    x[5] = 1.25  # an all-equal row gives the uniform distribution
    torch.testing.assert_close(ours(x), theirs(x), atol=TOL[dtype], rtol=0)
    np.testing.assert_allclose(ours(x[5].numpy()), np.full(9, 1 / 9), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15", "bisect_1.25"])
def test_masking_with_minus_inf_equals_truncating_the_input(name):
    ours, _ = MAPS[name]
    rng = np.random.default_rng(1)
    x = rng.normal(size=12) * 2
    keep = rng.random(12) < 0.6
    masked = np.where(keep, x, -np.inf)
    p = ours(masked)
    assert np.all(p[~keep] == 0.0)
    # equal to rounding (a sum with zeros inside may be added in another order)
    np.testing.assert_allclose(p[keep], ours(x[keep]), atol=1e-15, rtol=0)
    # the same for torch, and the gradient of masked entries is exactly zero
    t = torch.tensor(masked, requires_grad=True)
    w = torch.tensor(rng.normal(size=12))
    (ours(t) * w).sum().backward()
    tt = torch.tensor(x[keep], requires_grad=True)
    (ours(tt) * w[torch.from_numpy(keep)]).sum().backward()
    assert torch.all(t.grad[torch.from_numpy(~keep)] == 0)
    torch.testing.assert_close(t.grad[torch.from_numpy(keep)], tt.grad, atol=1e-14, rtol=0)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15", "bisect_1.5", "bisect_1.25", "bisect_3"])
def test_backward_is_the_true_gradient_gradcheck_float64(name):
    ours, _ = MAPS[name]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 7, generator=gen, dtype=torch.float64) * 2  # distinct values: no kinks
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ours(t, axis=-1), (x,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda t: ours(t, axis=0), (x,), eps=1e-6, atol=1e-7)


def test_backward_matches_autograd_through_entmax_package():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    for ours, theirs in [MAPS["sparsemax"], MAPS["entmax15"], MAPS["bisect_1.25"]]:
        (mine,) = torch.autograd.grad(ours(x), x, g)
        (ref,) = torch.autograd.grad(theirs(x), x, g)
        torch.testing.assert_close(mine, ref, atol=1e-10, rtol=0)


def test_sparsemax_is_the_closest_point_of_the_simplex():
    rng = np.random.default_rng(2)
    x = rng.normal(size=6) * 1.5
    p = sparsemax(x)
    others = rng.dirichlet(np.ones(6) * 0.3, size=20000)  # many points of the simplex
    assert np.all(np.sum((others - x) ** 2, axis=1) >= np.sum((p - x) ** 2) - 1e-12)


def test_entmax15_maximises_the_tsallis_objective():
    # <p, x> + (1 - sum p^1.5) / 0.75 is maximised by entmax15 over the simplex.
    rng = np.random.default_rng(4)
    x = rng.normal(size=5)

    def objective(q):
        return q @ x + (1 - np.sum(q**1.5, axis=-1)) / 0.75

    best = objective(entmax15(x))
    others = rng.dirichlet(np.ones(5) * 0.5, size=20000)
    assert np.all(objective(others) <= best + 1e-12)


def test_outputs_are_sparse_distributions_with_exact_zeros():
    x = np.array([[3.0, 1.0, -2.0, 0.5], [0.1, 0.2, 0.3, 0.4]])
    for f in (sparsemax, entmax15, lambda a: entmax_bisect(a, 1.8)):
        p = f(x)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-14)
        assert np.all(p >= 0)
        assert p[0, 2] == 0.0  # far below the top: exactly zero, unlike softmax
    np.testing.assert_allclose(sparsemax([1.0, 0.5, -1.0]), [0.75, 0.25, 0.0], atol=1e-15)


@pytest.mark.parametrize("fn", [sparsemax, entmax15, lambda a, axis=-1: entmax_bisect(a, 1.3, axis)])
def test_fully_masked_slice_is_zero_and_nan_slice_is_nan(fn):
    x = np.array([[-np.inf, -np.inf, -np.inf], [1.0, np.nan, 0.0], [0.0, 1.0, -np.inf]])
    p = fn(x)
    assert np.all(p[0] == 0.0)
    assert np.all(np.isnan(p[1]))
    np.testing.assert_allclose(p[2], fn(np.array([0.0, 1.0, -np.inf])))
    t = fn(torch.tensor(x))
    np.testing.assert_array_equal(t.numpy(), p)
    assert np.all(sl.softmax(x[0]) == p[0])  # consistent with core.softmax


@pytest.mark.parametrize("fn", [sparsemax, entmax15, lambda a, axis=-1: entmax_bisect(a, 1.3, axis)])
def test_plus_inf_entries_share_the_mass_evenly(fn):
    p = fn([np.inf, 1.0, np.inf, -np.inf])
    np.testing.assert_array_equal(p, [0.5, 0.0, 0.5, 0.0])


def test_bisection_alpha_near_one_approaches_softmax_and_two_is_sparsemax():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 6))
    reference = scipy.special.softmax(x, axis=-1)
    errors = [np.abs(entmax_bisect(x, a) - reference).max() for a in (1.1, 1.01, 1.001)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3
    np.testing.assert_allclose(entmax_bisect(x, 2.0), sparsemax(x), atol=1e-13)
    np.testing.assert_allclose(entmax_bisect(x, 1.5), entmax15(x), atol=1e-13)


def test_bisection_converges_to_softmax_linearly_in_alpha_minus_one():
    # The q-exponential is exp(z - (alpha - 1) z^2 / 2 + ...), so the distance to softmax
    # shrinks in proportion to alpha - 1 all the way down: no floor from rounding.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(10, 40))
    reference = scipy.special.softmax(x, axis=-1)
    slopes = [np.abs(entmax_bisect(x, 1 + eps) - reference).max() / eps for eps in (1e-4, 1e-8, 1e-12)]
    np.testing.assert_allclose(slopes[1:], slopes[0], rtol=0.05)
    t = torch.tensor(x, requires_grad=True)
    out = entmax_bisect(t, 1 + 1e-12)
    torch.testing.assert_close(out, torch.softmax(t, -1), rtol=0, atol=1e-10)
    out.sum().backward()


def test_tuple_and_none_axes_normalise_over_all_listed_axes():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 4, 5))
    p = sparsemax(x, axis=(0, 2))
    expected = entmax.sparsemax(torch.tensor(x).permute(1, 0, 2).reshape(4, 15), dim=-1)
    np.testing.assert_allclose(p.transpose(1, 0, 2).reshape(4, 15), expected.numpy(), atol=1e-14)
    np.testing.assert_allclose(entmax15(x, axis=None).sum(), 1.0)


def test_half_precision_and_integer_inputs_keep_the_api_dtypes():
    assert sparsemax(np.array([1.0, 2.0], dtype=np.float16)).dtype == np.float16
    assert entmax15([1, 2, 3]).dtype == np.float64
    t = torch.tensor([1.0, 2.0, 0.0], dtype=torch.bfloat16, requires_grad=True)
    out = entmax_bisect(t, 1.5)
    assert out.dtype == torch.bfloat16
    out.sum().backward()
    assert t.grad is not None


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="alpha"):
        entmax_bisect([1.0, 2.0], alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        entmax_bisect([1.0, 2.0], alpha=float("nan"))
    with pytest.raises(ValueError, match="n_iter"):
        entmax_bisect([1.0, 2.0], n_iter=0)
    with pytest.raises(TypeError, match="x"):
        sparsemax(["a", "b"])
    with pytest.raises(np.exceptions.AxisError):
        entmax15(np.ones((2, 3)), axis=2)
    with pytest.raises(IndexError):
        entmax15(torch.ones(2, 3), axis=2)
    with pytest.raises(ValueError, match="temperature"):
        gumbel_softmax([1.0, 2.0], temperature=0.0)
    with pytest.raises(TypeError, match="rng"):
        gumbel_softmax([1.0, 2.0], rng="seed")
    with pytest.raises(ValueError, match="rng"):
        gumbel_softmax([1.0, 2.0], rng=-1)
    with pytest.raises(ValueError, match="rng"):
        gumbel_softmax(torch.tensor([1.0, 2.0]), rng=-3)


# ---------------------------------------------------------------------------- Gumbel


def test_gumbel_same_seed_gives_same_sample():
    x = np.array([0.5, -1.0, 2.0, 0.0])
    np.testing.assert_array_equal(gumbel_softmax(x, rng=3), gumbel_softmax(x, rng=3))
    assert not np.array_equal(gumbel_softmax(x, rng=3), gumbel_softmax(x, rng=4))
    a = gumbel_softmax(x, rng=np.random.default_rng(8))
    b = gumbel_softmax(x, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    t = torch.tensor(x)
    assert torch.equal(gumbel_softmax(t, rng=3), gumbel_softmax(t, rng=3))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(gumbel_softmax(t, rng=g1), gumbel_softmax(t, rng=g2))
    np.testing.assert_array_equal(
        gumbel_softmax(x, rng=torch.Generator().manual_seed(5)), gumbel_softmax(x, rng=torch.Generator().manual_seed(5))
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_gumbel_hard_sample_frequencies_match_softmax(backend):
    # 40,000 samples: each frequency has standard deviation <= 0.0025; tolerance 0.01 (4 sigma).
    logits = np.array([1.0, 0.0, -1.0, 0.5, -np.inf])
    batch = np.broadcast_to(logits, (40000, 5))
    if backend == "torch":
        samples = gumbel_softmax(torch.tensor(batch), hard=True, rng=0).numpy()
    else:
        samples = gumbel_softmax(batch, hard=True, rng=0)
    assert set(np.unique(samples)) <= {0.0, 1.0} and np.all(samples.sum(-1) == 1)
    frequencies = samples.mean(0)
    np.testing.assert_allclose(frequencies, scipy.special.softmax(logits), atol=0.01)
    assert frequencies[-1] == 0.0  # -inf is never sampled


def test_gumbel_soft_sample_is_a_distribution_that_sharpens_as_temperature_falls():
    x = np.array([0.3, 0.1, -0.2])
    soft = gumbel_softmax(x, temperature=1.0, rng=1)
    np.testing.assert_allclose(soft.sum(), 1.0)
    cold = gumbel_softmax(x, temperature=0.01, rng=1)
    hard = gumbel_softmax(x, hard=True, rng=1)
    np.testing.assert_allclose(cold, hard, atol=1e-6)  # same noise: T -> 0 gives the hard sample


def test_gumbel_hard_is_exactly_one_hot_with_straight_through_gradient():
    x = torch.tensor([[0.2, -0.4, 1.1, 0.0]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    hard = gumbel_softmax(x, temperature=0.7, hard=True, rng=9)
    assert set(hard.detach().flatten().tolist()) == {0.0, 1.0}
    (hard * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    soft = gumbel_softmax(x2, temperature=0.7, rng=9)
    (soft * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-15, rtol=0)
    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))


def test_gumbel_fully_masked_slice_is_zero_even_when_hard():
    x = np.array([[-np.inf, -np.inf], [0.0, 1.0]])
    for hard in (False, True):
        out = gumbel_softmax(x, hard=hard, rng=0)
        assert np.all(out[0] == 0.0)
        np.testing.assert_allclose(out[1].sum(), 1.0)


@pytest.mark.parametrize("fn", [sparsemax, entmax15, entmax_bisect])
def test_scalars_empty_inputs_and_torch_zero_dim_follow_the_core_conventions(fn):
    out = fn(3.0, axis=None)
    assert isinstance(out, np.float64) and out == 1.0  # a NumPy scalar, as NumPy reductions give
    assert fn(torch.tensor(2.0)).shape == () and fn(torch.tensor(2.0)).item() == 1.0
    assert fn(np.zeros((0, 3))).shape == (0, 3)
    assert fn(torch.zeros(2, 0)).shape == (2, 0)
    assert isinstance(fn([1.0, 2.0]), np.ndarray)


def test_gumbel_nan_slice_is_nan_and_tuple_axes_give_one_hot_over_all_of_them():
    out = gumbel_softmax(np.array([[np.nan, 1.0], [0.0, 1.0]]), hard=True, rng=0)
    assert np.all(np.isnan(out[0])) and out[1].sum() == 1.0
    hard = gumbel_softmax(np.zeros((3, 4, 5)), hard=True, axis=(0, 2), rng=1)
    np.testing.assert_array_equal(hard.sum(axis=(0, 2)), np.ones(4))
    assert set(np.unique(hard)) == {0.0, 1.0}
