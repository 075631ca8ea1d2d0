"""The benchmark harness's bookkeeping (what can be checked without a GPU)."""

import datetime
import json

import pytest

from softmax_lib import bench

PROVENANCE_KEYS = {"gpu", "sm_count", "driver", "cuda", "torch", "triton", "python", "hostname", "date_utc"}


def test_provenance_has_every_key_and_an_iso_utc_date():
    info = bench.provenance()
    assert PROVENANCE_KEYS <= set(info)
    date = datetime.datetime.fromisoformat(info["date_utc"])
    assert date.utcoffset() == datetime.timedelta(0)
    json.dumps(info)  # must be storable


def test_write_then_load_round_trips_and_adds_provenance(tmp_path):
    payload = {"kind": "demo", "results": {"float32": [{"n": 256, "fraction_of_copy": 0.93}]}}
    path = bench.write_results("demo", payload, tmp_path / "out")
    assert path == tmp_path / "out" / "demo.json"
    loaded = bench.load_results("demo", tmp_path / "out")
    assert loaded["results"] == payload["results"]
    assert PROVENANCE_KEYS <= set(loaded["provenance"])


def test_write_keeps_an_existing_provenance(tmp_path):
    payload = {"provenance": {"gpu": "NVIDIA H200"}, "x": 1}
    bench.write_results("kept", payload, tmp_path)
    assert bench.load_results("kept", tmp_path)["provenance"] == {"gpu": "NVIDIA H200"}


def test_missing_results_are_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        bench.load_results("no_such_results_file")
    with pytest.raises(FileNotFoundError):
        bench.load_results("absent", tmp_path)


@pytest.mark.parametrize("name", ["", "a/b"])
def test_bad_result_name_is_a_value_error(name, tmp_path):
    with pytest.raises(ValueError, match="name"):
        bench.write_results(name, {}, tmp_path)


def test_softmax_bytes_counts_one_read_and_one_write_forward_three_tensors_backward():
    assert bench.softmax_bytes(4, 8, 2) == 2 * 4 * 8 * 2
    assert bench.softmax_bytes(4, 8, 4, backward=True) == 3 * 4 * 8 * 4


def test_stored_softmax_results_if_any_name_the_machine():
    try:
        stored = bench.load_results("softmax_forward")
    except FileNotFoundError:
        pytest.skip("no softmax results stored yet")
    assert stored["provenance"]["gpu"]
    for rows in stored["results"].values():
        assert all(0 < r["triton"]["fraction_of_copy"] < 1.5 for r in rows if r.get("triton"))


