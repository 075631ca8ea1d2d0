"""The kernels compiled for an H100/H200 (compute capability 9.0) on a machine without one.

The interpreter checks what the kernels compute; these tests check what a GPU would
be given to run, which the interpreter never sees: every configuration the launchers
can choose compiles with the installed Triton, fits the multiprocessor (registers,
shared memory), moves whole 16-byte vectors where the row length allows it, and the
attention kernels use Hopper's ``wgmma`` tensor-core instructions.  The oracle is the
compiler's own output (PTX and the cubin's resource table), read back with
``cuobjdump``; the expected numbers come from the hardware's limits and from
divisibility arithmetic, not from the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from softmax_lib import bench_softmax  # noqa: E402
from softmax_lib.kernels import compiled as C  # noqa: E402
from softmax_lib.kernels import flash  # noqa: E402
from softmax_lib.kernels import fused_softmax as fs  # noqa: E402
from softmax_lib.kernels import long_rows as lr  # noqa: E402

#: Shared memory one program may use on compute capability 9.0 (227 KiB).
MAX_SHARED_PER_PROGRAM = 232448
#: Row lengths that reach every entry of the configuration tables, plus irregular ones.
SOFTMAX_NS = sorted({c[0] for table in fs.FUSED_CONFIGS.values() for c in table}
                    | {256, 781, 1000, 12345, 65536, 100000, 2**20})
SOFTMAX_CASES = [(n, dtype, direction) for n in SOFTMAX_NS for dtype in ("float32", "bfloat16")
                 for direction in ("forward", "backward")]
FLASH_CASES = [(kernel, d, flash._candidate(cfg)) for kernel in ("fwd", "dkdv", "dq") for d in (64, 128)
               for cfg in flash._TUNING[kernel][d]]
#: Autotuning candidates that spill a little and stay, because they won on the H200.
ALLOWED_TO_SPILL = {("dkdv", 64, (32, 128, 4, 3, None))}
#: The causal kernels carry a second loop stage (the diagonal tiles) and hold more values
#: in registers. Stack bytes allowed where a causal candidate spills a little: the d = 64
#: forward's (128, 128, 4, 3) and the d = 128 dkdv's (64, 128, 8, 3) (the latter under
#: triton 3.6 only) won the causal shapes with L >= 4096 on the H200; the capped
#: (128, 64, 8, 2, 128) is unmeasured, an 8-byte stack, and the autotuner decides.
CAUSAL_ALLOWED_STACK = {("fwd", 64, (128, 128, 4, 3, None)): 8, ("fwd", 128, (128, 64, 8, 2, 128)): 8,
                        ("dkdv", 64, (32, 128, 4, 3, None)): 64, ("dkdv", 128, (64, 128, 8, 3, None)): 40}


@pytest.fixture(scope="module")
def softmax_reports():
    requests = [C.softmax_request(n, dtype, direction) for n, dtype, direction in SOFTMAX_CASES]
    return dict(zip(SOFTMAX_CASES, C.reports(requests)))


def _tile_request(kernel, d, dtype, cfg, **options):
    """flash_request for a tile given as (block_m, block_n, num_warps, num_stages[, maxnreg])."""
    cfg = flash._candidate(cfg)
    return C.flash_request(d, dtype, kernel=kernel, block_m=cfg[0], block_n=cfg[1], num_warps=cfg[2],
                           num_stages=cfg[3], maxnreg=cfg[4], **options)


@pytest.fixture(scope="module")
def flash_reports():
    requests = [_tile_request(kernel, d, "bfloat16", cfg) for kernel, d, cfg in FLASH_CASES]
    return dict(zip([(k, d, cfg) for k, d, cfg in FLASH_CASES], C.reports(requests)))


@pytest.fixture(scope="module")
def causal_flash_reports():
    requests = [_tile_request(kernel, d, "bfloat16", cfg, causal=True) for kernel, d, cfg in FLASH_CASES]
    return dict(zip([(k, d, cfg) for k, d, cfg in FLASH_CASES], C.reports(requests)))


@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=[f"{n}-{t}-{d}" for n, t, d in SOFTMAX_CASES])
def test_every_softmax_configuration_compiles_and_fits_a_multiprocessor(softmax_reports, case):
    report = softmax_reports[case]
    assert report.arch == 90
    assert 0 < report.registers <= 255
    assert report.shared_bytes <= MAX_SHARED_PER_PROGRAM
    assert report.resident_programs() >= 1
    if report.kernel.endswith("_cooperative"):
        # every segment of a row must be resident at once on the 132 multiprocessors, or the
        # programs waiting for each other never finish (the launcher falls back to "split")
        segments = report.constexprs["SEGMENTS"]
        assert report.resident_programs() * 132 >= segments


@pytest.mark.parametrize("n", SOFTMAX_NS)
@pytest.mark.parametrize("dtype, itemsize", [("float32", 4), ("bfloat16", 2)])
def test_rows_move_in_16_byte_vectors_where_their_length_or_a_window_allows(softmax_reports, n, dtype, itemsize):
    # a whole vector of 16 bytes holds 16 / itemsize entries; rows start on one only if
    # that number divides the row length (the storage is contiguous); other rows of at
    # least four vectors are read through windows of whole vectors, up to 16K entries
    vector_entries = 16 // itemsize
    window = 1 << (n + 2 * (vector_entries - 1) - 1).bit_length()
    for direction in ("forward", "backward"):
        report = softmax_reports[(n, dtype, direction)]
        if n % vector_entries == 0 or (n >= 4 * vector_entries and window <= 16384):
            expected = 16
        else:
            expected = itemsize * (n & -n if n % 2 == 0 else 1)
        assert report.widest_global_access_bytes == min(16, expected), (direction, report.summary())
        if report.kernel.endswith("_peeled"):  # every load is a whole vector; only the ends are stored singly
            assert set(report.global_loads) <= {"ld.global.v4.b32"}
            assert set(report.async_copy_bytes) <= {16}
            assert "st.global.v4.b32" in report.global_stores
            assert report.spill_stores == 0


#: Row lengths that start inside vectors, up to the longest window (16K entries).
WINDOW_CASES = [(n, dtype, direction) for n in (67, 255, 1001, 2047, 3001, 6001, 8185, 16369)
                for dtype in ("float32", "bfloat16") for direction in ("forward", "backward")]


def test_window_kernels_fit_a_multiprocessor_without_spilling():
    for case, report in zip(WINDOW_CASES, C.reports([C.softmax_request(*case) for case in WINDOW_CASES])):
        assert report.kernel.endswith("_peeled"), case
        assert report.spill_stores == 0 and report.registers <= 255 and report.resident_programs() >= 1, (
            case, report.summary())


def test_the_align_hint_is_what_vectorizes_a_row_of_1000():
    args = dict(x_ptr="*fp32", y_ptr="*fp32", M=4096, N=1000, stride_x=1000, stride_y=1000)
    meta = dict(ROWS=4, BLOCK_N=1024)
    plain = C.compile_kernel(fs._forward_rows, args, {**meta, "ALIGN": 1}, num_warps=8)
    hinted = C.compile_kernel(fs._forward_rows, args, {**meta, "ALIGN": 4}, num_warps=8)
    assert set(plain.global_loads) == {"ld.global.b32"} and set(plain.global_stores) == {"st.global.b32"}
    assert set(hinted.global_loads) == {"ld.global.v4.b32"} and set(hinted.global_stores) == {"st.global.v4.b32"}
    # 4 rows x 1024 columns over 256 threads: 16 entries each, in 16 or in 4 instructions
    assert sum(plain.global_loads.values()) == 16 and sum(hinted.global_loads.values()) == 4


def test_exp_is_the_special_function_units_ex2():
    report = C.softmax_report(1024, "float32", "forward")
    # 8 rows x 1024 entries over 512 threads: 16 exponentials per thread, one ex2 each
    assert report.ptx_count("ex2.approx") == 16
    assert report.sass_count("MUFU.EX2") >= 16


@pytest.mark.parametrize("case", FLASH_CASES, ids=[f"{k}-d{d}-{c}" for k, d, c in FLASH_CASES])
def test_every_attention_configuration_uses_wgmma_and_does_not_spill(flash_reports, case):
    report = flash_reports[case]
    assert report.ptx_count("wgmma.mma_async") > 0
    assert report.ptx_count("mma.sync") == 0
    if case in ALLOWED_TO_SPILL:  # measured on the H200 to win some shapes all the same
        assert report.stack_bytes <= 64
    else:
        assert report.spill_stores == 0 and report.stack_bytes == 0
    assert report.shared_bytes <= MAX_SHARED_PER_PROGRAM
    assert report.resident_programs() >= 1


@pytest.mark.parametrize("case", FLASH_CASES, ids=[f"{k}-d{d}-{c}" for k, d, c in FLASH_CASES])
def test_every_causal_attention_configuration_uses_wgmma_and_spills_a_few_bytes_at_most(causal_flash_reports, case):
    report = causal_flash_reports[case]
    assert report.constexprs["CAUSAL"] is True
    assert report.ptx_count("wgmma.mma_async") > 0 and report.ptx_count("mma.sync") == 0
    allowed = CAUSAL_ALLOWED_STACK.get(case, 0)
    assert report.stack_bytes <= allowed
    if not allowed:
        assert report.spill_stores == 0
    assert report.shared_bytes <= MAX_SHARED_PER_PROGRAM
    assert report.resident_programs() >= 1


def test_the_two_program_tiles_hold_two_programs_in_causal_attention_too(causal_flash_reports):
    # same occupancy oracle as below; the causal kernel needs more registers, hence the caps
    for cfg in ((128, 64, 8, 2, 128), (128, 32, 8, 3, 128)):
        report = causal_flash_reports[("fwd", 128, cfg)]
        assert report.registers <= 128 and report.resident_programs() == 2
        assert 2 * 32 * report.num_warps * report.registers <= 65536
    uncapped = C.flash_report(128, "bfloat16", block_m=128, block_n=32, num_warps=8, num_stages=3, causal=True)
    assert uncapped.registers > 128 and uncapped.resident_programs() == 1  # why (128, 32) carries a cap


def test_attention_forward_loads_key_and_value_tiles_through_the_tma_on_hopper(flash_reports):
    report = flash_reports[("fwd", 128, flash._candidate(flash._TUNING["fwd"][128][0]))]
    bulk = [f for f in report.async_copies if f.startswith("cp.async.bulk.tensor")]
    assert bulk, dict(report.async_copies)


def test_the_forward_candidates_for_d128_include_two_programs_per_multiprocessor(flash_reports):
    # every other d = 128 candidate holds one program of two warp groups per multiprocessor;
    # these exist so that two independent programs can share one (Chapter 10). Oracle: the
    # occupancy rules (65,536 registers, 228 KiB of shared memory, 1 KiB reserved per program)
    two = [cfg for kernel, d, cfg in FLASH_CASES if kernel == "fwd" and d == 128
           and flash_reports[(kernel, d, cfg)].resident_programs() == 2]
    assert (128, 64, 8, 2, 128) in two and (128, 32, 8, 3, 128) in two
    for cfg in two:
        report = flash_reports[("fwd", 128, cfg)]
        threads = 32 * report.num_warps
        assert 2 * threads * report.registers <= 65536
        assert 2 * (report.shared_bytes + 1024) <= 228 * 1024
    capped = flash_reports[("fwd", 128, (128, 64, 8, 2, 128))]
    assert capped.maxnreg == 128 and capped.registers <= 128 and capped.spill_stores == 0
    uncapped = C.flash_report(128, "bfloat16", block_m=128, block_n=64, num_warps=8, num_stages=2)
    assert uncapped.registers > 128 and uncapped.resident_programs() == 1  # why the cap is there


def test_maxnreg_must_be_a_register_count():
    for bad in (0, 256, 12.5, True):
        with pytest.raises(ValueError, match="maxnreg must be None or an int from 24 to 255"):
            C.flash_request(128, maxnreg=bad)


def test_sass_outline_keeps_the_named_opcodes_in_order_and_merges_runs():
    sass = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   WARPGROUP.ARRIVE ;
        /*0020*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT ;
        /*0030*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0 ;
        /*0040*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0050*/              @!P0 MUFU.EX2 R3, R3 ;
        /*0060*/                   FMUL R4, R4, R5 ;
        /*0070*/               @P1 MUFU.EX2 R6, R6 ;
        /*0080*/                   MUFU.RCP R7, R7 ;
        /*0090*/                   MUFU.EX2 R8, R8 ;
        /*00a0*/                   HGMMAX R0 ;
    """
    report = C.KernelReport(kernel="k", arch=90, num_warps=4, num_stages=1, constexprs={}, registers=32,
                            stack_bytes=0, shared_bytes=0, ptx="", sass=sass)
    # instructions not asked for are dropped, so the three exponentials form one run;
    # MUFU.RCP and HGMMAX are other opcodes, not modifiers of the ones asked for
    assert report.sass_outline(["HGMMA", "WARPGROUP.DEPBAR", "MUFU.EX2"]) == [
        ("HGMMA", 2), ("WARPGROUP.DEPBAR", 1), ("MUFU.EX2", 3)]
    assert report.sass_outline(["MUFU"]) == [("MUFU", 4)]


