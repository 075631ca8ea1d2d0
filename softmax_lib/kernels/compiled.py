r"""Compile the book's Triton kernels for a GPU that is not here, and read the result.

Triton lowers a kernel in stages: Python, Triton IR, TritonGPU IR (the same program
with a data layout over threads), LLVM IR, PTX (NVIDIA's virtual instruction set)
and finally a cubin, the machine code that ``ptxas`` (shipped inside the triton
wheel) produces for one architecture.  None of those stages needs a GPU; only running
the result does.  So on any machine, the CI runner and a laptop included, we can ask
what an H200 (compute capability 9.0) would execute and answer questions that
decide speed before anything is timed:

* does a thread move 16 bytes per load instruction (``ld.global.v4.b32``) or one
  entry at a time (``ld.global.b32``)?
* how many registers does a thread use, and does anything **spill** to local memory
  (``STL``/``LDL`` in the machine code)?
* how much shared memory does a program take, and so how many programs can be
  resident on a multiprocessor at once?
* does a matrix product use Hopper's ``wgmma`` instructions, and do tiles arrive
  through the tensor-memory accelerator (``cp.async.bulk.tensor``)?

:func:`softmax_report` and :func:`flash_report` compile exactly what the launchers
would launch (same configuration tables, same specialisation of the arguments);
:func:`compile_kernel` compiles any kernel of this package.  When this process runs
the kernels through the interpreter (no GPU), the compilation happens in a child
Python process that imports the kernels compile-only (``SOFTMAX_LIB_COMPILE_ONLY=1``);
many requests share one child through :func:`reports`.  Used by Chapters 8 to 10.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

from .._array import check_positive_int
from . import INTERPRETED
from ._common import alignment, resident_programs

__all__ = ["KernelReport", "compile_kernel", "softmax_request", "softmax_report", "flash_request", "flash_report",
           "reports", "vector_bytes"]

#: Architectures this module compiles for: compute capability x 10 (75 = T4, the GPU
#: Colab lends by default; 80 = A100; 90 = H100/H200).
ARCHS = (75, 80, 86, 89, 90)
_DTYPES = {"float32": ("fp32", 4), "float16": ("fp16", 2), "bfloat16": ("bf16", 2)}
_QUALIFIER = re.compile(r"\.(L1|L2)::\w+")


@dataclasses.dataclass(frozen=True)
class KernelReport:
    """What the compiler made of one kernel for one architecture.

    ``registers`` and ``stack_bytes`` are per thread (a non-zero stack frame in a
    kernel without calls means spilled registers); ``shared_bytes`` per program.
    ``ptx`` and ``sass`` are the virtual and the machine assembly; ``maxnreg`` the cap on
    registers per thread it was compiled with (None: the compiler's choice).
    """

    kernel: str
    arch: int
    num_warps: int
    num_stages: int
    constexprs: dict
    registers: int
    stack_bytes: int
    shared_bytes: int
    ptx: str
    sass: str
    maxnreg: int | None = None

    def _ptx_forms(self, prefix: str) -> Counter:
        forms = re.findall(r"^\s*(?:@!?%p\d+\s+)?(" + re.escape(prefix) + r"[^\s;]*)", self.ptx, re.M)
        return Counter(_QUALIFIER.sub("", f) for f in forms)

    @property
    def global_loads(self) -> Counter:
        """PTX load instructions from global memory by form, cache hints dropped
        (``{'ld.global.v4.b32': 4}``); loads staged through ``cp.async`` are not here."""
        return self._ptx_forms("ld.global")

    @property
    def global_stores(self) -> Counter:
        """PTX store instructions to global memory by form (``{'st.global.v4.b32': 4}``)."""
        return self._ptx_forms("st.global")

    @property
    def async_copies(self) -> Counter:
        """Asynchronous copies into shared memory: ``cp.async`` (Ampere's, 4 to 16 bytes
        per thread) and ``cp.async.bulk.tensor`` (Hopper's tensor-memory accelerator)."""
        return self._ptx_forms("cp.async")

    def ptx_count(self, prefix: str) -> int:
        """Instructions in the PTX whose opcode starts with ``prefix`` (``'ex2.approx'``)."""
        return sum(self._ptx_forms(prefix).values())

    def sass_count(self, opcode: str) -> int:
        """Machine instructions with this opcode (``'STL'`` counts spill stores)."""
        return len(re.findall(r"\b" + re.escape(opcode) + r"(?:\.[\w.]+)?\s", self.sass))

    def wide_loads(self, before: str | None = None) -> int:
        """16-byte global loads in the machine code (``LDG.E.128``, any cache hint); with
        ``before``, only those ahead of the first instruction with that opcode (``"ATOMG"``:
        the loads a cooperative program issues before it announces its partial)."""
        sass = self.sass if before is None else re.split(r"\b" + re.escape(before) + r"\b", self.sass, maxsplit=1)[0]
        return len(re.findall(r"\bLDG\.E(?:\.\w+)*\.128\b", sass))

    def sass_outline(self, opcodes) -> list[tuple[str, int]]:
        """The machine code in program order, reduced to the instructions whose opcode starts
        with one of ``opcodes``, runs of the same one merged: ``[("HGMMA", 8),
        ("WARPGROUP.DEPBAR", 1), ("MUFU.EX2", 66), ...]`` (predicates and modifiers
        dropped; each name is the entry of ``opcodes`` it matched)."""
        opcodes = tuple(opcodes)
        outline: list[list] = []
        for op in re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_.]*)", self.sass):
            name = next((o for o in opcodes if op == o or op.startswith(o + ".")), None)
            if name is None:
                continue
            if outline and outline[-1][0] == name:
                outline[-1][1] += 1
            else:
                outline.append([name, 1])
        return [(name, count) for name, count in outline]

    @property
    def spill_stores(self) -> int:
        """Stores to local memory in the machine code: registers that did not fit."""
        return self.sass_count("STL")

    @property
    def async_copy_bytes(self) -> Counter:
        """Bytes per thread of each ``cp.async`` (global to shared) in the PTX: 4, 8 or 16."""
        sizes = re.findall(r"cp\.async\.c[ag]\.shared\.global\s*\[[^]]*\],\s*\[[^]]*\],\s*(0x[0-9a-fA-F]+|\d+)",
                           self.ptx)
        return Counter(int(b, 0) for b in sizes)

    @property
    def widest_global_access_bytes(self) -> int:
        """Bytes per thread of the widest global load or store instruction, ``cp.async``
        included (0 if none): 16 means whole vectors."""
        forms = list(self.global_loads) + list(self.global_stores)
        return max([vector_bytes(f) for f in forms] + list(self.async_copy_bytes), default=0)

    def register_use(self) -> str:
        """Registers per thread as a table cell: ``"127"``; ``"128 (cap 128)"`` when it was
        compiled with a cap; ``", 14 spill stores"`` added when registers did not fit."""
        text = str(self.registers)
        if self.maxnreg is not None:
            text += f" (cap {self.maxnreg})"
        spills = self.spill_stores
        if spills:
            text += f", {spills} spill store{'s' if spills != 1 else ''}"
        return text

    def resident_programs(self, limits: dict | None = None) -> int:
        """Programs resident on one multiprocessor at once (default: compute capability 9.0)."""
        return resident_programs(self.registers, self.shared_bytes, self.num_warps, limits)

    def summary(self) -> dict:
        """The numbers, without the assembly text (for tables)."""
        return dict(kernel=self.kernel, arch=self.arch, num_warps=self.num_warps, num_stages=self.num_stages,
                    registers=self.registers, stack_bytes=self.stack_bytes, spill_stores=self.spill_stores,
                    shared_bytes=self.shared_bytes, resident_per_sm=self.resident_programs(),
                    widest_access_bytes=self.widest_global_access_bytes)


