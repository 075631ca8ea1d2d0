"""Helpers that Chapters 9 and 10 call to draw and tabulate stored GPU results:
``plotting.cooperative_tuning`` and ``bench_attention.launch_split_table``.

Both read files that only a GPU run writes, so they are tested here on small,
hand-made files whose right answers are known."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: draw off screen

import matplotlib.pyplot as plt
import pytest

from softmax_lib import bench_attention, plotting


def _setting(segment, warps, prefetch, fractions):
    return {"segment_bytes": segment, "num_warps": warps, "prefetch": prefetch,
            "fraction_of_copy": {str(n): f for n, f in fractions.items()}}


TUNING = {
    "provenance": {"gpu": "Test GPU"},
    "measured": {
        "forward:float32": [
            _setting(8192, 4, False, {65536: 0.70, 1048576: 0.60}),
            _setting(16384, 4, False, {65536: 0.75, 1048576: None}),  # failed at 2^20
            _setting(8192, 4, True, {65536: 0.72, 1048576: 0.81}),
            _setting(16384, 8, True, {65536: 0.80, 1048576: 0.79}),
        ],
        "backward:bfloat16": [
            _setting(8192, 4, False, {65536: 0.50}),
            _setting(8192, 4, True, {65536: None}),  # no prefetch setting ran
        ],
    },
}


def test_best_fractions_take_the_best_setting_per_length_and_skip_failures():
    settings = TUNING["measured"]["forward:float32"]
    assert plotting._best_fractions(settings, False) == {65536: 0.75, 1048576: 0.60}
    assert plotting._best_fractions(settings, True) == {65536: 0.80, 1048576: 0.81}
    assert plotting._best_fractions(TUNING["measured"]["backward:bfloat16"], True) == {}


def test_cooperative_tuning_draws_one_panel_per_stored_key_with_the_best_lines():
    fig = plotting.cooperative_tuning(TUNING)
    try:
        axes = fig.axes
        # the two keys the file holds, in the default order; the other two are left out
        assert [ax.get_title() for ax in axes] == ["forward, float32", "backward, bfloat16"]
        lines = {line.get_label(): line for line in axes[0].get_lines()}
        assert list(lines["best without"].get_xdata()) == [65536, 1048576]
        assert list(lines["best without"].get_ydata()) == [0.75, 0.60]
        assert list(lines["best with prefetch"].get_ydata()) == [0.80, 0.81]
        assert axes[0].get_xscale() == "log"
        assert "Test GPU" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n_keys", [1, 2, 3, 4])
def test_cooperative_tuning_fits_the_text_column_two_panels_to_a_row(n_keys):
    keys = ("forward:float32", "forward:bfloat16", "backward:float32", "backward:bfloat16")
    rows = [_setting(8192, 4, False, {65536: 0.5})]
    fig = plotting.cooperative_tuning({"measured": {key: rows for key in keys[:n_keys]}})
    try:
        width, height = fig.get_size_inches()
        assert width <= 7.6  # tests/test_book_consistency.py: FIGURE_WIDTH_LIMIT at 100 dpi
        assert [ax.get_title() for ax in fig.axes] == [k.replace(":", ", ") for k in keys[:n_keys]]
        columns = {round(ax.get_position().x0, 3) for ax in fig.axes}
        assert len(columns) == min(2, n_keys)
    finally:
        plt.close(fig)


def test_cooperative_tuning_refuses_a_file_without_the_keys():
    with pytest.raises(ValueError, match="none of the keys"):
        plotting.cooperative_tuning({"measured": {"forward:float16": []}})


def _row(impl, head_dim, causal, L=1024, dtype="bfloat16", graph=True, skipped=None):
    base = 1.0 + head_dim / 1000 + (0.5 if causal else 0.0)
    return {"impl": impl, "dtype": dtype, "head_dim": head_dim, "causal": causal, "L": L,
            "skipped": skipped,
            "fwd_ms": base, "fwd_graph_ms": base / 2 if graph else None,
            "host_fwd_us": 123.4, "fwd_bwd_ms": 3 * base,
            "fwd_bwd_graph_ms": 1.5 * base if graph else None, "host_fwd_bwd_us": 456.6}


def test_launch_split_table_rows_in_order_with_only_graph_timed_rows():
    results = [
        _row("cudnn", 64, False),
        _row("ours", 128, True),
        _row("ours", 64, True),
        _row("ours", 64, False),
        _row("ours", 64, False, L=4096),  # another length
        _row("ours", 64, False, dtype="float16"),  # another dtype
        _row("flash", 64, False, graph=False),  # measured before the graph timings
        _row("efficient", 64, False),  # not asked for
        _row("cudnn", 128, False, skipped="refused"),
    ]
    rows, columns = bench_attention.launch_split_table(results, labels={"ours": "ours (Triton)"})
    assert columns == bench_attention.LAUNCH_SPLIT_COLUMNS and len(columns) == 9
    assert [r[:3] for r in rows] == [("ours (Triton)", 64, "full"), ("ours (Triton)", 64, "causal"),
                                     ("ours (Triton)", 128, "causal"), ("cudnn", 64, "full")]
    first = rows[0]
    assert first[3:] == (1.064, 0.532, 123, 3.192, 1.596, 457)
    assert all(len(r) == len(columns) for r in rows)


def test_launch_split_table_is_empty_for_a_run_without_graph_timings():
    results = [_row(impl, d, c, graph=False) for impl in ("ours", "flash", "cudnn")
               for d in (64, 128) for c in (False, True)]
    assert bench_attention.launch_split_table(results)[0] == []
