"""FlashAttention in Triton: a tiled forward and a recomputing backward (Chapter 10).

Standard attention writes the ``L x L`` score matrix to memory, reads it back for the
softmax, writes the probabilities and reads them again for the product with ``V``.
FlashAttention never forms that matrix: each program owns a block of queries, streams
the keys and values through on-chip memory block by block, and merges the blocks
with the online softmax of Chapter 9 (a running maximum ``m``, a running normaliser
``l`` and an output accumulator rescaled by ``exp(m_old - m_new)`` whenever the
maximum grows).  The forward saves only the output and one number per query row,
the log-sum-exp of its scores; the backward recomputes every probability from it.

Layout of every tensor: ``(B, H, L, d)`` (batch, heads, sequence, head dimension),
made contiguous and viewed as ``B * H`` independent ``(L, d)`` problems.

Kernels
-------
``_attn_fwd``      grid (cdiv(L, BLOCK_M), B*H): O and LSE for one block of queries.
``_attn_bwd_delta`` grid (cdiv(L, BLOCK_M), B*H): delta_i = sum_d dO_id * O_id.
``_attn_bwd_dkdv`` grid (cdiv(L, BLOCK_N1), B*H): dK and dV for one block of keys,
                   streaming over the query blocks that see it.
``_attn_bwd_dq``   grid (cdiv(L, BLOCK_M2), B*H): dQ for one block of queries,
                   streaming over the key blocks it sees.

Inside the kernels the scores are kept in base 2: ``log2(e)`` is folded into the
scale once, so every exponential is a native ``exp2`` and the saved log-sum-exp is
``log2`` of the normaliser.  Causal attention skips the blocks above the diagonal
entirely and masks only the blocks on it (a separate loop stage).

References: Dao et al. (2022), FlashAttention; Dao (2024), FlashAttention-2;
Milakov and Gimelshein (2018), online normaliser calculation.
"""

from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl

from .._array import check_positive_int
from . import INTERPRETED, check_runnable, launch_context
from ._common import row_max, row_sum

__all__ = ["flash_attention", "flash_attention_forward", "causal_block_counts", "kernel_source",
           "LOG2E"]

#: log2(e): multiplies natural-log scores into base 2 (``exp(x) = exp2(x * LOG2E)``).
LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


