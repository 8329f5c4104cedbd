"""The benchmarks' CPU description: the FP32 peak every GFLOP/s ratio is quoted against."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py"


@pytest.fixture(scope="module")
def common():
    saved = dict(os.environ)  # the module sets TensorFlow defaults for the benchmark scripts
    spec = importlib.util.spec_from_file_location("benchmarks_common_under_test", COMMON)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.environ.clear()
    os.environ.update(saved)
    return module


def cpuinfo(model: str, vendor: str, family: int, number: int, flags: str, mhz: float = 2596.14) -> str:
    block = (f"processor\t: {{i}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {number}\n"
             f"model name\t: {model}\ncpu MHz\t\t: {mhz}\nflags\t\t: {flags}\n\n")
    return "".join(block.format(i=i) for i in range(2))


AVX512 = "fpu sse sse2 fma avx avx2 avx512f avx512dq avx512_bf16"


def test_zen4_runs_avx512_on_256_bit_pipes(common):
    # the AMD EPYC (Genoa) of stop 28: family 25, model 17, AVX-512 with AVX512_BF16, no clock in the name
    cpu = common.cpu_description(cpuinfo("AMD EPYC", "AuthenticAMD", 25, 17, AVX512), cores=2)
    assert cpu["fp32_flop_per_cycle"] == 32
    assert cpu["clock_ghz"] == pytest.approx(2.596)
    assert cpu["fp32_peak_gflops"] == pytest.approx(2 * 2.59614 * 32, abs=0.1)
    assert "avx512_bf16" in cpu["extensions"] and "amx_tile" not in cpu["extensions"]


def test_intel_avx512_counts_two_512_bit_units_and_the_nominal_clock(common):
    text = cpuinfo("Intel(R) Xeon(R) Platinum 8488C @ 2.40GHz", "GenuineIntel", 6, 143,
                   AVX512 + " amx_tile amx_bf16", mhz=3800.0)
    cpu = common.cpu_description(text, cores=2)
    assert cpu["fp32_flop_per_cycle"] == 64
    assert cpu["fp32_peak_gflops"] == pytest.approx(2 * 2.4 * 64)


@pytest.mark.parametrize("vendor, family, number, flags, expected", [
    ("AuthenticAMD", 25, 1, "fma avx2", 32),      # Zen 3 (the AMD machine of the docs: 157 GFLOP/s)
    ("AuthenticAMD", 23, 1, "fma avx2", 16),      # Zen 1: 128-bit FMA pipes
    ("AuthenticAMD", 23, 0x31, "fma avx2", 32),   # Zen 2
    ("AuthenticAMD", 26, 0x11, AVX512, 64),       # Zen 5: full-width AVX-512
    ("GenuineIntel", 6, 85, "fma avx2", 32),
    ("GenuineIntel", 6, 15, "sse sse2", 16),
])
def test_flop_per_cycle_by_microarchitecture(common, vendor, family, number, flags, expected):
    assert common.fp32_flop_per_cycle(set(flags.split()), vendor, family, number) == expected


FORKED_SHARER = """
import os, sys, time
block = b"\\x01" * (256 * 2**20)  # 256 MiB, written, so resident
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
sys.stdin.readline()
os.kill(child, 9)
"""


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="needs Linux >= 4.14 (smaps_rollup)")
def test_tree_memory_counts_pages_shared_by_a_fork_once_in_pss_twice_in_rss(common):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", FORKED_SHARER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        child = int(proc.stdout.readline())
        memory = common.tree_memory(proc.pid)
        block = 256 * 2**20
        # both processes map the block: RSS counts it in each, PSS half in each
        assert memory["rss"] >= 2 * block and memory["largest"] >= block
        assert memory["pss"] >= block
        assert memory["rss"] - memory["pss"] >= 0.9 * block
        assert common.proportional_bytes(child) < common.tree_memory(child, pss=False)["rss"]
        assert common.tree_memory(proc.pid, pss=False)["pss"] is None
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
    assert common.proportional_bytes(proc.pid) is None  # gone


def test_machine_pace_reports_each_probe_and_the_peak_fraction_of_its_own_rate(common):
    pace = common.machine_pace(n=128, loop=10_000, megabytes=4)
    assert set(pace) == {"sgemm_n", "sgemm_gflops", "sgemm_fraction_of_peak", "python_mloops_per_s",
                         "fresh_memory_gb_per_s"}
    assert pace["sgemm_n"] == 128
    assert pace["sgemm_gflops"] > 0 and pace["python_mloops_per_s"] > 0 and pace["fresh_memory_gb_per_s"] > 0
    peak = common.cpu_description()["fp32_peak_gflops"]
    if pace["sgemm_fraction_of_peak"] is not None:  # None only where the peak is unknown
        assert pace["sgemm_fraction_of_peak"] == pytest.approx(pace["sgemm_gflops"] / peak, abs=0.002)


def test_under_an_avx2_cap_the_peak_is_that_of_the_avx2_units(common):
    # an Intel CPU with two 512-bit FMA units, oneDNN capped at AVX2: the convolutions can use half of it
    text = cpuinfo("Intel(R) Xeon(R) Platinum 8488C @ 2.40GHz", "GenuineIntel", 6, 143, AVX512)
    capped = common.cpu_description(text, cores=2, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert capped["onednn_max_cpu_isa"] == "AVX2"
    assert capped["fp32_flop_per_cycle"] == 32
    assert capped["fp32_peak_gflops"] == pytest.approx(2 * 2.4 * 32)
    assert "avx512f" in capped["extensions"]  # the CPU still has them
    free = common.cpu_description(text, cores=2, environ={})
    assert free["onednn_max_cpu_isa"] is None and free["fp32_flop_per_cycle"] == 64
    assert common.cpu_description(text, cores=2, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})[
        "fp32_flop_per_cycle"] == 64


def test_clock_note_speaks_only_when_the_probe_beats_the_computed_peak(common):
    assert common.clock_note([0.88, 0.90], {"clock_ghz": 2.6}) == ""
    assert common.clock_note([None, float("nan")]) == ""
    note = common.clock_note([1.04, 1.09, None], {"clock_ghz": 2.6})
    assert "1.09 x the computed FP32 peak" in note and "(2.6 GHz)" in note and "overstates" in note
    assert "GHz" not in common.clock_note([1.2], {})
