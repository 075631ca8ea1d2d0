"""softmax_lib.gradients against torch autograd, finite differences and torch's cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softmax_lib import gradients as g

RNG = np.random.default_rng(1234)


def torch_jacobian(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Jacobian of torch.softmax(x / T) over the last axis, by autograd (batched)."""
    xt = torch.tensor(x, dtype=torch.float64)
    batch = xt.reshape(-1, xt.shape[-1])
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda r: torch.softmax(r / temperature, -1), row) for row in batch]
    )
    return jac.reshape(*x.shape, x.shape[-1]).numpy()


def finite_difference_jvp(x: np.ndarray, v: np.ndarray, temperature: float = 1.0, h: float = 1e-6) -> np.ndarray:
    """Central difference of scipy's softmax along v (an independent implementation)."""
    from scipy.special import softmax as sp_softmax

    return (sp_softmax((x + h * v) / temperature, axis=-1) - sp_softmax((x - h * v) / temperature, axis=-1)) / (2 * h)


# ----------------------------------------------------------------------------- Jacobian


@pytest.mark.parametrize("temperature", [1.0, 0.3, 4.0])
def test_jacobian_matches_torch_autograd(temperature):
    x = RNG.normal(size=(3, 2, 5)) * 3
    np.testing.assert_allclose(g.softmax_jacobian(x, temperature=temperature), torch_jacobian(x, temperature), atol=1e-14)


def test_jacobian_of_non_last_axis_moves_axis_to_end():
    x = RNG.normal(size=(4, 3, 2))
    jac = g.softmax_jacobian(x, axis=0)
    assert jac.shape == (3, 2, 4, 4)
    np.testing.assert_allclose(jac, torch_jacobian(np.moveaxis(x, 0, -1)), atol=1e-14)


def test_jacobian_is_symmetric_psd_with_ones_in_kernel_and_eigenvalues_at_most_half():
    x = RNG.normal(size=(50, 6)) * 5
    jac = g.softmax_jacobian(x)
    np.testing.assert_allclose(jac, np.swapaxes(jac, -1, -2), atol=0)
    np.testing.assert_allclose(jac @ np.ones(6), 0, atol=1e-15)
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() > -1e-15 and eig.max() <= 0.5


def test_jacobian_largest_eigenvalue_tends_to_half_when_two_probabilities_tend_to_half():
    # two equal logits far above the rest: p -> (1/2, 1/2, 0, ...), lambda_max -> 1/2
    x = np.array([30.0, 30.0, 0.0, -2.0])
    assert abs(np.linalg.eigvalsh(g.softmax_jacobian(x)).max() - 0.5) < 1e-12


def test_jacobian_of_torch_input_is_tensor_with_autograd():
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    jac = g.softmax_jacobian(x, temperature=2.0)
    assert isinstance(jac, torch.Tensor) and jac.shape == (2, 4, 4)
    jac.sum().backward()  # d/dx of sum(J) is 0: every row of J sums to 0
    np.testing.assert_allclose(x.grad.numpy(), 0, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: g.softmax_jacobian(t, temperature=0.7), (x.detach().requires_grad_(),))


def test_jacobian_rejects_bad_temperature_and_tuple_axis():
    with pytest.raises(ValueError, match="temperature"):
        g.softmax_jacobian([1.0, 2.0], temperature=0.0)
    with pytest.raises(TypeError, match="axis"):
        g.softmax_jacobian(np.ones((2, 2)), axis=(0, 1))
    with pytest.raises(np.exceptions.AxisError):
        g.softmax_jacobian(np.ones((2, 2)), axis=2)


# ----------------------------------------------------------------------------- JVP / VJP


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_jvp_matches_dense_jacobian_and_finite_differences(temperature):
    x = RNG.normal(size=(7, 9))
    v = RNG.normal(size=(7, 9))
    jvp = g.softmax_jvp(x, v, temperature=temperature)
    np.testing.assert_allclose(jvp, np.einsum("nij,nj->ni", torch_jacobian(x, temperature), v), atol=1e-14)
    np.testing.assert_allclose(jvp, finite_difference_jvp(x, v, temperature), atol=1e-8)


