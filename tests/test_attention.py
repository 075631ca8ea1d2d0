"""softmax_lib.attention against torch's own attention, autograd and direct formulas."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softmax_lib.attention import (
    causal_mask,
    kernel_regression_as_attention,
    multi_head_attention,
    nadaraya_watson,
    peak_allocated_bytes,
    scaled_dot_product_attention,
    score_matrix_bytes,
)


def torch_reference(q, k, v, mask, causal, scale):
    """torch's SDPA in float64, with mask and causal combined by hand (torch refuses both)."""
    q, k, v = (torch.as_tensor(np.asarray(t), dtype=torch.float64) for t in (q, k, v))
    allowed = None if mask is None else torch.as_tensor(np.atleast_2d(np.asarray(mask)))
    if causal:
        tri = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        allowed = tri if allowed is None else allowed & tri
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale).numpy()


SHAPES = [  # (batch dims, Lq, Lk, d, dv)
    ((), 5, 5, 4, 4),
    ((2,), 3, 7, 8, 5),
    ((2, 3), 6, 4, 16, 2),
]


def make_case(rng, batch, lq, lk, d, dv, mask_kind):
    q = rng.normal(size=batch + (lq, d))
    k = rng.normal(size=batch + (lk, d))
    v = rng.normal(size=batch + (lk, dv))
    if mask_kind is None:
        mask = None
    elif mask_kind == "random":
        mask = rng.random(batch + (lq, lk)) < 0.6
        mask[..., 0] = True  # every row keeps a key, also under causal masking
    else:  # "padding": the last keys are padding, one mask row shared by every query
        mask = np.arange(lk) < lk - 2
    return q, k, v, mask


@pytest.mark.parametrize(
    "shape, mask_kind, causal, scale, dtype, kind",
    list(
        itertools.product(
            SHAPES, [None, "random", "padding"], [False, True], [None, 0.3], ["float32", "float64"], ["numpy", "torch"]
        )
    ),
)
def test_matches_torch_sdpa(shape, mask_kind, causal, scale, dtype, kind):
    rng = np.random.default_rng(zlib.crc32(repr((shape, mask_kind, causal, scale)).encode()))
    q, k, v, mask = make_case(rng, *shape, mask_kind)
    expected = torch_reference(q, k, v, mask, causal, scale)
    q, k, v = (t.astype(dtype) for t in (q, k, v))
    if kind == "torch":
        q, k, v = (torch.from_numpy(t) for t in (q, k, v))
        mask = None if mask is None else torch.from_numpy(mask)
    out = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale)
    assert isinstance(out, torch.Tensor if kind == "torch" else np.ndarray)
    assert str(out.dtype).endswith(dtype)
    assert tuple(out.shape) == shape[0] + (shape[1], shape[4])
    tol = 1e-12 if dtype == "float64" else 2e-6
    finite = np.isfinite(expected)
    assert finite.all()
    np.testing.assert_allclose(np.asarray(out), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("lq, lk", [(3, 6), (6, 3), (1, 4), (4, 1)])
def test_causal_is_top_left_aligned_like_torch_when_lengths_differ(lq, lk):
    gen = torch.Generator().manual_seed(lq * 10 + lk)
    q, k, v = (torch.randn(2, n, 4, generator=gen, dtype=torch.float64) for n in (lq, lk, lk))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out, weights = scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)
    torch.testing.assert_close(out, expected)
    for i in range(lq):  # query i sees exactly keys j <= i
        assert torch.all(weights[:, i, i + 1 :] == 0)
        assert torch.all(weights[:, i, : i + 1] > 0)


def test_weights_are_torch_softmax_of_scaled_scores():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 7, 4))
    _, weights = scaled_dot_product_attention(q, k, v, scale=0.7, return_weights=True)
    expected = torch.softmax(torch.from_numpy(q) @ torch.from_numpy(k).mT * 0.7, dim=-1).numpy()
    np.testing.assert_allclose(weights, expected, rtol=1e-13, atol=1e-15)


def test_fully_masked_row_is_zero_not_nan():
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    mask = np.ones((4, 5), dtype=bool)
    mask[2] = False
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert np.all(out[2] == 0) and np.all(weights[2] == 0)
    assert np.isfinite(out).all()
    # The naive recipe (fill with -inf, then softmax) gives NaN on that row.
    scores = torch.from_numpy(q @ k.T).masked_fill(~torch.from_numpy(mask), -torch.inf)
    assert torch.isnan(torch.softmax(scores, -1)[2]).all()
    # The other rows agree with torch's SDPA.
    expected = torch_reference(q, k, v, mask, False, None)
    np.testing.assert_allclose(np.delete(out, 2, 0), np.delete(expected, 2, 0), rtol=1e-12)


