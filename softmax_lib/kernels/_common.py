"""Small Triton helpers shared by the kernels (Chapters 8 to 10).

Reductions call ``tl.reduce`` directly rather than ``tl.max`` and ``tl.sum``: those
two (and ``tl.zeros``, for which the kernels write ``tl.full``) are ``@triton.jit``
functions inside ``triton.language``, compiled for the GPU when triton was imported
before ``TRITON_INTERPRET`` was set, and the interpreter cannot call them then.  We pass triton's own combine functions, which the
interpreter recognises and replaces by NumPy's vectorised (pairwise) reductions;
on a GPU the generated code is exactly that of ``tl.max`` and ``tl.sum``.
"""

import math

import triton
import triton.language as tl

#: Bytes of the widest vector load and store a thread issues (``ld.global.v4.b32``).
VECTOR_BYTES = 16


def alignment(itemsize: int, *extents: int) -> int:
    """Largest power of two, at most one 16-byte vector of entries, dividing every extent.

    The launchers pass it as the ``ALIGN`` meta-parameter of a kernel, which rewrites
    each row length and stride ``n`` as ``n // ALIGN * ALIGN`` (:func:`aligned`): the
    same number, but now the compiler can prove that rows start and end on whole
    vectors and may load and store them 16 bytes at a time.  Triton proves this by
    itself only for extents divisible by 16; a row of 1000 float32 entries would
    otherwise be read one entry per instruction (Chapter 8).
    """
    vec = VECTOR_BYTES // itemsize
    g = math.gcd(vec, *extents)
    return 1 << (g.bit_length() - 1)  # g divides a power of two, so it is one


#: Per-multiprocessor limits of compute capability 9.0 (H100, H200): 64K 32-bit registers,
#: 2048 threads, 228 KiB of shared memory (1 KiB of it reserved for each program), 32
#: programs (CUDA C++ Programming Guide, technical specifications per compute capability).
SM90_LIMITS = dict(registers=65536, threads=2048, shared_bytes=233472, reserved_shared_bytes=1024,
                   programs=32)


def resident_programs(registers: int, shared_bytes: int, num_warps: int, limits: dict | None = None) -> int:
    """Programs (thread blocks) of one kernel that fit on a multiprocessor at once.

    The smallest of what the registers, the threads, the shared memory and the
    scheduler allow.  Registers are granted per warp in units of 256, so a kernel
    using ``r`` registers per thread takes ``ceil(32 r / 256) * 256`` per warp.
    ``limits`` defaults to :data:`SM90_LIMITS`.
    """
    lim = {**SM90_LIMITS, **(limits or {})}
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = lim["registers"] // (regs_per_warp * num_warps)
    by_threads = lim["threads"] // (32 * num_warps)
    by_smem = lim["shared_bytes"] // (shared_bytes + lim["reserved_shared_bytes"])
    return max(0, min(by_regs, by_threads, by_smem, lim["programs"]))


@triton.jit
def aligned(n, ALIGN: tl.constexpr):
    """``n`` unchanged (it is a multiple of ALIGN), in a form whose
    divisibility the compiler can see; see :func:`alignment`."""
    return n // ALIGN * ALIGN


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _larger(a, b):
    return tl.maximum(a, b)


# triton's own combine functions where this version has them (3.x does).
_SUM_COMBINE = getattr(tl.standard, "_sum_combine", _add)
_MAX_COMBINE = getattr(tl.standard, "_elementwise_max", _larger)


@triton.jit
def row_sum(x, axis: tl.constexpr):
    """Sum along ``axis``."""
    return tl.reduce(x, axis, _SUM_COMBINE)


@triton.jit
def row_max(x, axis: tl.constexpr):
    """Maximum along ``axis``."""
    return tl.reduce(x, axis, _MAX_COMBINE)


@triton.jit
def exp_shifted(x, m):
    """exp(x - m) with the core's edge rules: 0 when the maximum m is -inf
    (an empty row), 1 where x == m (so x = m = +inf gives 1, not exp(nan))."""
    e = tl.where(x == m, 1.0, tl.exp(x - m))
    return tl.where(m == float("-inf"), 0.0, e)


