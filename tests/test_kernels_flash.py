"""FlashAttention kernels (Chapter 10) against independent oracles.

Oracles: torch.nn.functional.scaled_dot_product_attention and
softmax_lib.attention.scaled_dot_product_attention in float64, torch.logsumexp of
the explicit score matrix, and an explicit tile-by-tile classification of the causal
mask.  Without a GPU the kernels run through Triton's interpreter on CPU tensors
(small shapes); with one, the same tests run compiled on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import softmax_lib.attention as sl_attention
import softmax_lib.kernels.flash as flash
from softmax_lib.kernels import flash_attention
from softmax_lib.kernels.flash import causal_block_counts, flash_attention_forward

DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
ON_GPU = torch.cuda.is_available()
# float32 on a GPU runs its matrix products in TF32 (documented); exact on the CPU.
FLOAT32_TOL = 5e-3 if ON_GPU else 2e-5
HALF_TOL = {torch.float16: 5e-3, torch.bfloat16: 2e-2}


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    out, ref = out.cpu(), ref.cpu()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def make_qkv(shape, device, dtype=torch.float32, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)
            for _ in range(3)]


def reference(q, k, v, do, causal, scale=None):
    """Output and gradients of torch's SDPA in float64 on the CPU."""
    leaves = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, is_causal=causal, scale=scale)
    out.backward(do.detach().cpu().double())
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("L,d", [(1, 16), (17, 16), (67, 16), (1, 32), (17, 32), (67, 32),
                                 (17, 64), (67, 64)])
def test_forward_and_all_gradients_match_torch_sdpa(device, causal, L, d):
    q, k, v = make_qkv((1, 2, L, d), device, seed=L + d)
    for t in (q, k, v):
        t.requires_grad_()
    out = flash_attention(q, k, v, causal=causal)
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(do.to(device, out.dtype))
    ref_out, ref_grads = reference(q, k, v, do, causal)
    assert out.shape == q.shape and out.dtype == q.dtype and out.device == q.device
    assert rel_err(out, ref_out) < FLOAT32_TOL
    for name, t, g in zip("qkv", (q, k, v), ref_grads):
        if L == 1:  # one key: the weights are constant, dq = dk = 0 in exact arithmetic
            # (TF32 products on a GPU leave a residue of their own rounding)
            assert name == "v" or t.grad.abs().max().item() < (1e-2 if ON_GPU else 1e-6)
        if name == "v" or L > 1:
            assert rel_err(t.grad, g) < FLOAT32_TOL, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_output_agrees_with_softmax_lib_attention(device, causal):
    q, k, v = make_qkv((2, 1, 37, 32), device, seed=5)
    out = flash_attention(q, k, v, causal=causal)
    ref = sl_attention.scaled_dot_product_attention(*(t.cpu().double() for t in (q, k, v)),
                                                    causal=causal)
    assert rel_err(out, ref) < FLOAT32_TOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_saved_lse_is_the_logsumexp_of_the_visible_scores(device, causal):
    L, d = 45, 32
    q, k, v = make_qkv((1, 2, L, d), device, seed=3)
    _, lse = flash_attention_forward(q, k, v, causal=causal)
    s = q.cpu().double() @ k.cpu().double().transpose(-1, -2) / d**0.5
    if causal:
        s = s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    assert lse.shape == (1, 2, L) and lse.dtype == torch.float32
    torch.testing.assert_close(lse.cpu().double(), torch.logsumexp(s, -1),
                               atol=1e-2 if ON_GPU else 1e-5, rtol=0)


DTYPES = [torch.float16, torch.bfloat16] if ON_GPU else [torch.float16]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_half_precision_is_within_its_rounding_of_float64(device, dtype, causal):
    q, k, v = make_qkv((1, 2, 50, 64), device, dtype=dtype, seed=11)
    for t in (q, k, v):
        t.requires_grad_()
    out = flash_attention(q, k, v, causal=causal)
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out.backward(do.to(device, dtype))
    ref_out, ref_grads = reference(q, k, v, do, causal)
    assert out.dtype == dtype
    assert rel_err(out, ref_out) < HALF_TOL[dtype]
    for t, g in zip((q, k, v), ref_grads):
        assert t.grad.dtype == dtype
        assert rel_err(t.grad, g) < 2 * HALF_TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_explicit_scale_matches_torch_and_zero_scale_averages_values(device):
    q, k, v = make_qkv((1, 1, 20, 16), device, seed=7)
    out = flash_attention(q, k, v, scale=0.3)
    ref = F.scaled_dot_product_attention(*(t.cpu().double() for t in (q, k, v)), scale=0.3)
    assert rel_err(out, ref) < FLOAT32_TOL
    # scale 0: every weight is 1/L, so each query's output is the mean of the values.
    uniform = flash_attention(q, k, v, scale=0.0)
    assert rel_err(uniform, v.cpu().mean(-2, keepdim=True).expand_as(v)) < FLOAT32_TOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_tma", [False, True], ids=["pointer-loads", "tma-descriptors"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_tma_and_pointer_loads_both_match_torch(device, use_tma, causal, monkeypatch):
    monkeypatch.setattr(flash, "USE_TMA", use_tma)
    q, k, v = make_qkv((2, 2, 70, 32), device, seed=12)
    out = flash_attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(*(t.cpu().double() for t in (q, k, v)), is_causal=causal)
    assert rel_err(out, ref) < FLOAT32_TOL


