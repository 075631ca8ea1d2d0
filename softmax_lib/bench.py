"""GPU benchmark harness: time kernels properly and store the results with provenance.

``make bench-gpu`` runs ``python -m softmax_lib.bench --out chapters/results`` on a
machine with a CUDA GPU.  Every result is a ratio measured in one run: a kernel's
effective bandwidth (the fewest bytes it must move, over its time) divided by the
device-to-device copy bandwidth measured in the same process, on the same card.
The notebooks of Chapters 8 to 10 plot the stored JSON files; on a machine with a
GPU they can measure again with the same functions.

This module holds what every benchmark shares: :func:`provenance`, :func:`time_ms`,
:func:`time_ms_graph`, :func:`host_us`, :func:`host_profile`, :func:`copy_bandwidth_gbs`,
:func:`write_results`, :func:`load_results`, and the pieces that let a run stop and
resume (:class:`Deadline`, :func:`resume_from`).  What is measured lives beside it:
:mod:`softmax_lib.bench_softmax` (Chapters 8 and 9) and
:mod:`softmax_lib.bench_attention` (Chapter 10).

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

``--only tune`` times the cooperative kernel's settings
(:func:`softmax_lib.bench_softmax.tune_cooperative`); ``--tuned FILE`` then measures with
the tables that sweep suggests (:func:`softmax_lib.bench_softmax.apply_tuning`), so that
one session on a GPU can do both.
"""

from __future__ import annotations

import argparse
import datetime
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

    from . import bench_attention, bench_softmax

    if not torch.cuda.is_available():
        print("no CUDA GPU here: benchmarks are measured on a GPU (see chapters/results)", file=sys.stderr)
        return 1
    print(json.dumps(provenance()), flush=True)
    if tuning is not None:
        try:
            applied = bench_softmax.apply_tuning(tuning)
        except ValueError as exc:
            parser.error(f"--tuned: {exc}")
        for key, table in applied.items():
            print(f"tuned cooperative table {key}: {table}", flush=True)
    deadline = Deadline(args.budget_s)
    if args.only == "tune":
        bench_softmax.tune_cooperative(args.out, ns=[2**16, 2**20] if args.quick else None,
                                       rep=10 if args.quick else 20, deadline=deadline, resume=args.resume)
        return 0
    if args.only in (None, "softmax"):
        if args.quick:
            bench_softmax.run(args.out, ns=[256, 1024, 4096, 16384, 65536, 2**18, 2**20], with_compile=False,
                              rep=10, deadline=deadline, resume=args.resume)
        else:
            bench_softmax.run(args.out, deadline=deadline, resume=args.resume)
    if args.only in (None, "attention"):
        bench_attention.run(args.out, deadline=deadline, resume=args.resume)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
