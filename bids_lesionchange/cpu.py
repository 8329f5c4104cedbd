"""What this CPU offers the numeric libraries: its flags, and the instruction set oneDNN may use.

oneDNN (the convolution library of TensorFlow and PyTorch on the CPU) reads ``ONEDNN_MAX_CPU_ISA``
(older releases: ``DNNL_MAX_CPU_ISA``) and then uses no instruction set above the one named, even
where the CPU has it: clusters set it so that every node computes alike, and the benchmarks set it to
measure the AVX2 path on an AVX-512 machine (``benchmarks/end_to_end.py --onednn-max-isa AVX2``). The
app's automatic choices of bfloat16 follow it: PyTorch still reports the CPU's AVX512_BF16 under an
AVX2 cap, but oneDNN then has no bfloat16 convolution to run, and HD-BET in bfloat16 took more than
10 minutes for one 1 mm image instead of 14 s (AMD EPYC Zen 4, ``ONEDNN_MAX_CPU_ISA=AVX2``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: oneDNN's names for its CPU instruction sets, lowest first (``ONEDNN_MAX_CPU_ISA``; oneDNN 3.x).
#: Names of the same rank are aliases (AVX10_1_512 is AVX512_CORE_FP16).
ISA_ORDER: tuple[tuple[str, ...], ...] = (
    ("SSE41",), ("AVX",), ("AVX2",), ("AVX2_VNNI",), ("AVX2_VNNI_2",),
    ("AVX512_CORE",), ("AVX512_CORE_VNNI",), ("AVX512_CORE_BF16",),
    ("AVX512_CORE_FP16", "AVX10_1_512"), ("AVX512_CORE_AMX", "AVX10_1_512_AMX"),
    ("AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16"), ("AVX10_2_512",), ("AVX10_2_512_AMX_2",),
)
_RANK = {name: rank for rank, names in enumerate(ISA_ORDER) for name in names}
_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


#: The vector extensions that decide which kernels the numeric libraries run (recorded with results).
VECTOR_EXTENSIONS = frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                               "amx_tile", "amx_bf16"})


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Return the ``flags`` of ``/proc/cpuinfo`` (``cpuinfo``: its text, for tests); empty where it is absent."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
    return next((set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines()
                 if line.split(":", 1)[0].strip() == "flags"), set())


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """Return the CPU's ``model name`` from ``/proc/cpuinfo``, else :func:`platform.processor`, else "unknown"."""
    import platform

    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.split(":", 1)[0].strip() == "model name"), "")
    return name or platform.processor() or "unknown"


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> str | None:
    """Return the instruction set ``ONEDNN_MAX_CPU_ISA`` caps oneDNN at (upper case), or None for no cap.

    ``ALL``, ``DEFAULT``, an empty value and a name oneDNN does not know leave oneDNN uncapped (oneDNN
    ignores a name it does not know).
    """
    environ = os.environ if environ is None else environ
    for name in _ENV:
        value = str(environ.get(name, "")).strip().upper()
        if value:
            return value if value in _RANK else None
    return None


def onednn_allows(isa: str, environ: Mapping[str, str] | None = None) -> bool:
    """Return True unless ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below ``isa`` (a name of :data:`ISA_ORDER`).

    Says nothing of the CPU itself: whether it has the instructions is the caller's question.
    """
    cap = onednn_isa_cap(environ)
    return cap is None or _RANK[cap] >= _RANK[isa.upper()]
