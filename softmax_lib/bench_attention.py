"""Benchmark FlashAttention (Chapter 10) against PyTorch's SDPA backends on a GPU.

For every configuration (dtype, head dim ``d``, sequence length ``L``, causal or
not) this times, in one process on one card:

- ``ours``: :func:`softmax_lib.kernels.flash_attention` (Triton);
- ``flash``, ``cudnn``, ``efficient``: ``torch.nn.functional.scaled_dot_product_attention``
  pinned to one backend with ``torch.nn.attention.sdpa_kernel`` (FlashAttention-2,
  cuDNN, memory-efficient). A backend that refuses a configuration is recorded as
  skipped with its reason.

Both the forward alone and forward plus backward are timed, each three ways: CUDA
events around every call (what a program calling it sees), the same calls replayed
from a CUDA graph (the device's time alone, without gaps where the GPU waits for the
host to queue the next kernel), and the host time one call costs.  Where the first is
much slower than the second, the host, not the kernel, sets the pace (Chapter 10,
"Kernel time or launch time?").  Rates are TFLOP/s of the
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

__all__ = ["TOKENS", "HEADS", "attention_flops", "launch_split_table", "run"]

#: Tokens per configuration (``B * H * L``): 16k tokens times 16 heads.
TOKENS = 16384 * 16
#: Heads per batch element; the batch is ``TOKENS // (HEADS * L)``.
HEADS = 16
LENGTHS = (1024, 4096, 16384)
HEAD_DIMS = (64, 128)
DTYPES = ("bfloat16", "float16")
BACKENDS = ("flash", "cudnn", "efficient")


#: What a row stores per implementation (None where not measured): event timings of
#: each call (``*_ms``), the same work replayed from a CUDA graph (``*_graph_ms``), the
#: host time to queue one call (``host_*_us``) and why a capture failed.
_TIMES = ("fwd_ms", "fwd_bwd_ms", "fwd_graph_ms", "fwd_bwd_graph_ms", "host_fwd_us",
          "host_fwd_bwd_us", "graph_error")
_RATES = ("fwd_tflops", "fwd_bwd_tflops", "fwd_graph_tflops", "fwd_bwd_graph_tflops")


def _rates(times, flops) -> dict[str, float | None]:
    """TFLOP/s from the timings of :func:`_measure` (forward+backward counts 3.5x)."""
    out = {}
    for rate in _RATES:
        ms = times.get(rate.replace("_tflops", "_ms"))
        work = 3.5 * flops if rate.startswith("fwd_bwd") else flops
        out[rate] = None if ms is None else work / ms / 1e9
    return out


def attention_flops(batch, heads, L, d, *, causal=False, backward=False) -> float:
    """Floating-point operations counted for attention (the convention of FlashAttention papers).

    Forward ``4 B H L^2 d`` (two matrix products of ``2 L^2 d`` each per head), halved
    when causal; with ``backward=True`` forward plus backward, ``3.5`` times that.
    """
    fwd = 4.0 * batch * heads * L * L * d
    if causal:
        fwd /= 2
    return fwd * (3.5 if backward else 1.0)


#: Columns of :func:`launch_split_table`.
LAUNCH_SPLIT_COLUMNS = ("impl", "d", "mask", "fwd ms", "graph ms", "host µs", "fwd+bwd ms",
                        "graph ms", "host µs")


def launch_split_table(results, *, dtype="bfloat16", L=1024, impls=("ours", "flash", "cudnn"),
                       labels=None) -> tuple[list[tuple], tuple[str, ...]]:
    """Event time, graph time and host time per call at one dtype and length (Chapter 10).

    ``results`` are the rows of a stored :func:`run`.  For each implementation of
    ``impls``, head dim and mask (full, then causal) that was measured with the graph
    timings, one row: ``(impl, d, mask, fwd_ms, fwd_graph_ms, host_fwd_us, fwd_bwd_ms,
    fwd_bwd_graph_ms, host_fwd_bwd_us)``, host times rounded to whole microseconds.
    ``labels`` maps an impl to the name shown in the first column.  Rows skipped by a
    backend, or measured before the graph timings existed, are left out, so a run that
    predates them gives no rows.  Returns ``(rows, columns)`` for
    :func:`softmax_lib.notebook.table`.
    """
    labels = labels or {}
    rows = []
    for impl in impls:
        for head_dim in sorted({r["head_dim"] for r in results}):
            for causal in (False, True):
                for r in results:
                    if (r["impl"], r["dtype"], r["head_dim"], r["causal"], r["L"]) != (
                            impl, dtype, head_dim, causal, L):
                        continue
                    if r.get("skipped") is not None or r.get("fwd_graph_ms") is None:
                        continue
                    rows.append((labels.get(impl, impl), head_dim, "causal" if causal else "full",
                                 r["fwd_ms"], r["fwd_graph_ms"], round(r["host_fwd_us"]),
                                 r["fwd_bwd_ms"], r["fwd_bwd_graph_ms"],
                                 round(r["host_fwd_bwd_us"])))
    return rows, LAUNCH_SPLIT_COLUMNS


def _rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _backend(name):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]


def _calls(impl, q, k, v, do, causal):
    """The calls one implementation is timed on: ``(context, f, forward, forward_backward,
    leaves)``, ``f(q, k, v)`` the attention, ``leaves`` the inputs that carry gradients."""
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

    leaves = tuple(t.detach().requires_grad_() for t in (q, k, v))

    def forward():
        with torch.no_grad():
            return f(q, k, v)

    def forward_backward():
        return torch.autograd.grad(f(*leaves), leaves, do)

    return ctx, f, forward, forward_backward, leaves


def _measure(impl, q, k, v, do, causal, rep):
    """Timings of one implementation, plus its output and gradients (for the accuracy check).

    Returns ``(times, out, grads)``; ``times`` holds ``fwd_ms`` and ``fwd_bwd_ms``
    (events around each call, as a program calling it sees), ``fwd_graph_ms`` and
    ``fwd_bwd_graph_ms`` (the same work replayed from a CUDA graph: the device alone;
    None and ``graph_error`` if the capture failed), and ``host_fwd_us``,
    ``host_fwd_bwd_us`` (host time to queue one call).
    """
    import torch

    from .bench import host_us, time_ms_graph

    ctx, f, forward, forward_backward, leaves = _calls(impl, q, k, v, do, causal)
    with ctx:
        out = f(*leaves)                                    # raises if the backend refuses
        grads = torch.autograd.grad(out, leaves, do)
        times = dict(fwd_ms=time_ms(forward, warmup=5, rep=rep),
                     fwd_bwd_ms=time_ms(forward_backward, warmup=3, rep=rep),
                     host_fwd_us=host_us(forward), host_fwd_bwd_us=host_us(forward_backward),
                     fwd_graph_ms=None, fwd_bwd_graph_ms=None, graph_error=None)
        for key, fn in (("fwd_graph_ms", forward), ("fwd_bwd_graph_ms", forward_backward)):
            try:
                times[key] = time_ms_graph(fn, rep=rep)
            except RuntimeError as err:  # a backend that cannot be captured: keep the eager numbers
                times["graph_error"] = str(err).strip().splitlines()[0][:300]
                torch.cuda.synchronize()
    return times, out.detach(), [g.detach() for g in grads]


def _configurations(dtypes, head_dims, lengths, causals):
    """The configurations a run measures, in order: ``(dtype, head_dim, L, causal)``."""
    return [(t, d, L, c) for t in dtypes for d in head_dims for L in lengths for c in causals]


def _measure_configuration(dtype_name, d, L, causal, backends, rep, with_profile):
    """Rows (ours, then each backend), the accuracy entry and, if asked, the host
    profile of one configuration, all measured in this process."""
    import torch

    dtype = getattr(torch, dtype_name)
    batch = max(1, TOKENS // (HEADS * L))
    gen = torch.Generator(device="cuda").manual_seed(L + d)
    q, k, v, do = (torch.randn((batch, HEADS, L, d), device="cuda", dtype=dtype, generator=gen)
                   for _ in range(4))
    flops = attention_flops(batch, HEADS, L, d, causal=causal)
    rows, accuracy, ours = [], None, None
    for impl in ("ours", *backends):
        row = dict(dtype=dtype_name, head_dim=d, L=L, causal=causal, batch=batch, heads=HEADS,
                   impl=impl, skipped=None, **dict.fromkeys(_TIMES + _RATES))
        try:
            times, out, grads = _measure(impl, q, k, v, do, causal, rep)
        except RuntimeError as err:  # backend refuses this configuration
            row["skipped"] = str(err).strip().splitlines()[0][:300]
            torch.cuda.synchronize()
        else:
            row.update(times)
            row.update(_rates(times, flops))
            if impl == "ours":
                ours = (out, grads)
            elif accuracy is None and ours is not None:
                accuracy = dict(dtype=dtype_name, head_dim=d, L=L, causal=causal, against=impl,
                                out=_rel_err(ours[0], out), dq=_rel_err(ours[1][0], grads[0]),
                                dk=_rel_err(ours[1][1], grads[1]), dv=_rel_err(ours[1][2], grads[2]))
            del out, grads
        rows.append(row)
        print(_format_row(row), flush=True)
    profile = None
    if with_profile:
        profile = dict(dtype=dtype_name, head_dim=d, L=L, causal=causal,
                       **_profile_ours(q, k, v, do, causal))
    del q, k, v, do, ours
    torch.cuda.empty_cache()
    return rows, accuracy, profile


def run(out_dir, *, dtypes=DTYPES, head_dims=HEAD_DIMS, lengths=LENGTHS, causals=(False, True),
        backends=BACKENDS, rep: int = 20, name: str = "flash_attention", deadline=None,
        resume: bool = False) -> dict[str, Any]:
    """Measure every configuration and write ``<out_dir>/<name>.json``; returns the payload.

    Each row of ``payload["results"]`` is one (configuration, implementation):
    ``dtype, head_dim, L, causal, batch, heads, impl, skipped`` (``None``, or why the
    backend refused) and the timings and rates of :data:`_TIMES` and :data:`_RATES`.
    ``payload["accuracy"]`` holds our output's and gradients' relative error against
    the first backend that ran (a check that the fast path computes attention).
    A configuration is measured whole in one process; the file is rewritten after
    each, ``deadline`` (:class:`softmax_lib.bench.Deadline`) stops early with
    ``"complete": false`` and ``resume`` continues such a file.
    """
    import torch

    from .bench import pending, resume_from, run_parts
    from .kernels.flash import _TUNING, tuned_configs

    if not torch.cuda.is_available():
        raise RuntimeError("the attention benchmark needs a CUDA GPU")
    prior = resume_from(name, out_dir, "flash_attention", expect={"tokens": TOKENS, "rep": rep}) if resume else None
    meta = run_parts(prior)
    prior = prior or {}
    rows, accuracy = list(prior.get("results", [])), list(prior.get("accuracy", []))
    profile = prior.get("host_profile")
    tuned = {kernel: dict(cache) for kernel, cache in prior.get("tuned_configs", {}).items()}
    done = {(r["dtype"], r["head_dim"], r["L"], r["causal"]) for r in rows}
    configurations = _configurations(dtypes, head_dims, lengths, causals)
    profiled = (dtypes[0], min(head_dims), min(lengths), True)  # the shortest causal one

    def payload(complete):
        for kernel, cache in tuned_configs().items():
            tuned.setdefault(kernel, {}).update(cache)
        return {
            "kind": "flash_attention",
            "tokens": TOKENS,
            "rep": rep,
            "flop_count": "forward 4*B*H*L*L*d (halved when causal); forward+backward 3.5x forward",
            "timing": (f"median of {rep} CUDA-event timings after warm-up, L2 flushed before each; "
                       "*_graph_ms: the same calls captured once in a CUDA graph and replayed (device "
                       "time without host gaps); host_*_us: host time per call, not waiting for the GPU"),
            "backends": {"flash": "SDPBackend.FLASH_ATTENTION", "cudnn": "SDPBackend.CUDNN_ATTENTION",
                         "efficient": "SDPBackend.EFFICIENT_ATTENTION"},
            "complete": complete,
            "results": rows,
            "accuracy": accuracy,
            # where our host time goes, for the shortest causal configuration (cProfile)
            "host_profile": profile,
            "tuned_configs": tuned,
            # what the autotuner could choose from: (block_m, block_n, warps, stages[, maxnreg])
            "candidates": {kernel: {str(d): [list(c) for c in cands] for d, cands in per_d.items()}
                           for kernel, per_d in _TUNING.items()},
            **meta,
        }

    if prior and all(config in done for config in configurations):
        print("attention: every configuration is already measured here (--resume)", flush=True)
        return prior
    for config in pending(configurations, done.__contains__, deadline):
        new_rows, new_accuracy, new_profile = _measure_configuration(
            *config, backends, rep, with_profile=config == profiled and profile is None)
        rows.extend(new_rows)
        if new_accuracy is not None:
            accuracy.append(new_accuracy)
        profile = new_profile or profile
        done.add(config)
        write_results(name, payload(False), out_dir)
    complete = all(config in done for config in configurations)
    path = write_results(name, payload(complete), out_dir)
    print(f"wrote {path}" + ("" if complete else " (stopped before the end: run again with --resume)"),
          flush=True)
    return payload(complete)


def _format_row(row) -> str:
    head = (f"{row['dtype']:>8} d={row['head_dim']:<3} L={row['L']:<5} "
            f"{'causal' if row['causal'] else 'full  '} {row['impl']:<9}")
    if row["skipped"]:
        return f"{head} skipped: {row['skipped'][:80]}"
    graph = "".join(f" {label} {row[key]:6.1f}" for label, key in (("graph", "fwd_graph_tflops"),
                                                                       ("graph f+b", "fwd_bwd_graph_tflops"))
                    if row.get(key) is not None)
    return (f"{head} fwd {row['fwd_tflops']:7.1f}  fwd+bwd {row['fwd_bwd_tflops']:7.1f} TFLOP/s{graph}"
            f"  host {row['host_fwd_us']:.0f}/{row['host_fwd_bwd_us']:.0f} us")


def _profile_ours(q, k, v, do, causal, top=15, calls=50) -> dict[str, list]:
    """:func:`softmax_lib.bench.host_profile` of our forward and forward+backward."""
    from .bench import host_profile

    _, _, forward, forward_backward, _ = _calls("ours", q, k, v, do, causal)
    return {"fwd": host_profile(forward, calls=calls, top=top),
            "fwd_bwd": host_profile(forward_backward, calls=calls, top=top)}


if __name__ == "__main__":  # pragma: no cover
    run(sys.argv[1] if len(sys.argv) > 1 else "chapters/results")