# ---------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------
@triton.jit
def _fwd_stage(acc, l_i, m_i, q, K, V, Kd, Vd, row0, offs_m, L, qk_scale,
               lo, hi, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
               MODE: tl.constexpr, USE_TMA: tl.constexpr):
    """Fold key blocks [lo, hi) into (acc, l_i, m_i).

    MODE 0: every key in range is valid and visible (no mask at all);
    MODE 1: keys >= L are padding (the last, partial block of non-causal
            attention);
    MODE 2: the diagonal blocks of causal attention (key j visible iff
            j <= query i).
    With USE_TMA the unmasked blocks arrive through the tensor-memory
    accelerator (descriptors Kd, Vd over the (B*H*L, d) view; row0 = first
    row of this problem).
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n                 # (BLOCK_N,)
        kv_offs = cols[:, None] * HEAD_DIM + offs_d[None, :]  # (BLOCK_N, d)
        if MODE == 0:
            if USE_TMA:
                k = Kd.load([row0 + start_n, 0])
                v = Vd.load([row0 + start_n, 0])
            else:
                k = tl.load(K + kv_offs)
                v = tl.load(V + kv_offs)
        else:
            k = tl.load(K + kv_offs, mask=cols[:, None] < L, other=0.0)
            v = tl.load(V + kv_offs, mask=cols[:, None] < L, other=0.0)
        s = tl.dot(q, tl.trans(k))              # (BLOCK_M, BLOCK_N) raw scores
        if MODE == 0:
            # qk_scale >= 0 (the launcher makes it so): max(s) * qk_scale is
            # the maximum of the scaled scores, and the scaling folds into
            # one multiply-add.
            # running maximum, base 2
            m_new = tl.maximum(m_i, row_max(s, 1) * qk_scale)
            # unnormalised probabilities
            p = tl.math.exp2(s * qk_scale - m_new[:, None])
        else:
            s = s * qk_scale
            if MODE == 1:
                s = tl.where(cols[None, :] < L, s, float("-inf"))
            else:
                s = tl.where(offs_m[:, None] >= cols[None, :], s,
                             float("-inf"))
            m_new = tl.maximum(m_i, row_max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)       # rescales the old state
        l_i = l_i * alpha + row_sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)     # (BLOCK_M, d)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, Kd, Vd, L, qk_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
              USE_TMA: tl.constexpr):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1).to(tl.int64)
    row0 = (off_bh * L).to(tl.int32)            # first row in (B*H*L, d)
    base = off_bh * L * HEAD_DIM                # start of this (L, d) problem
    Q += base
    K += base
    V += base
    O += base
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m[:, None] < L
    q = tl.load(Q + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok,
                other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, HEAD_DIM], 0.0, tl.float32)
    if CAUSAL:
        # Blocks left of the diagonal: every key visible, no mask.  Blocks
        # right of it are never visited (that is the saving).  The diagonal
        # gets the mask.
        diag = start_m * BLOCK_M
        acc, l_i, m_i = _fwd_stage(acc, l_i, m_i, q, K, V, Kd, Vd, row0,
                                   offs_m, L, qk_scale, 0, diag,
                                   HEAD_DIM, BLOCK_N, 0, USE_TMA)
        acc, l_i, m_i = _fwd_stage(acc, l_i, m_i, q, K, V, Kd, Vd, row0,
                                   offs_m, L, qk_scale,
                                   diag, tl.minimum(diag + BLOCK_M, L),
                                   HEAD_DIM, BLOCK_N, 2, USE_TMA)
    else:
        full = (L // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _fwd_stage(acc, l_i, m_i, q, K, V, Kd, Vd, row0,
                                   offs_m, L, qk_scale, 0, full,
                                   HEAD_DIM, BLOCK_N, 0, USE_TMA)
        acc, l_i, m_i = _fwd_stage(acc, l_i, m_i, q, K, V, Kd, Vd, row0,
                                   offs_m, L, qk_scale, full, L,
                                   HEAD_DIM, BLOCK_N, 1, USE_TMA)
    acc = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
             acc.to(O.dtype.element_ty), mask=row_ok)
    tl.store(LSE + off_bh * L + offs_m, m_i + tl.math.log2(l_i),
             mask=offs_m < L)


# ---------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------
@triton.jit
def _attn_bwd_delta(O, DO, Delta, L, HEAD_DIM: tl.constexpr,
                    BLOCK_M: tl.constexpr):
    off_bh = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs = (off_bh * L * HEAD_DIM + offs_m[:, None] * HEAD_DIM
            + tl.arange(0, HEAD_DIM)[None, :])
    o = tl.load(O + offs, mask=offs_m[:, None] < L, other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=offs_m[:, None] < L, other=0.0).to(tl.float32)
    tl.store(Delta + off_bh * L + offs_m, row_sum(o * do, 1), mask=offs_m < L)


@triton.jit
def _dkdv_stage(dk, dv, k, v, Q, DO, LSE, Delta, offs_n, L, qk_scale, lo, hi,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                MODE: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks [lo, hi).

    MODE 0: all queries valid and see every key; 1: queries >= L are padding;
    2: causal diagonal (query i sees key j iff j <= i), padding masked too.
    """
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        rows = start_m + offs_m0                  # (BLOCK_M,)
        q_offs = rows[:, None] * HEAD_DIM + offs_d[None, :]
        if MODE == 0:
            q = tl.load(Q + q_offs)
            do = tl.load(DO + q_offs)
            lse = tl.load(LSE + rows)
            delta = tl.load(Delta + rows)
        else:
            q = tl.load(Q + q_offs, mask=rows[:, None] < L, other=0.0)
            do = tl.load(DO + q_offs, mask=rows[:, None] < L, other=0.0)
            # lse = +inf makes the recomputed probability of a padding row
            # exactly 0.
            lse = tl.load(LSE + rows, mask=rows < L, other=float("inf"))
            delta = tl.load(Delta + rows, mask=rows < L, other=0.0)
        s_t = tl.dot(k, tl.trans(q)) * qk_scale   # (BLOCK_N, BLOCK_M) = S^T
        p_t = tl.math.exp2(s_t - lse[None, :])    # P^T recomputed from the LSE
        if MODE == 2:
            p_t = tl.where(offs_n[:, None] <= rows[None, :], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)     # dV += P^T dO
        dp_t = tl.dot(v, tl.trans(do))            # (dO V^T)^T
        ds_t = p_t * (dp_t - delta[None, :])      # dS = P * (dP - delta)
        dk = tl.dot(ds_t.to(q.dtype), q, dk)      # dK += dS^T Q
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, Delta, L, qk_scale, sm_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr,
                   BLOCK_N1: tl.constexpr, CAUSAL: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N1
    off_bh = tl.program_id(1).to(tl.int64)
    base = off_bh * L * HEAD_DIM
    Q += base
    K += base
    V += base
    DO += base
    DK += base
    DV += base
    LSE += off_bh * L
    Delta += off_bh * L
    offs_n = start_n + tl.arange(0, BLOCK_N1)
    offs_d = tl.arange(0, HEAD_DIM)
    kv_offs = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    col_ok = offs_n[:, None] < L
    k = tl.load(K + kv_offs, mask=col_ok, other=0.0)
    v = tl.load(V + kv_offs, mask=col_ok, other=0.0)
    dk = tl.full([BLOCK_N1, HEAD_DIM], 0.0, tl.float32)
    dv = tl.full([BLOCK_N1, HEAD_DIM], 0.0, tl.float32)
    if CAUSAL:
        # Queries above the diagonal never see these keys: start at the key
        # block.
        diag_end = tl.minimum(start_n + BLOCK_N1, L)
        dk, dv = _dkdv_stage(dk, dv, k, v, Q, DO, LSE, Delta, offs_n, L,
                             qk_scale, start_n, diag_end,
                             HEAD_DIM, BLOCK_M1, 2)
        lo = start_n + BLOCK_N1
    else:
        lo = 0
    full = tl.maximum((L // BLOCK_M1) * BLOCK_M1, lo)
    dk, dv = _dkdv_stage(dk, dv, k, v, Q, DO, LSE, Delta, offs_n, L, qk_scale,
                         lo, full, HEAD_DIM, BLOCK_M1, 0)
    dk, dv = _dkdv_stage(dk, dv, k, v, Q, DO, LSE, Delta, offs_n, L, qk_scale,
                         full, L, HEAD_DIM, BLOCK_M1, 1)
    tl.store(DV + kv_offs, dv.to(DV.dtype.element_ty), mask=col_ok)
    tl.store(DK + kv_offs, (dk * sm_scale).to(DK.dtype.element_ty),
             mask=col_ok)


@triton.jit
def _dq_stage(dq, q, do, lse, delta, K, V, offs_m, L, qk_scale, lo, hi,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
              MODE: tl.constexpr):
    """Accumulate dQ of one query block over key blocks [lo, hi) (MODE as
    _fwd_stage)."""
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + offs_n0
        kv_offs = cols[:, None] * HEAD_DIM + offs_d[None, :]
        if MODE == 0:
            k = tl.load(K + kv_offs)
            v = tl.load(V + kv_offs)
        else:
            k = tl.load(K + kv_offs, mask=cols[:, None] < L, other=0.0)
            v = tl.load(V + kv_offs, mask=cols[:, None] < L, other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale   # (BLOCK_M, BLOCK_N)
        p = tl.math.exp2(s - lse[:, None])
        if MODE == 1:
            p = tl.where(cols[None, :] < L, p, 0.0)
        if MODE == 2:
            p = tl.where(offs_m[:, None] >= cols[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v))            # dP = dO V^T
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)      # dQ += dS K
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, Delta, L, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, BLOCK_M2: tl.constexpr,
                 BLOCK_N2: tl.constexpr, CAUSAL: tl.constexpr):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1).to(tl.int64)
    base = off_bh * L * HEAD_DIM
    K += base
    V += base
    offs_m = start_m * BLOCK_M2 + tl.arange(0, BLOCK_M2)
    offs_d = tl.arange(0, HEAD_DIM)
    q_offs = base + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    row_ok = offs_m[:, None] < L
    q = tl.load(Q + q_offs, mask=row_ok, other=0.0)
    do = tl.load(DO + q_offs, mask=row_ok, other=0.0)
    lse = tl.load(LSE + off_bh * L + offs_m, mask=offs_m < L, other=0.0)
    delta = tl.load(Delta + off_bh * L + offs_m, mask=offs_m < L, other=0.0)
    dq = tl.full([BLOCK_M2, HEAD_DIM], 0.0, tl.float32)
    if CAUSAL:
        diag = start_m * BLOCK_M2
        dq = _dq_stage(dq, q, do, lse, delta, K, V, offs_m, L, qk_scale,
                       0, diag, HEAD_DIM, BLOCK_N2, 0)
        dq = _dq_stage(dq, q, do, lse, delta, K, V, offs_m, L, qk_scale,
                       diag, tl.minimum(diag + BLOCK_M2, L),
                       HEAD_DIM, BLOCK_N2, 2)
    else:
        full = (L // BLOCK_N2) * BLOCK_N2
        dq = _dq_stage(dq, q, do, lse, delta, K, V, offs_m, L, qk_scale,
                       0, full, HEAD_DIM, BLOCK_N2, 0)
        dq = _dq_stage(dq, q, do, lse, delta, K, V, offs_m, L, qk_scale,
                       full, L, HEAD_DIM, BLOCK_N2, 1)
    # dS was formed from base-2 scores whose derivative carries the natural
    # scale.
    tl.store(DQ + q_offs, (dq * sm_scale).to(DQ.dtype.element_ty),
             mask=row_ok)


# ---------------------------------------------------------------------------------
# Block sizes: fixed ones for small problems (and the interpreter), autotuned per head
# dim on a GPU for large ones
# ---------------------------------------------------------------------------------
# Every config keeps the larger block a multiple of the smaller one, which the causal
# stages rely on (the diagonal of a query block is a whole number of key blocks).
_FIXED_FWD = dict(BLOCK_M=32, BLOCK_N=16)
_FIXED_DKDV = dict(BLOCK_M1=16, BLOCK_N1=32)
_FIXED_DQ = dict(BLOCK_M2=32, BLOCK_N2=16)
#: On a GPU: small, safe tiles for short sequences and float32.
_GPU_FIXED = {"fwd": dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2),
              "dkdv": dict(BLOCK_M1=32, BLOCK_N1=64, num_warps=4, num_stages=2),
              "dq": dict(BLOCK_M2=64, BLOCK_N2=32, num_warps=4, num_stages=2)}
