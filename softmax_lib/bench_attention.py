"""Benchmark FlashAttention (Chapter 10) against PyTorch's SDPA backends on a GPU.

For every configuration (dtype, head dim ``d``, sequence length ``L``, causal or
not) this times, in one process on one card:

- ``ours``: :func:`softmax_lib.kernels.flash_attention` (Triton);
- ``flash``, ``cudnn``, ``efficient``: ``torch.nn.functional.scaled_dot_product_attention``
  pinned to one backend with ``torch.nn.attention.sdpa_kernel`` (FlashAttention-2,
  cuDNN, memory-efficient). A backend that refuses a configuration is recorded as
  skipped with its reason.

Both the forward alone and forward plus backward are timed.  Rates are TFLOP/s of the
matrix products attention must do: the forward's two products ``Q K^T`` and ``P V``
cost ``4 B H L^2 d`` (half that when causal, since half the scores are never
needed); the backward does 2.5 times the forward's work (five products instead of
two), so forward plus backward counts 3.5 times the forward.  ``B * H * L`` is held
at :data:`TOKENS` so that every configuration fills the GPU.

``python -m softmax_lib.bench --out DIR --only attention`` calls :func:`run`.
"""

from __future__ import annotations

import sys
from typing import Any

from .bench import provenance, time_ms, write_results  # noqa: F401 - provenance via write_results

__all__ = ["TOKENS", "HEADS", "attention_flops", "run"]

#: Tokens per configuration (``B * H * L``): 16k tokens times 16 heads.
TOKENS = 16384 * 16
#: Heads per batch element; the batch is ``TOKENS // (HEADS * L)``.
HEADS = 16
LENGTHS = (1024, 4096, 16384)
HEAD_DIMS = (64, 128)
DTYPES = ("bfloat16", "float16")
BACKENDS = ("flash", "cudnn", "efficient")


def attention_flops(batch, heads, L, d, *, causal=False, backward=False) -> float:
    """Floating-point operations counted for attention (the convention of FlashAttention papers).

    Forward ``4 B H L^2 d`` (two matrix products of ``2 L^2 d`` each per head), halved
    when causal; with ``backward=True`` forward plus backward, ``3.5`` times that.
    """
    fwd = 4.0 * batch * heads * L * L * d
    if causal:
        fwd /= 2
    return fwd * (3.5 if backward else 1.0)


def _rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _backend(name):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]


