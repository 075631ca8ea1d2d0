"""GPU benchmark harness: time kernels properly and store the results with provenance.

``make bench-gpu`` runs ``python -m softmax_lib.bench --out chapters/results`` on a
machine with a CUDA GPU.  Every result is a ratio measured in one run: a kernel's
effective bandwidth (the fewest bytes it must move, over its time) divided by the
device-to-device copy bandwidth measured in the same process, on the same card.
The notebooks of Chapters 8 to 10 plot the stored JSON files; on a machine with a
GPU they can measure again with the same functions.

Shared primitives (FlashAttention's harness, ``softmax_lib.bench_attention``, uses
them too): :func:`provenance`, :func:`time_ms`, :func:`time_ms_graph`,
:func:`host_us`, :func:`host_profile`, :func:`copy_bandwidth_gbs`,
:func:`write_results`, :func:`load_results`.

Command line::

    python -m softmax_lib.bench --out DIR [--only softmax|attention|tune] [--quick]
                                [--budget-s SECONDS] [--resume] [--tuned FILE]

A run can be cut into several processes (a machine lent for a few minutes at a
time): ``--budget-s`` stops starting new measurements after that many seconds,
writes what was measured with ``"complete": false`` (the files are rewritten after
every configuration anyway, so a process that is killed keeps what it finished), and
``--resume`` continues such a file where it stopped (and keeps a finished one), refusing
to mix in rows measured on another GPU model, driver or torch/triton version, or with
other sizes or repetitions (:func:`resume_from`).  Each process is
listed in the file's ``parts``; ratios are still taken within one process (a row is
measured whole, with the copy bandwidth of its own process).

``--only tune`` times the cooperative kernel's settings (:func:`tune_cooperative`);
``--tuned FILE`` then measures with the tables that sweep suggests (:func:`apply_tuning`),
so that one session on a GPU can do both.  The softmax results record the launch tables
they were measured with (:func:`launch_tables`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import pathlib
import platform
import socket
import statistics
import sys
from typing import Any, Callable

from ._array import check_positive_int

__all__ = [
    "provenance",
    "time_ms",
    "time_ms_graph",
    "host_us",
    "host_profile",
    "copy_bandwidth_gbs",
    "write_results",
    "load_results",
    "Deadline",
    "pending",
    "resume_from",
    "run_parts",
    "results_dir",
    "softmax_bytes",
    "bench_softmax",
    "softmax_targets",
    "suggest_table",
    "tune_cooperative",
    "launch_tables",
    "apply_tuning",
    "main",
]

#: Where a checkout keeps the stored results (``chapters/results``).
_CHECKOUT_RESULTS = pathlib.Path(__file__).resolve().parent.parent / "chapters" / "results"


# --------------------------------------------------------------------------------------
# Provenance and storage
# --------------------------------------------------------------------------------------


def provenance() -> dict[str, Any]:
    """Where and with what a measurement was taken.

    Keys: ``gpu``, ``sm_count``, ``gpu_memory_gib``, ``driver``, ``cuda``, ``torch``,
    ``triton``, ``python``, ``platform``, ``hostname``, ``date_utc`` (ISO 8601).
    Fields that cannot be read here (no GPU, no triton) are ``None``.
    """
    info: dict[str, Any] = {
        "gpu": None,
        "sm_count": None,
        "gpu_memory_gib": None,
        "driver": None,
        "cuda": None,
        "torch": None,
        "triton": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["sm_count"] = props.multi_processor_count
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["driver"] = _driver_version()
    return info


def _driver_version() -> str | None:
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - provenance is best effort
        pass
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return None


def write_results(name: str, payload: dict[str, Any], out_dir) -> pathlib.Path:
    """Write ``payload`` plus ``provenance()`` to ``<out_dir>/<name>.json``; returns the path.

    A ``provenance`` key already in ``payload`` is kept (so results measured earlier
    can be re-written without losing where they came from).
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(payload)
    record.setdefault("provenance", provenance())
    path = out / f"{name}.json"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    partial.replace(path)  # atomic: a process killed mid-write leaves the previous file
    return path


#: Provenance fields that must agree for two processes' measurements to share a file.
SAME_SETUP = ("gpu", "driver", "cuda", "torch", "triton")