def test_fully_masked_row_has_finite_zero_gradient():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, n, 3, generator=gen, dtype=torch.float64, requires_grad=True) for n in (4, 5, 5))
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1] = False
    out = scaled_dot_product_attention(q, k, v, mask=mask)
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.all(q.grad[:, 1] == 0)  # that query influences nothing


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal):
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 5, generator=gen) < 0.7
    mask[3] = False  # a fully masked row inside the check
    assert torch.autograd.gradcheck(
        lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=0.8), (q, k, v)
    )


def test_gradients_match_torch_sdpa():
    gen = torch.Generator().manual_seed(5)
    args = [torch.randn(2, 2, n, 8, generator=gen, dtype=torch.float64, requires_grad=True) for n in (6, 6, 6)]
    ours = torch.autograd.grad(scaled_dot_product_attention(*args, causal=True).sum(), args)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(*args, is_causal=True).sum(), args)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_mask_and_causal_combine_by_logical_and():
    rng = np.random.default_rng(6)
    q, k, v = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    mask = rng.random((5, 5)) < 0.5
    combined = mask & np.tril(np.ones((5, 5), dtype=bool))
    out, w = scaled_dot_product_attention(q, k, v, mask=mask, causal=True, return_weights=True)
    ref, w_ref = scaled_dot_product_attention(q, k, v, mask=combined, return_weights=True)
    np.testing.assert_array_equal(out, ref)
    assert np.all(w[~combined] == 0)


def test_mask_broadcasts_over_heads_and_queries():
    rng = np.random.default_rng(7)
    q, k, v = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 6, 5)), rng.normal(size=(2, 3, 6, 5))
    padding = rng.random((2, 1, 1, 6)) < 0.7  # per batch element, shared by heads and queries
    padding[..., 0] = True
    out = scaled_dot_product_attention(q, k, v, mask=padding)
    np.testing.assert_allclose(out, torch_reference(q, k, v, padding, False, None), rtol=1e-12)


def test_causal_mask_helper_is_lower_triangular_like_torch():
    expected = torch.ones(3, 5, dtype=torch.bool).tril().numpy()
    np.testing.assert_array_equal(causal_mask(3, 5), expected)
    assert causal_mask(4, like=torch.zeros(1)).dtype == torch.bool


def test_half_precision_input_keeps_its_dtype():
    rng = np.random.default_rng(8)
    q, k, v = (rng.normal(size=(3, 4)).astype(np.float16) for _ in range(3))
    out = scaled_dot_product_attention(q, k, v)
    assert out.dtype == np.float16
    expected = torch_reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), None, False, None)
    np.testing.assert_allclose(out, expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "shapes, name",
    [(((3, 4), (5, 3), (5, 2)), "k"), (((3, 4), (5, 4), (6, 2)), "v"), (((4,), (5, 4), (5, 2)), "q")],
)
def test_shape_mismatch_raises_value_error_naming_the_argument(shapes, name):
    q, k, v = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        scaled_dot_product_attention(q, k, v)


def test_non_broadcasting_batch_dims_raise_value_error():
    with pytest.raises(ValueError, match="batch"):
        scaled_dot_product_attention(np.zeros((2, 3, 4)), np.zeros((3, 5, 4)), np.zeros((3, 5, 4)))


def test_non_boolean_mask_raises_type_error():
    q = np.zeros((3, 4))
    with pytest.raises(TypeError, match="mask"):
        scaled_dot_product_attention(q, q, q, mask=np.ones((3, 3)))
    with pytest.raises(TypeError, match="mask"):
        scaled_dot_product_attention(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4), mask=torch.zeros(3, 3))


def test_mask_of_wrong_shape_raises_value_error():
    q = np.zeros((3, 4))
    with pytest.raises(ValueError, match="mask"):
        scaled_dot_product_attention(q, q, q, mask=np.ones((2, 3), dtype=bool))


def test_bad_scale_is_refused():
    q = np.zeros((3, 4))
    with pytest.raises(ValueError, match="scale"):
        scaled_dot_product_attention(q, q, q, scale=float("nan"))
    with pytest.raises(TypeError, match="scale"):
        scaled_dot_product_attention(q, q, q, scale="1")