if not INTERPRETED:
    _FIXED_FWD, _FIXED_DKDV, _FIXED_DQ = _GPU_FIXED["fwd"], _GPU_FIXED["dkdv"], _GPU_FIXED["dq"]

#: Smaller tiles for GPUs with less shared memory per program than Hopper's 227 KiB: a
#: T4, Colab's default GPU, grants 64 KiB, and at d = 128 the backward's tiles above
#: need 80 KiB there in float16 and up to 104 KiB in float32.  ``(block_m, block_n,
#: num_warps, num_stages)``, largest first; a fixed launch takes the first of [fixed
#: tile] + these whose compiled kernel fits the GPU (:func:`_first_fitting`), checked
#: for the T4 without one by tests/test_kernels_compiled.py.  ``_SMALL_TUNING`` holds
#: one extra autotuning candidate per kernel, offered below compute capability 9.
_SMALLER = {"fwd": [(32, 16, 4, 1)],
            "dkdv": [(32, 32, 4, 2), (16, 32, 4, 1)],
            "dq": [(32, 32, 4, 2), (32, 16, 4, 1)]}
_SMALL_TUNING = {"fwd": [(64, 32, 4, 2)], "dkdv": [(32, 32, 4, 2)], "dq": [(32, 32, 4, 2)]}

