"""The Triton softmax (softmax_lib.kernels.softmax) against torch.softmax and autograd.

Without a GPU every test runs through Triton's interpreter on CPU tensors (small
shapes: the interpreter is slow); with one, the same tests run compiled on CUDA.
"""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from softmax_lib import kernels  # noqa: E402  (sets TRITON_INTERPRET before triton kernels exist)
from softmax_lib.kernels import fused_softmax as fs  # noqa: E402

DEVICE = "cpu" if kernels.INTERPRETED else "cuda"
HALF_DTYPES = [torch.float16] + ([] if kernels.INTERPRETED else [torch.bfloat16])
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _logits(shape, dtype=torch.float32, scale=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(DEVICE, dtype)


def _check_forward_backward(x, tol, **kwargs):
    """Values and gradients against torch (float64) for the same input."""
    xk = x.detach().clone().requires_grad_()
    xr = x.detach().double().requires_grad_()
    y = kernels.softmax(xk, **kwargs)
    ref = torch.softmax(xr, -1)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    torch.testing.assert_close(y.double(), ref.detach(), atol=tol, rtol=tol)
    gen = torch.Generator().manual_seed(1)
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    (dx,) = torch.autograd.grad(y, xk, dy.to(x.device, x.dtype))
    (dx_ref,) = torch.autograd.grad(ref, xr, dy.to(x.device))
    torch.testing.assert_close(dx.double(), dx_ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("shape", [(3, 1823, 781) if DEVICE == "cuda" else (4, 781), (5, 1), (2, 3, 17), (33, 64)])
def test_forward_and_backward_match_torch_on_irregular_shapes(shape):
    _check_forward_backward(_logits(shape), TOL[torch.float32])


def test_large_irregular_shape_matches_torch():
    shape = (1823, 781)
    _check_forward_backward(_logits(shape), TOL[torch.float32])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_persistent_fused_programs_loop_over_every_tile(direction):
    # float32 rows of 16384 use a persistent grid (fewer programs than tiles) in both passes.
    n = 16384
    rows = 12 if DEVICE == "cpu" else 1500
    grid, tile_rows, *_ = fs._rows_config(n, rows, direction, 4)
    assert grid * tile_rows < rows
    _check_forward_backward(_logits((rows, n)), TOL[torch.float32])


def test_row_of_length_one_is_one_and_its_gradient_is_zero():
    x = _logits((6, 1)).requires_grad_()
    y = kernels.softmax(x)
    assert torch.equal(y, torch.ones_like(y))
    (dx,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(dx, torch.zeros_like(dx))


LONG_METHODS = ["split", "looped"] + ([] if kernels.INTERPRETED else ["cooperative"])


@pytest.mark.parametrize(("shape", "block_size"), [((2, 9), 1), ((3, 300), 16), ((3, 300), 100)])
def test_rows_longer_than_block_size_merge_segments_like_one_block(shape, block_size):
    # Partial (m, d) per segment, merged by the online rule (split or cooperative path).
    assert fs.choose_method(shape[-1], block_size) != "fused"
    _check_forward_backward(_logits(shape, scale=8.0), TOL[torch.float32], block_size=block_size)


@pytest.mark.parametrize("method", LONG_METHODS)
def test_every_long_row_path_matches_torch(method):
    _check_forward_backward(_logits((3, 1000), scale=8.0), TOL[torch.float32], method=method, block_size=128)


def test_long_row_default_path_matches_torch():
    n = 2**20 + 3 if DEVICE == "cuda" else 40_000
    x = _logits((5, n), scale=5.0)
    assert fs.choose_method(n) != "fused"
    y = kernels.softmax(x)
    torch.testing.assert_close(y.double(), torch.softmax(x.double(), -1), atol=1e-9, rtol=1e-5)


@pytest.mark.parametrize("method", ["fused", *LONG_METHODS])
def test_minus_inf_entries_are_zero_and_fully_masked_row_is_zero_not_nan(method):
    x = _logits((3, 40))
    x[0, ::3] = -math.inf
    x[1] = -math.inf
    y = kernels.softmax(x, method=method, block_size=None if method == "fused" else 8)
    assert not torch.isnan(y).any()
    assert torch.equal(y[1], torch.zeros_like(y[1]))
    assert torch.equal(y[0, ::3], torch.zeros_like(y[0, ::3]))
    # -inf entries behave like truncation: same as softmax of the remaining entries.
    keep = torch.isfinite(x[0])
    torch.testing.assert_close(y[0, keep], torch.softmax(x[0, keep], -1), atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(y[2], torch.softmax(x[2], -1), atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("method", ["fused", *LONG_METHODS])
def test_finite_logits_beyond_float32_max_over_log2e_are_not_nan(method):
    # x * log2(e) overflows float32 above 2.36e38; softmax itself does not care
    x = torch.tensor([[3e38, 0.0, 1.0], [3e38, -3e38, 3e38], [-3e38, -3e38, -3e38],
                      [3.4e38, 2.4e38, -1.0]], device=DEVICE)
    y = kernels.softmax(x, method=method, block_size=None if method == "fused" else 1)
    torch.testing.assert_close(y.double(), torch.softmax(x.double(), -1), atol=0.0, rtol=1e-6)


@pytest.mark.parametrize("method", ["fused", *LONG_METHODS])
@pytest.mark.parametrize("base", [1e2, 1e4, 1e6, 1.6e7])
def test_error_does_not_grow_with_the_size_of_the_logits(method, base):
    # Shift invariance: logits near `base` with gaps of a few units are exact float32
    # numbers, and their softmax is that of the gaps; the error must stay at float32
    # rounding, not grow with |max| (as x * log2(e) - m * log2(e) unfused does).
    gaps = torch.tensor([0.0, -1.0, -3.0, -4.0, -2.0], dtype=torch.float64)
    x = (base + gaps).to(torch.float32)
    assert torch.equal(x.double() - base, gaps)  # the inputs are the exact gaps
    y = kernels.softmax(x[None].to(DEVICE), method=method, block_size=None if method == "fused" else 2)
    torch.testing.assert_close(y[0].double().cpu(), torch.softmax(gaps, -1), atol=0.0, rtol=1e-6)


@pytest.mark.parametrize("method", ["fused", *LONG_METHODS])
def test_plus_inf_entries_share_the_mass_and_nan_poisons_its_row(method):
    x = _logits((2, 20))
    x[0, 3] = x[0, 11] = math.inf
    x[1, 5] = math.nan
    y = kernels.softmax(x, method=method, block_size=None if method == "fused" else 4)
    expected = torch.zeros(20, device=DEVICE)
    expected[3] = expected[11] = 0.5
    assert torch.equal(y[0], expected)
    assert torch.isnan(y[1]).all()


def test_fully_masked_row_has_zero_gradient():
    x = torch.full((2, 9), -math.inf, device=DEVICE)
    x[1] = _logits((9,))
    x.requires_grad_()
    (dx,) = torch.autograd.grad(kernels.softmax(x), x, torch.ones_like(x))
    assert torch.equal(dx[0], torch.zeros_like(dx[0]))


def test_non_contiguous_input_matches_torch():
    base = _logits((40, 30))
    for x in (base.t(), base[::3, 1::2], base.t()[:, :7]):
        assert not x.is_contiguous()
        _check_forward_backward(x, TOL[torch.float32])


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_matches_float32_reference(dtype):
    _check_forward_backward(_logits((5, 129), dtype=dtype), TOL[dtype])
    _check_forward_backward(_logits((2, 300), dtype=dtype), TOL[dtype], block_size=64)


def test_float16_large_logits_do_not_overflow():
    x = torch.tensor([[1.0e4, 0.0, -1.0e4], [6.0e4, 6.0e4, -6.0e4]], dtype=torch.float16, device=DEVICE)
    y = kernels.softmax(x)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float16, device=DEVICE)
    assert torch.equal(y, expected)


def test_rows_sum_to_one():
    y = kernels.softmax(_logits((16, 333), scale=20.0))
    torch.testing.assert_close(y.sum(-1), torch.ones(16, device=DEVICE), atol=1e-5, rtol=0)


def test_empty_batch_gives_empty_output():
    y = kernels.softmax(torch.empty((0, 5), device=DEVICE))
    assert y.shape == (0, 5)


def test_non_tensor_is_a_type_error_naming_x():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        kernels.softmax([1.0, 2.0])


def test_integer_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        kernels.softmax(torch.arange(4, device=DEVICE))


def test_zero_dimensional_tensor_is_a_value_error():
    with pytest.raises(ValueError, match="at least one dimension"):
        kernels.softmax(torch.tensor(1.0, device=DEVICE))


@pytest.mark.parametrize("block_size, error", [(0, ValueError), (-3, ValueError),
                                               (2.5, TypeError), (True, TypeError), ("8", TypeError)])
def test_bad_block_size_is_refused_by_name(block_size, error):
    with pytest.raises(error, match="block_size"):
        kernels.softmax(_logits((2, 4)), block_size=block_size)


def test_unknown_method_is_a_value_error():
    with pytest.raises(ValueError, match="method"):
        kernels.softmax(_logits((2, 4)), method="magic")


@pytest.mark.skipif(not kernels.INTERPRETED, reason="the cooperative path runs on a GPU")
def test_cooperative_method_without_gpu_is_a_value_error():
    with pytest.raises(ValueError, match="needs a GPU"):
        kernels.softmax(_logits((2, 4)), method="cooperative")


@pytest.mark.skipif(not kernels.INTERPRETED, reason="bfloat16 runs on the GPU")
def test_bfloat16_on_cpu_is_a_type_error_saying_the_interpreter_cannot():
    with pytest.raises(TypeError, match="interpreter cannot"):
        kernels.softmax(torch.ones(2, 3, dtype=torch.bfloat16))


@pytest.mark.skipif(kernels.INTERPRETED, reason="only a machine with a GPU refuses CPU tensors")
def test_cpu_tensor_on_a_gpu_machine_is_a_value_error_saying_move_it():
    with pytest.raises(ValueError, match="move x to the GPU"):
        kernels.softmax(torch.ones(2, 3))


# --------------------------------------------------------------------------------------
# Alignment: row lengths and strides that are multiples of a vector but not of 16
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("itemsize, extents, expected", [
    (4, (1000, 1000), 4), (4, (1002, 1002), 2), (4, (781, 781), 1), (4, (1024, 4096), 4),
    (2, (1000, 1000), 8), (2, (1004, 1004), 4), (2, (12345, 12345), 1), (4, (1000, 1003), 1),
])
def test_alignment_is_the_largest_power_of_two_dividing_every_extent_up_to_one_vector(itemsize, extents,
                                                                                        expected):
    from softmax_lib.kernels._common import alignment

    assert alignment(itemsize, *extents) == expected
    # brute force: the largest power of two p <= 16 bytes / itemsize dividing them all
    brute = max(p for p in (1, 2, 4, 8) if p <= 16 // itemsize and all(e % p == 0 for e in extents))
    assert brute == expected


@pytest.mark.parametrize("n, width", [(1000, 1000), (1002, 1002), (996, 1000), (1000, 1003), (6, 8)])
def test_rows_whose_length_or_stride_is_not_a_multiple_of_16_match_torch(n, width):
    # the kernels rewrite N and the strides as n // ALIGN * ALIGN; a wrong ALIGN would cut rows short
    x = _logits((6, width))[:, :n]
    _check_forward_backward(x, TOL[torch.float32])
    _check_forward_backward(_logits((5, n), dtype=torch.float16), TOL[torch.float16])


def test_resident_programs_matches_the_occupancy_rules_worked_by_hand():
    from softmax_lib.kernels._common import resident_programs

    # 255 registers x 256 threads: 8 warps x 8192 registers = the whole 64K file -> 1
    assert resident_programs(255, 0, 8) == 1
    # 32 registers, 4 warps: registers allow 16, threads allow 2048 / 128 = 16 -> 16
    assert resident_programs(32, 0, 4) == 16
    # 40 registers round up to 1280 per warp; 16 warps take 20480 -> 3 by registers, 4 by threads
    assert resident_programs(40, 0, 16) == 3
    # 100 KiB of shared memory (+1 KiB reserved) each: 228 KiB hold 2
    assert resident_programs(32, 100 * 1024, 4) == 2
    # tiny programs: the scheduler's 32 per multiprocessor is the limit
    assert resident_programs(16, 0, 1) == 32


# --------------------------------------------------------------------------------------
# Rows that start inside a vector: head, body of whole vectors, tail
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("itemsize, n, align, pointers, strides, expected", [
    (4, 781, 1, (0, 64), (781, 781), 4),          # odd rows, aligned tensors, one stride: windows
    (2, 12345, 1, (0, 32), (12345, 12345), 8),    # 16-bit entries: 8 per vector
    (2, 1004, 4, (0, 16), (1004, 1004), 8),       # a multiple of 4 but not of 8 halves: inside vectors
    (4, 1000, 4, (0, 16), (1000, 1000), 0),       # whole vectors already (ALIGN does it)
    (4, 781, 1, (4, 64), (781, 781), 0),          # a tensor starts mid-vector: rows sit differently
    (4, 781, 1, (0, 64), (783, 781), 0),          # strides differ: rows start at different offsets
    (4, 13, 1, (0, 64), (13, 13), 0),             # fewer than four vectors a row: not worth it
])
def test_peel_width_reads_windows_only_where_it_pays_and_is_possible(itemsize, n, align, pointers, strides,
                                                                      expected):
    from softmax_lib.kernels._common import peel_width

    assert peel_width(itemsize, n, align, pointers, strides) == expected


@pytest.mark.parametrize("m, n, stride, peel", [(9, 781, 781, 4), (4, 781, 781, 4), (5, 3, 3, 4), (7, 20, 23, 8),
                                                 (1, 5, 5, 4), (6, 17, 17, 8), (3, 2, 2, 8)])
def test_window_rows_are_exactly_the_rows_whose_window_stays_inside_the_tensor(m, n, stride, peel):
    from softmax_lib.kernels._common import window_rows

    total = (m - 1) * stride + n
    # brute force: a row's window ends on the vector boundary at or after the row's end,
    # which must not lie past the tensor's last entry
    fits = [-(-(r * stride + n) // peel) * peel <= total for r in range(m)]
    expected = fits.index(False) if False in fits else m
    assert all(fits[:expected]) and not any(fits[expected:])
    assert window_rows(m, n, stride, peel) == expected


import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from softmax_lib.kernels._common import row_window  # noqa: E402


@triton.jit
def _window_kernel(out_ptr, N, stride, ROWS: tl.constexpr, PEEL: tl.constexpr):
    rows = tl.arange(0, ROWS).to(tl.int64)
    window, lead, n_window, lo, hi = row_window(rows, stride, N, PEEL)
    base = out_ptr + rows * 5
    tl.store(base + 0, window)
    tl.store(base + 1, lead)
    tl.store(base + 2, n_window)
    tl.store(base + 3, lo)
    tl.store(base + 4, hi)


def test_row_window_holds_each_row_in_whole_vectors_and_marks_the_whole_vectors_inside_it():
    # Oracle: the entries of each row and of each vector as sets, for rows starting at
    # every offset within a vector.
    rows = 16
    for peel in (4, 8):
        for n in (1, 2, 3, 5, 7, 8, 9, 13, 31, 781):
            for stride in sorted({n, n + 1, n + 3}):
                out = torch.zeros(rows * 5, dtype=torch.int64)
                _window_kernel[(1,)](out, n, stride, ROWS=rows, PEEL=peel)
                for r, (window, lead, n_window, lo, hi) in enumerate(out.view(rows, 5).tolist()):
                    start = r * stride
                    assert window % peel == 0 and n_window % peel == 0 and lo % peel == 0 and hi % peel == 0
                    assert window + lead == start and 0 <= lead < peel
                    # the window is the smallest run of whole vectors holding the row
                    assert window <= start and start + n <= window + n_window < start + n + peel
                    vectors = [v for v in range(window, window + n_window, peel)
                               if start <= v and v + peel <= start + n]
                    whole = list(range(window + lo, window + max(lo, hi), peel))
                    assert whole == vectors, (peel, n, stride, r)


@pytest.mark.parametrize("m, n", [(9, 781), (4, 781), (3, 37), (5, 1001), (2, 67)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rows_read_through_aligned_windows_match_torch(m, n, dtype):
    from softmax_lib.kernels._common import alignment, peel_width

    x = _logits((m, n), dtype=dtype)
    x[0, n // 2] = float("-inf")
    x[1, :] = float("-inf")  # an empty row: zeros, and a zero gradient
    x[-1, 0] = float("inf")  # the neighbours' entries must take no part in a row
    align = alignment(x.element_size(), n)
    assert peel_width(x.element_size(), n, align, (x.data_ptr(), 0), (n, n)) == 16 // x.element_size()
    xk = x.detach().clone().requires_grad_()
    y = kernels.softmax(xk)
    p = torch.softmax(x.double(), -1)
    p[1] = 0.0
    p[-1] = torch.nn.functional.one_hot(torch.tensor(0), n).double()
    torch.testing.assert_close(y.double(), p, atol=TOL[dtype], rtol=TOL[dtype])
    dy = _logits((m, n), dtype=dtype, seed=2)
    (dx,) = torch.autograd.grad(y, xk, dy)
    dx_ref = p * (dy.double() - (p * dy.double()).sum(-1, keepdim=True))
    torch.testing.assert_close(dx.double(), dx_ref, atol=TOL[dtype], rtol=TOL[dtype])


def test_with_windows_turned_off_the_entry_by_entry_kernels_match_torch(monkeypatch):
    monkeypatch.setattr(fs, "READ_WINDOWS", False)
    _check_forward_backward(_logits((9, 781)), TOL[torch.float32])


def test_a_tensor_starting_mid_vector_takes_the_entry_by_entry_kernel_and_matches_torch():
    # one float past a 16-byte boundary: rows of x and y would sit differently in their vectors
    storage = _logits((7 * 781 + 1,))
    x = storage[1:].view(7, 781)
    assert x.data_ptr() % 16 == 4
    _check_forward_backward(x, TOL[torch.float32])


@pytest.mark.parametrize("prefetch", [False, True])
def test_cooperative_kernels_visit_every_row_once_with_and_without_prefetch(prefetch):
    # The cooperative kernels launched directly, with one segment per row so that no
    # program waits for another (the interpreter runs programs one after the other):
    # 3 persistent programs over 7 rows check the loop over rows pid, pid + 3, ... and
    # the prefetch of a next row that does not exist.  The oracle is torch.
    from softmax_lib.kernels import long_rows as lr

    m, n, programs = 7, 37, 3
    x = _logits((m, n))
    x[2, 5] = float("-inf")
    x[4] = float("-inf")  # a row with nothing: zeros
    y = torch.full_like(x, float("nan"))
    part_m, part_d = (torch.empty(m, 1, device=DEVICE) for _ in range(2))
    count = torch.zeros(m, dtype=torch.int32, device=DEVICE)
    meta = dict(SEGMENTS=1, BLOCK_N=64, BLOCK_S=1, ALIGN=1, PREFETCH=prefetch)
    with kernels.launch_context():
        lr._forward_cooperative[(programs,)](x, y, part_m, part_d, count, m, n, n, n, **meta)
    ref = torch.softmax(x.double(), -1).nan_to_num(0.0)
    torch.testing.assert_close(y.double(), ref, atol=TOL[torch.float32], rtol=TOL[torch.float32])
    assert count.tolist() == [1] * m  # every row announced exactly once
    dy = _logits((m, n), seed=3)
    p = ref.float()
    dx = torch.full_like(x, float("nan"))
    part_s = torch.empty(m, 1, device=DEVICE)
    count.zero_()
    with kernels.launch_context():
        lr._backward_cooperative[(programs,)](p, dy, dx, part_s, count, m, n, n, n, n, **meta)
    dx_ref = p.double() * (dy.double() - (p.double() * dy.double()).sum(-1, keepdim=True))
    torch.testing.assert_close(dx.double(), dx_ref, atol=TOL[torch.float32], rtol=TOL[torch.float32])
    assert count.tolist() == [1] * m


def test_cooperative_settings_apply_inside_the_block_only_and_are_checked():
    from softmax_lib.kernels import long_rows as lr

    before = lr.cooperative_config("backward", 2, 2**19)
    forward = lr.cooperative_config("forward", 2, 2**19)
    with lr.cooperative_settings("backward", 2, 8192, 8, True):
        assert lr.cooperative_config("backward", 2, 2**19) == (8192, 8, True)
        assert lr.cooperative_config("backward", 2, 2**30) == (8192, 8, True)
        assert fs._segment(2**19, None, "cooperative", 2, "backward") == 4096  # 8192 bytes of bfloat16
        assert lr.cooperative_config("forward", 2, 2**19) == forward  # the other direction is untouched
    assert lr.cooperative_config("backward", 2, 2**19) == before
    with pytest.raises(RuntimeError):
        with lr.cooperative_settings("forward", 4, 16384, 4, True):
            raise RuntimeError("boom")
    assert lr.cooperative_config("forward", 4, 2**19)[0] == lr.COOPERATIVE_CONFIGS[("forward", 4)][-1][1]
    with pytest.raises(ValueError, match="direction"):
        with lr.cooperative_settings("sideways", 4, 16384, 4, True):
            pass
    with pytest.raises(ValueError, match="segment_bytes"):
        with lr.cooperative_settings("forward", 4, 3000, 4, True):
            pass


def test_cooperative_table_is_looked_up_by_the_first_entry_that_holds_the_row():
    from softmax_lib.kernels import long_rows as lr

    saved = dict(lr.COOPERATIVE_CONFIGS)
    try:
        lr.COOPERATIVE_CONFIGS[("forward", 4)] = [(2**17, 8192, 4, True), (2**19, 32768, 8, False)]
        assert lr.cooperative_config("forward", 4, 2**16) == (8192, 4, True)
        assert lr.cooperative_config("forward", 4, 2**17) == (8192, 4, True)
        assert lr.cooperative_config("forward", 4, 2**17 + 1) == (32768, 8, False)
        assert lr.cooperative_config("forward", 4, 2**21) == (32768, 8, False)  # longer: the last entry
    finally:
        lr.COOPERATIVE_CONFIGS.clear()
        lr.COOPERATIVE_CONFIGS.update(saved)
    for table in lr.COOPERATIVE_CONFIGS.values():
        assert [e[0] for e in table] == sorted({e[0] for e in table})  # ascending, no repeats


@pytest.mark.parametrize("shape", [(2, 0), (0, 5), (3, 0, 4), (2, 3, 0)])
def test_empty_tensors_give_empty_results_as_torch(shape):
    x = torch.zeros(shape, requires_grad=True)
    y = kernels.softmax(x)
    assert y.shape == torch.softmax(x, -1).shape
    y.sum().backward()
    assert x.grad.shape == x.shape
