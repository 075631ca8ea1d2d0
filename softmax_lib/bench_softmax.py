"""Benchmark the softmax kernels (Chapters 8 and 9) on a GPU, and tune the long-row path.

For every row length ``N`` of :data:`SOFTMAX_NS` (``M * N`` held at :data:`SOFTMAX_ELEMENTS`
so that every shape fills the GPU), float32 and bfloat16, forward and backward, this
times in one process on one card:

- ``triton``: :mod:`softmax_lib.kernels` (what the launcher picks for that ``N``);
- ``triton_entrywise``: where rows start inside 16-byte vectors, the kernels that read
  them entry by entry instead of through aligned windows;
- ``torch``: ``torch.softmax`` and its backward; ``torch_compile``: the same compiled.

Each time becomes a fraction of the device-to-device copy bandwidth measured in the
same process (:func:`softmax_bytes`: the fewest bytes softmax must move, over its
time), and :func:`softmax_targets` checks a run against the book's targets.
:func:`tune_cooperative` times the cooperative (long-row) kernel's settings and
suggests launch tables; :func:`apply_tuning` measures with them in the same session.
The results record the launch tables they were measured with (:func:`launch_tables`).

``python -m softmax_lib.bench --out DIR --only softmax`` calls :func:`run`, and
``--only tune`` calls :func:`tune_cooperative`.  The timing, provenance and storage are
:mod:`softmax_lib.bench`'s, shared with FlashAttention's harness.
"""

from __future__ import annotations

import functools
from typing import Any

from . import bench

__all__ = [
    "SOFTMAX_NS",
    "SOFTMAX_ELEMENTS",
    "softmax_bytes",
    "run",
    "softmax_targets",
    "TUNE_NS",
    "COOPERATIVE_CANDIDATES",
    "suggest_table",
    "tune_cooperative",
    "launch_tables",
    "apply_tuning",
]

#: Row lengths measured: powers of two from 256 to 2**20 plus a few irregular ones.
SOFTMAX_NS = sorted([2**k for k in range(8, 21)] + [781, 12345, 100_000])
#: Elements per tensor (2**28: 1 GiB in float32), so every row length fills the GPU.
SOFTMAX_ELEMENTS = 2**28


def softmax_bytes(m: int, n: int, itemsize: int, *, backward: bool = False) -> int:
    """The fewest bytes softmax must move: forward reads x, writes y (2 MN);
    backward reads y and dy, writes dx (3 MN)."""
    return (3 if backward else 2) * m * n * itemsize


def _softmax_copy_gbs(elements: int, dtype, itemsize: int) -> float:
    """The copy bandwidth the softmax fractions are divided by: a copy of ``2 * elements``
    float32 entries' bytes for float32, of ``elements`` float32 entries' bytes otherwise."""
    return bench.copy_bandwidth_gbs(2 * elements * 4 if itemsize == 4 else elements * 4, dtype)


def _torch_softmax_backward(y, dy):
    import torch

    return torch._softmax_backward_data(dy, y, -1, y.dtype)


def _reference_backward(y, dy):
    return y * (dy - (y * dy).sum(-1, keepdim=True))


def _reads_windows(n: int, itemsize: int) -> bool:
    """Whether contiguous rows of ``n`` entries go to the aligned-window kernels."""
    from .kernels import fused_softmax as fs
    from .kernels._common import alignment

    return n <= fs.MAX_FUSED and fs._window_plan(2, n, itemsize, alignment(itemsize, n), (0, 0), (n, n))[1] > 0


def _entrywise(fn, *args):
    """``fn(*args)`` with the window kernels turned off (rows read entry by entry)."""
    from .kernels import fused_softmax as fs

    with fs.entrywise():
        return fn(*args)