#: Autotuning candidates per kernel and head dim: (block_m, block_n, num_warps, num_stages),
#: optionally a fifth entry, a cap on the registers per thread (ptxas ``maxnreg``).
#: Compiled for sm_90, none spills registers except dkdv (32, 128, 4, 3) at d = 64 (a
#: 16-byte stack, which the H200's autotuner still picked for 2 of 12 shapes) and, in the
#: causal kernels (a second loop stage, more live values), a few bytes in three more;
#: tests/test_kernels_compiled.py checks both variants on every run, without a GPU.
#: The forward's d = 128 list ends with two tiles that fit *two* programs on a
#: multiprocessor (the others fit one): 128 x 64 in two stages and 128 x 32 in three, both
#: with the registers capped at 128 (uncapped: 166, and 151 in the causal 128 x 32).
#: Two independent programs let one's softmax run while the other's products do
#: (Chapter 10, "What the compiler made of it"). (64, 64, 4, 3) gives d = 64 three
#: programs per multiprocessor and half the masked area on the causal diagonal.
_TUNING = {
    "fwd": {64: [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 4, 4), (128, 128, 4, 3), (64, 64, 4, 3)],
            128: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2),
                  (128, 64, 8, 2, 128), (128, 32, 8, 3, 128)]},
    "dkdv": {64: [(32, 128, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3)],
             128: [(32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 8, 3)]},
    "dq": {64: [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3)],
           128: [(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)]},
}