def test_command_line_without_gpu_says_so_and_fails(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert bench.main(["--out", "unused", "--only", "softmax"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("n, itemsize, expected", [(781, 4, True), (12345, 2, True), (1024, 4, False),
                                                   (1000, 4, False), (1004, 2, True), (20001, 4, False),
                                                   (13, 4, False)])
def test_the_benchmark_times_the_entry_by_entry_kernels_exactly_where_windows_are_read(n, itemsize, expected):
    pytest.importorskip("triton")
    # windows: rows not a whole number of 16-byte vectors, at least four vectors long,
    # whose window (n + 2 (vector - 1) entries, rounded up to a power of two) is <= 16K
    vec = 16 // itemsize
    window = 1 << (n + 2 * (vec - 1) - 1).bit_length()
    assert (n % vec != 0 and n >= 4 * vec and window <= 16384) == expected
    assert bench._reads_windows(n, itemsize) == expected


def test_entrywise_turns_the_windows_back_on_even_when_the_call_fails():
    pytest.importorskip("triton")
    from softmax_lib.kernels import fused_softmax as fs

    def boom():
        assert fs.READ_WINDOWS is False
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        bench._entrywise(boom)
    assert fs.READ_WINDOWS is True


def test_suggested_table_takes_the_fastest_setting_per_length_and_merges_neighbours():
    a, b, c = (8192, 4, True), (32768, 4, False), (16384, 8, True)
    fractions = {a: {1: 0.9, 2: 0.8, 4: 0.5, 8: 0.6},
                 b: {1: 0.7, 2: 0.85, 4: 0.8, 8: None},  # None: failed at 8
                 c: {1: 0.1, 2: 0.1, 4: 0.81, 8: 0.55}}
    # winners: 1 -> a, 2 -> b, 4 -> c, 8 -> a; no two neighbours agree, four entries
    assert bench.suggest_table(fractions, [8, 1, 4, 2]) == [(1, *a), (2, *b), (4, *c), (8, *a)]
    fractions[c][4] = 0.79  # now 2 and 4 both go to b: one entry, keyed by the longer
    assert bench.suggest_table(fractions, [1, 2, 4, 8]) == [(1, *a), (4, *b), (8, *a)]
    with pytest.raises(ValueError, match="n=16"):
        bench.suggest_table(fractions, [1, 16])
    with pytest.raises(ValueError, match="ns"):
        bench.suggest_table(fractions, [])


def test_tuning_candidates_are_distinct_and_include_what_the_table_uses():
    pytest.importorskip("triton")
    from softmax_lib.kernels import long_rows as lr

    for key, candidates in bench.COOPERATIVE_CANDIDATES.items():
        assert len(set(candidates)) == len(candidates)
        for entry in lr.COOPERATIVE_CONFIGS[key]:
            assert tuple(entry[1:]) in candidates  # the tuner always re-times what is in use


def test_host_time_per_call_is_the_wall_time_of_a_call_that_only_uses_the_host():
    import time

    slept = []

    def nap():
        slept.append(1)
        time.sleep(0.003)

    us = bench.host_us(nap, calls=5, warmup=1)
    assert len(slept) == 6                       # one warm-up call, five timed
    assert 3000 <= us < 3000 * 4                 # time.sleep never returns early
    for calls, error in ((0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="calls"):
            bench.host_us(nap, calls=calls)


def test_host_profile_ranks_the_function_that_takes_the_time_first():
    import time

    def slow():
        time.sleep(0.002)

    def fast():
        return 1

    def both():
        fast()
        slow()

    rows = bench.host_profile(both, calls=4, top=20)
    names = [r["function"].split(" ")[0] for r in rows]
    assert names[0] == "both"
    assert names.index("slow") < names.index("fast")
    slow_row = next(r for r in rows if r["function"].startswith("slow "))
    assert slow_row["calls_per_call"] == 1.0
    assert slow_row["cumulative_us"] >= 2000 > slow_row["own_us"]  # the time is inside sleep
    assert all(r["cumulative_us"] >= r["own_us"] >= 0 for r in rows)
    assert len(bench.host_profile(both, calls=1, top=2)) == 2
    with pytest.raises(ValueError, match="top"):
        bench.host_profile(both, top=0)
    with pytest.raises(ValueError, match="calls"):
        bench.host_profile(both, calls=0)
    with pytest.raises(TypeError, match="top"):
        bench.host_profile(both, top=1.5)


def test_graph_timing_without_a_gpu_says_so():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        bench.time_ms_graph(lambda: None)


def test_attention_rates_count_the_backward_three_and_a_half_times_and_keep_missing_times_missing():
    from softmax_lib.bench_attention import _RATES, _rates, attention_flops

    flops = attention_flops(2, 4, 256, 64, causal=True)
    assert flops == 4 * 2 * 4 * 256 * 256 * 64 / 2
    rates = _rates({"fwd_ms": 2.0, "fwd_bwd_ms": 5.0, "fwd_graph_ms": 1.0, "fwd_bwd_graph_ms": None}, flops)
    assert set(rates) == set(_RATES)
    assert rates["fwd_tflops"] == pytest.approx(flops / 2e-3 / 1e12)
    assert rates["fwd_bwd_tflops"] == pytest.approx(3.5 * flops / 5e-3 / 1e12)
    assert rates["fwd_graph_tflops"] == pytest.approx(flops / 1e-3 / 1e12)
    assert rates["fwd_bwd_graph_tflops"] is None


def test_the_attention_benchmark_times_calls_that_compute_attention_and_its_gradients():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from softmax_lib import bench_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(1, 2, 33, 16, generator=gen) for _ in range(4))
    ctx, f, forward, forward_backward, leaves = bench_attention._calls("ours", q, k, v, do, True)
    with ctx:
        out, grads = forward(), forward_backward()
    assert not out.requires_grad  # the forward is timed without autograd
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_leaves, is_causal=True)
    ref_grads = torch.autograd.grad(ref, ref_leaves, do.double())
    assert torch.allclose(out.double(), ref, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got.double(), want, atol=1e-4)
    profile = bench_attention._profile_ours(q, k, v, do, True, top=40, calls=2)
    assert any(r["function"].startswith("flash_attention ") for r in profile["fwd"])
    assert any(r["function"].startswith("backward ") for r in profile["fwd_bwd"])


# --------------------------------------------------------------------------------------
# A run cut into several processes: deadline, checkpoint, resume
# --------------------------------------------------------------------------------------

HERE = {"gpu": "NVIDIA H200", "driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0", "triton": "3.6.0",
        "hostname": "vm", "date_utc": "2026-11-22T22:34:11+00:00"}


def test_stored_results_are_complete_runs():
    folder = bench.results_dir()
    if folder is None or not any(folder.glob("*.json")):
        pytest.skip("no results stored")
    for path in folder.glob("*.json"):
        assert json.loads(path.read_text()).get("complete", True) is True, path.name


def test_a_deadline_passes_only_when_its_time_is_up():
    import time

    assert not bench.Deadline(None).passed()
    assert not bench.Deadline(60).passed()
    soon = bench.Deadline(0.01)
    time.sleep(0.02)
    assert soon.passed()
    for bad in (0, -1.0, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="seconds"):
            bench.Deadline(bad)


def test_writing_leaves_no_partial_file_behind(tmp_path):
    bench.write_results("demo", {"kind": "demo", "x": 1}, tmp_path)
    bench.write_results("demo", {"kind": "demo", "x": 2}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]
    assert bench.load_results("demo", tmp_path)["x"] == 2


def test_resume_continues_or_keeps_a_file_from_the_same_setup_only(tmp_path):
    assert bench.resume_from("run", tmp_path, "demo", HERE) is None          # nothing there
    bench.write_results("run", {"kind": "demo", "complete": True, "provenance": HERE}, tmp_path)
    assert bench.resume_from("run", tmp_path, "demo", HERE)["complete"] is True   # finished: kept
    assert bench.resume_from("run", tmp_path, "demo", dict(HERE, gpu="NVIDIA H100")) is None  # replaced
    assert bench.resume_from("run", tmp_path, "demo", HERE, {"rep": 20}) is None  # an older format
    bench.write_results("run", {"kind": "demo", "complete": False, "provenance": HERE, "rows": [1]}, tmp_path)
    assert bench.resume_from("run", tmp_path, "demo", dict(HERE, hostname="other"))["rows"] == [1]
    with pytest.raises(ValueError, match="holds 'demo' results, not 'other'"):
        bench.resume_from("run", tmp_path, "other", HERE)
    for key in bench.SAME_SETUP:
        with pytest.raises(ValueError, match=key):
            bench.resume_from("run", tmp_path, "demo", dict(HERE, **{key: "something else"}))
    bench.write_results("run", {"kind": "demo", "complete": False, "provenance": HERE, "rep": 20}, tmp_path)
    assert bench.resume_from("run", tmp_path, "demo", HERE, {"rep": 20}) is not None
    with pytest.raises(ValueError, match="rep: 20 there, 10 here"):
        bench.resume_from("run", tmp_path, "demo", HERE, {"rep": 10})


def test_parts_list_every_process_and_keep_the_first_provenance():
    first = bench.run_parts(None, HERE)
    assert first["provenance"] == HERE
    assert first["parts"] == [{"hostname": "vm", "date_utc": HERE["date_utc"]}]
    later = dict(HERE, hostname="vm2", date_utc="2026-11-24T10:00:00+00:00")
    second = bench.run_parts({"provenance": HERE, "parts": first["parts"]}, later)
    assert second["provenance"] == HERE
    assert [p["hostname"] for p in second["parts"]] == ["vm", "vm2"]
    older = bench.run_parts({"provenance": HERE}, later)  # a file written before parts existed
    assert [p["hostname"] for p in older["parts"]] == ["vm", "vm2"]


class _After:
    """A deadline that passes after ``n`` questions (one per configuration started)."""

    def __init__(self, n):
        self.left = n

    def passed(self):
        self.left -= 1
        return self.left < 0


def _fake_gpu(monkeypatch, here):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench, "provenance", lambda: dict(here))


def test_an_attention_run_stopped_by_its_deadline_is_finished_by_a_resumed_one(tmp_path, monkeypatch):
    from softmax_lib import bench_attention as ba
    from softmax_lib.kernels import flash

    measured = []

    def fake(dtype, d, L, causal, backends, rep, with_profile):
        measured.append((dtype, d, L, causal))
        rows = [dict(dtype=dtype, head_dim=d, L=L, causal=causal, impl=impl, skipped=None)
                for impl in ("ours", *backends)]
        accuracy = dict(dtype=dtype, head_dim=d, L=L, causal=causal, against=backends[0], out=1e-3)
        return rows, accuracy, ({"fwd": [], "fwd_bwd": []} if with_profile else None)

    monkeypatch.setattr(ba, "_measure_configuration", fake)
    monkeypatch.setattr(flash, "tuned_configs", lambda: {"fwd": {str(len(measured)): "cfg"}})
    shape = dict(dtypes=("bfloat16", "float16"), head_dims=(64,), lengths=(1024, 4096), backends=("flash",))
    _fake_gpu(monkeypatch, HERE)
    first = ba.run(tmp_path, deadline=_After(3), **shape)
    assert first["complete"] is False and len(measured) == 3
    assert bench.load_results("flash_attention", tmp_path)["complete"] is False
    assert first["host_profile"] is not None  # the profiled configuration (bf16, 64, 1024, causal) came second

    _fake_gpu(monkeypatch, dict(HERE, hostname="vm2"))
    second = ba.run(tmp_path, resume=True, **shape)
    configurations = [(t, 64, L, c) for t in ("bfloat16", "float16") for L in (1024, 4096) for c in (False, True)]
    assert measured == configurations                  # each measured once, in order, across both
    stored = bench.load_results("flash_attention", tmp_path)
    assert stored == json.loads(json.dumps(second)) and stored["complete"] is True
    assert [(r["dtype"], r["L"], r["causal"], r["impl"]) for r in stored["results"]] == \
        [(t, L, c, impl) for t, _, L, c in configurations for impl in ("ours", "flash")]
    assert len(stored["accuracy"]) == len(configurations)
    assert [p["hostname"] for p in stored["parts"]] == ["vm", "vm2"]
    assert set(stored["tuned_configs"]["fwd"]) == {str(i) for i in range(1, 9)}  # both processes' picks

    again = ba.run(tmp_path, resume=True, **shape)      # finished: nothing measured, nothing rewritten
    assert len(measured) == len(configurations) and again == stored
    assert bench.load_results("flash_attention", tmp_path) == stored

    _fake_gpu(monkeypatch, dict(HERE, triton="3.7.1"))
    bench.write_results("flash_attention", dict(stored, complete=False), tmp_path)
    with pytest.raises(ValueError, match="triton"):
        ba.run(tmp_path, resume=True, **shape)


def test_a_softmax_run_resumes_per_row_length_with_each_row_divided_by_its_own_copy(tmp_path, monkeypatch):
    copies = iter([100.0, 200.0, 300.0, 400.0])
    measured = []

    def fake_rows(fs, n, dtype_name, copy_gbs, elements, with_compile, rep):
        measured.append((dtype_name, n))
        row = {"n": n, "m": elements // n, "copy_gbs": copy_gbs,
               "triton": {"fraction_of_copy": 50.0 / copy_gbs}}
        return dict(row), dict(row)

    monkeypatch.setattr(bench, "_softmax_rows", fake_rows)
    monkeypatch.setattr(bench, "_softmax_copy_gbs", lambda elements, dtype, itemsize: next(copies))
    _fake_gpu(monkeypatch, HERE)
    args = dict(ns=[256, 1024, 4096], elements=2**12, dtypes=("float32", "bfloat16"), with_compile=False)
    bench.bench_softmax(tmp_path, deadline=_After(2), **args)
    assert measured == [("float32", 256), ("float32", 1024)]
    for direction in ("forward", "backward"):
        assert bench.load_results(f"softmax_{direction}", tmp_path)["complete"] is False
    _fake_gpu(monkeypatch, dict(HERE, hostname="vm2"))
    with pytest.raises(ValueError, match="rep"):  # other repetitions: not comparable, not resumed
        bench.bench_softmax(tmp_path, resume=True, rep=5, **args)
    out = bench.bench_softmax(tmp_path, resume=True, **args)
    assert measured == [(t, n) for t in ("float32", "bfloat16") for n in (256, 1024, 4096)]
    stored = bench.load_results("softmax_forward", tmp_path)
    assert stored["complete"] is True and stored["results"] == out["forward"]
    assert [r["copy_gbs"] for r in stored["results"]["float32"]] == [100.0, 100.0, 200.0]
    assert stored["copy_gbs"] == {"float32": 100.0, "bfloat16": 300.0}  # the first process's per dtype
    assert [p["hostname"] for p in stored["parts"]] == ["vm", "vm2"]
    bench.bench_softmax(tmp_path, resume=True, **args)
    assert len(measured) == 6 and bench.load_results("softmax_forward", tmp_path) == stored


def test_a_tuning_sweep_resumes_per_row_length_and_suggests_a_table_only_when_complete(tmp_path, monkeypatch):
    calls = []

    def fake_tune(fs, lr, direction, dtype_name, n, configs, copy_gbs, elements, rep):
        calls.append((direction, dtype_name, n))
        # the 16 KB, 8-warp, prefetching setting wins at the longest rows, 8 KB / 4 warps elsewhere
        best = (16384, 8, True) if n == 2**20 else (8192, 4, False)
        return {cfg: (0.9 if cfg == best else 0.5) for cfg in configs}

    monkeypatch.setattr(bench, "_tune_at", fake_tune)
    monkeypatch.setattr(bench, "_softmax_copy_gbs", lambda elements, dtype, itemsize: 4000.0)
    _fake_gpu(monkeypatch, HERE)
    args = dict(ns=[2**16, 2**20], dtypes=("float32",))
    partial = bench.tune_cooperative(tmp_path, deadline=_After(3), **args)
    assert calls == [("forward", "float32", 2**16), ("forward", "float32", 2**20),
                     ("backward", "float32", 2**16)]
    assert partial["complete"] is False
    assert set(partial["suggested"]) == {"forward:float32"}        # backward is not measured through
    assert partial["suggested"]["forward:float32"] == [[2**16, 8192, 4, False], [2**20, 16384, 8, True]]
    _fake_gpu(monkeypatch, dict(HERE, hostname="vm2"))
    final = bench.tune_cooperative(tmp_path, resume=True, **args)
    assert calls[3:] == [("backward", "float32", 2**20)]
    assert final["complete"] is True and set(final["suggested"]) == {"forward:float32", "backward:float32"}
    stored = bench.load_results("softmax_cooperative_tuning", tmp_path)
    forward = {tuple(e[k] for k in ("segment_bytes", "num_warps", "prefetch")): e["fraction_of_copy"]
               for e in stored["measured"]["forward:float32"]}
    assert forward[(16384, 8, True)] == {str(2**16): 0.5, str(2**20): 0.9}
    assert [p["hostname"] for p in stored["parts"]] == ["vm", "vm2"]
    assert bench.tune_cooperative(tmp_path, resume=True, **args) == stored and len(calls) == 4


def _tuning_payload(suggested):
    return {"kind": "softmax_cooperative_tuning", "suggested": suggested}


@pytest.fixture
def own_tables(monkeypatch):
    """A copy of the cooperative tables for this test, so that apply_tuning cannot leak."""
    pytest.importorskip("triton")
    from softmax_lib.kernels import long_rows as lr

    monkeypatch.setattr(lr, "COOPERATIVE_CONFIGS", {k: list(v) for k, v in lr.COOPERATIVE_CONFIGS.items()})


def test_launch_tables_are_the_kernels_tables_as_plain_lists():
    pytest.importorskip("triton")
    from softmax_lib.kernels import fused_softmax as fs
    from softmax_lib.kernels import long_rows as lr

    tables = bench.launch_tables()
    assert json.loads(json.dumps(tables)) == tables  # stored and compared as JSON
    for name, source in (("fused", fs.FUSED_CONFIGS), ("cooperative", lr.COOPERATIVE_CONFIGS)):
        assert {(k.split(":")[0], int(k.split(":")[1])): [tuple(e) for e in v]
                for k, v in tables[name].items()} == {k: [tuple(e) for e in v] for k, v in source.items()}


def test_a_tuning_file_replaces_the_cooperative_tables_it_suggests_and_only_those(own_tables):
    from softmax_lib.kernels import fused_softmax as fs
    from softmax_lib.kernels import long_rows as lr

    before = bench.launch_tables()
    applied = bench.apply_tuning(_tuning_payload(
        {"forward:bfloat16": [[2**17, 8192, 8, True], [2**20, 32768, 4, False]]}))
    assert applied == {"forward:bfloat16": [[2**17, 8192, 8, True], [2**20, 32768, 4, False]]}
    assert lr.COOPERATIVE_CONFIGS[("forward", 2)] == [(2**17, 8192, 8, True), (2**20, 32768, 4, False)]
    # the launcher reads the new table: 2**17 and shorter, then the last entry for longer rows
    assert lr.cooperative_config("forward", 2, 2**16) == (8192, 8, True)
    assert lr.cooperative_config("forward", 2, 2**21) == (32768, 4, False)
    assert fs._segment(2**18, None, "cooperative", 2, "forward") == 32768 // 2
    after = bench.launch_tables()
    assert after["cooperative"]["forward:2"] == [[2**17, 8192, 8, True], [2**20, 32768, 4, False]]
    assert {k: v for k, v in after["cooperative"].items() if k != "forward:2"} == \
        {k: v for k, v in before["cooperative"].items() if k != "forward:2"}
    assert after["fused"] == before["fused"]


@pytest.mark.parametrize("payload, match", [
    ({"kind": "softmax_forward", "suggested": {}}, "softmax_forward"),
    ([], "list"),
    (_tuning_payload({"sideways:float32": [[2**20, 16384, 4, False]]}), "sideways"),
    (_tuning_payload({"forward:int8": [[2**20, 16384, 4, False]]}), "int8"),
    (_tuning_payload({"forward:float32": [[2**20, 8192, 4, False]], "backward:float32": []}), "ascending"),
    (_tuning_payload({"forward:float32": [[2**20, 16384, 4, False], [2**16, 8192, 4, False]]}), "ascending"),
])
def test_a_tuning_file_that_is_not_one_is_refused_before_anything_changes(payload, match, own_tables):
    before = bench.launch_tables()
    with pytest.raises(ValueError, match=match):
        bench.apply_tuning(payload)
    assert bench.launch_tables() == before


def test_a_softmax_run_records_its_launch_tables_and_resumes_only_with_the_same(tmp_path, monkeypatch,
                                                                              own_tables):
    def fake_rows(fs, n, dtype_name, copy_gbs, elements, with_compile, rep):
        row = {"n": n, "m": elements // n, "copy_gbs": copy_gbs, "triton": {"fraction_of_copy": 0.5}}
        return dict(row), dict(row)

    monkeypatch.setattr(bench, "_softmax_rows", fake_rows)
    monkeypatch.setattr(bench, "_softmax_copy_gbs", lambda elements, dtype, itemsize: 4000.0)
    _fake_gpu(monkeypatch, HERE)
    args = dict(ns=[256, 1024], elements=2**12, dtypes=("float32",), with_compile=False)
    bench.bench_softmax(tmp_path, deadline=_After(1), **args)
    stored = bench.load_results("softmax_forward", tmp_path)
    assert stored["launch_tables"] == bench.launch_tables() and stored["complete"] is False
    bench.apply_tuning(_tuning_payload({"backward:float32": [[2**20, 8192, 8, True]]}))
    with pytest.raises(ValueError, match="launch_tables"):  # other settings: not the same kernels
        bench.bench_softmax(tmp_path, resume=True, **args)


def test_stored_softmax_results_were_measured_with_the_launch_tables_in_the_code():
    pytest.importorskip("triton")
    folder = bench.results_dir()
    stored = [json.loads(p.read_text()) for p in sorted(folder.glob("softmax_*ward.json"))] if folder else []
    recorded = [s["launch_tables"] for s in stored if "launch_tables" in s]
    if not recorded:
        pytest.skip("the stored softmax results predate recorded launch tables")
    for tables in recorded:  # paste a tuning run's tables into the code before storing its results
        assert tables == bench.launch_tables()


def test_the_command_line_refuses_a_tuning_file_it_cannot_use(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--only", "tune", "--tuned", str(tmp_path / "t.json")])
    assert "--tuned applies to the measurements" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--tuned", str(tmp_path / "missing.json")])
    assert "cannot read" in capsys.readouterr().err


def test_a_budget_must_be_positive():
    with pytest.raises(SystemExit):
        bench.main(["--budget-s", "0"])
