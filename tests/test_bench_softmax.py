"""The softmax benchmark's bookkeeping (what can be checked without a GPU): bytes
counted, which kernels are timed, a run cut into pieces, tuning the cooperative path
and the launch tables a run records (softmax_lib.bench_softmax)."""

import json

import pytest

from softmax_lib import bench, bench_softmax


def test_softmax_bytes_counts_one_read_and_one_write_forward_three_tensors_backward():
    assert bench_softmax.softmax_bytes(4, 8, 2) == 2 * 4 * 8 * 2
    assert bench_softmax.softmax_bytes(4, 8, 4, backward=True) == 3 * 4 * 8 * 4


def test_stored_softmax_results_if_any_name_the_machine():
    try:
        stored = bench.load_results("softmax_forward")
    except FileNotFoundError:
        pytest.skip("no softmax results stored yet")
    assert stored["provenance"]["gpu"]
    for rows in stored["results"].values():
        assert all(0 < r["triton"]["fraction_of_copy"] < 1.5 for r in rows if r.get("triton"))


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
    assert bench_softmax._reads_windows(n, itemsize) == expected


def test_entrywise_turns_the_windows_back_on_even_when_the_call_fails():
    pytest.importorskip("triton")
    from softmax_lib.kernels import fused_softmax as fs

    def boom():
        assert fs.READ_WINDOWS is False
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        bench_softmax._entrywise(boom)
    assert fs.READ_WINDOWS is True


def test_suggested_table_takes_the_fastest_setting_per_length_and_merges_neighbours():
    a, b, c = (8192, 4, True), (32768, 4, False), (16384, 8, True)
    fractions = {a: {1: 0.9, 2: 0.8, 4: 0.5, 8: 0.6},
                 b: {1: 0.7, 2: 0.85, 4: 0.8, 8: None},  # None: failed at 8
                 c: {1: 0.1, 2: 0.1, 4: 0.81, 8: 0.55}}
    # winners: 1 -> a, 2 -> b, 4 -> c, 8 -> a; no two neighbours agree, four entries
    assert bench_softmax.suggest_table(fractions, [8, 1, 4, 2]) == [(1, *a), (2, *b), (4, *c), (8, *a)]
    fractions[c][4] = 0.79  # now 2 and 4 both go to b: one entry, keyed by the longer
    assert bench_softmax.suggest_table(fractions, [1, 2, 4, 8]) == [(1, *a), (4, *b), (8, *a)]
    with pytest.raises(ValueError, match="n=16"):
        bench_softmax.suggest_table(fractions, [1, 16])
    with pytest.raises(ValueError, match="ns"):
        bench_softmax.suggest_table(fractions, [])


def test_tuning_candidates_are_distinct_and_include_what_the_table_uses():
    pytest.importorskip("triton")
    from softmax_lib.kernels import long_rows as lr

    for key, candidates in bench_softmax.COOPERATIVE_CANDIDATES.items():
        assert len(set(candidates)) == len(candidates)
        for entry in lr.COOPERATIVE_CONFIGS[key]:
            assert tuple(entry[1:]) in candidates  # the tuner always re-times what is in use


def test_a_softmax_run_resumes_per_row_length_with_each_row_divided_by_its_own_copy(tmp_path, monkeypatch,
                                                                                    here, fake_gpu, deadline_after):
    copies = iter([100.0, 200.0, 300.0, 400.0])
    measured = []

    def fake_rows(fs, n, dtype_name, copy_gbs, elements, with_compile, rep):
        measured.append((dtype_name, n))
        row = {"n": n, "m": elements // n, "copy_gbs": copy_gbs,
               "triton": {"fraction_of_copy": 50.0 / copy_gbs}}
        return dict(row), dict(row)

    monkeypatch.setattr(bench_softmax, "_softmax_rows", fake_rows)
    monkeypatch.setattr(bench_softmax, "_softmax_copy_gbs", lambda elements, dtype, itemsize: next(copies))
    fake_gpu(here)
    args = dict(ns=[256, 1024, 4096], elements=2**12, dtypes=("float32", "bfloat16"), with_compile=False)
    bench_softmax.run(tmp_path, deadline=deadline_after(2), **args)
    assert measured == [("float32", 256), ("float32", 1024)]
    for direction in ("forward", "backward"):
        assert bench.load_results(f"softmax_{direction}", tmp_path)["complete"] is False
    fake_gpu(dict(here, hostname="vm2"))
    with pytest.raises(ValueError, match="rep"):  # other repetitions: not comparable, not resumed
        bench_softmax.run(tmp_path, resume=True, rep=5, **args)
    out = bench_softmax.run(tmp_path, resume=True, **args)
    assert measured == [(t, n) for t in ("float32", "bfloat16") for n in (256, 1024, 4096)]
    stored = bench.load_results("softmax_forward", tmp_path)
    assert stored["complete"] is True and stored["results"] == out["forward"]
    assert [r["copy_gbs"] for r in stored["results"]["float32"]] == [100.0, 100.0, 200.0]
    assert stored["copy_gbs"] == {"float32": 100.0, "bfloat16": 300.0}  # the first process's per dtype
    assert [p["hostname"] for p in stored["parts"]] == ["vm", "vm2"]
    bench_softmax.run(tmp_path, resume=True, **args)
    assert len(measured) == 6 and bench.load_results("softmax_forward", tmp_path) == stored