def _candidate(config):
    """An entry of ``_TUNING`` as ``(block_m, block_n, num_warps, num_stages, maxnreg)``
    (``maxnreg`` None: no cap on the registers per thread)."""
    return tuple(config) + (None,) * (5 - len(config))


_BLOCK_NAMES = {"fwd": ("BLOCK_M", "BLOCK_N"), "dkdv": ("BLOCK_M1", "BLOCK_N1"),
                "dq": ("BLOCK_M2", "BLOCK_N2")}
_AUTOTUNE_MIN_L = 512


try:  # host-side TMA descriptors (Triton >= 3.3); the interpreter understands them too
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover
    TensorDescriptor = None

#: Load the unmasked key/value blocks through TMA descriptors: "auto" (on Hopper or
#: newer GPUs), True or False.  Checked at every launch.
USE_TMA = "auto"


def _tma_pre_hook(nargs):
    # A descriptor's block shape must match the tile the chosen config loads.
    for name in ("Kd", "Vd"):
        if nargs.get(name) is not None:
            nargs[name].block_shape = [nargs["BLOCK_N"], nargs["HEAD_DIM"]]


def _use_tma(q):
    if TensorDescriptor is None or USE_TMA is False:
        return False
    if USE_TMA is True:
        return True
    return (not INTERPRETED and q.dtype in (torch.float16, torch.bfloat16)
            and torch.cuda.get_device_capability(q.device)[0] >= 9)


def _configs(kernel):
    names = _BLOCK_NAMES[kernel]
    seen, out = set(), []
    for cands in [*_TUNING[kernel].values(), _SMALL_TUNING[kernel]]:
        for c in map(_candidate, cands):
            if c not in seen:
                seen.add(c)
                out.append(triton.Config(dict(zip(names, c[:2])), num_warps=c[2], num_stages=c[3],
                                         maxnreg=c[4], pre_hook=_tma_pre_hook if kernel == "fwd" else None))
    return out


def _prune_for(kernel):
    names = _BLOCK_NAMES[kernel]

    def prune(configs, named_args, **kwargs):
        d = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
        wanted = set(map(_candidate, _TUNING[kernel].get(d, _TUNING[kernel][64])))
        q = named_args.get("Q")
        if q is not None and torch.cuda.get_device_capability(q.device)[0] < 9:
            # less shared memory than Hopper's: the autotuner skips tiles that do
            # not fit (OutOfResources), and this one fits everywhere
            wanted |= set(map(_candidate, _SMALL_TUNING[kernel]))
        kept = [c for c in configs
                if (c.kwargs[names[0]], c.kwargs[names[1]], c.num_warps, c.num_stages, c.maxnreg) in wanted]
        return kept or configs
    return prune


if INTERPRETED:
    _fwd_tuned = _dkdv_tuned = _dq_tuned = None
else:  # pragma: no cover - needs a GPU
    def _tuned(kernel, jit_fn, key):
        prune = {"early_config_prune": _prune_for(kernel)}
        return triton.autotune(_configs(kernel), key=key, prune_configs_by=prune)(jit_fn)

    _fwd_tuned = _tuned("fwd", _attn_fwd, ["L", "HEAD_DIM", "CAUSAL", "USE_TMA"])
    _dkdv_tuned = _tuned("dkdv", _attn_bwd_dkdv, ["L", "HEAD_DIM", "CAUSAL"])
    _dq_tuned = _tuned("dq", _attn_bwd_dq, ["L", "HEAD_DIM", "CAUSAL"])