@pytest.mark.parametrize("device", DEVICES)
def test_negative_scale_output_and_gradients_match_explicit_formula(device):
    # (torch's own SDPA returns NaN for a negative scale with is_causal, so the oracle
    # here is the formula itself, softmax(s Q K^T + mask) V, in float64 with autograd.)
    L = 21
    q, k, v = make_qkv((1, 2, L, 16), device, seed=13)
    for t in (q, k, v):
        t.requires_grad_()
    out = flash_attention(q, k, v, causal=True, scale=-0.4)
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out.backward(do.to(device, out.dtype))
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    scores = -0.4 * q64 @ k64.transpose(-1, -2)
    scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.softmax(scores, -1) @ v64
    ref.backward(do)
    assert rel_err(out, ref.detach()) < FLOAT32_TOL
    for t, r in zip((q, k, v), (q64, k64, v64)):
        assert rel_err(t.grad, r.grad) < FLOAT32_TOL


@pytest.mark.parametrize("device", DEVICES)
def test_first_causal_query_returns_the_first_value_exactly(device):
    q, k, v = make_qkv((1, 2, 19, 32), device, seed=8)
    out = flash_attention(q, k, v, causal=True)
    # exact on the CPU; on a GPU the float32 product P V runs in TF32 (v rounded to 11 bits)
    tol = 2.0**-10 if ON_GPU else 0.0
    torch.testing.assert_close(out[..., 0, :], v[..., 0, :], atol=0, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_huge_scores_do_not_overflow(device):
    # Scores near 1e4: exp would overflow any float type without the running maximum.
    q, k, v = make_qkv((1, 1, 33, 16), device, seed=9, scale=25.0)
    out = flash_attention(q, k, v, causal=True)
    ref = F.scaled_dot_product_attention(*(t.cpu().double() for t in (q, k, v)), is_causal=True)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 10 * FLOAT32_TOL


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_give_the_same_result(device):
    q, k, v = make_qkv((1, 24, 2, 32), device, seed=4)  # (B, L, H, d) layout
    views = [t.transpose(1, 2) for t in (q, k, v)]      # (B, H, L, d), not contiguous
    out = flash_attention(*views, causal=True)
    ref = flash_attention(*(t.contiguous() for t in views), causal=True)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_empty_output(device):
    q, k, v = make_qkv((0, 2, 8, 16), device)
    assert flash_attention(q, k, v).shape == (0, 2, 8, 16)


def test_bad_inputs_raise_errors_naming_the_argument():
    device = DEVICES[0]
    q, k, v = make_qkv((1, 2, 8, 32), device)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        flash_attention(q, np.zeros((1, 2, 8, 32)), v)
    with pytest.raises(ValueError, match="v must have the shape of q"):
        flash_attention(q, k, v[..., :4, :])
    with pytest.raises(ValueError, match="q must have shape"):
        flash_attention(q[0], k[0], v[0])
    with pytest.raises(TypeError, match="k has dtype"):
        flash_attention(q, k.half(), v)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        flash_attention(q.double(), k.double(), v.double())
    for d in (8, 24, 256):
        q2, k2, v2 = make_qkv((1, 1, 4, d), device)
        with pytest.raises(ValueError, match="power of two from 16 to 128"):
            flash_attention(q2, k2, v2)
    with pytest.raises(ValueError, match="scale must be finite"):
        flash_attention(q, k, v, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        flash_attention(q, k, v, scale="0.1")


@pytest.mark.skipif(ON_GPU, reason="the interpreter is used only without a GPU")
def test_bfloat16_on_the_interpreter_is_a_type_error_that_says_why():
    q, k, v = make_qkv((1, 1, 8, 16), "cpu", dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="interpreter"):
        flash_attention(q, k, v)


def _tile_classes_by_brute_force(L, block_m, block_n, causal):
    """Classify every tile of the L x L grid from the explicit visibility mask."""
    counts = dict(total=0, unmasked=0, masked=0, skipped=0)
    rows = np.arange(L)[:, None]
    for m0 in range(0, L, block_m):
        for n0 in range(0, L, block_n):
            i = rows[m0:m0 + block_m]                    # valid query rows of the tile
            j = np.arange(n0, n0 + block_n)[None, :]     # its key columns, padding included
            visible = (j < L) & ((j <= i) if causal else True)
            counts["total"] += 1
            if visible.all():
                counts["unmasked"] += 1
            elif visible.any():
                counts["masked"] += 1
            else:
                counts["skipped"] += 1
    return counts


@pytest.mark.parametrize("L", [1, 17, 64, 67, 200, 1000])
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 16), (128, 64), (128, 128)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_block_counts_match_the_explicit_mask(L, block_m, block_n, causal):
    assert causal_block_counts(L, block_m, block_n, causal=causal) == \
        _tile_classes_by_brute_force(L, block_m, block_n, causal)


def test_causal_skips_about_half_the_tiles_for_long_sequences():
    counts = causal_block_counts(16384, 128, 128)
    assert counts["masked"] == 128
    assert abs(counts["skipped"] / counts["total"] - 0.5) < 0.01


@pytest.mark.parametrize("args, error, name", [
    ((0, 128, 64), ValueError, "L"), ((1024.0, 128, 64), TypeError, "L"),
    ((1024, True, 64), TypeError, "block_m"), ((1024, 128, -64), ValueError, "block_n"),
    ((1024, 64, 128), ValueError, "multiple"),
])
def test_block_counts_refuse_bad_arguments_by_name(args, error, name):
    with pytest.raises(error, match=name):
        causal_block_counts(*args)


def test_kernel_source_excerpt_starts_and_stops_at_the_markers():
    text = flash.kernel_source("_fwd_stage", start="m_new = tl.maximum", stop="m_i = m_new")
    lines = text.splitlines()
    assert "m_new = tl.maximum" in lines[0] and "m_i = m_new" in lines[-1]
    assert flash.kernel_source(flash._attn_fwd).lstrip().startswith("@triton.jit")


def test_kernel_source_excerpt_ends_with_a_whole_statement():
    # a stop marker on the first line of a call wrapped over several lines keeps the
    # rest of the call: the excerpt's tail from the stop line on parses as Python
    import ast
    import textwrap

    text = flash.kernel_source("_attn_fwd", start="if CAUSAL:", stop="tl.store(LSE")
    lines = text.splitlines()
    stop = next(i for i, line in enumerate(lines) if "tl.store(LSE" in line)
    ast.parse(textwrap.dedent("\n".join(lines[stop:])))
    # a stop marker inside a one-line statement still ends the excerpt on that line
    text = flash.kernel_source("_fwd_stage", start="m_new = tl.maximum", stop="m_i = m_new")
    assert "m_i = m_new" in text.splitlines()[-1]


def test_attention_flops_counts_two_matrix_products_and_halves_for_causal():
    from softmax_lib.bench_attention import attention_flops

    B, H, L, d = 2, 3, 64, 16
    # Q K^T and P V: each (L x d) @ (d x L)-shaped product costs 2 * L * L * d FLOPs
    assert attention_flops(B, H, L, d) == B * H * 2 * (2 * L * L * d)
    assert attention_flops(B, H, L, d, causal=True) == attention_flops(B, H, L, d) / 2
    # backward: five products against the forward's two -> 2.5x, so 3.5x in total
    assert attention_flops(B, H, L, d, backward=True) == 3.5 * attention_flops(B, H, L, d)


def test_kernels_run_on_the_interpreter_even_when_triton_was_imported_first():
    # triton.language's own jitted helpers (tl.max, tl.sum, tl.zeros) are compiled-only when
    # triton is imported before TRITON_INTERPRET is set; the kernels must not call them.
    code = ("import triton\nimport torch\nfrom softmax_lib import kernels\n"
            "if kernels.INTERPRETED:\n"
            "    q = torch.randn(1, 2, 9, 16, requires_grad=True)\n"
            "    out = kernels.flash_attention(q, q, q, causal=True)\n"
            "    out.sum().backward()\n"
            "    y = kernels.softmax(torch.randn(3, 40000))\n"
            "    assert torch.allclose(y.sum(-1), torch.ones(3))\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("kernel", ["fwd", "dkdv", "dq"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_autotuner_sees_exactly_the_candidates_of_its_head_dim(kernel, head_dim):
    # the configs handed to triton.autotune are pruned per head dim; a register cap is part
    # of a candidate, so (128, 64, 8, 2) capped at 128 and uncapped are different ones
    configs = flash._configs(kernel)
    kept = flash._prune_for(kernel)(configs, {"HEAD_DIM": head_dim})
    names = flash._BLOCK_NAMES[kernel]
    seen = sorted((c.kwargs[names[0]], c.kwargs[names[1]], c.num_warps, c.num_stages, c.maxnreg or 0)
                  for c in kept)
    wanted = sorted(tuple(cfg) + (0,) * (5 - len(cfg)) for cfg in flash._TUNING[kernel][head_dim])
    assert seen == wanted
    assert len({str(c) for c in configs}) == len(configs)  # no candidate is tried twice


@pytest.mark.parametrize("device", DEVICES)
def test_nan_input_gives_nan_rows_without_warnings(device):
    # a NaN in one query spoils that query's row only, as in torch's SDPA, and the
    # interpreter's NumPy evaluation of masked lanes must not leak warnings
    import warnings

    q, k, v = make_qkv((1, 1, 9, 16), device)
    q[0, 0, 3, 5] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = flash_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q.double().cpu(), k.double().cpu(), v.double().cpu())
    nan_rows = torch.isnan(out.cpu()).any(-1)[0, 0]
    assert nan_rows.tolist() == torch.isnan(ref).any(-1)[0, 0].tolist() == [i == 3 for i in range(9)]