def _softmax_rows(fs, n: int, dtype_name: str, copy_gbs: float, elements: int, with_compile: bool,
                  rep: int) -> tuple[dict, dict]:
    """Forward and backward rows for one row length: every implementation timed in this
    process and divided by this process's copy bandwidth ``copy_gbs``."""
    import torch

    dtype = getattr(torch, dtype_name)
    itemsize = torch.empty((), dtype=dtype).element_size()
    m = max(1, elements // n)
    x = torch.randn(m, n, device="cuda", dtype=torch.float32).mul_(3.0).to(dtype)
    dy = torch.randn(m, n, device="cuda", dtype=torch.float32).to(dtype)
    y_ref = torch.softmax(x.float(), -1)
    y = fs.softmax_forward(x)
    err = ((y.float() - y_ref).norm() / y_ref.norm()).item()
    dx = fs.softmax_backward(y, dy)
    dx_ref = _reference_backward(y.float(), dy.float())
    err_b = ((dx.float() - dx_ref).norm() / dx_ref.norm()).item()
    del y_ref, dx_ref, dx
    impls_f = {"triton": lambda: fs.softmax_forward(x), "torch": lambda: torch.softmax(x, -1)}
    impls_b = {"triton": lambda: fs.softmax_backward(y, dy),
               "torch": lambda: _torch_softmax_backward(y, dy)}
    if _reads_windows(n, itemsize):  # the rows start inside vectors: time both kernels
        impls_f["triton_entrywise"] = lambda: _entrywise(fs.softmax_forward, x)
        impls_b["triton_entrywise"] = lambda: _entrywise(fs.softmax_backward, y, dy)
    if with_compile:
        torch._dynamo.reset()  # a fresh compile for this shape, not a recompile-limit fallback
        cf = torch.compile(lambda t: torch.softmax(t, -1), dynamic=False)
        cb = torch.compile(_reference_backward, dynamic=False)
        impls_f["torch_compile"] = lambda: cf(x)
        impls_b["torch_compile"] = lambda: cb(y, dy)
    out = []
    for impls, backward, rel in ((impls_f, False, err), (impls_b, True, err_b)):
        nbytes = softmax_bytes(m, n, itemsize, backward=backward)
        row = {"n": n, "m": m, "method": fs.choose_method(n), "relative_error": rel, "copy_gbs": copy_gbs}
        for name, fn in impls.items():
            try:
                ms = bench.time_ms(fn, warmup=3, rep=rep)
            except Exception as exc:  # noqa: BLE001 - record, do not abort the sweep
                print(f"  {name} n={n}: failed: {exc!s:.200}", flush=True)
                row[name] = None
                continue
            gbs = nbytes / (ms * 1e-3) / 1e9
            row[name] = {"ms": ms, "gbs": gbs, "fraction_of_copy": gbs / copy_gbs, "host_us": bench.host_us(fn)}
        out.append(row)
        frac = {k: (v["fraction_of_copy"] if isinstance(v, dict) else None) for k, v in row.items() if k in impls}
        print(f"{'bwd' if backward else 'fwd'} {dtype_name:8s} n={n:8d} m={m:8d} "
              + " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=--" for k, v in frac.items())
              + f" err={rel:.1e}", flush=True)
    del x, dy, y
    torch.cuda.empty_cache()
    return out[0], out[1]