def test_register_use_names_the_cap_and_counts_the_spill_stores_in_the_machine_code():
    def report(registers, sass, maxnreg=None):
        return C.KernelReport(kernel="k", arch=90, num_warps=4, num_stages=1, constexprs={},
                              registers=registers, stack_bytes=0, shared_bytes=0, ptx="",
                              sass=sass, maxnreg=maxnreg)

    fits = "        /*0000*/                   FMUL R4, R4, R5 ;\n"
    spill = "        /*0010*/                   STL [R1+0x4], R6 ;\n"
    assert report(127, fits).register_use() == "127"
    assert report(128, fits, maxnreg=128).register_use() == "128 (cap 128)"
    assert report(255, fits + spill).register_use() == "255, 1 spill store"
    assert report(96, fits + spill * 3, maxnreg=96).register_use() == "96 (cap 96), 3 spill stores"


#: Shared memory one program may use on a T4 (compute capability 7.5): 64 KiB.
T4_SHARED_PER_PROGRAM = 65536


def _fixed_then_smaller(kernel):
    """A GPU's fixed tile of ``kernel`` and the smaller ones after it, as tuples."""
    names = flash._BLOCK_NAMES[kernel]
    fixed = flash._GPU_FIXED[kernel]
    first = (fixed[names[0]], fixed[names[1]], fixed["num_warps"], fixed["num_stages"])
    return [first, *flash._SMALLER[kernel]]