class Deadline:
    """When a benchmark stops starting new measurements: ``seconds`` from now, or never.

    >>> Deadline(None).passed()
    False
    """

    def __init__(self, seconds: float | None = None):
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not seconds > 0 or seconds != seconds):
            raise ValueError(f"seconds must be a positive number or None, got {seconds!r}")
        import time

        self._clock = time.monotonic
        self._end = None if seconds is None else self._clock() + float(seconds)

    def passed(self) -> bool:
        """True once the time is up (never for ``Deadline(None)``)."""
        return self._end is not None and self._clock() >= self._end


def pending(units, done: Callable[[Any], bool], deadline: Deadline | None = None):
    """The units of work (in order) that ``done`` does not count as measured, until
    ``deadline`` passes: the loop of every sweep that can be cut into pieces.

    >>> list(pending([1, 2, 3, 4], lambda u: u == 2))
    [1, 3, 4]
    """
    deadline = deadline or Deadline(None)
    for unit in units:
        if done(unit):
            continue
        if deadline.passed():
            return
        yield unit


def resume_from(name: str, out_dir, kind: str, here: dict[str, Any] | None = None,
                expect: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The results ``<out_dir>/<name>.json`` of an earlier process, to continue or keep.

    Returns ``None`` when there is no such file, or when it is complete but was measured
    with another setup (it is then simply replaced); otherwise the payload, whose
    ``"complete"`` says whether anything is left to measure.  The setup is
    :data:`SAME_SETUP` of its provenance against ``here`` (default: this process's
    :func:`provenance`) and the settings named in ``expect`` (e.g. ``{"rep": 20}``)
    against the file's.  Raises ``ValueError`` when the file holds another ``kind`` of
    result, or is unfinished and was measured with another setup: rows of one file
    are compared with each other, so they must not be mixed.
    """
    path = pathlib.Path(out_dir) / f"{name}.json"
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    if payload.get("kind") != kind:
        raise ValueError(f"{path} holds {payload.get('kind')!r} results, not {kind!r}")
    here = provenance() if here is None else here
    first = payload.get("provenance") or {}
    differ = [f"{key}: {first.get(key)!r} there, {here.get(key)!r} here" for key in SAME_SETUP
              if first.get(key) != here.get(key)]
    differ += [f"{key}: {payload.get(key)!r} there, {value!r} here" for key, value in (expect or {}).items()
               if payload.get(key) != value]
    if differ and payload.get("complete", True):
        return None
    if differ:
        raise ValueError(f"cannot resume {path}: measured with another setup ({'; '.join(differ)})")
    return payload


def run_parts(prior: dict[str, Any] | None, here: dict[str, Any] | None = None) -> dict[str, Any]:
    """``provenance`` and ``parts`` of a (possibly resumed) result file: the first
    process's provenance, and one entry per process (its host and start date)."""
    here = provenance() if here is None else here
    part = {"hostname": here.get("hostname"), "date_utc": here.get("date_utc")}
    if prior is None:
        return {"provenance": here, "parts": [part]}
    parts = list(prior.get("parts") or [{"hostname": prior["provenance"].get("hostname"),
                                          "date_utc": prior["provenance"].get("date_utc")}])
    return {"provenance": prior["provenance"], "parts": parts + [part]}


def results_dir() -> pathlib.Path | None:
    """The folder holding the stored results: the checkout's, else the installed package's."""
    if _CHECKOUT_RESULTS.is_dir():
        return _CHECKOUT_RESULTS
    try:
        from importlib.resources import files

        return pathlib.Path(str(files("softmax_lib.results")))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None


def load_results(name: str, results: pathlib.Path | str | None = None) -> dict[str, Any]:
    """Read the stored results ``<name>.json``.

    Looks in ``results`` if given, else in ``chapters/results`` of a checkout, else in
    the ``softmax_lib.results`` package data (a pip install, e.g. on Colab).
    Raises ``FileNotFoundError`` when nothing is stored under that name.
    """
    if results is not None:
        path = pathlib.Path(results) / f"{name}.json"
        return json.loads(path.read_text())
    if _CHECKOUT_RESULTS.is_dir():
        path = _CHECKOUT_RESULTS / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    try:
        from importlib.resources import files

        resource = files("softmax_lib.results").joinpath(f"{name}.json")
        return json.loads(resource.read_text())
    except (ImportError, ModuleNotFoundError, FileNotFoundError, TypeError) as err:
        raise FileNotFoundError(f"no stored results named {name!r}") from err


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------

_L2_FLUSH_BYTES = 256 * 2**20  # about five times the H200's 50 MB L2
_flush_buffer = None


def _flush_l2():
    global _flush_buffer
    import torch

    if _flush_buffer is None:
        _flush_buffer = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _flush_buffer.zero_()


def time_ms(fn: Callable[[], Any], *, warmup: int = 5, rep: int = 30, flush_l2: bool = True) -> float:
    """Median time of ``fn()`` on the GPU in milliseconds, from CUDA events.

    ``warmup`` untimed calls first (compilation, autotuning, allocator), then ``rep``
    timed calls, each between its own pair of events.  With ``flush_l2`` a 256 MiB
    buffer is overwritten before every timed call, outside the timed region, so the
    L2 cache never holds a kernel's inputs from the previous repetition.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("time_ms measures on a CUDA GPU; none is available here")
    for _ in range(max(0, int(warmup))):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    for start, end in zip(starts, ends):
        if flush_l2:
            _flush_l2()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def time_ms_graph(fn: Callable[[], Any], *, warmup: int = 3, rep: int = 30, flush_l2: bool = True) -> float:
    """Median GPU time of ``fn()`` in milliseconds with the host taken out of the timing.

    :func:`time_ms` records an event, calls ``fn`` and records another: if queuing
    ``fn``'s launches costs the host more than the GPU needs for the work queued
    before them (the L2 flush, an earlier kernel of ``fn``), the GPU idles between
    the events and the idle time is charged to the kernels.  Here ``fn``'s launches
    are captured once in a CUDA graph and the graph is replayed between the events:
    one host call queues all of them, so the median measures the device alone.

    The warm-up calls run on a side stream, as capture requires, and finish any
    compilation and autotuning first; ``fn`` must then launch the same work on
    every call (fixed shapes, no host synchronisation).  Raises ``RuntimeError``
    without a GPU or when the capture fails.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("time_ms_graph measures on a CUDA GPU; none is available here")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(1, int(warmup))):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
        return time_ms(graph.replay, warmup=2, rep=rep, flush_l2=flush_l2)
    finally:
        torch.cuda.synchronize()
        graph.reset()