def run(out_dir, *, ns=None, elements: int = SOFTMAX_ELEMENTS, dtypes=("float32", "bfloat16"),
                  with_compile: bool = True, rep: int = 20, deadline: bench.Deadline | None = None,
                  resume: bool = False) -> dict[str, Any]:
    """Forward and backward softmax against torch.softmax, torch.compile and the copy.

    Writes ``softmax_forward.json`` and ``softmax_backward.json`` into ``out_dir``; each
    holds, per dtype, a list of rows ``{n, m, method, relative_error, copy_gbs}`` plus
    ``{ms, gbs, fraction_of_copy, host_us}`` per implementation (``triton``, ``torch``,
    ``torch_compile``, and for rows that start inside 16-byte vectors
    ``triton_entrywise``, the kernels that read them entry by entry instead of through
    aligned windows); ``copy_gbs`` per dtype is the first process's copy bandwidth
    (each row carries the one it was divided by); ``launch_tables`` the kernels' settings
    (:func:`launch_tables`).  The files are rewritten after every row length; ``deadline``
    (a :class:`softmax_lib.bench.Deadline`) stops the sweep early, leaving ``"complete": false``, and
    ``resume`` continues such files (:func:`softmax_lib.bench.resume_from`).
    Returns ``{"forward": ..., "backward": ...}``, the two files' contents.
    """
    import torch

    from .kernels import fused_softmax as fs

    ns = SOFTMAX_NS if ns is None else list(ns)
    here = bench.provenance()
    expect = {"elements": elements, "rep": rep, "with_compile": with_compile,
              "launch_tables": launch_tables()}
    prior = {d: bench.resume_from(f"softmax_{d}", out_dir, f"softmax_{d}", here, expect) if resume else None
             for d in ("forward", "backward")}
    if (prior["forward"] is None) != (prior["backward"] is None):
        prior = {"forward": None, "backward": None}  # only one of the two kept: start both afresh
    meta = bench.run_parts(prior["forward"], here)
    results = {d: {k: list(v) for k, v in (prior[d] or {}).get("results", {}).items()}
               for d in ("forward", "backward")}
    copy = dict((prior["forward"] or {}).get("copy_gbs", {}))
    copy_here = {}
    common = {"elements": elements, "rep": rep, "with_compile": with_compile, "copy_gbs": copy,
              "launch_tables": expect["launch_tables"],
              "bytes_counted": "forward 2*M*N*itemsize, backward 3*M*N*itemsize",
              "timing": f"median of {rep} CUDA-event timings, L2 flushed before each; "
                        "host_us: host time to queue one call, not waiting for the GPU; "
                        "fraction_of_copy: against the copy_gbs of the row's own process",
              **meta}

    def done(dtype_name, n):
        return all(any(r["n"] == n for r in results[d].get(dtype_name, [])) for d in ("forward", "backward"))

    def write(complete):
        for d in ("forward", "backward"):
            ordered = {k: sorted(v, key=lambda r: r["n"]) for k, v in results[d].items()}
            bench.write_results(f"softmax_{d}", {"kind": f"softmax_{d}", **common, "complete": complete,
                                           "results": ordered}, out_dir)

    if prior["forward"] is not None and all(done(t, n) for t in dtypes for n in ns):
        print("softmax: every row length is already measured here (--resume)", flush=True)
        return {d: results[d] for d in ("forward", "backward")}
    for dtype_name, n in bench.pending([(t, n) for t in dtypes for n in ns], lambda unit: done(*unit), deadline):
        if dtype_name not in copy_here:
            dtype = getattr(torch, dtype_name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            copy_here[dtype_name] = _softmax_copy_gbs(elements, dtype, itemsize)
            copy.setdefault(dtype_name, copy_here[dtype_name])
            print(f"copy bandwidth {dtype_name}: {copy_here[dtype_name]:.0f} GB/s", flush=True)
        fwd, bwd = _softmax_rows(fs, n, dtype_name, copy_here[dtype_name], elements, with_compile, rep)
        results["forward"].setdefault(dtype_name, []).append(fwd)
        results["backward"].setdefault(dtype_name, []).append(bwd)
        write(False)
    complete = all(done(t, n) for t in dtypes for n in ns)
    write(complete)
    if not complete:
        print("softmax: stopped before the end (--budget-s); run again with --resume", flush=True)
    return {d: results[d] for d in ("forward", "backward")}


#: The softmax targets of the book's design (``DESIGN.md``, "Performance targets"):
#: (words, direction, measure, threshold, shortest N, longest N or None).
_SOFTMAX_TARGETS = (
    ("forward >= 0.90 of copy, N 1,024 to 65,536", "forward", "copy", 0.90, 1024, 65536),
    ("forward >= torch.softmax, N 256 to 2^20", "forward", "torch", 1.0, 256, 2**20),
    ("forward >= 0.80 of copy, N >= 2^18", "forward", "copy", 0.80, 2**18, None),
    ("backward >= 0.85 of copy, every N", "backward", "copy", 0.85, 0, None),
)


def _target_value(row: dict, measure: str) -> float | None:
    """A row's fraction of copy (``"copy"``) or speed over torch.softmax (``"torch"``);
    None when a timing it needs failed."""
    ours, torch_ = row.get("triton"), row.get("torch")
    if not isinstance(ours, dict):
        return None
    if measure == "copy":
        return ours["fraction_of_copy"]
    return torch_["ms"] / ours["ms"] if isinstance(torch_, dict) else None


def softmax_targets(forward: dict[str, Any], backward: dict[str, Any]) -> list[dict[str, Any]]:
    """Which of the book's softmax performance targets a run meets, and by how much.

    The targets were set before the kernels were written, in the book's design
    (``DESIGN.md`` of its repository, section "Performance targets"), for an H200 and
    as ratios measured in one run:

    1. forward, every N from 1,024 to 65,536: at least 0.90 of the copy bandwidth;
    2. forward, every N from 256 to 2**20: at least as fast as ``torch.softmax``
       (its time over ours at least 1);
    3. forward, rows of 2**18 entries and longer: at least 0.80 of the copy bandwidth;
    4. backward, every N: at least 0.85 of the copy bandwidth.

    Each target is checked at every row length in its range that the run measured, in
    every dtype it stored (float32 and bfloat16 for ``make bench-gpu``), always for the
    ``triton`` entries (what the launcher runs).  ``forward`` and ``backward`` are the
    payloads of ``load_results("softmax_forward")`` and ``("softmax_backward")``; for
    the return value of :func:`run` pass ``{"results": out["forward"]}`` and
    ``{"results": out["backward"]}``.

    Returns one dict per target, in the order above, the rows of a "target / measured /
    met?" table (Chapter 8 prints it): ``target`` (in words), ``threshold``,
    ``checked`` (how many (dtype, N) points lie in its range), ``missed`` (the points
    below the threshold, as ``(dtype, n)`` in the payload's order; a point whose timing
    failed counts as missed), ``worst`` and ``worst_at`` (the lowest measured value and
    its ``(dtype, n)``; None when nothing in range was measured) and ``met`` (True when
    no point misses, False when one does, None when no point lies in the range:
    nothing to judge).
    """
    payloads = {"forward": forward, "backward": backward}
    out = []
    for words, direction, measure, threshold, shortest, longest in _SOFTMAX_TARGETS:
        checked, missed, worst, worst_at = 0, [], None, None
        for dtype, rows in payloads[direction]["results"].items():
            for row in rows:
                n = row["n"]
                if n < shortest or (longest is not None and n > longest):
                    continue
                checked += 1
                value = _target_value(row, measure)
                if value is None or value < threshold:
                    missed.append((dtype, n))
                if value is not None and (worst is None or value < worst):
                    worst, worst_at = value, (dtype, n)
        out.append({"target": words, "threshold": threshold, "checked": checked, "missed": missed,
                    "worst": worst, "worst_at": worst_at, "met": not missed if checked else None})
    return out


# --------------------------------------------------------------------------------------
# Tuning the cooperative path (Chapter 9): which segment size, warps and prefetch
# --------------------------------------------------------------------------------------

#: Row lengths the tuner measures (the cooperative path's range of the benchmark).
TUNE_NS = [2**16, 2**17, 2**18, 2**19, 2**20]
_SEGMENT_CHOICES = [(seg, warps, prefetch) for seg in (8192, 16384, 32768) for warps in (4, 8)
                    for prefetch in (False, True)]
#: Settings the tuner times per (direction, bytes per entry): (bytes per segment, warps,
#: prefetch).  Left out: those that spill registers when compiled for sm_90 (checked by
#: tests/test_kernels_compiled.py), a spill being a round trip to memory per entry.
COOPERATIVE_CANDIDATES = {
    ("forward", 4): list(_SEGMENT_CHOICES),
    ("forward", 2): list(_SEGMENT_CHOICES),
    ("backward", 4): [c for c in _SEGMENT_CHOICES if c != (32768, 4, True)],
    ("backward", 2): [c for c in _SEGMENT_CHOICES if c[:2] != (32768, 4)],
}


def suggest_table(fractions: dict, ns) -> list[tuple]:
    """A ``COOPERATIVE_CONFIGS`` list from measurements.

    ``fractions`` maps a setting ``(bytes per segment, warps, prefetch)`` to ``{n: fraction
    of copy or None}`` (None: failed or wrong).  For each ``n`` (ascending) the fastest
    setting wins; consecutive lengths with the same winner share one entry, keyed by the
    longest of them, as the launcher looks up the first entry with ``n <= N``.
    """
    ns = sorted(ns)
    if not ns:
        raise ValueError("ns must name at least one row length")
    picks = []
    for n in ns:
        scored = [(f[n], cfg) for cfg, f in fractions.items() if f.get(n) is not None]
        if not scored:
            raise ValueError(f"no setting was measured at n={n}")
        picks.append((n, max(scored)[1]))
    table = []
    for i, (n, cfg) in enumerate(picks):
        if i + 1 < len(picks) and picks[i + 1][1] == cfg:
            continue
        table.append((n, *cfg))
    return table


def _tune_at(fs, lr, direction: str, dtype_name: str, n: int, configs, copy_gbs: float, elements: int,
             rep: int) -> dict:
    """Fraction of copy bandwidth of every setting in ``configs`` at row length ``n``
    (None where its output was wrong or it failed), all timed in this process."""
    import torch

    dtype = getattr(torch, dtype_name)
    itemsize = torch.empty((), dtype=dtype).element_size()
    key = f"{direction}:{dtype_name}"
    tol = 1e-5 if itemsize == 4 else 1.5e-2
    m = max(1, elements // n)
    x = torch.randn(m, n, device="cuda", dtype=torch.float32).mul_(3.0).to(dtype)
    dy = torch.randn(m, n, device="cuda", dtype=torch.float32).to(dtype)
    y = torch.softmax(x.float(), -1).to(dtype)
    if direction == "forward":
        ref = torch.softmax(x.float(), -1)
        fn = functools.partial(fs.softmax_forward, x, method="cooperative")
    else:
        ref = _reference_backward(y.float(), dy.float())
        fn = functools.partial(fs.softmax_backward, y, dy, method="cooperative")
    nbytes = softmax_bytes(m, n, itemsize, backward=direction == "backward")
    out = {}
    for cfg in configs:
        try:
            with lr.cooperative_settings(direction, itemsize, *cfg):
                err = ((fn().float() - ref).norm() / ref.norm()).item()
                ms = bench.time_ms(fn, warmup=3, rep=rep) if err < tol else None
        except Exception as exc:  # noqa: BLE001 - record, do not abort the sweep
            print(f"  {key} n={n} {cfg}: failed: {exc!s:.200}", flush=True)
            err, ms = None, None
        out[cfg] = None if ms is None else nbytes / (ms * 1e-3) / 1e9 / copy_gbs
        print(f"tune {key:17s} n={n:8d} segment={cfg[0]:6d} warps={cfg[1]:2d} prefetch={cfg[2]!s:5s} "
              + (f"{out[cfg]:.3f}" if out[cfg] is not None else f"-- (error {err})"), flush=True)
    del x, dy, y, ref, fn
    torch.cuda.empty_cache()
    return out


def tune_cooperative(out_dir, *, ns=None, elements: int = SOFTMAX_ELEMENTS, dtypes=("float32", "bfloat16"),
                     rep: int = 20, deadline: bench.Deadline | None = None, resume: bool = False) -> dict[str, Any]:
    """Time every setting of :data:`COOPERATIVE_CANDIDATES` on rows of ``ns`` entries.

    Writes ``softmax_cooperative_tuning.json`` into ``out_dir``: per direction and dtype
    the fraction of copy bandwidth of each setting at each ``n`` (None if its output was
    wrong or it failed), the table in use and the table :func:`suggest_table` makes of
    the measurements, to be copied into ``long_rows.COOPERATIVE_CONFIGS`` by hand.  All
    settings at one ``n`` are timed in one process; the file is rewritten after each
    ``n``, and ``deadline``/``resume`` cut the sweep into pieces as in
    :func:`run`.
    """
    import torch

    from .kernels import fused_softmax as fs
    from .kernels import long_rows as lr

    ns = TUNE_NS if ns is None else sorted(ns)
    name = "softmax_cooperative_tuning"
    here = bench.provenance()
    expect = {"elements": elements, "rep": rep, "ns": ns}
    prior = bench.resume_from(name, out_dir, name, here, expect) if resume else None
    meta = bench.run_parts(prior, here)
    copy = dict((prior or {}).get("copy_gbs", {}))
    copy_here = {}
    fractions = {}  # key -> {cfg: {n: fraction}}
    for key, entries in (prior or {}).get("measured", {}).items():
        fractions[key] = {(e["segment_bytes"], e["num_warps"], e["prefetch"]):
                          {int(n): f for n, f in e["fraction_of_copy"].items()} for e in entries}
    jobs = []  # (direction, dtype, size, key)
    for dtype_name in dtypes:
        size = 4 if torch.empty((), dtype=getattr(torch, dtype_name)).element_size() >= 4 else 2
        for direction in ("forward", "backward"):
            key = f"{direction}:{dtype_name}"
            jobs.append((direction, dtype_name, size, key))
            fractions.setdefault(key, {})
            for cfg in COOPERATIVE_CANDIDATES[(direction, size)]:
                fractions[key].setdefault(cfg, {})

    def done(key, n):
        return all(n in fr for fr in fractions[key].values())

    def payload(complete):
        in_use, suggested = {}, {}
        for direction, _, size, key in jobs:
            in_use[key] = [list(c) for c in lr.COOPERATIVE_CONFIGS[(direction, size)]]
            if all(done(key, n) for n in ns):
                suggested[key] = [list(e) for e in suggest_table(fractions[key], ns)]
        measured = {key: [{"segment_bytes": c[0], "num_warps": c[1], "prefetch": c[2],
                           "fraction_of_copy": {str(n): f for n, f in sorted(fr.items())}}
                          for c, fr in fractions[key].items()] for _, _, _, key in jobs}
        return {"kind": name, "elements": elements, "rep": rep, "ns": ns, "copy_gbs": copy,
                "entry": "(max row length, bytes per segment, warps, prefetch)", "in_use": in_use,
                "suggested": suggested, "measured": measured, "complete": complete,
                "timing": f"median of {rep} CUDA-event timings, L2 flushed before each; "
                          "all settings at one row length timed in one process", **meta}

    if prior is not None and all(done(key, n) for _, _, _, key in jobs for n in ns):
        print("tune: every setting is already measured here (--resume)", flush=True)
        return prior
    units = [(job, n) for job in jobs for n in ns]
    for (direction, dtype_name, size, key), n in bench.pending(units, lambda unit: done(unit[0][3], unit[1]),
                                                         deadline):
        if dtype_name not in copy_here:
            dtype = getattr(torch, dtype_name)
            copy_here[dtype_name] = _softmax_copy_gbs(elements, dtype, torch.empty((), dtype=dtype).element_size())
            copy.setdefault(dtype_name, copy_here[dtype_name])
        measured = _tune_at(fs, lr, direction, dtype_name, n, list(fractions[key]), copy_here[dtype_name],
                            elements, rep)
        for cfg, frac in measured.items():
            fractions[key][cfg][n] = frac
        bench.write_results(name, payload(False), out_dir)
        if n == ns[-1] and all(done(key, m) for m in ns):
            print(f"suggested COOPERATIVE_CONFIGS[({direction!r}, {size})] = "
                  + repr([tuple(e) for e in suggest_table(fractions[key], ns)]), flush=True)
    complete = all(done(key, n) for _, _, _, key in jobs for n in ns)
    result = payload(complete)
    bench.write_results(name, result, out_dir)
    if not complete:
        print("tune: stopped before the end (--budget-s); run again with --resume", flush=True)
    return result


def launch_tables() -> dict[str, dict[str, list]]:
    """The softmax kernels' launch tables in this process, as plain lists.

    ``{"fused": {"forward:4": [[4096, 8192, 16, 1, 0], ...], ...}, "cooperative": {...}}``:
    ``fused_softmax.FUSED_CONFIGS`` and ``long_rows.COOPERATIVE_CONFIGS``, keyed by
    direction and bytes per entry.  :func:`run` stores them with its results,
    so that a stored result says which settings it measured (and a run is resumed only
    with the same ones).
    """
    from .kernels import fused_softmax as fs
    from .kernels import long_rows as lr

    def plain(table):
        return {f"{direction}:{size}": [list(entry) for entry in entries]
                for (direction, size), entries in sorted(table.items())}

    return {"fused": plain(fs.FUSED_CONFIGS), "cooperative": plain(lr.COOPERATIVE_CONFIGS)}


def apply_tuning(tuning: dict[str, Any]) -> dict[str, list]:
    """Launch the cooperative kernels, in this process, with the tables a tuning sweep
    suggests, so that one session on a GPU can tune and then measure with the result.

    ``tuning`` is the payload of ``softmax_cooperative_tuning.json``
    (:func:`tune_cooperative`); each table in its ``"suggested"`` (one per direction and
    dtype measured through) replaces ``long_rows.COOPERATIVE_CONFIGS``'s entry for that
    direction and bytes per entry.  The rest keep the code's tables.  Returns what was
    replaced, as ``{"forward:float32": [[n, segment bytes, warps, prefetch], ...]}``.
    Copy the same tables into ``long_rows.py`` before committing results measured so:
    the stored results record their tables (:func:`launch_tables`), and the tests compare
    them with the code's.
    """
    from .kernels import long_rows as lr

    if not isinstance(tuning, dict) or tuning.get("kind") != "softmax_cooperative_tuning":
        kind = tuning.get("kind") if isinstance(tuning, dict) else type(tuning).__name__
        raise ValueError(f"tuning must be the payload of softmax_cooperative_tuning.json, got {kind!r}")
    sizes = {"float32": 4, "float16": 2, "bfloat16": 2}
    applied = {}
    for key, table in tuning.get("suggested", {}).items():
        direction, _, dtype_name = key.partition(":")
        if (direction, sizes.get(dtype_name)) not in lr.COOPERATIVE_CONFIGS:
            raise ValueError(f"tuning suggests a table for {key!r}, which names no direction and dtype")
        entries = [(int(n), int(seg), int(warps), bool(prefetch)) for n, seg, warps, prefetch in table]
        if not entries or [e[0] for e in entries] != sorted({e[0] for e in entries}):
            raise ValueError(f"tuning's table for {key!r} must list ascending row lengths, got {table!r}")
        applied[key] = ((direction, sizes[dtype_name]), entries)
    for key, (table_key, entries) in applied.items():  # all checked: now replace
        lr.COOPERATIVE_CONFIGS[table_key] = entries
    return {key: [list(e) for e in entries] for key, (_, entries) in applied.items()}
