"""bench.softmax_targets: the book's softmax targets judged on small made-up runs.

Every expected answer below is worked out by hand from the rows, not by the code.
"""

import pytest

from softmax_lib import bench


def _row(n, copy, ours_ms=1.0, torch_ms=1.0):
    """A stored row: our kernel at ``copy`` of the copy bandwidth, both timings in ms."""
    return {"n": n, "triton": {"ms": ours_ms, "fraction_of_copy": copy},
            "torch": {"ms": torch_ms, "fraction_of_copy": copy * ours_ms / torch_ms}}


def _payload(**rows):
    return {"results": rows}


def _by_target(forward, backward):
    found = bench.softmax_targets(forward, backward)
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
