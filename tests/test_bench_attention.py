"""The attention benchmark's bookkeeping (what can be checked without a GPU): FLOP
rates, the calls it times, and a run cut into pieces (softmax_lib.bench_attention)."""

import json

import pytest

from softmax_lib import bench


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


def test_an_attention_run_stopped_by_its_deadline_is_finished_by_a_resumed_one(tmp_path, monkeypatch, here,
                                                                               fake_gpu, deadline_after):
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
    fake_gpu(here)
    first = ba.run(tmp_path, deadline=deadline_after(3), **shape)
    assert first["complete"] is False and len(measured) == 3
    assert bench.load_results("flash_attention", tmp_path)["complete"] is False
    assert first["host_profile"] is not None  # the profiled configuration (bf16, 64, 1024, causal) came second

    fake_gpu(dict(here, hostname="vm2"))
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

    fake_gpu(dict(here, triton="3.7.1"))
    bench.write_results("flash_attention", dict(stored, complete=False), tmp_path)
    with pytest.raises(ValueError, match="triton"):
        ba.run(tmp_path, resume=True, **shape)