def _first_fitting(candidates, shared_bytes, limit):
    """The first of ``candidates`` whose kernel needs at most ``limit`` bytes of shared
    memory (``shared_bytes(candidate)`` compiles it and says); the last one when none
    does, so that launching it raises Triton's own out-of-resources error."""
    for candidate in candidates:
        if limit is None or shared_bytes(candidate) <= limit:
            return candidate
    return candidates[-1]


_CHOSEN = {}  # (kernel, device, dtype, HEAD_DIM, CAUSAL, USE_TMA) -> launch config
#: Shared memory one program may use on an H100/H200 (227 KiB): GPUs with at least as
#: much launch the fixed tiles without checking.
_HOPPER_SHARED = 232448


def _fixed_launch(kernel, jit_fn, make_args, grid, meta, device, dtype):
    """Launch ``jit_fn`` with the fixed tile of ``kernel``, or with the largest of
    :data:`_SMALLER` that fits this GPU's shared memory when the fixed one does not.
    ``make_args(config)`` gives the positional arguments for a config, ``grid(config)``
    the launch grid."""
    fixed = {"fwd": _FIXED_FWD, "dkdv": _FIXED_DKDV, "dq": _FIXED_DQ}[kernel]
    if INTERPRETED:
        jit_fn[grid(fixed)](*make_args(fixed), **meta, **fixed)
        return
    key = (kernel, str(device), dtype, *sorted(meta.items()))
    if key not in _CHOSEN:  # pragma: no cover - needs a GPU
        props = torch.cuda.get_device_properties(device)
        limit = getattr(props, "shared_memory_per_block_optin", None)
        if limit is None or limit >= _HOPPER_SHARED:  # the fixed tiles fit (tested for sm_90)
            _CHOSEN[key] = fixed
        else:
            names = _BLOCK_NAMES[kernel]
            smaller = [dict(zip(names, c[:2]), num_warps=c[2], num_stages=c[3]) for c in _SMALLER[kernel]]

            def shared_bytes(config):
                compiled = jit_fn.warmup(*make_args(config), **meta, **config, grid=(1,))
                return compiled.metadata.shared

            _CHOSEN[key] = _first_fitting([fixed, *smaller], shared_bytes, limit)
    config = _CHOSEN[key]
    jit_fn[grid(config)](*make_args(config), **meta, **config)


def _autotuned(q):
    """Autotune only where it pays: on a GPU, 16-bit inputs, long sequences."""
    return (not INTERPRETED and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[2] >= _AUTOTUNE_MIN_L)


def _launch_fwd(q, k, v, causal, scale):
    B, H, L, d = q.shape
    o = torch.empty_like(q)
    lse = torch.empty((B, H, L), device=q.device, dtype=torch.float32)  # base-2 LSE
    use_tma = _use_tma(q)

    def make_args(config):
        kd = vd = None
        if use_tma:  # the block shape is the tile's (the pre-hook sets it when autotuned)
            kd, vd = (TensorDescriptor(t.view(B * H * L, d), shape=[B * H * L, d], strides=[d, 1],
                                       block_shape=[config["BLOCK_N"], d]) for t in (k, v))
        return (q, k, v, o, lse, kd, vd, L, scale * LOG2E)

    meta = dict(HEAD_DIM=d, CAUSAL=causal, USE_TMA=use_tma)
    if _autotuned(q):  # pragma: no cover
        _fwd_tuned[lambda m: (triton.cdiv(L, m["BLOCK_M"]), B * H)](*make_args(_FIXED_FWD), **meta)
    else:
        _fixed_launch("fwd", _attn_fwd, make_args, lambda c: (triton.cdiv(L, c["BLOCK_M"]), B * H),
                      meta, q.device, q.dtype)
    return o, lse