def vector_bytes(form: str) -> int:
    """Bytes one thread moves with a PTX memory instruction form: ``ld.global.v4.b32`` -> 16."""
    width = re.search(r"\.[bfsu](8|16|32|64)\b", form)
    if width is None:
        raise ValueError(f"form must name an element width such as .b32, got {form!r}")
    lanes = re.search(r"\.v(2|4|8)\b", form)
    return int(width.group(1)) // 8 * (int(lanes.group(1)) if lanes else 1)


# --------------------------------------------------------------------------------------
# Requests: plain data, so that they can cross into a compile-only child process
# --------------------------------------------------------------------------------------


def _kernel_name(kernel) -> str:
    if isinstance(kernel, str):
        return kernel
    fn = getattr(kernel, "fn", kernel)
    return f"{fn.__module__}:{fn.__name__}"


def _check_arch(arch) -> int:
    if isinstance(arch, bool) or not isinstance(arch, int) or arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS} (compute capability x 10), got {arch!r}")
    return arch


def _dtype(dtype, allowed=tuple(_DTYPES)) -> tuple[str, int]:
    name = str(dtype).replace("torch.", "")
    if name not in allowed:
        raise ValueError(f"dtype must be one of {allowed}, got {dtype!r}")
    return _DTYPES[name]