def host_us(fn: Callable[[], Any], *, calls: int = 20, warmup: int = 2) -> float:
    """Host time per call of ``fn()`` in microseconds: what Python, the framework and
    the driver spend to queue its work, without waiting for the GPU to do it.

    ``warmup`` calls first, then the device is drained and ``calls`` calls are timed
    with the host clock only (a GPU's launch queue holds far more than they queue, so
    the host never waits for it).  Without a GPU it is simply the time per call.
    """
    import time

    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    calls = check_positive_int(calls, "calls")
    for _ in range(max(0, int(warmup))):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    sync()
    return elapsed / calls * 1e6


def host_profile(fn: Callable[[], Any], *, calls: int = 50, top: int = 15) -> list[dict[str, Any]]:
    """Where the host time of ``fn()`` goes: the ``top`` functions by cumulative time.

    Runs ``fn`` ``calls`` times under :mod:`cProfile` (after one untimed call) and
    returns rows ``{function, calls_per_call, cumulative_us, own_us}``, times per
    call of ``fn`` in microseconds (profiling inflates them; the ranking is the point).
    """
    import cProfile
    import pstats

    calls = check_positive_int(calls, "calls")
    top = check_positive_int(top, "top")
    fn()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    rows = []
    for (filename, line, name), (_, ncalls, own, cumulative, _) in pstats.Stats(profiler).stats.items():
        where = "/".join(pathlib.PurePath(filename).parts[-2:]) if filename != "~" else "built-in"
        rows.append({"function": f"{name} ({where}:{line})", "calls_per_call": ncalls / calls,
                     "cumulative_us": cumulative / calls * 1e6, "own_us": own / calls * 1e6})
    rows.sort(key=lambda r: -r["cumulative_us"])
    return rows[:top]