def test_a_tuning_sweep_resumes_per_row_length_and_suggests_a_table_only_when_complete(tmp_path, monkeypatch,
                                                                                       here, fake_gpu, deadline_after):
    calls = []

    def fake_tune(fs, lr, direction, dtype_name, n, configs, copy_gbs, elements, rep):
        calls.append((direction, dtype_name, n))
        # the 16 KB, 8-warp, prefetching setting wins at the longest rows, 8 KB / 4 warps elsewhere
        best = (16384, 8, True) if n == 2**20 else (8192, 4, False)
        return {cfg: (0.9 if cfg == best else 0.5) for cfg in configs}

    monkeypatch.setattr(bench_softmax, "_tune_at", fake_tune)
    monkeypatch.setattr(bench_softmax, "_softmax_copy_gbs", lambda elements, dtype, itemsize: 4000.0)
    fake_gpu(here)
    args = dict(ns=[2**16, 2**20], dtypes=("float32",))
    partial = bench_softmax.tune_cooperative(tmp_path, deadline=deadline_after(3), **args)
    assert calls == [("forward", "float32", 2**16), ("forward", "float32", 2**20),
                     ("backward", "float32", 2**16)]
    assert partial["complete"] is False
    assert set(partial["suggested"]) == {"forward:float32"}        # backward is not measured through
    assert partial["suggested"]["forward:float32"] == [[2**16, 8192, 4, False], [2**20, 16384, 8, True]]
    fake_gpu(dict(here, hostname="vm2"))
    final = bench_softmax.tune_cooperative(tmp_path, resume=True, **args)
    assert calls[3:] == [("backward", "float32", 2**20)]
    assert final["complete"] is True and set(final["suggested"]) == {"forward:float32", "backward:float32"}
    stored = bench.load_results("softmax_cooperative_tuning", tmp_path)
    forward = {tuple(e[k] for k in ("segment_bytes", "num_warps", "prefetch")): e["fraction_of_copy"]
               for e in stored["measured"]["forward:float32"]}
    assert forward[(16384, 8, True)] == {str(2**16): 0.5, str(2**20): 0.9}
    assert [p["hostname"] for p in stored["parts"]] == ["vm", "vm2"]
    assert bench_softmax.tune_cooperative(tmp_path, resume=True, **args) == stored and len(calls) == 4


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

    tables = bench_softmax.launch_tables()
    assert json.loads(json.dumps(tables)) == tables  # stored and compared as JSON
    for name, source in (("fused", fs.FUSED_CONFIGS), ("cooperative", lr.COOPERATIVE_CONFIGS)):
        assert {(k.split(":")[0], int(k.split(":")[1])): [tuple(e) for e in v]
                for k, v in tables[name].items()} == {k: [tuple(e) for e in v] for k, v in source.items()}


def test_a_tuning_file_replaces_the_cooperative_tables_it_suggests_and_only_those(own_tables):
    from softmax_lib.kernels import fused_softmax as fs
    from softmax_lib.kernels import long_rows as lr

    before = bench_softmax.launch_tables()
    applied = bench_softmax.apply_tuning(_tuning_payload(
        {"forward:bfloat16": [[2**17, 8192, 8, True], [2**20, 32768, 4, False]]}))
    assert applied == {"forward:bfloat16": [[2**17, 8192, 8, True], [2**20, 32768, 4, False]]}
    assert lr.COOPERATIVE_CONFIGS[("forward", 2)] == [(2**17, 8192, 8, True), (2**20, 32768, 4, False)]
    # the launcher reads the new table: 2**17 and shorter, then the last entry for longer rows
    assert lr.cooperative_config("forward", 2, 2**16) == (8192, 8, True)
    assert lr.cooperative_config("forward", 2, 2**21) == (32768, 4, False)
    assert fs._segment(2**18, None, "cooperative", 2, "forward") == 32768 // 2
    after = bench_softmax.launch_tables()
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
    before = bench_softmax.launch_tables()
    with pytest.raises(ValueError, match=match):
        bench_softmax.apply_tuning(payload)
    assert bench_softmax.launch_tables() == before