def _launch_bwd(do, q, k, v, o, lse, causal, scale):
    B, H, L, d = q.shape
    delta = torch.empty_like(lse)
    _attn_bwd_delta[(triton.cdiv(L, 64), B * H)](o, do, delta, L, HEAD_DIM=d, BLOCK_M=64)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    qk_scale = scale * LOG2E
    dkdv_args = (q, k, v, do, dk, dv, lse, delta, L, qk_scale, scale)
    dq_args = (q, k, v, do, dq, lse, delta, L, qk_scale, scale)
    if _autotuned(q):  # pragma: no cover
        _dkdv_tuned[lambda m: (triton.cdiv(L, m["BLOCK_N1"]), B * H)](
            *dkdv_args, HEAD_DIM=d, CAUSAL=causal)
        _dq_tuned[lambda m: (triton.cdiv(L, m["BLOCK_M2"]), B * H)](
            *dq_args, HEAD_DIM=d, CAUSAL=causal)
    else:
        meta = dict(HEAD_DIM=d, CAUSAL=causal)
        _fixed_launch("dkdv", _attn_bwd_dkdv, lambda c: dkdv_args,
                      lambda c: (triton.cdiv(L, c["BLOCK_N1"]), B * H), meta, q.device, q.dtype)
        _fixed_launch("dq", _attn_bwd_dq, lambda c: dq_args,
                      lambda c: (triton.cdiv(L, c["BLOCK_M2"]), B * H), meta, q.device, q.dtype)
    return dq, dk, dv


