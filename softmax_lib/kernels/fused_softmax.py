r"""A fused softmax in Triton: forward and backward, any row length (Chapters 8 and 9).

Softmax over the last dimension reads each logit once and writes each probability
once when a whole row sits on chip: the **fused** path (Chapter 8), whose only cost
is moving those bytes.  Rows too long for one program are cut into segments whose
partial maxima and normalisers ``(m_s, d_s)`` are merged with the online rule
(Chapter 9, :mod:`softmax_lib.kernels.long_rows`)

.. math::

    m = \max_s m_s, \qquad d = \sum_s d_s\, e^{m_s - m}.

The backward pass computes
:math:`\partial x = p \odot (\partial y - \langle p, \partial y\rangle)` the same way.

Edge rules are the core's: a row of ``-inf`` gives zeros, ``+inf`` entries share the
row's mass evenly, a NaN makes its row NaN.  Arithmetic is float32 whatever the
storage dtype (float32, float16, and bfloat16 on a GPU).

On CUDA tensors the kernels are compiled; on a machine without a GPU they run on CPU
tensors through Triton's interpreter (``softmax_lib.kernels`` sets this up).
References: Milakov and Gimelshein (2018) for the online normaliser; Tillet et al.
(2019) for Triton.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

from .._array import check_positive_int
from . import INTERPRETED, check_runnable, launch_context
from ._common import (aligned, alignment, exp_rows, peel_width, reciprocal, row_max, row_shift, row_sum,
                      row_window, window_rows)
from .long_rows import backward_long, cooperative_config, forward_long

__all__ = ["softmax", "softmax_forward", "softmax_backward", "choose_method"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Longest row one program holds on chip (entries); longer rows are split (GPU).
MAX_FUSED = 32768


# --------------------------------------------------------------------------------------
# Fused path: ROWS whole rows per program, one read and one write per entry
# --------------------------------------------------------------------------------------


@triton.jit
def _forward_rows(x_ptr, y_ptr, M, N, stride_x, stride_y, ROWS: tl.constexpr,
                  BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # N and the strides are multiples of ALIGN: saying so lets rows move in
    # 16-byte vectors
    N, stride_x, stride_y = (aligned(N, ALIGN), aligned(stride_x, ALIGN),
                             aligned(stride_y, ALIGN))
    rows = (tl.program_id(0) * ROWS
            + tl.arange(0, ROWS)).to(tl.int64)  # (ROWS,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask = (rows[:, None] < M) & (cols[None, :] < N)  # (ROWS, BLOCK_N)
    # the only read of x: MN elements
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :],
                mask=mask, other=float("-inf"),
                eviction_policy="evict_first").to(tl.float32)
    m = row_max(x, 1)  # (ROWS,) the row maximum, never leaves the chip
    shift, top = row_shift(m)  # (ROWS,) per-row constants of exp(x - m)
    e = exp_rows(x, shift[:, None], top[:, None])  # (ROWS, BLOCK_N)
    inv_d = reciprocal(row_sum(e, 1))  # (ROWS,) 1 / normaliser
    y = e * inv_d[:, None]
    # the only write: MN elements
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :],
             y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _forward_rows_persistent(x_ptr, y_ptr, M, N, stride_x, stride_y,
                             ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                             NUM_STAGES: tl.constexpr, ALIGN: tl.constexpr):
    # The same tile, but fewer programs than tiles: each loops over tiles
    # pid, pid + grid, ... and the compiler issues the next tile's loads
    # while this tile is being computed.
    N, stride_x, stride_y = (aligned(N, ALIGN), aligned(stride_x, ALIGN),
                             aligned(stride_y, ALIGN))
    cols = tl.arange(0, BLOCK_N)
    for tile in tl.range(tl.program_id(0), (M + ROWS - 1) // ROWS,
                         tl.num_programs(0), num_stages=NUM_STAGES):
        rows = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :],
                    mask=mask, other=float("-inf"),
                    eviction_policy="evict_first").to(tl.float32)
        shift, top = row_shift(row_max(x, 1))
        e = exp_rows(x, shift[:, None], top[:, None])
        y = e * reciprocal(row_sum(e, 1))[:, None]
        tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :],
                 y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_rows(y_ptr, dy_ptr, dx_ptr, M, N, stride_y, stride_dy, stride_dx,
                   ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                   NUM_STAGES: tl.constexpr, ALIGN: tl.constexpr):
    N, stride_y = aligned(N, ALIGN), aligned(stride_y, ALIGN)
    stride_dy, stride_dx = aligned(stride_dy, ALIGN), aligned(stride_dx, ALIGN)
    cols = tl.arange(0, BLOCK_N)
    for tile in tl.range(tl.program_id(0), (M + ROWS - 1) // ROWS,
                         tl.num_programs(0), num_stages=NUM_STAGES):
        rows = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        y = tl.load(y_ptr + rows[:, None] * stride_y + cols[None, :],
                    mask=mask, other=0.0,
                    eviction_policy="evict_first").to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :],
                     mask=mask, other=0.0,
                     eviction_policy="evict_first").to(tl.float32)
        s = row_sum(y * dy, 1)  # (ROWS,) <p, dy> per row
        dx = y * (dy - s[:, None])
        tl.store(dx_ptr + rows[:, None] * stride_dx + cols[None, :],
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# Rows that do not start on a vector: read the whole vectors around each row
# --------------------------------------------------------------------------------------


@triton.jit
def _forward_peeled(x_ptr, y_ptr, M, N, stride,
                    ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                    PEEL: tl.constexpr, NUM_STAGES: tl.constexpr):
    # x and y share the row stride and start on 16-byte boundaries, so a row
    # sits at the same place in its vectors in both
    cols = tl.arange(0, BLOCK_N)[None, :]
    for tile in tl.range(tl.program_id(0), (M + ROWS - 1) // ROWS,
                         tl.num_programs(0), num_stages=NUM_STAGES):
        rows = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        window, lead, n_window, lo, hi = row_window(rows, stride, N, PEEL)
        window, lead, n_window = (window[:, None], lead[:, None],
                                  n_window[:, None])
        ok = rows[:, None] < M
        # whole vectors, neighbours' entries too
        x = tl.load(x_ptr + window + cols, mask=ok & (cols < n_window),
                    other=float("-inf"),
                    eviction_policy="evict_first").to(tl.float32)
        in_row = (cols >= lead) & (cols < lead + N)
        # the neighbours' entries take no part
        x = tl.where(in_row, x, float("-inf"))
        shift, top = row_shift(row_max(x, 1))
        e = exp_rows(x, shift[:, None], top[:, None])
        y = (e * reciprocal(row_sum(e, 1))[:, None]).to(y_ptr.dtype.element_ty)
        whole = (cols >= lo[:, None]) & (cols < hi[:, None])
        # 16 bytes at a time
        tl.store(y_ptr + window + cols, y, mask=ok & whole)
        # < PEEL entries at each end
        tl.store(y_ptr + window + cols, y, mask=ok & in_row & ~whole)


@triton.jit
def _backward_peeled(y_ptr, dy_ptr, dx_ptr, M, N, stride,
                     ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                     PEEL: tl.constexpr, NUM_STAGES: tl.constexpr):
    cols = tl.arange(0, BLOCK_N)[None, :]
    for tile in tl.range(tl.program_id(0), (M + ROWS - 1) // ROWS,
                         tl.num_programs(0), num_stages=NUM_STAGES):
        rows = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        window, lead, n_window, lo, hi = row_window(rows, stride, N, PEEL)
        window, lead, n_window = (window[:, None], lead[:, None],
                                  n_window[:, None])
        ok = rows[:, None] < M
        read = ok & (cols < n_window)
        y = tl.load(y_ptr + window + cols, mask=read, other=0.0,
                    eviction_policy="evict_first").to(tl.float32)
        dy = tl.load(dy_ptr + window + cols, mask=read, other=0.0,
                     eviction_policy="evict_first").to(tl.float32)
        in_row = (cols >= lead) & (cols < lead + N)
        y, dy = tl.where(in_row, y, 0.0), tl.where(in_row, dy, 0.0)
        dx = (y * (dy - row_sum(y * dy, 1)[:, None])).to(
            dx_ptr.dtype.element_ty)
        whole = (cols >= lo[:, None]) & (cols < hi[:, None])
        tl.store(dx_ptr + window + cols, dx, mask=ok & whole)
        tl.store(dx_ptr + window + cols, dx, mask=ok & in_row & ~whole)

# --------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------


#: Fused-path settings, measured on an H200 (Chapter 8), per direction and bytes per
#: entry: rows of up to N entries -> (entries per program, num_warps, num_stages,
#: programs per SM).  0 programs per SM: one program per tile; otherwise the grid is
#: persistent, each program looping over tiles with the next tile's loads in flight.
FUSED_CONFIGS = {
    ("forward", 4): [(4096, 8192, 16, 1, 0), (8192, 8192, 16, 2, 2), (16384, 16384, 4, 2, 8),
                     (32768, 32768, 16, 2, 2)],
    ("forward", 2): [(512, 8192, 16, 1, 0), (2048, 4096, 8, 1, 0), (8192, 8192, 16, 1, 0),
                     (16384, 16384, 32, 1, 0), (32768, 32768, 16, 3, 1)],
    ("backward", 4): [(16384, 16384, 16, 2, 2), (32768, 32768, 8, 1, 0)],
    ("backward", 2): [(8192, 8192, 16, 2, 2), (32768, 32768, 8, 2, 4)],
}


def _rows_config(n: int, grid_rows: int, direction: str = "forward", itemsize: int = 4,
                 sm_count: int | None = None, peel: int = 0):
    """(grid, ROWS, BLOCK_N, num_warps, num_stages) of the fused path for rows of ``n``
    (``sm_count``: multiprocessors of the GPU; default this machine's, 1 on the interpreter;
    ``peel``: the window kernels' vector width, whose windows hold up to ``n + 2 (peel - 1)``)."""
    block_n = triton.next_power_of_2(n + 2 * (peel - 1) if peel else n)
    table = FUSED_CONFIGS[(direction, 4 if itemsize >= 4 else 2)]
    config = next((c for c in table if n <= c[0]), table[-1])
    _, elements, warps, stages, per_sm = config
    rows = max(1, min(128, elements // block_n))
    if peel:  # the window kernels keep two masks per entry: at most 16K entries a tile, and a
        # thread holds at most 32 of them forward, 16 backward (which holds y and dy: at 32 a
        # thread, float32 spilled with triton 3.6, the H200's version, though not with 3.7.1)
        rows = max(1, min(rows, WINDOW_ENTRIES // block_n))
        per_warp = 32 * (32 if direction == "forward" else 16)
        warps = max(warps, min(32, rows * block_n // per_warp))
    tiles = triton.cdiv(grid_rows, rows)
    grid = tiles
    if per_sm:  # persistent: per_sm programs per multiprocessor loop over the tiles (measured; where
        # fewer fit at once, the rest wait for a slot); the interpreter: a few, to test the loop
        if sm_count is None:
            sm_count = 1 if INTERPRETED else torch.cuda.get_device_properties(
                torch.cuda.current_device()).multi_processor_count
        grid = min(tiles, per_sm * sm_count)
    return grid, rows, block_n, warps, stages


METHODS = ("fused", "looped", "split", "cooperative")


def choose_method(n: int, block_size: int | None = None) -> str:
    """Which path a row of ``n`` entries takes (see :mod:`softmax_lib.kernels.long_rows`).

    Rows up to ``block_size`` entries (default ``MAX_FUSED``) are ``"fused"``: one
    program holds a whole row.  Longer rows are cut into segments of ``block_size``
    (default: ``long_rows.COOPERATIVE_CONFIGS``): ``"cooperative"`` on a GPU, ``"split"``
    (two launches, the interpreter can run it) without one.
    """
    limit = MAX_FUSED if block_size is None else block_size
    if n <= limit:
        return "fused"
    return "split" if INTERPRETED else "cooperative"


def _segment(n: int, block_size: int | None, method: str, itemsize: int = 4,
             direction: str = "forward") -> int:
    """Entries per segment (a power of two) for the long-row paths."""
    if block_size is None:
        if method == "cooperative":
            block_size = cooperative_config(direction, itemsize, n)[0] // itemsize
        else:
            block_size = 4096 if method == "looped" else MAX_FUSED
    return triton.next_power_of_2(min(block_size, n))


def _check_block_size(block_size):
    return None if block_size is None else check_positive_int(block_size, "block_size")


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """View as (M, N) with unit stride along rows, copying only when it must."""
    rows = t.reshape(math.prod(t.shape[:-1]), t.shape[-1])  # (not -1: rows of length 0)
    if rows.stride(-1) != 1 or (rows.shape[0] > 1 and rows.stride(0) < rows.shape[1]):
        rows = rows.contiguous()
    return rows


#: Read rows that start inside 16-byte vectors through aligned windows (the ``_peeled``
#: kernels).  The benchmark turns it off to time the kernels that read them entry by entry.
READ_WINDOWS = True
#: Longest window (entries) the ``_peeled`` kernels take; longer rows that start inside
#: vectors are read entry by entry (windows of 32K entries spill registers in every
#: configuration we compiled for sm_90).
WINDOW_ENTRIES = 16384


@contextlib.contextmanager
def entrywise():
    """Within this block, rows that start inside vectors are read entry by entry (the
    kernels measured before the window kernels existed); for benchmarks and the book."""
    global READ_WINDOWS
    READ_WINDOWS = False
    try:
        yield
    finally:
        READ_WINDOWS = True


def _window_plan(m: int, n: int, itemsize: int, align: int, pointers, strides) -> tuple[int, int]:
    """``(PEEL, rows)``: the vector width of the window kernels and how many leading rows
    they take, or ``(0, 0)`` when they do not apply (see ``_common.peel_width``)."""
    peel = peel_width(itemsize, n, align, pointers, strides) if READ_WINDOWS else 0
    if not peel or triton.next_power_of_2(n + 2 * (peel - 1)) > WINDOW_ENTRIES:
        return 0, 0
    return peel, window_rows(m, n, strides[0], peel)


def _forward_fused(x2: torch.Tensor, y2: torch.Tensor) -> None:
    """Fused forward over the rows of ``x2`` into ``y2`` (both (M, N), unit stride along rows)."""
    (m, n), itemsize = x2.shape, x2.element_size()
    align = alignment(itemsize, n, x2.stride(0), y2.stride(0))
    peel, windowed = _window_plan(m, n, itemsize, align, (x2.data_ptr(), y2.data_ptr()),
                                  (x2.stride(0), y2.stride(0)))
    if windowed:  # rows start inside vectors: read the whole vectors around them
        grid, rows, block_n, warps, stages = _rows_config(n, windowed, "forward", itemsize, peel=peel)
        _forward_peeled[(grid,)](x2, y2, windowed, n, x2.stride(0), ROWS=rows, BLOCK_N=block_n, PEEL=peel,
                                 NUM_STAGES=stages if grid * rows < windowed else 1, num_warps=warps)
        if windowed == m:
            return
        x2, y2, m = x2[windowed:], y2[windowed:], m - windowed  # rows in the tensor's last, partial vector
    grid, rows, block_n, warps, stages = _rows_config(n, m, "forward", itemsize)
    if grid * rows >= m:  # one tile per program
        _forward_rows[(grid,)](x2, y2, m, n, x2.stride(0), y2.stride(0),
                               ROWS=rows, BLOCK_N=block_n, ALIGN=align, num_warps=warps)
    else:
        _forward_rows_persistent[(grid,)](x2, y2, m, n, x2.stride(0), y2.stride(0), ROWS=rows,
                                          BLOCK_N=block_n, NUM_STAGES=stages, ALIGN=align, num_warps=warps)


def _backward_fused(y2: torch.Tensor, dy2: torch.Tensor, dx2: torch.Tensor) -> None:
    """Fused backward over the rows of ``y2``, ``dy2`` into ``dx2`` (all (M, N))."""
    (m, n), itemsize = y2.shape, y2.element_size()
    strides = (y2.stride(0), dy2.stride(0), dx2.stride(0))
    align = alignment(itemsize, n, *strides)
    peel, windowed = _window_plan(m, n, itemsize, align, (y2.data_ptr(), dy2.data_ptr(), dx2.data_ptr()), strides)
    if windowed:
        grid, rows, block_n, warps, stages = _rows_config(n, windowed, "backward", itemsize, peel=peel)
        _backward_peeled[(grid,)](y2, dy2, dx2, windowed, n, y2.stride(0), ROWS=rows, BLOCK_N=block_n,
                                  PEEL=peel, NUM_STAGES=stages, num_warps=warps)
        if windowed == m:
            return
        y2, dy2, dx2, m = y2[windowed:], dy2[windowed:], dx2[windowed:], m - windowed
    grid, rows, block_n, warps, stages = _rows_config(n, m, "backward", itemsize)
    _backward_rows[(grid,)](y2, dy2, dx2, m, n, *strides, ROWS=rows, BLOCK_N=block_n,
                            NUM_STAGES=stages, ALIGN=align, num_warps=warps)


def softmax_forward(x: torch.Tensor, *, block_size: int | None = None, method: str | None = None) -> torch.Tensor:
    """Forward kernels only (no autograd): softmax over the last dim of a checked tensor."""
    n = x.shape[-1]
    x2 = _as_rows(x)  # (M, N)
    y2 = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    method = method or choose_method(n, block_size)
    if y2.numel() == 0:
        return y2.reshape(x.shape)
    if method == "fused":
        _forward_fused(x2, y2)
    else:
        forward_long(x2, y2, method, _segment(n, block_size, method, x.element_size(), "forward"))
    return y2.reshape(x.shape)


def softmax_backward(y: torch.Tensor, dy: torch.Tensor, *, block_size: int | None = None,
                     method: str | None = None) -> torch.Tensor:
    """Backward kernels only: ``dx = y * (dy - sum(y * dy))`` over the last dim."""
    n = y.shape[-1]
    y2, dy2 = _as_rows(y), _as_rows(dy.to(y.dtype))
    dx2 = torch.empty(y2.shape, dtype=y.dtype, device=y.device)
    method = method or choose_method(n, block_size)
    if dx2.numel() == 0:
        return dx2.reshape(y.shape)
    if method == "fused":
        _backward_fused(y2, dy2, dx2)
    else:
        backward_long(y2, dy2, dx2, method, _segment(n, block_size, method, y.element_size(), "backward"))
    return dx2.reshape(y.shape)


class _FusedSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, block_size, method):
        with launch_context():
            y = softmax_forward(x, block_size=block_size, method=method)
        ctx.save_for_backward(y)
        ctx.block_size, ctx.method = block_size, method
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        with launch_context():
            dx = softmax_backward(y, dy, block_size=ctx.block_size, method=ctx.method)
        return dx, None, None


def _check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (softmax runs over the last), got a 0-d tensor")
    check_runnable()
    if x.device.type == "cuda":
        return
    if x.device.type != "cpu":
        raise ValueError(f"x must be a CUDA tensor (or a CPU tensor without a GPU), got device {x.device}")
    if not INTERPRETED:
        raise ValueError("x is on the CPU but this machine has a GPU, so the kernels are compiled for it: "
                         "move x to the GPU (x.cuda()), or use softmax_lib.softmax for CPU tensors")
    if x.dtype == torch.bfloat16:
        raise TypeError("bfloat16 needs a GPU: Triton's CPU interpreter cannot compute in bfloat16 "
                        "(use float32 or float16 here)")


def softmax(x: torch.Tensor, *, block_size: int | None = None, method: str | None = None) -> torch.Tensor:
    r"""Softmax over the last dimension of a tensor, by fused Triton kernels.

    .. math::

        \softmax(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j.

    Parameters
    ----------
    x : torch.Tensor
        float32 or float16 (bfloat16 on a GPU), at least one dimension, any strides.
        CUDA tensors run compiled kernels; CPU tensors run through Triton's
        interpreter on a machine without a GPU (slow: for small sizes and tests).
    block_size : int, optional
        Entries of a row one program holds.  Rows longer than this are split into
        segments whose partial maxima and normalisers are merged by the online rule
        (Chapter 9).  Default: chosen from the row length.
    method : {"fused", "looped", "split", "cooperative"}, optional
        Force one path (see :func:`choose_method`); for tests and the book.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``; differentiable (a Triton backward kernel
        computes ``p * (dy - <p, dy>)``).

    Notes
    -----
    Edge cases as :func:`softmax_lib.softmax`: a row of ``-inf`` gives zeros, ``+inf``
    entries share the mass evenly, NaN makes the row NaN.  A CPU tensor on a machine
    with a GPU raises ``ValueError`` (the kernels are compiled for the GPU there);
    bfloat16 on the CPU raises ``TypeError``.  Chapter 8 explains the fused kernel,
    Chapter 9 the split path.

    References
    ----------
    Milakov and Gimelshein (2018), "Online normalizer calculation for softmax";
    Tillet, Kung and Cox (2019), "Triton".
    """
    _check_input(x)
    block_size = _check_block_size(block_size)
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "cooperative" and INTERPRETED:
        raise ValueError("method='cooperative' needs a GPU (its programs wait for each other, "
                         "which the interpreter, running one program at a time, cannot do)")
    return _FusedSoftmax.apply(x, block_size, method)