def _params(kernel) -> list[tuple[str, bool]]:
    """(name, is_constexpr) of each parameter of a Triton kernel, read from its Python source."""
    import inspect

    fn = getattr(kernel, "fn", kernel)
    out = []
    for p in inspect.signature(fn).parameters.values():
        ann = p.annotation
        is_constexpr = (getattr(ann, "__name__", None) == "constexpr"
                        or (isinstance(ann, str) and ann.rsplit(".", 1)[-1] == "constexpr"))
        out.append((p.name, is_constexpr))
    return out


def _request(kernel, args: dict, constexprs: dict, num_warps: int, num_stages: int, arch: int,
             maxnreg: int | None = None) -> dict:
    if not isinstance(kernel, str):
        _signature(kernel, args, constexprs)  # complain here, not in the child process
    if maxnreg is not None and (isinstance(maxnreg, bool) or not isinstance(maxnreg, int)
                                or not 24 <= maxnreg <= 255):
        raise ValueError(f"maxnreg must be None or an int from 24 to 255, got {maxnreg!r}")
    return dict(kernel=_kernel_name(kernel), args=args, constexprs=constexprs, num_warps=int(num_warps),
                num_stages=int(num_stages), arch=_check_arch(arch), maxnreg=maxnreg)


def compile_kernel(kernel, args: dict, constexprs: dict | None = None, *, num_warps: int = 4,
                   num_stages: int = 3, arch: int = 90, maxnreg: int | None = None) -> KernelReport:
    """Compile one kernel of :mod:`softmax_lib.kernels` for ``arch`` and report on it.

    Parameters
    ----------
    kernel : Triton kernel or str
        A kernel of this package (``fused_softmax._forward_rows``) or its
        ``"module:name"``.
    args : dict
        Every runtime argument by name: a pointer as its type (``"*fp32"``, assumed
        16-byte aligned as tensors from torch's allocator are), an int by its value
        (specialised as Triton does at a launch: divisible by 16, or equal to 1), a
        float, ``None``, or a descriptor type (``"tensordesc<bf16[64, 128]>"``).
    constexprs : dict
        Values of the ``tl.constexpr`` parameters.
    num_warps, num_stages : int
        Launch options.
    arch : int
        Compute capability times ten: 90 for the H100 and H200.
    maxnreg : int, optional
        Cap on the registers per thread (as ``triton.Config(maxnreg=...)``); what does
        not fit is spilled to local memory.
    """
    return reports([_request(kernel, args, constexprs or {}, num_warps, num_stages, arch, maxnreg)])[0]