T4_CASES = [(kernel, dtype, cfg) for kernel in ("fwd", "dkdv", "dq") for dtype in ("float16", "float32")
            for cfg in _fixed_then_smaller(kernel)]


@pytest.fixture(scope="module")
def t4_reports():
    # d = 128 and causal: the most shared memory any of these tiles asks for
    t4 = dict(causal=True, tma=False, arch=75)
    requests = [_tile_request(kernel, 128, dtype, cfg, **t4) for kernel, dtype, cfg in T4_CASES]
    requests += [_tile_request(kernel, 128, "float16", cfg, **t4)
                 for kernel in ("fwd", "dkdv", "dq") for cfg in flash._SMALL_TUNING[kernel]]
    keys = T4_CASES + [(kernel, "tuning", cfg) for kernel in ("fwd", "dkdv", "dq")
                       for cfg in flash._SMALL_TUNING[kernel]]
    return dict(zip(keys, C.reports(requests)))


@pytest.mark.parametrize("kernel", ["fwd", "dkdv", "dq"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_on_a_t4_a_fixed_launch_finds_a_tile_that_fits_its_64_kib(t4_reports, kernel, dtype):
    # Colab's default GPU: the fixed tile of a short or float32 launch may not fit there
    # (it does not at d = 128); the launcher then takes the first smaller one that does.
    shared = {cfg: t4_reports[(kernel, dtype, cfg)].shared_bytes for cfg in _fixed_then_smaller(kernel)}
    chosen = flash._first_fitting(list(shared), shared.get, T4_SHARED_PER_PROGRAM)
    assert shared[chosen] <= T4_SHARED_PER_PROGRAM, shared


@pytest.mark.parametrize("kernel", ["fwd", "dkdv", "dq"])
def test_on_a_t4_the_autotuner_has_a_candidate_that_fits(t4_reports, kernel):
    # the autotuner skips candidates that run out of shared memory; one must remain
    fits = [t4_reports[(kernel, "tuning", cfg)].shared_bytes <= T4_SHARED_PER_PROGRAM
            for cfg in flash._SMALL_TUNING[kernel]]
    assert any(fits)


def test_on_hopper_the_fixed_tiles_fit_so_nothing_smaller_is_launched():
    # float32 at d = 128 asks the most of them; the H200 keeps the fixed tile
    requests = [_tile_request(k, 128, "float32", _fixed_then_smaller(k)[0], causal=True, tma=False)
                for k in flash._GPU_FIXED]
    for report in C.reports(requests):
        assert report.shared_bytes <= MAX_SHARED_PER_PROGRAM


def test_first_fitting_takes_the_first_that_fits_and_the_last_when_none_does():
    sizes = {"a": 90, "b": 70, "c": 50}
    assert flash._first_fitting(["a", "b", "c"], sizes.get, 80) == "b"
    assert flash._first_fitting(["a", "b", "c"], sizes.get, 100) == "a"
    assert flash._first_fitting(["a", "b", "c"], sizes.get, 10) == "c"
    assert flash._first_fitting(["a", "b"], sizes.get, None) == "a"  # limit unknown: the first


def test_on_an_a100_the_same_kernel_uses_mma_sync_instead():
    report = C.flash_report(64, "float16", block_m=128, block_n=64, num_warps=4, num_stages=3, tma=False,
                            arch=80)
    assert report.ptx_count("mma.sync") > 0 and report.ptx_count("wgmma") == 0


@pytest.mark.parametrize("form, expected", [("ld.global.v4.b32", 16), ("ld.global.b16", 2),
                                            ("st.global.v2.b32", 8), ("ld.global.gpu.acquire.b32", 4),
                                            ("st.global.v4.b16", 8)])
def test_vector_bytes_reads_the_lanes_and_the_width(form, expected):
    assert C.vector_bytes(form) == expected


@pytest.mark.parametrize("call, message", [
    (lambda: C.softmax_report(0), "n must be >= 1"),
    (lambda: C.softmax_report(1024, "int8"), "dtype must be one of"),
    (lambda: C.softmax_report(1024, direction="sideways"), "direction must be"),
    (lambda: C.softmax_report(1024, arch=70), "arch must be one of"),
    (lambda: C.flash_report(48), "head_dim must be"),
    (lambda: C.flash_report(64, kernel="bwd"), "kernel must be one of"),
    (lambda: C.vector_bytes("ld.global"), "form must name an element width"),
])
def test_bad_arguments_are_value_errors_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_compile_kernel_names_a_missing_argument():
    with pytest.raises(ValueError, match="args must give 'stride_y'"):
        C.compile_kernel(fs._forward_rows, dict(x_ptr="*fp32", y_ptr="*fp32", M=8, N=8, stride_x=8),
                         dict(ROWS=1, BLOCK_N=8, ALIGN=4))


def test_kernels_imported_compile_only_refuse_to_run():
    code = ("import torch\nfrom softmax_lib import kernels\nassert kernels.COMPILE_ONLY and not kernels.INTERPRETED\n"
            "try:\n    kernels.softmax(torch.ones(3))\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    env = {**os.environ, "SOFTMAX_LIB_COMPILE_ONLY": "1", "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "refused:" in out.stdout and "SOFTMAX_LIB_COMPILE_ONLY" in out.stdout


def test_cooperative_settings_come_from_the_table():
    report = C.softmax_report(2**20, "bfloat16", "forward")
    seg_bytes, warps, prefetch = lr.cooperative_config("forward", 2, 2**20)
    assert report.constexprs["BLOCK_N"] == seg_bytes // 2 and report.num_warps == warps
    assert report.constexprs["PREFETCH"] == prefetch


#: Every setting the tuner may time, at the longest row the benchmark measures.
TUNING_CASES = [(direction, dtype, cfg)
                for (direction, size), cands in sorted(bench_softmax.COOPERATIVE_CANDIDATES.items())
                for dtype in (("float32",) if size == 4 else ("bfloat16",)) for cfg in cands]


@pytest.fixture(scope="module")
def tuning_reports():
    requests = []
    for direction, dtype, (seg_bytes, warps, prefetch) in TUNING_CASES:
        with lr.cooperative_settings(direction, 4 if dtype == "float32" else 2, seg_bytes, warps, prefetch):
            requests.append(C.softmax_request(2**20, dtype, direction))
    return dict(zip(TUNING_CASES, C.reports(requests)))


@pytest.mark.parametrize("case", TUNING_CASES, ids=[f"{d}-{t}-{c[0]}-{c[1]}-{c[2]}" for d, t, c in TUNING_CASES])
def test_every_tuning_candidate_fits_does_not_spill_and_prefetches_as_asked(tuning_reports, case):
    direction, dtype, (seg_bytes, warps, prefetch) = case
    report = tuning_reports[case]
    assert report.kernel.endswith("_cooperative") and report.num_warps == warps
    assert report.spill_stores == 0 and report.stack_bytes == 0
    assert report.resident_programs() * 132 >= report.constexprs["SEGMENTS"]  # all segments of a row resident
    # A thread's 16-byte loads of one row: its share of the segment (bytes / 16 / threads),
    # for each tensor read (x; or y and dy).  Before the program announces its partial
    # (the release atomic, ATOMG) come this row's loads, and with prefetch the next row's too.
    per_row = seg_bytes // 16 // (32 * warps) * (2 if direction == "backward" else 1)
    assert report.wide_loads(before="ATOMG") == per_row * (2 if prefetch else 1)