def test_jvp_and_vjp_match_torch_autograd_products():
    x = torch.randn(3, 8, dtype=torch.float64)
    v = torch.randn(3, 8, dtype=torch.float64)
    # (torch's forward-mode AD warns in this torch version; functional.jvp uses double backward)
    _, expected_jvp = torch.autograd.functional.jvp(lambda t: torch.softmax(t, -1), x, v)
    torch.testing.assert_close(g.softmax_jvp(x, v), expected_jvp, rtol=0, atol=1e-15)
    _, expected_vjp = torch.autograd.functional.vjp(lambda t: torch.softmax(t, -1), x, v)
    torch.testing.assert_close(g.softmax_vjp(x, v), expected_vjp, rtol=0, atol=1e-15)


def test_jvp_passes_gradcheck_in_float64():
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: g.softmax_jvp(a, b, temperature=1.5), (x, v))


def test_jvp_along_all_ones_is_zero_shift_invariance():
    x = RNG.normal(size=(4, 6)) * 10
    np.testing.assert_allclose(g.softmax_jvp(x, np.ones(6)), 0, atol=4e-16)


def test_jvp_on_other_axis_and_extreme_logits_is_finite():
    x = RNG.normal(size=(5, 3)) * 1e4
    v = RNG.normal(size=(5, 3))
    out = g.softmax_jvp(x, v, axis=0)
    assert np.isfinite(out).all()
    expected = np.einsum("kij,jk->ik", g.softmax_jacobian(x, axis=0), v)
    np.testing.assert_allclose(out, expected, atol=1e-15)


def test_jvp_rejects_v_that_does_not_broadcast():
    with pytest.raises(ValueError, match="v of shape"):
        g.softmax_jvp(np.ones((2, 3)), np.ones(4))


# ----------------------------------------------------------------------------- cross-entropy


def torch_ce(logits, target, axis, reduction):
    lt = torch.tensor(logits).movedim(axis, 1) if logits.ndim > 1 else torch.tensor(logits)
    tt = torch.tensor(target)
    if tt.is_floating_point() and logits.ndim > 1:
        tt = tt.movedim(axis, 1)
    return F.cross_entropy(lt, tt, reduction=reduction).numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_cross_entropy_with_index_targets_matches_torch(reduction, axis):
    logits = RNG.normal(size=(6, 5, 4)) * 4
    n_classes = logits.shape[axis]
    batch_shape = np.delete(np.array(logits.shape), axis % 3)
    target = RNG.integers(0, n_classes, size=tuple(batch_shape))
    ours = g.cross_entropy(logits, target, axis=axis, reduction=reduction)
    expected = torch_ce(np.moveaxis(logits, axis, -1).reshape(-1, n_classes), target.reshape(-1), 1, reduction)
    np.testing.assert_allclose(np.ravel(ours), np.ravel(expected), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_probability_targets_matches_torch(reduction):
    logits = RNG.normal(size=(3, 5, 7))
    target = RNG.dirichlet(np.ones(5), size=(3, 7)).transpose(0, 2, 1)  # classes along axis 1
    ours = g.cross_entropy(logits, target, axis=1, reduction=reduction)
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(target), reduction=reduction).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-13)


def test_cross_entropy_of_one_unbatched_sample_is_numpy_scalar_like_torch():
    logits = np.array([0.5, -1.0, 2.0])
    ours = g.cross_entropy(logits, 2)
    assert isinstance(ours, np.float64)
    np.testing.assert_allclose(ours, F.cross_entropy(torch.tensor(logits), torch.tensor(2)).item(), rtol=1e-15)


def test_cross_entropy_with_extreme_logits_is_finite_and_matches_torch():
    logits = np.array([[1e4, -1e4, 0.0], [-1e300, 1e300, 0.0], [800.0, 800.0, -800.0]])
    target = np.array([1, 1, 0])
    ours = g.cross_entropy(logits[:1], target[:1], reduction="none")
    np.testing.assert_allclose(ours, [2e4], rtol=1e-15)
    np.testing.assert_allclose(g.cross_entropy(logits, target, reduction="none"), [2e4, 0.0, np.log(2)], rtol=1e-15)
    torch_ok = F.cross_entropy(torch.tensor(logits[[0, 2]]), torch.tensor(target[[0, 2]]), reduction="none")
    np.testing.assert_allclose(g.cross_entropy(logits[[0, 2]], target[[0, 2]], reduction="none"), torch_ok.numpy())


def test_cross_entropy_of_tensors_is_differentiable_and_matches_torch_gradient():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 5, 2, 2])
    assert torch.autograd.gradcheck(lambda t: g.cross_entropy(t, target), (logits,))
    ours = torch.autograd.grad(g.cross_entropy(logits, target, reduction="sum"), logits)[0]
    theirs = torch.autograd.grad(F.cross_entropy(logits, target, reduction="sum"), logits)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-15)