def softmax_request(n: int, dtype: str = "float32", direction: str = "forward", *, m: int | None = None,
                    arch: int = 90, sm_count: int = 132) -> dict:
    """What :func:`softmax_report` compiles, as plain data for :func:`reports` (see there)."""
    import triton

    from . import fused_softmax as fs
    from . import long_rows as lr

    n = check_positive_int(n, "n")
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    ty, itemsize = _dtype(dtype)
    m = max(1, 2**28 // n) if m is None else m
    align = alignment(itemsize, n)
    ptr = "*" + ty
    if n <= fs.MAX_FUSED:
        grid, rows, block_n, warps, stages = fs._rows_config(n, m, direction, itemsize, sm_count=sm_count)
        meta = dict(ROWS=rows, BLOCK_N=block_n, ALIGN=align)
        peel, windowed = fs._window_plan(m, n, itemsize, align, (0, 0), (n, n))  # contiguous, from torch
        if windowed:  # rows start inside vectors: the launcher reads aligned windows around them
            grid, rows, block_n, warps, stages = fs._rows_config(n, windowed, direction, itemsize,
                                                                 sm_count=sm_count, peel=peel)
            meta = dict(ROWS=rows, BLOCK_N=block_n, PEEL=peel, NUM_STAGES=stages if grid * rows < windowed else 1)
            if direction == "forward":
                args = dict(x_ptr=ptr, y_ptr=ptr, M=windowed, N=n, stride=n)
                return _request(fs._forward_peeled, args, meta, warps, 3, arch)
            args = dict(y_ptr=ptr, dy_ptr=ptr, dx_ptr=ptr, M=windowed, N=n, stride=n)
            return _request(fs._backward_peeled, args, {**meta, "NUM_STAGES": stages}, warps, 3, arch)
        if direction == "forward":
            args = dict(x_ptr=ptr, y_ptr=ptr, M=m, N=n, stride_x=n, stride_y=n)
            if grid * rows >= m:
                return _request(fs._forward_rows, args, meta, warps, 3, arch)
            return _request(fs._forward_rows_persistent, args, {**meta, "NUM_STAGES": stages}, warps, 3, arch)
        args = dict(y_ptr=ptr, dy_ptr=ptr, dx_ptr=ptr, M=m, N=n, stride_y=n, stride_dy=n, stride_dx=n)
        return _request(fs._backward_rows, args, {**meta, "NUM_STAGES": stages}, warps, 3, arch)
    block_n = fs._segment(n, None, "cooperative", itemsize, direction)  # as the launcher cuts the row
    segments = -(-n // block_n)
    _, warps, prefetch = lr.cooperative_config(direction, itemsize, n)
    meta = dict(SEGMENTS=segments, BLOCK_N=block_n, BLOCK_S=triton.next_power_of_2(segments), ALIGN=align,
                PREFETCH=prefetch)
    if direction == "forward":
        args = dict(x_ptr=ptr, y_ptr=ptr, m_ptr="*fp32", d_ptr="*fp32", count_ptr="*i32", M=m, N=n,
                    stride_x=n, stride_y=n)
        return _request(lr._forward_cooperative, args, meta, warps, 3, arch)
    args = dict(y_ptr=ptr, dy_ptr=ptr, dx_ptr=ptr, s_ptr="*fp32", count_ptr="*i32", M=m, N=n, stride_y=n,
                stride_dy=n, stride_dx=n)
    return _request(lr._backward_cooperative, args, meta, warps, 3, arch)


def softmax_report(n: int, dtype: str = "float32", direction: str = "forward", *, m: int | None = None,
                   arch: int = 90, sm_count: int = 132) -> KernelReport:
    """The kernel :func:`softmax_lib.kernels.softmax` would launch for ``m`` rows of ``n``
    entries (default ``2**28 // n`` rows, the benchmark's), compiled for ``arch``.

    Rows up to ``MAX_FUSED`` entries: the fused kernel with the configuration table's
    settings; longer rows: the cooperative kernel (Chapter 9).  ``sm_count`` is the
    GPU's number of multiprocessors (132 on an H200), which decides whether the fused
    grid is persistent.
    """
    return reports([softmax_request(n, dtype, direction, m=m, arch=arch, sm_count=sm_count)])[0]


def flash_request(head_dim: int = 128, dtype: str = "bfloat16", *, kernel: str = "fwd", block_m: int = 128,
                  block_n: int = 64, num_warps: int = 8, num_stages: int = 3, causal: bool = False,
                  tma: bool = True, arch: int = 90, maxnreg: int | None = None) -> dict:
    """What :func:`flash_report` compiles, as plain data for :func:`reports` (see there)."""
    from . import flash

    if head_dim not in (16, 32, 64, 128):
        raise ValueError(f"head_dim must be 16, 32, 64 or 128, got {head_dim!r}")
    ty, _ = _dtype(dtype)
    blocks = {"fwd": ("BLOCK_M", "BLOCK_N"), "dkdv": ("BLOCK_M1", "BLOCK_N1"), "dq": ("BLOCK_M2", "BLOCK_N2")}
    if kernel not in blocks:
        raise ValueError(f"kernel must be one of {tuple(blocks)}, got {kernel!r}")
    ptr = "*" + ty
    meta = {"HEAD_DIM": head_dim, blocks[kernel][0]: block_m, blocks[kernel][1]: block_n, "CAUSAL": bool(causal)}
    if kernel == "fwd":
        desc = f"tensordesc<{ty}[{block_n}, {head_dim}]>" if tma else None
        args = dict(Q=ptr, K=ptr, V=ptr, O=ptr, LSE="*fp32", Kd=desc, Vd=desc, L=4096, qk_scale=0.1)
        return _request(flash._attn_fwd, args, {**meta, "USE_TMA": bool(tma)}, num_warps, num_stages, arch,
                        maxnreg)
    names = ["Q", "K", "V", "DO"] + (["DK", "DV"] if kernel == "dkdv" else ["DQ"])
    args = {**{k: ptr for k in names}, "LSE": "*fp32", "Delta": "*fp32", "L": 4096, "qk_scale": 0.1, "sm_scale": 0.1}
    fn = flash._attn_bwd_dkdv if kernel == "dkdv" else flash._attn_bwd_dq
    return _request(fn, args, meta, num_warps, num_stages, arch, maxnreg)


def flash_report(head_dim: int = 128, dtype: str = "bfloat16", *, kernel: str = "fwd", block_m: int = 128,
                 block_n: int = 64, num_warps: int = 8, num_stages: int = 3, causal: bool = False,
                 tma: bool = True, arch: int = 90, maxnreg: int | None = None) -> KernelReport:
    """A FlashAttention kernel (``"fwd"``, ``"dkdv"`` or ``"dq"``, Chapter 10) compiled for
    ``arch`` with one block configuration (the autotuner's candidates are
    ``flash._TUNING``).  ``tma``: the forward loads key/value tiles through tensor
    descriptors, as it does on Hopper; ``maxnreg`` caps the registers per thread."""
    return reports([flash_request(head_dim, dtype, kernel=kernel, block_m=block_m, block_n=block_n,
                                  num_warps=num_warps, num_stages=num_stages, causal=causal, tma=tma,
                                  arch=arch, maxnreg=maxnreg)])[0]


# --------------------------------------------------------------------------------------
# Compiling
# --------------------------------------------------------------------------------------


def reports(requests: list[dict]) -> list[KernelReport]:
    """Compile many requests in one go (from :func:`softmax_request`, :func:`flash_request`).

    In an interpreted process they are sent together to one compile-only child, so
    the price of starting Python with torch and triton is paid once; results are
    cached for the life of the process.

    Examples
    --------
    >>> from softmax_lib.kernels import compiled
    >>> a, b = compiled.reports([compiled.softmax_request(1024), compiled.softmax_request(20001)])
    >>> a.widest_global_access_bytes, b.widest_global_access_bytes  # 16-byte vectors, then 4-byte floats
    (16, 4)
    """
    keys = [json.dumps(r, sort_keys=True) for r in requests]
    missing = [k for k in dict.fromkeys(keys) if k not in _CACHE]
    if missing:
        results = _compile_in_child(missing) if INTERPRETED else [_compile_here(json.loads(k)) for k in missing]
        _CACHE.update(zip(missing, results))
    return [KernelReport(**_CACHE[k]) for k in keys]


_CACHE: dict[str, dict] = {}


def _compile_in_child(keys: list[str]) -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "0", "SOFTMAX_LIB_COMPILE_ONLY": "1"}
    proc = subprocess.run([sys.executable, "-m", "softmax_lib.kernels.compiled"], input=json.dumps(keys),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the kernels in a child process failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def _signature(fn, args: dict, constexprs: dict):
    """Triton's signature, constants and divisibility attributes for these arguments,
    specialised as a launch would be (ints divisible by 16, ints equal to 1)."""
    signature, constants, attrs = {}, dict(constexprs), {}
    for i, (name, is_constexpr) in enumerate(_params(fn)):
        if is_constexpr:
            signature[name] = "constexpr"
            if name not in constants:
                raise ValueError(f"constexprs must give {name!r}")
            continue
        if name not in args:
            raise ValueError(f"args must give {name!r}")
        value = args[name]
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == 1):
            signature[name], constants[name] = "constexpr", value
        elif isinstance(value, str):
            signature[name] = value
            if value.startswith("*"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            raise TypeError(f"args[{name!r}] must be an int, a float, a type string or None, got a bool")
        elif isinstance(value, int):
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"args[{name!r}] must be an int, a float, a type string or None, got {value!r}")
    return signature, constants, attrs


def _tool(name: str) -> str:
    import triton

    knobs = getattr(triton, "knobs", None)
    path = getattr(getattr(getattr(knobs, "nvidia", None), name, None), "path", None)
    if path:
        return path
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _compile_here(request: dict) -> dict:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name = request["kernel"].split(":")
    fn = getattr(importlib.import_module(module), name)
    signature, constants, attrs = _signature(fn, request["args"], request["constexprs"])
    src = ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    target = GPUTarget("cuda", request["arch"], 32)
    options = dict(num_warps=request["num_warps"], num_stages=request["num_stages"])
    if request.get("maxnreg") is not None:
        options["maxnreg"] = request["maxnreg"]
    compiled = triton.compile(src, target=target, options=options)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = _run([_tool("cuobjdump"), "--dump-resource-usage", cubin])
        sass = _run([_tool("cuobjdump"), "--dump-sass", cubin])
    registers = int(re.search(r"REG:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    return dict(kernel=request["kernel"], arch=request["arch"], num_warps=request["num_warps"],
                num_stages=request["num_stages"], constexprs=request["constexprs"], registers=registers,
                stack_bytes=stack, shared_bytes=int(compiled.metadata.shared), ptx=compiled.asm["ptx"], sass=sass,
                maxnreg=request.get("maxnreg"))


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _main() -> int:
    keys = json.loads(sys.stdin.read())
    json.dump([_compile_here(json.loads(k)) for k in keys], sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