def copy_bandwidth_gbs(nbytes: int = 2**31, dtype=None) -> float:
    """Device-to-device copy bandwidth in GB/s (1e9 bytes/s), bytes read plus written.

    Copies a tensor of ``nbytes`` bytes (default 2 GiB, far beyond L2) into another
    with ``Tensor.copy_``; this is the practical ceiling every memory-bound kernel
    in Part V is compared against.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = max(1, int(nbytes) // itemsize)
    src = torch.randn(n, device="cuda").to(dtype)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup=5, rep=30)
    del src, dst
    return 2 * n * itemsize / (ms * 1e-3) / 1e9


# --------------------------------------------------------------------------------------
# Softmax benchmarks (Chapters 8 and 9)
# --------------------------------------------------------------------------------------

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
    return copy_bandwidth_gbs(2 * elements * 4 if itemsize == 4 else elements * 4, dtype)


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
                ms = time_ms(fn, warmup=3, rep=rep)
            except Exception as exc:  # noqa: BLE001 - record, do not abort the sweep
                print(f"  {name} n={n}: failed: {exc!s:.200}", flush=True)
                row[name] = None
                continue
            gbs = nbytes / (ms * 1e-3) / 1e9
            row[name] = {"ms": ms, "gbs": gbs, "fraction_of_copy": gbs / copy_gbs, "host_us": host_us(fn)}
        out.append(row)
        frac = {k: (v["fraction_of_copy"] if isinstance(v, dict) else None) for k, v in row.items() if k in impls}
        print(f"{'bwd' if backward else 'fwd'} {dtype_name:8s} n={n:8d} m={m:8d} "
              + " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=--" for k, v in frac.items())
              + f" err={rel:.1e}", flush=True)
    del x, dy, y
    torch.cuda.empty_cache()
    return out[0], out[1]


def bench_softmax(out_dir, *, ns=None, elements: int = SOFTMAX_ELEMENTS, dtypes=("float32", "bfloat16"),
                  with_compile: bool = True, rep: int = 20, deadline: Deadline | None = None,
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
    (a :class:`Deadline`) stops the sweep early, leaving ``"complete": false``, and
    ``resume`` continues such files (:func:`resume_from`).
    Returns ``{"forward": ..., "backward": ...}``, the two files' contents.
    """
    import torch

    from .kernels import fused_softmax as fs

    ns = SOFTMAX_NS if ns is None else list(ns)
    here = provenance()
    expect = {"elements": elements, "rep": rep, "with_compile": with_compile,
              "launch_tables": launch_tables()}
    prior = {d: resume_from(f"softmax_{d}", out_dir, f"softmax_{d}", here, expect) if resume else None
             for d in ("forward", "backward")}
    if (prior["forward"] is None) != (prior["backward"] is None):
        prior = {"forward": None, "backward": None}  # only one of the two kept: start both afresh
    meta = run_parts(prior["forward"], here)
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
            write_results(f"softmax_{d}", {"kind": f"softmax_{d}", **common, "complete": complete,
                                           "results": ordered}, out_dir)

    if prior["forward"] is not None and all(done(t, n) for t in dtypes for n in ns):
        print("softmax: every row length is already measured here (--resume)", flush=True)
        return {d: results[d] for d in ("forward", "backward")}
    for dtype_name, n in pending([(t, n) for t in dtypes for n in ns], lambda unit: done(*unit), deadline):
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
    the return value of :func:`bench_softmax` pass ``{"results": out["forward"]}`` and
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
                ms = time_ms(fn, warmup=3, rep=rep) if err < tol else None
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
                     rep: int = 20, deadline: Deadline | None = None, resume: bool = False) -> dict[str, Any]:
    """Time every setting of :data:`COOPERATIVE_CANDIDATES` on rows of ``ns`` entries.

    Writes ``softmax_cooperative_tuning.json`` into ``out_dir``: per direction and dtype
    the fraction of copy bandwidth of each setting at each ``n`` (None if its output was
    wrong or it failed), the table in use and the table :func:`suggest_table` makes of
    the measurements, to be copied into ``long_rows.COOPERATIVE_CONFIGS`` by hand.  All
    settings at one ``n`` are timed in one process; the file is rewritten after each
    ``n``, and ``deadline``/``resume`` cut the sweep into pieces as in
    :func:`bench_softmax`.
    """
    import torch

    from .kernels import fused_softmax as fs
    from .kernels import long_rows as lr

    ns = TUNE_NS if ns is None else sorted(ns)
    name = "softmax_cooperative_tuning"
    here = provenance()
    prior = resume_from(name, out_dir, name, here, {"elements": elements, "rep": rep, "ns": ns}) if resume else None
    meta = run_parts(prior, here)
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
    for (direction, dtype_name, size, key), n in pending(units, lambda unit: done(unit[0][3], unit[1]),
                                                         deadline):
        if dtype_name not in copy_here:
            dtype = getattr(torch, dtype_name)
            copy_here[dtype_name] = _softmax_copy_gbs(elements, dtype, torch.empty((), dtype=dtype).element_size())
            copy.setdefault(dtype_name, copy_here[dtype_name])
        measured = _tune_at(fs, lr, direction, dtype_name, n, list(fractions[key]), copy_here[dtype_name],
                            elements, rep)
        for cfg, frac in measured.items():
            fractions[key][cfg][n] = frac
        write_results(name, payload(False), out_dir)
        if n == ns[-1] and all(done(key, m) for m in ns):
            print(f"suggested COOPERATIVE_CONFIGS[({direction!r}, {size})] = "
                  + repr([tuple(e) for e in suggest_table(fractions[key], ns)]), flush=True)
    complete = all(done(key, n) for _, _, _, key in jobs for n in ns)
    result = payload(complete)
    write_results(name, result, out_dir)
    if not complete:
        print("tune: stopped before the end (--budget-s); run again with --resume", flush=True)
    return result


