r"""Softmax kernels for rows too long for one program (Chapter 9).

A row that does not fit in one program's registers is handled in one of three ways:

``looped``
    One program streams the row twice: the first pass keeps a running maximum and
    normaliser (the online rule), the second writes :math:`e^{x_i - m}/d`.  The second
    read comes from the L2 cache while all rows in flight fit there.
``split``
    Each row is cut into segments of ``BLOCK_N`` entries, one program per segment.  A
    first kernel reduces every segment to a partial pair :math:`(m_s, d_s)`; a second
    kernel merges a row's pairs with the online rule
    :math:`m = \max_s m_s,\ d = \sum_s d_s e^{m_s - m}` (see
    :func:`softmax_lib.core.merge_normalizers`) and writes the probabilities.  It reads
    the input twice from memory; it runs anywhere, the interpreter included.
``cooperative`` (GPU only)
    The same segments and partial pairs, in one launch: a persistent grid of programs
    that are all resident at once, each holding its segment in registers while the
    row's partials meet through a per-row counter in global memory.  The input is read
    once: the traffic of the fused kernel, for rows of millions of entries.

The backward pass, :math:`\partial x = p \odot (\partial y - \langle p, \partial y\rangle)`,
needs one reduction per row, :math:`\langle p, \partial y\rangle`, and is split the same way.
References: Milakov and Gimelshein (2018); Tillet et al. (2019).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from ._common import (VECTOR_BYTES, aligned, alignment, exp_rows, exp_shifted, reciprocal, resident_programs, row_max,
                      row_shift, row_sum)

__all__ = ["forward_long", "backward_long", "cooperative_programs", "cooperative_config", "cooperative_settings"]

# --------------------------------------------------------------------------------------
# Looped path: one program streams a long row twice (the second read mostly from L2)
# --------------------------------------------------------------------------------------


@triton.jit
def _forward_looped(x_ptr, y_ptr, N, stride_x, stride_y,
                    BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    cols = tl.arange(0, BLOCK_N)
    m = tl.full((), float("-inf"), tl.float32)  # running maximum
    d = tl.full((), 0.0, tl.float32)  # running normaliser, relative to m
    for start in range(0, N, BLOCK_N):  # pass 1: online (m, d)
        x = tl.load(x_row + start + cols, mask=start + cols < N,
                    other=float("-inf"),
                    eviction_policy="evict_last").to(tl.float32)
        m_block = row_max(x, axis=0)
        d_block = row_sum(exp_shifted(x, m_block), axis=0)
        m_new = tl.maximum(m, m_block)
        d = d * exp_shifted(m, m_new) + d_block * exp_shifted(m_block, m_new)
        m = m_new
    inv_d = reciprocal(d)
    for start in range(0, N, BLOCK_N):  # pass 2: normalise
        mask = start + cols < N
        x = tl.load(x_row + start + cols, mask=mask, other=float("-inf"),
                    eviction_policy="evict_first").to(tl.float32)
        y = exp_shifted(x, m) * inv_d
        tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_looped(y_ptr, dy_ptr, dx_ptr, N, stride_y, stride_dy, stride_dx,
                     BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.full((BLOCK_N,), 0.0, tl.float32)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        y = tl.load(y_ptr + row * stride_y + start + cols, mask=mask,
                    other=0.0, eviction_policy="evict_last").to(tl.float32)
        dy = tl.load(dy_ptr + row * stride_dy + start + cols, mask=mask,
                     other=0.0, eviction_policy="evict_last").to(tl.float32)
        acc += y * dy
    s = row_sum(acc, axis=0)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        y = tl.load(y_ptr + row * stride_y + start + cols, mask=mask,
                    other=0.0, eviction_policy="evict_first").to(tl.float32)
        dy = tl.load(dy_ptr + row * stride_dy + start + cols, mask=mask,
                     other=0.0, eviction_policy="evict_first").to(tl.float32)
        tl.store(dx_ptr + row * stride_dx + start + cols,
                 (y * (dy - s)).to(dx_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# Split path: segments of a row in separate programs, partials merged by the online rule
# --------------------------------------------------------------------------------------


@triton.jit
def _forward_partials(x_ptr, m_ptr, d_ptr, N, stride_x, SEGMENTS,
                      BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    cols = seg * BLOCK_N + tl.arange(0, BLOCK_N)
    x = tl.load(x_ptr + row * stride_x + cols, mask=cols < N,
                other=float("-inf")).to(tl.float32)
    m = row_max(x, axis=0)
    tl.store(m_ptr + row * SEGMENTS + seg, m)
    tl.store(d_ptr + row * SEGMENTS + seg, row_sum(exp_shifted(x, m), axis=0))


@triton.jit
def _forward_merge_normalize(x_ptr, y_ptr, m_ptr, d_ptr, N, stride_x, stride_y,
                             SEGMENTS, BLOCK_N: tl.constexpr,
                             BLOCK_S: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)  # every partial of this row: (BLOCK_S,)
    m_s = tl.load(m_ptr + row * SEGMENTS + s, mask=s < SEGMENTS,
                  other=float("-inf"))
    d_s = tl.load(d_ptr + row * SEGMENTS + s, mask=s < SEGMENTS, other=0.0)
    m = row_max(m_s, axis=0)  # the online rule, all partials at once
    inv_d = reciprocal(row_sum(d_s * exp_shifted(m_s, m), axis=0))
    cols = seg * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask,
                other=float("-inf")).to(tl.float32)
    y = exp_shifted(x, m) * inv_d
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _backward_partials(y_ptr, dy_ptr, s_ptr, N, stride_y, stride_dy, SEGMENTS,
                       BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    cols = seg * BLOCK_N + tl.arange(0, BLOCK_N)
    y = tl.load(y_ptr + row * stride_y + cols, mask=cols < N,
                other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * stride_dy + cols, mask=cols < N,
                 other=0.0).to(tl.float32)
    tl.store(s_ptr + row * SEGMENTS + seg, row_sum(y * dy, axis=0))


@triton.jit
def _backward_merge(y_ptr, dy_ptr, dx_ptr, s_ptr, N, stride_y, stride_dy,
                    stride_dx, SEGMENTS, BLOCK_N: tl.constexpr,
                    BLOCK_S: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    parts = tl.arange(0, BLOCK_S)
    s = row_sum(tl.load(s_ptr + row * SEGMENTS + parts, mask=parts < SEGMENTS,
                        other=0.0), axis=0)
    cols = seg * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    y = tl.load(y_ptr + row * stride_y + cols, mask=mask,
                other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * stride_dy + cols, mask=mask,
                 other=0.0).to(tl.float32)
    tl.store(dx_ptr + row * stride_dx + cols,
             (y * (dy - s)).to(dx_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# Cooperative path: one launch, every segment held in registers, partials met in memory
# --------------------------------------------------------------------------------------


@triton.jit
def _wait_for_row(count_ptr, SEGMENTS: tl.constexpr):
    """Announce this program's partial, then wait until all SEGMENTS of the
    row have."""
    # every thread's partial stores are issued before the release
    tl.debug_barrier()
    count = tl.atomic_add(count_ptr, 1, sem="release") + 1
    while count < SEGMENTS:
        count = tl.atomic_add(count_ptr, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _forward_cooperative(x_ptr, y_ptr, m_ptr, d_ptr, count_ptr, M, N,
                         stride_x, stride_y, SEGMENTS: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
                         ALIGN: tl.constexpr, PREFETCH: tl.constexpr):
    N, stride_x, stride_y = (aligned(N, ALIGN), aligned(stride_x, ALIGN),
                             aligned(stride_y, ALIGN))
    pid = tl.program_id(0)
    groups = tl.num_programs(0) // SEGMENTS  # rows in flight at once
    # this program's segment, the same in every row it visits
    seg = pid % SEGMENTS
    cols = seg * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask = cols < N
    parts = tl.arange(0, BLOCK_S)  # (BLOCK_S,) the row's partials
    first = pid // SEGMENTS
    x_in = tl.load(x_ptr + first.to(tl.int64) * stride_x + cols,
                   mask=mask & (first < M) & PREFETCH,
                   other=float("-inf"), eviction_policy="evict_first")
    for row in range(first, M, groups):
        row64 = tl.cast(row, tl.int64)
        # the next row this program visits (maybe none: after >= M)
        after = row64 + groups
        if not PREFETCH:
            x_in = tl.load(x_ptr + row64 * stride_x + cols, mask=mask,
                           other=float("-inf"), eviction_policy="evict_first")
        x = x_in.to(tl.float32)
        m_s = row_max(x, 0)
        shift, top = row_shift(m_s)
        tl.store(m_ptr + row64 * SEGMENTS + seg, m_s)
        tl.store(d_ptr + row64 * SEGMENTS + seg,
                 row_sum(exp_rows(x, shift, top), 0))
        # the next row's segment is in flight while this row's partials meet
        if PREFETCH:
            x_in = tl.load(x_ptr + after * stride_x + cols,
                           mask=mask & (after < M),
                           other=float("-inf"), eviction_policy="evict_first")
        _wait_for_row(count_ptr + row, SEGMENTS)
        m_all = tl.load(m_ptr + row64 * SEGMENTS + parts,
                        mask=parts < SEGMENTS, other=float("-inf"),
                        volatile=True)
        d_all = tl.load(d_ptr + row64 * SEGMENTS + parts,
                        mask=parts < SEGMENTS, other=0.0, volatile=True)
        m = row_max(m_all, 0)  # the online rule over all partials of the row
        inv_d = reciprocal(row_sum(d_all * exp_shifted(m_all, m), 0))
        shift, top = row_shift(m)
        y = exp_rows(x, shift, top) * inv_d  # x never left the registers
        tl.store(y_ptr + row64 * stride_y + cols,
                 y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_cooperative(y_ptr, dy_ptr, dx_ptr, s_ptr, count_ptr, M, N,
                          stride_y, stride_dy, stride_dx,
                          SEGMENTS: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_S: tl.constexpr, ALIGN: tl.constexpr,
                          PREFETCH: tl.constexpr):
    N, stride_y = aligned(N, ALIGN), aligned(stride_y, ALIGN)
    stride_dy, stride_dx = aligned(stride_dy, ALIGN), aligned(stride_dx, ALIGN)
    pid = tl.program_id(0)
    groups = tl.num_programs(0) // SEGMENTS
    seg = pid % SEGMENTS
    cols = seg * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = cols < N
    parts = tl.arange(0, BLOCK_S)
    first = pid // SEGMENTS
    y_in = tl.load(y_ptr + first.to(tl.int64) * stride_y + cols,
                   mask=mask & (first < M) & PREFETCH, other=0.0,
                   eviction_policy="evict_first")
    dy_in = tl.load(dy_ptr + first.to(tl.int64) * stride_dy + cols,
                    mask=mask & (first < M) & PREFETCH, other=0.0,
                    eviction_policy="evict_first")
    for row in range(first, M, groups):
        row64 = tl.cast(row, tl.int64)
        after = row64 + groups
        if not PREFETCH:
            y_in = tl.load(y_ptr + row64 * stride_y + cols, mask=mask,
                           other=0.0, eviction_policy="evict_first")
            dy_in = tl.load(dy_ptr + row64 * stride_dy + cols, mask=mask,
                            other=0.0, eviction_policy="evict_first")
        y, dy = y_in.to(tl.float32), dy_in.to(tl.float32)
        tl.store(s_ptr + row64 * SEGMENTS + seg, row_sum(y * dy, 0))
        if PREFETCH:
            y_in = tl.load(y_ptr + after * stride_y + cols,
                           mask=mask & (after < M), other=0.0,
                           eviction_policy="evict_first")
            dy_in = tl.load(dy_ptr + after * stride_dy + cols,
                            mask=mask & (after < M), other=0.0,
                            eviction_policy="evict_first")
        _wait_for_row(count_ptr + row, SEGMENTS)
        s = row_sum(tl.load(s_ptr + row64 * SEGMENTS + parts,
                            mask=parts < SEGMENTS, other=0.0,
                            volatile=True), 0)
        tl.store(dx_ptr + row64 * stride_dx + cols,
                 (y * (dy - s)).to(dx_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------

#: Cooperative-path settings, measured on an H200 (Chapter 9), per direction and bytes
#: per entry: rows of up to N entries -> (bytes of storage per segment, warps per program,
#: prefetch); the last entry also holds for longer rows.  16384 bytes are 4096 float32 or
#: 8192 bfloat16 entries.  ``prefetch``: a program requests its next row's segment before it
#: waits for the other segments of the current row, so that the wait overlaps memory traffic
#: (at twice the registers for data); otherwise only after it has stored the current row.
#: ``python -m softmax_lib.bench --only tune`` times the candidates (``make tune-gpu``).
COOPERATIVE_CONFIGS = {
    ("forward", 4): [(2**20, 32768, 4, False)],
    ("forward", 2): [(2**20, 16384, 4, False)],
    ("backward", 4): [(2**20, 16384, 4, False)],
    ("backward", 2): [(2**20, 16384, 4, False)],
}


def cooperative_config(direction: str, itemsize: int, n: int) -> tuple[int, int, bool]:
    """(bytes per segment, warps per program, prefetch) of the cooperative path for rows of ``n``."""
    table = COOPERATIVE_CONFIGS[(direction, 4 if itemsize >= 4 else 2)]
    return tuple(next((c for c in table if n <= c[0]), table[-1])[1:])


@contextlib.contextmanager
def cooperative_settings(direction: str, itemsize: int, segment_bytes: int, num_warps: int, prefetch: bool):
    """Within this block, every cooperative launch of ``direction`` on entries of
    ``itemsize`` bytes uses these settings (the tuner's and the book's way to try them)."""
    key = (direction, 4 if itemsize >= 4 else 2)
    if key not in COOPERATIVE_CONFIGS:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if segment_bytes < VECTOR_BYTES or segment_bytes & (segment_bytes - 1):
        raise ValueError(f"segment_bytes must be a power of two >= {VECTOR_BYTES}, got {segment_bytes!r}")
    saved = COOPERATIVE_CONFIGS[key]
    COOPERATIVE_CONFIGS[key] = [(saved[-1][0], int(segment_bytes), int(num_warps), bool(prefetch))]
    try:
        yield
    finally:
        COOPERATIVE_CONFIGS[key] = saved


def _warps(block_n: int) -> int:
    return max(4, min(16, block_n // 512))


@functools.lru_cache(maxsize=None)
def _resident_per_sm(kernel_name: str, n_regs: int, shared: int, num_warps: int) -> int:
    """Programs of this kernel resident on one multiprocessor of this GPU at once."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    limits = dict(registers=props.regs_per_multiprocessor, threads=props.max_threads_per_multi_processor,
                  shared_bytes=getattr(props, "shared_memory_per_multiprocessor", 228 * 1024))
    return resident_programs(n_regs, shared, num_warps, limits)