def _measure(impl, q, k, v, do, causal, rep):
    """(forward ms, forward+backward ms, output, grads) for one implementation."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from .kernels import flash_attention

    if impl == "ours":
        ctx = contextlib.nullcontext()

        def f(a, b, c):
            return flash_attention(a, b, c, causal=causal)
    else:
        from torch.nn.attention import sdpa_kernel

        ctx = sdpa_kernel(_backend(impl))

        def f(a, b, c):
            return F.scaled_dot_product_attention(a, b, c, is_causal=causal)

    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    with ctx:
        out = f(qg, kg, vg)                                 # raises if the backend refuses
        grads = torch.autograd.grad(out, (qg, kg, vg), do)
        with torch.no_grad():
            fwd_ms = time_ms(lambda: f(q, k, v), warmup=5, rep=rep)
        fwd_bwd_ms = time_ms(lambda: torch.autograd.grad(f(qg, kg, vg), (qg, kg, vg), do),
                             warmup=3, rep=rep)
    return fwd_ms, fwd_bwd_ms, out.detach(), [g.detach() for g in grads]


def run(out_dir, *, dtypes=DTYPES, head_dims=HEAD_DIMS, lengths=LENGTHS, causals=(False, True),
        backends=BACKENDS, rep: int = 20, name: str = "flash_attention") -> dict[str, Any]:
    """Measure every configuration and write ``<out_dir>/<name>.json``; returns the payload.

    Each row of ``payload["results"]`` is one (configuration, implementation):
    ``dtype, head_dim, L, causal, batch, heads, impl, fwd_ms, fwd_tflops, fwd_bwd_ms,
    fwd_bwd_tflops`` and ``skipped`` (``None``, or why the backend refused).
    ``payload["accuracy"]`` holds our output's and gradients' relative error against
    the first backend that ran (a check that the fast path computes attention).
    """
    import torch

    from .kernels.flash import _TUNING, tuned_configs

    if not torch.cuda.is_available():
        raise RuntimeError("the attention benchmark needs a CUDA GPU")
    rows, accuracy = [], []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for d in head_dims:
            for L in lengths:
                batch = max(1, TOKENS // (HEADS * L))
                for causal in causals:
                    gen = torch.Generator(device="cuda").manual_seed(L + d)
                    q, k, v, do = (torch.randn((batch, HEADS, L, d), device="cuda", dtype=dtype,
                                               generator=gen) for _ in range(4))
                    flops = attention_flops(batch, HEADS, L, d, causal=causal)
                    reference = None
                    ours = None
                    for impl in ("ours", *backends):
                        row = dict(dtype=dtype_name, head_dim=d, L=L, causal=causal, batch=batch,
                                   heads=HEADS, impl=impl, fwd_ms=None, fwd_tflops=None,
                                   fwd_bwd_ms=None, fwd_bwd_tflops=None, skipped=None)
                        try:
                            fwd_ms, fb_ms, out, grads = _measure(impl, q, k, v, do, causal, rep)
                        except RuntimeError as err:  # backend refuses this configuration
                            row["skipped"] = str(err).strip().splitlines()[0][:300]
                            torch.cuda.synchronize()
                        else:
                            row.update(fwd_ms=fwd_ms, fwd_tflops=flops / fwd_ms / 1e9,
                                       fwd_bwd_ms=fb_ms, fwd_bwd_tflops=3.5 * flops / fb_ms / 1e9)
                            if impl == "ours":
                                ours = (out, grads)
                            elif reference is None and ours is not None:
                                reference = impl
                                accuracy.append(dict(
                                    dtype=dtype_name, head_dim=d, L=L, causal=causal,
                                    against=impl, out=_rel_err(ours[0], out),
                                    dq=_rel_err(ours[1][0], grads[0]),
                                    dk=_rel_err(ours[1][1], grads[1]),
                                    dv=_rel_err(ours[1][2], grads[2])))
                            del out, grads
                        rows.append(row)
                        print(_format_row(row), flush=True)
                    del q, k, v, do, ours
                    torch.cuda.empty_cache()
    payload = {
        "kind": "flash_attention",
        "tokens": TOKENS,
        "flop_count": "forward 4*B*H*L*L*d (halved when causal); forward+backward 3.5x forward",
        "timing": f"median of {rep} CUDA-event timings after warm-up, L2 flushed before each",
        "backends": {"flash": "SDPBackend.FLASH_ATTENTION", "cudnn": "SDPBackend.CUDNN_ATTENTION",
                     "efficient": "SDPBackend.EFFICIENT_ATTENTION"},
        "results": rows,
        "accuracy": accuracy,
        "tuned_configs": tuned_configs(),
        # what the autotuner could choose from: (block_m, block_n, warps, stages[, maxnreg])
        "candidates": {kernel: {str(d): [list(c) for c in cands] for d, cands in per_d.items()}
                       for kernel, per_d in _TUNING.items()},
    }
    path = write_results(name, payload, out_dir)
    print(f"wrote {path}", flush=True)
    return payload


def _format_row(row) -> str:
    head = (f"{row['dtype']:>8} d={row['head_dim']:<3} L={row['L']:<5} "
            f"{'causal' if row['causal'] else 'full  '} {row['impl']:<9}")
    if row["skipped"]:
        return f"{head} skipped: {row['skipped'][:80]}"
    return f"{head} fwd {row['fwd_tflops']:7.1f}  fwd+bwd {row['fwd_bwd_tflops']:7.1f} TFLOP/s"


if __name__ == "__main__":  # pragma: no cover
    run(sys.argv[1] if len(sys.argv) > 1 else "chapters/results")
