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