def tuned_configs():
    """The block sizes the autotuner picked so far, per kernel (empty without a GPU)."""
    out = {}
    for name, tuned in (("fwd", _fwd_tuned), ("dkdv", _dkdv_tuned), ("dq", _dq_tuned)):
        if tuned is None:
            continue
        out[name] = {str(key): str(cfg) for key, cfg in getattr(tuned, "cache", {}).items()}
    return out


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale):
        with launch_context():
            o, lse = _launch_fwd(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)   # O(L d) saved, never O(L^2)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        with launch_context():
            dq, dk, dv = _launch_bwd(do.contiguous(), q, k, v, o, lse, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


# ---------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------
_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_inputs(q, k, v, causal, scale):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape (B, H, L, d), got {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {tuple(q.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
    if q.dtype not in _GPU_DTYPES:
        raise TypeError(f"q must be float16, bfloat16 or float32, got {q.dtype}")
    d = q.shape[-1]
    if d < 16 or d > 128 or d & (d - 1):
        raise ValueError(f"the head dimension (last axis of q) must be a power of two "
                         f"from 16 to 128, got {d}")
    check_runnable()
    if INTERPRETED:
        if q.device.type != "cpu":
            raise ValueError(f"q is on {q.device}, but no GPU is usable here")
        if q.dtype == torch.bfloat16:
            raise TypeError("bfloat16 needs a GPU: Triton's CPU interpreter cannot compute "
                            "in bfloat16 (use float32 on the CPU)")
    elif q.device.type != "cuda":
        raise ValueError(f"q must be a CUDA tensor on this machine (it has a GPU), "
                         f"got device {q.device}")
    if not isinstance(causal, (bool,)) and not (isinstance(causal, numbers.Integral)
                                                and causal in (0, 1)):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def flash_attention(q, k, v, *, causal=False, scale=None):
    r"""Scaled dot-product attention by the FlashAttention algorithm (Triton kernels).

    .. math::

        O = \softmax\!\left(s\, Q K^\top + M\right) V, \qquad s = 1/\sqrt{d}
        \text{ by default},

    where :math:`M_{ij} = -\infty` for :math:`j > i` when ``causal`` and 0 otherwise.
    The :math:`L \times L` matrix is never stored: the forward streams key/value
    blocks through on-chip memory with the online softmax and saves only ``O`` and
    the log-sum-exp of each row; the backward recomputes the probabilities block by
    block from that log-sum-exp (with ``delta_i = sum_d dO_id O_id``).

    Parameters
    ----------
    q, k, v : torch.Tensor
        One shape ``(B, H, L, d)``, one dtype, one device. ``d`` a power of two from
        16 to 128; any ``L >= 1`` (not necessarily a multiple of a block size).
    causal : bool
        Query ``i`` attends to keys ``j <= i`` (top-left aligned, as
        ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``).
    scale : float, optional
        Multiplies the scores; default ``1 / sqrt(d)``.

    Returns
    -------
    torch.Tensor
        ``(B, H, L, d)``, the dtype of ``q``; differentiable in ``q``, ``k``, ``v``.

    Notes
    -----
    On a CUDA GPU the kernels are compiled: float16 and bfloat16 inputs (the fast
    path), float32 accepted, but its matrix products run on the tensor cores in TF32
    (about 10 mantissa bits, relative error near 1e-3). All softmax statistics and
    accumulators are float32 in every case. Without a GPU the same kernels run on CPU
    tensors through Triton's interpreter (float32, slowly: for small shapes);
    bfloat16 there raises ``TypeError``. Explained in Chapter 10.

    References
    ----------
    T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Re, "FlashAttention: fast and
    memory-efficient exact attention with IO-awareness", NeurIPS 2022.
    T. Dao, "FlashAttention-2: faster attention with better parallelism and work
    partitioning", 2023.
    """
    scale = _check_inputs(q, k, v, causal, scale)
    if q.numel() == 0:
        return q.new_zeros(q.shape) + 0 * (q.sum() + k.sum() + v.sum())
    if scale < 0:  # the kernels want a positive scale: s * (q . k) = |s| * ((-q) . k)
        q, scale = -q, -scale
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _FlashAttention.apply(q, k, v, bool(causal), scale)


def flash_attention_forward(q, k, v, *, causal=False, scale=None):
    """The forward kernel alone: ``(O, lse)`` with ``lse`` the natural log-sum-exp.

    ``lse[b, h, i] = log sum_j exp(scale * q_i . k_j)`` over the keys query ``i``
    sees, float32, shape ``(B, H, L)``: the one number per row that the backward
    needs (Chapter 10). No autograd.
    """
    scale = _check_inputs(q, k, v, causal, scale)
    if scale < 0:
        q, scale = -q, -scale
    with torch.no_grad():
        o, lse2 = _launch_fwd(q.contiguous(), k.contiguous(), v.contiguous(), bool(causal), scale)
    return o, lse2 * _LN2


def causal_block_counts(L, block_m, block_n, *, causal=True):
    """Count the (query block, key block) tiles a forward pass visits.

    Returns a dict with ``total`` (all tiles of the ``L x L`` grid), ``unmasked``
    (tiles computed without any mask), ``masked`` (tiles on the causal diagonal or at
    the ragged edge, computed with a mask) and ``skipped`` (tiles never visited).
    Mirrors the loop bounds of the forward kernel; ``block_m`` must be a multiple of
    ``block_n`` (as every kernel config is).
    """
    L, block_m, block_n = (check_positive_int(val, name) for name, val in
                           (("L", L), ("block_m", block_m), ("block_n", block_n)))
    if block_m % block_n:
        raise ValueError(f"block_m ({block_m}) must be a multiple of block_n ({block_n})")
    n_m, n_n = -(-L // block_m), -(-L // block_n)
    unmasked = masked = 0
    for start_m in range(n_m):
        lo = start_m * block_m
        if causal:
            unmasked += lo // block_n
            masked += -(-(min(lo + block_m, L) - lo) // block_n)
        else:
            unmasked += L // block_n
            masked += int(L % block_n != 0)
    total = n_m * n_n
    return dict(total=total, unmasked=unmasked, masked=masked,
                skipped=total - unmasked - masked)


def kernel_source(kernel, *, start=None, stop=None):
    """Source text of a Triton kernel of this module (for Chapter 10's excerpts).

    ``kernel`` is a kernel (``_attn_fwd``) or its name; ``start``/``stop`` keep the
    lines from the first one containing ``start`` up to the first one after it
    containing ``stop`` (inclusive), and on to the end of the statement that line
    is part of when the statement continues over further lines.
    """
    import inspect
    import io
    import tokenize

    if isinstance(kernel, str):
        kernel = globals()[kernel]
    source = inspect.getsource(getattr(kernel, "fn", kernel))
    lines = source.splitlines()
    first = next((i for i, line in enumerate(lines) if start in line), 0) if start else 0
    last = len(lines) - 1
    if stop:
        last = next((i for i in range(first, len(lines)) if stop in lines[i]), last)
        # the (0-based) last line of each logical line: a wrapped call ends there
        ends = [tok.start[0] - 1 for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.NEWLINE]
        last = next((end for end in ends if end >= last), last)
    return "\n".join(lines[first:last + 1])