def cooperative_programs(segments: int, compiled) -> int:
    """Size of the persistent grid: a multiple of ``segments`` (whole rows in
    flight) that is resident at once; 0 when a row has more segments than can
    be resident."""
    if hasattr(compiled, "_init_handles"):
        compiled._init_handles()  # loads the binary; n_regs is known only then
    per_sm = _resident_per_sm(compiled.name, compiled.n_regs,
                              compiled.metadata.shared,
                              compiled.metadata.num_warps)
    resident = per_sm * torch.cuda.get_device_properties(
        torch.cuda.current_device()).multi_processor_count
    return (resident // segments) * segments


def _cooperative(kernel, args, direction, itemsize, n, segments, block_n, m_rows, align) -> bool:
    """Launch a cooperative kernel on a grid of programs that are all resident at once;
    False (nothing launched) when one row has more segments than can be resident."""
    _, warps, prefetch = cooperative_config(direction, itemsize, n)
    meta = dict(SEGMENTS=segments, BLOCK_N=block_n, BLOCK_S=triton.next_power_of_2(segments), ALIGN=align,
                PREFETCH=prefetch, num_warps=warps)
    programs = min(cooperative_programs(segments, kernel.warmup(*args, **meta, grid=(1,))), segments * m_rows)
    if programs > 0:
        kernel[(programs,)](*args, **meta)
    return programs > 0


def forward_long(x2: torch.Tensor, y2: torch.Tensor, method: str, block_n: int) -> None:
    """Softmax of the rows of ``x2`` (M, N) into ``y2`` by ``method``: looped, split or cooperative."""
    m_rows, n = x2.shape
    segments = triton.cdiv(n, block_n)
    if method == "cooperative":
        m_part = torch.empty((m_rows, segments), dtype=torch.float32, device=x2.device)
        d_part = torch.empty_like(m_part)
        count = torch.zeros(m_rows, dtype=torch.int32, device=x2.device)
        args = (x2, y2, m_part, d_part, count, m_rows, n, x2.stride(0), y2.stride(0))
        align = alignment(x2.element_size(), n, x2.stride(0), y2.stride(0))
        if _cooperative(_forward_cooperative, args, "forward", x2.element_size(), n, segments, block_n, m_rows,
                        align):
            return
        method = "split"  # more segments than can be resident: two launches instead
    if method == "looped":
        _forward_looped[(m_rows,)](x2, y2, n, x2.stride(0), y2.stride(0), BLOCK_N=block_n,
                                   num_warps=max(4, min(16, block_n // 256)))
    elif method == "split":
        m_part = torch.empty((m_rows, segments), dtype=torch.float32, device=x2.device)
        d_part = torch.empty_like(m_part)
        grid = (m_rows, segments)
        _forward_partials[grid](x2, m_part, d_part, n, x2.stride(0), segments, BLOCK_N=block_n,
                                num_warps=_warps(block_n))
        _forward_merge_normalize[grid](x2, y2, m_part, d_part, n, x2.stride(0), y2.stride(0), segments,
                                       BLOCK_N=block_n, BLOCK_S=triton.next_power_of_2(segments),
                                       num_warps=_warps(block_n))
    else:
        raise ValueError(f"unknown long-row method {method!r}")


def backward_long(y2, dy2, dx2, method: str, block_n: int) -> None:
    """``dx = y * (dy - <y, dy>)`` for long rows by ``method``: looped, split or cooperative."""
    m_rows, n = y2.shape
    segments = triton.cdiv(n, block_n)
    if method == "cooperative":
        s_part = torch.empty((m_rows, segments), dtype=torch.float32, device=y2.device)
        count = torch.zeros(m_rows, dtype=torch.int32, device=y2.device)
        args = (y2, dy2, dx2, s_part, count, m_rows, n, y2.stride(0), dy2.stride(0), dx2.stride(0))
        align = alignment(y2.element_size(), n, y2.stride(0), dy2.stride(0), dx2.stride(0))
        if _cooperative(_backward_cooperative, args, "backward", y2.element_size(), n, segments, block_n, m_rows,
                        align):
            return
        method = "split"
    if method == "looped":
        _backward_looped[(m_rows,)](y2, dy2, dx2, n, y2.stride(0), dy2.stride(0), dx2.stride(0),
                                    BLOCK_N=block_n, num_warps=max(4, min(16, block_n // 256)))
    elif method == "split":
        s_part = torch.empty((m_rows, segments), dtype=torch.float32, device=y2.device)
        grid = (m_rows, segments)
        _backward_partials[grid](y2, dy2, s_part, n, y2.stride(0), dy2.stride(0), segments,
                                 BLOCK_N=block_n, num_warps=_warps(block_n))
        _backward_merge[grid](y2, dy2, dx2, s_part, n, y2.stride(0), dy2.stride(0), dx2.stride(0), segments,
                              BLOCK_N=block_n, BLOCK_S=triton.next_power_of_2(segments), num_warps=_warps(block_n))
    else:
        raise ValueError(f"unknown long-row method {method!r}")