# --- multi-head attention ---------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_matches_torch_module(causal):
    gen = torch.Generator().manual_seed(9)
    d_model, n_heads, length = 12, 3, 7
    x = torch.randn(2, length, d_model, generator=gen, dtype=torch.float64)
    w_q, w_k, w_v, w_o = (torch.randn(d_model, d_model, generator=gen, dtype=torch.float64) / 4 for _ in range(4))
    module = torch.nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        module.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
        module.out_proj.weight.copy_(w_o.T)
    # torch's module masks where its boolean mask is True: the opposite convention.
    blocked = ~torch.ones(length, length, dtype=torch.bool).tril() if causal else None
    expected, expected_w = module(x, x, x, attn_mask=blocked, average_attn_weights=False)
    out, weights = multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, causal=causal, return_weights=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_w)
    assert weights.shape == (2, n_heads, length, length)


def test_multi_head_attention_rejects_indivisible_heads():
    w = np.eye(6)
    with pytest.raises(ValueError, match="n_heads"):
        multi_head_attention(np.zeros((4, 6)), w, w, w, w, 4)


# --- Nadaraya-Watson ---------------------------------------------------------------------


def direct_nadaraya_watson(x_query, x_train, y_train, h):
    """The textbook formula, term by term: sum K(x - x_i) y_i / sum K(x - x_i)."""
    out = []
    for x in np.atleast_1d(x_query):
        kern = np.array([np.exp(-((x - xi) ** 2) / (2 * h * h)) for xi in x_train])
        out.append(np.dot(kern, y_train) / kern.sum())
    return np.array(out)


def test_nadaraya_watson_equals_direct_weighted_average():
    rng = np.random.default_rng(10)
    x_train = np.sort(rng.uniform(0, 5, size=40))
    y_train = np.sin(x_train) + 0.2 * rng.normal(size=40)
    x_query = np.linspace(-0.5, 5.5, 25)
    pred = nadaraya_watson(x_query, x_train, y_train, 0.4)
    np.testing.assert_allclose(pred, direct_nadaraya_watson(x_query, x_train, y_train, 0.4), rtol=1e-12)


def test_nadaraya_watson_is_dot_product_attention_with_augmented_inputs():
    rng = np.random.default_rng(11)
    x_train, x_query = rng.uniform(-2, 2, size=30), rng.uniform(-2, 2, size=9)
    y_train = rng.normal(size=(30, 2))
    pred, weights = nadaraya_watson(x_query, x_train, y_train, 0.5, return_weights=True)
    q, k, scale = kernel_regression_as_attention(x_query, x_train, 0.5)
    out, w_att = scaled_dot_product_attention(q, k, y_train, scale=scale, return_weights=True)
    np.testing.assert_allclose(out, pred, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w_att, weights, rtol=1e-10, atol=1e-14)


def test_nadaraya_watson_far_query_gives_nearest_value_not_nan():
    # Every kernel value underflows to 0 (0/0 with the direct formula); softmax copes.
    x_train, y_train = np.array([0.0, 1.0, 2.0]), np.array([5.0, 6.0, 7.0])
    with np.errstate(invalid="ignore"):
        assert np.isnan(direct_nadaraya_watson([100.0], x_train, y_train, 0.1)).all()
    assert nadaraya_watson([100.0], x_train, y_train, 0.1)[0] == pytest.approx(7.0)


def test_nadaraya_watson_works_on_tensors_with_autograd():
    x_train = torch.linspace(0, 1, 8, dtype=torch.float64)
    y_train = torch.sin(x_train).requires_grad_()
    pred = nadaraya_watson(torch.tensor([0.3], dtype=torch.float64), x_train, y_train, 0.2)
    pred.sum().backward()
    assert torch.isclose(y_train.grad.sum(), torch.tensor(1.0, dtype=torch.float64))  # weights sum to 1


def test_nadaraya_watson_rejects_bad_bandwidth():
    with pytest.raises(ValueError, match="bandwidth"):
        nadaraya_watson([0.0], [0.0, 1.0], [1.0, 2.0], 0.0)


# --- memory of the score matrix ------------------------------------------------------------


def test_score_matrix_bytes_matches_allocated_arrays():
    assert score_matrix_bytes(2, 3, 5, 7, np.float64) == np.empty((2, 3, 5, 7)).nbytes
    assert score_matrix_bytes(1, 2, 16, dtype=torch.bfloat16) == torch.empty(1, 2, 16, 16, dtype=torch.bfloat16).nbytes


def test_peak_allocated_bytes_sees_the_score_matrix():
    rng = np.random.default_rng(12)
    length, d = 512, 16
    q = rng.normal(size=(length, d))

    def scores_only():
        q @ q.T  # (L, L) float64, dropped at once

    peak = peak_allocated_bytes(scores_only)
    expected = score_matrix_bytes(1, 1, length, dtype=np.float64)
    assert expected <= peak <= 1.05 * expected + 4096