def launch_tables() -> dict[str, dict[str, list]]:
    """The softmax kernels' launch tables in this process, as plain lists.

    ``{"fused": {"forward:4": [[4096, 8192, 16, 1, 0], ...], ...}, "cooperative": {...}}``:
    ``fused_softmax.FUSED_CONFIGS`` and ``long_rows.COOPERATIVE_CONFIGS``, keyed by
    direction and bytes per entry.  :func:`bench_softmax` stores them with its results,
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m softmax_lib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(_CHECKOUT_RESULTS), help="folder for the JSON results")
    parser.add_argument("--only", choices=("softmax", "attention", "tune"), default=None,
                        help="one part; 'tune' times the cooperative path's settings (not part of a full run)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes, no torch.compile (a smoke run)")
    parser.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                        help="start no new measurement after this many seconds; the files are left "
                             "with \"complete\": false")
    parser.add_argument("--resume", action="store_true",
                        help="continue unfinished result files in --out")
    parser.add_argument("--tuned", default=None, metavar="FILE",
                        help="measure the softmax kernels with the cooperative tables this tuning file "
                             "(softmax_cooperative_tuning.json) suggests, instead of the code's")
    args = parser.parse_args(argv)
    if args.budget_s is not None and not args.budget_s > 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s}")
    if args.tuned is not None and args.only == "tune":
        parser.error("--tuned applies to the measurements, not to a tuning sweep")
    tuning = None
    if args.tuned is not None:
        try:
            tuning = json.loads(pathlib.Path(args.tuned).read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--tuned: cannot read {args.tuned}: {exc}")
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: benchmarks are measured on a GPU (see chapters/results)", file=sys.stderr)
        return 1
    print(json.dumps(provenance()), flush=True)
    if tuning is not None:
        try:
            applied = apply_tuning(tuning)
        except ValueError as exc:
            parser.error(f"--tuned: {exc}")
        for key, table in applied.items():
            print(f"tuned cooperative table {key}: {table}", flush=True)
    deadline = Deadline(args.budget_s)
    if args.only == "tune":
        tune_cooperative(args.out, ns=[2**16, 2**20] if args.quick else None, rep=10 if args.quick else 20,
                         deadline=deadline, resume=args.resume)
        return 0
    if args.only in (None, "softmax"):
        if args.quick:
            bench_softmax(args.out, ns=[256, 1024, 4096, 16384, 65536, 2**18, 2**20], with_compile=False, rep=10,
                          deadline=deadline, resume=args.resume)
        else:
            bench_softmax(args.out, deadline=deadline, resume=args.resume)
    if args.only in (None, "attention"):
        try:
            attention = importlib.import_module("softmax_lib.bench_attention")
        except ModuleNotFoundError:
            print("softmax_lib.bench_attention is not there: attention benchmarks skipped", flush=True)
        else:
            attention.run(args.out, deadline=deadline, resume=args.resume)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