def test_cross_entropy_float32_and_float16_keep_their_dtype():
    logits = RNG.normal(size=(5, 3))
    target = np.array([0, 1, 2, 1, 0])
    expected = float(g.cross_entropy(logits, target))
    for dtype, tol in [(np.float32, 1e-6), (np.float16, 1e-3)]:
        out = g.cross_entropy(logits.astype(dtype), target)
        assert out.dtype == dtype
        np.testing.assert_allclose(float(out), expected, rtol=tol * 5)


def test_out_of_range_class_index_raises_value_error_naming_target():
    with pytest.raises(ValueError, match="target"):
        g.cross_entropy(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="target"):
        g.cross_entropy(torch.zeros(2, 3), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="target"):
        g.cross_entropy_grad(np.zeros((2, 3)), [0, 7])


def test_target_of_wrong_shape_raises_value_error():
    with pytest.raises(ValueError, match="target"):
        g.cross_entropy(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="target"):
        g.cross_entropy(np.zeros((2, 3)), np.full((3, 2), 1 / 3))


def test_float_class_indices_raise_type_error():
    with pytest.raises(TypeError, match="target"):
        g.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="target"):
        g.cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="target"):
        g.cross_entropy(np.zeros((2, 3)), np.array([True, False]))


def test_unknown_reduction_raises_value_error():
    with pytest.raises(ValueError, match="reduction"):
        g.cross_entropy(np.zeros((2, 3)), [0, 1], reduction="average")


# ----------------------------------------------------------------------------- gradient and Hessian


@pytest.mark.parametrize("axis", [-1, 0])
def test_cross_entropy_grad_is_p_minus_y_and_matches_autograd(axis):
    logits = RNG.normal(size=(5, 4)) * 3
    target = RNG.integers(0, logits.shape[axis], size=logits.shape[1 - axis % 2])
    lt = torch.tensor(logits, requires_grad=True)
    F.cross_entropy(lt.movedim(axis, 0).T if axis == 0 else lt, torch.tensor(target), reduction="sum").backward()
    np.testing.assert_allclose(g.cross_entropy_grad(logits, target, axis=axis), lt.grad.numpy(), atol=1e-15)


def test_cross_entropy_grad_with_probability_targets_matches_finite_differences():
    logits = RNG.normal(size=(3, 4))
    target = RNG.dirichlet(np.ones(4), size=3)
    h = 1e-6
    fd = np.zeros_like(logits)
    for n in range(3):
        for k in range(4):
            e = np.zeros_like(logits)
            e[n, k] = h
            fd[n, k] = (g.cross_entropy(logits + e, target, reduction="sum") - g.cross_entropy(logits - e, target, reduction="sum")) / (2 * h)
    np.testing.assert_allclose(g.cross_entropy_grad(logits, target), fd, atol=1e-8)


def test_cross_entropy_hessian_matches_torch_hessian_and_is_target_independent():
    logits = torch.randn(5, dtype=torch.float64)
    for target in (torch.tensor(0), torch.tensor(3)):
        hess = torch.autograd.functional.hessian(lambda t: F.cross_entropy(t, target), logits)
        torch.testing.assert_close(g.cross_entropy_hessian(logits), hess, rtol=0, atol=1e-14)


def test_cross_entropy_hessian_collapses_to_zero_at_saturation():
    for scale in (1.0, 10.0, 40.0):
        eig = np.linalg.eigvalsh(g.cross_entropy_hessian(np.array([scale, 0.0, -scale])))
        assert eig.max() <= 0.5
    assert eig.max() < 1e-16  # scale 40: p is a vertex to within 1e-17


def test_softmax_regression_gradient_matches_torch_autograd_with_l2():
    x = RNG.normal(size=(20, 6))
    y = RNG.integers(0, 3, size=20)
    w = RNG.normal(size=(6, 3))
    b = RNG.normal(size=3)
    loss, gw, gb = g.softmax_regression_loss_and_grad(w, b, x, y, l2=0.1)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    lt = F.cross_entropy(torch.tensor(x) @ wt + bt, torch.tensor(y)) + 0.05 * (wt**2).sum()
    lt.backward()
    np.testing.assert_allclose(loss, lt.item(), rtol=1e-14)
    np.testing.assert_allclose(gw, wt.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(gb, bt.grad.numpy(), atol=1e-14)