def test_a_softmax_run_records_its_launch_tables_and_resumes_only_with_the_same(tmp_path, monkeypatch,
                                                                                own_tables, here, fake_gpu, deadline_after):
    def fake_rows(fs, n, dtype_name, copy_gbs, elements, with_compile, rep):
        row = {"n": n, "m": elements // n, "copy_gbs": copy_gbs, "triton": {"fraction_of_copy": 0.5}}
        return dict(row), dict(row)

    monkeypatch.setattr(bench_softmax, "_softmax_rows", fake_rows)
    monkeypatch.setattr(bench_softmax, "_softmax_copy_gbs", lambda elements, dtype, itemsize: 4000.0)
    fake_gpu(here)
    args = dict(ns=[256, 1024], elements=2**12, dtypes=("float32",), with_compile=False)
    bench_softmax.run(tmp_path, deadline=deadline_after(1), **args)
    stored = bench.load_results("softmax_forward", tmp_path)
    assert stored["launch_tables"] == bench_softmax.launch_tables() and stored["complete"] is False
    bench_softmax.apply_tuning(_tuning_payload({"backward:float32": [[2**20, 8192, 8, True]]}))
    with pytest.raises(ValueError, match="launch_tables"):  # other settings: not the same kernels
        bench_softmax.run(tmp_path, resume=True, **args)


def test_stored_softmax_results_were_measured_with_the_launch_tables_in_the_code():
    pytest.importorskip("triton")
    folder = bench.results_dir()
    stored = [json.loads(p.read_text()) for p in sorted(folder.glob("softmax_*ward.json"))] if folder else []
    recorded = [s["launch_tables"] for s in stored if "launch_tables" in s]
    if not recorded:
        pytest.skip("the stored softmax results predate recorded launch tables")
    for tables in recorded:  # paste a tuning run's tables into the code before storing its results
        assert tables == bench_softmax.launch_tables()


# --------------------------------------------------------------------------------------
# softmax_targets: the book's targets judged on small made-up runs; every expected
# answer below is worked out by hand from the rows, not by the code
# --------------------------------------------------------------------------------------


def _row(n, copy, ours_ms=1.0, torch_ms=1.0):
    """A stored row: our kernel at ``copy`` of the copy bandwidth, both timings in ms."""
    return {"n": n, "triton": {"ms": ours_ms, "fraction_of_copy": copy},
            "torch": {"ms": torch_ms, "fraction_of_copy": copy * ours_ms / torch_ms}}


def _payload(**rows):
    return {"results": rows}


def _by_target(forward, backward):
    found = bench_softmax.softmax_targets(forward, backward)
    assert [t["target"].split(",")[0] for t in found] == ["forward >= 0.90 of copy",
                                                         "forward >= torch.softmax",
                                                         "forward >= 0.80 of copy",
                                                         "backward >= 0.85 of copy"]
    return found


def test_a_run_exactly_at_every_threshold_meets_all_four_targets():
    forward = _payload(
        float32=[_row(256, 0.10, torch_ms=1.0),     # outside targets 1 and 3; ties torch
                 _row(1024, 0.90, torch_ms=2.0),     # exactly 0.90; twice as fast as torch
                 _row(65536, 0.95),                  # last length of target 1
                 _row(2**18, 0.80),                  # exactly 0.80
                 _row(2**21, 0.85, torch_ms=0.5)],   # beyond 2^20: torch not compared
        bfloat16=[_row(2048, 0.93, torch_ms=3.0)])
    backward = _payload(float32=[_row(256, 0.85)], bfloat16=[_row(4096, 0.99)])
    mid, torch_, long_, back = _by_target(forward, backward)
    # target 1: 1024, 65536 (float32) and 2048 (bfloat16); the lowest is 0.90 at 1024
    assert (mid["checked"], mid["missed"], mid["met"]) == (3, [], True)
    assert (mid["worst"], mid["worst_at"]) == (0.90, ("float32", 1024))
    # target 2: 256, 1024, 65536, 2^18 and 2048; time ratios 1, 2, 1, 1, 3
    assert (torch_["checked"], torch_["missed"], torch_["met"]) == (5, [], True)
    assert (torch_["worst"], torch_["worst_at"]) == (1.0, ("float32", 256))
    # target 3: 2^18 at 0.80 and 2^21 at 0.85
    assert (long_["checked"], long_["met"], long_["worst"]) == (2, True, 0.80)
    assert long_["worst_at"] == ("float32", 2**18)
    # target 4: both backward rows, the lowest 0.85 exactly
    assert (back["checked"], back["met"], back["worst"], back["worst_at"]) == (
        2, True, 0.85, ("float32", 256))


def test_a_point_just_below_each_threshold_misses_that_target():
    forward = _payload(
        float32=[_row(512, 0.50, torch_ms=0.9),     # slower than torch: 0.9 / 1.0
                 _row(1024, 0.95),
                 _row(12345, 0.64, torch_ms=1.1),   # below 0.90, still faster than torch
                 _row(2**19, 0.79, torch_ms=1.2)],  # below 0.80
        bfloat16=[_row(32768, 0.89, torch_ms=1.5),  # below 0.90 by a hair
                  _row(2**20, 0.81, torch_ms=0.99)])  # meets 0.80, slower than torch
    backward = _payload(float32=[_row(256, 0.99), _row(781, 0.59)],
                        bfloat16=[_row(2**20, 0.84)])
    mid, torch_, long_, back = _by_target(forward, backward)
    # target 1: 1024, 12345 (float32), 32768 (bfloat16); 12345 and 32768 fall short
    assert mid["checked"] == 3 and mid["met"] is False
    assert mid["missed"] == [("float32", 12345), ("bfloat16", 32768)]
    assert (mid["worst"], mid["worst_at"]) == (0.64, ("float32", 12345))
    # target 2: time ratios 0.9, 1, 1.1, 1.2, 1.5, 0.99: 512 and bfloat16 2^20 miss
    assert torch_["checked"] == 6 and torch_["met"] is False
    assert torch_["missed"] == [("float32", 512), ("bfloat16", 2**20)]
    assert abs(torch_["worst"] - 0.9) < 1e-12 and torch_["worst_at"] == ("float32", 512)
    # target 3: 2^19 at 0.79 misses, 2^20 at 0.81 meets
    assert (long_["checked"], long_["missed"], long_["met"]) == (2, [("float32", 2**19)], False)
    assert long_["worst"] == 0.79
    # target 4: 0.99, 0.59 and 0.84; two miss, the worst is 781
    assert back["missed"] == [("float32", 781), ("bfloat16", 2**20)] and back["met"] is False
    assert (back["worst"], back["worst_at"]) == (0.59, ("float32", 781))


def test_a_failed_timing_is_a_miss_and_an_empty_range_is_not_judged():
    failed = {"n": 4096, "triton": None, "torch": {"ms": 1.0, "fraction_of_copy": 0.5}}
    forward = _payload(float32=[_row(1024, 0.95), failed])  # nothing from 2^18 on
    backward = _payload(float32=[_row(1024, 0.90)])
    mid, torch_, long_, back = _by_target(forward, backward)
    assert mid["missed"] == [("float32", 4096)] and mid["met"] is False
    assert (mid["worst"], mid["worst_at"]) == (0.95, ("float32", 1024))  # measured points only
    assert torch_["missed"] == [("float32", 4096)]
    assert long_ == {"target": long_["target"], "threshold": 0.80, "checked": 0, "missed": [],
                     "worst": None, "worst_at": None, "met": None}
    assert back["met"] is True


def test_the_stored_run_if_any_is_judged_on_every_point_in_range():
    try:
        forward = bench.load_results("softmax_forward")
        backward = bench.load_results("softmax_backward")
    except FileNotFoundError:
        pytest.skip("no softmax results stored yet")
    mid, torch_, long_, back = _by_target(forward, backward)
    ns = {d: [r["n"] for r in rows] for d, rows in forward["results"].items()}
    assert mid["checked"] == sum(1024 <= n <= 65536 for v in ns.values() for n in v)
    assert long_["checked"] == sum(n >= 2**18 for v in ns.values() for n in v)
    assert torch_["checked"] == sum(256 <= n <= 2**20 for v in ns.values() for n in v)
    assert back["checked"] == sum(len(v) for v in backward["results"].values())