@triton.jit
def row_shift(m):
    """Per-row constants of the exponential ``exp2((x - shift) * log2(e))``.

    Returns ``(shift, top)``: ``shift = m``, or 0 for an empty row (m = -inf,
    whose entries are all -inf and give exp2(-inf) = 0), and ``top``, equal
    to m only when m is +inf (NaN otherwise, so ``x == top`` is never true for
    a finite row).  In a row whose maximum is +inf the finite entries give
    exp2(-inf) = 0 and the +inf entries 1: the limit, as in the core."""
    shift = tl.where(m == float("-inf"), 0.0, m)
    top = tl.where(m == float("inf"), m, float("nan"))
    return shift, top


@triton.jit
def exp_rows(x, shift, top):
    """exp(x - m) for a tile, from :func:`row_shift`'s per-row constants: a
    subtraction, a multiply and one ``ex2`` per entry (the special-function
    unit's instruction).  Subtracting first keeps every logit usable: the
    shorter ``x * log2(e) - m * log2(e)`` (one fused multiply-add) overflows
    to NaN for logits beyond 2.4e38, and where it is not fused (Triton's
    interpreter) it rounds both products, an error that grows with |m|."""
    e = tl.math.exp2((x - shift) * 1.4426950408889634)
    return tl.where(x == top, 1.0, e)


@triton.jit
def reciprocal(d):
    """1 / d, and 0 for an empty row (d == 0); a NaN stays NaN."""
    return tl.where(d == 0.0, 0.0, 1.0 / d)


# --------------------------------------------------------------------------------------
# Rows that do not start on a 16-byte boundary: read whole vectors around them
# --------------------------------------------------------------------------------------


def peel_width(itemsize: int, n: int, align: int, pointers, strides) -> int:
    """``PEEL`` for a launch: entries per 16-byte vector when rows of ``n`` entries should be
    read through aligned windows (:func:`row_window`), 0 when they need not or cannot be.

    It pays when ``align`` (:func:`alignment`) is below a whole vector, i.e. rows start
    inside vectors, and the rows hold at least four vectors.  It is possible when every
    tensor starts on a 16-byte boundary and all share one row stride: then a row sits
    at the same place within its vectors in each of them.
    """
    vec = VECTOR_BYTES // itemsize
    if align >= vec or n < 4 * vec or len(set(strides)) != 1 or any(int(p) % VECTOR_BYTES for p in pointers):
        return 0
    return vec


def window_rows(m: int, n: int, stride: int, peel: int) -> int:
    """How many leading rows of an ``(m, n)`` tensor with row ``stride`` can be read through
    aligned windows without reading past its last entry: a window ends on the vector
    boundary at or after its row's end, so the rows ending inside the tensor's last,
    partial vector (if it has one) are left to the kernel that reads entry by entry."""
    total = (m - 1) * stride + n
    last = total // peel * peel  # the last vector boundary inside the tensor
    if last == total:
        return m
    return max(0, min(m, (last - n) // stride + 1)) if last >= n else 0


@triton.jit
def row_window(rows, stride, N, PEEL: tl.constexpr):
    """Where each row ``[start, start + N)`` sits in the whole vectors
    around it.

    Returns ``(window, lead, n_window, lo, hi)``: the window starts at
    ``window``, the vector boundary at or before the row, and holds
    ``n_window`` entries up to the boundary at or after its end (so it reads
    up to ``PEEL - 1`` entries of the rows on either side); the row is window
    entries ``[lead, lead + N)``, of which ``[lo, hi)`` are whole vectors
    (empty when ``hi <= lo``).  Every boundary is written as
    ``// PEEL * PEEL`` so that the compiler sees the multiples of ``PEEL``
    and may move the window, and store the whole vectors, 16 bytes at a
    time.
    """
    start = rows * stride
    window = start // PEEL * PEEL
    lead = start - window
    n_window = ((start + N + PEEL - 1) // PEEL * PEEL - window) // PEEL * PEEL
    lo = (lead + PEEL - 1) // PEEL * PEEL
    hi = (start + N - window) // PEEL * PEEL
    return window, lead, n_window, lo, hi
