"""bids_lesionchange.cpu: the CPU's flags and the instruction set oneDNN may use (ONEDNN_MAX_CPU_ISA)."""

from __future__ import annotations

import logging

import pytest

from bids_lesionchange import cpu

CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16\n\n"


def test_cpu_flags_are_read_from_the_flags_line():
    assert cpu.cpu_flags(CPUINFO) == {"fpu", "sse", "avx2", "fma", "avx512f", "avx512_bf16"}
    assert cpu.cpu_flags("processor\t: 0\nmodel name\t: flagsless\n") == set()


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"ONEDNN_MAX_CPU_ISA": "avx2"}, "AVX2"),
    ({"ONEDNN_MAX_CPU_ISA": " AVX512_CORE_BF16 "}, "AVX512_CORE_BF16"),
    ({"ONEDNN_MAX_CPU_ISA": "ALL"}, None),
    ({"ONEDNN_MAX_CPU_ISA": "DEFAULT"}, None),
    ({"ONEDNN_MAX_CPU_ISA": "AVX3000"}, None),      # oneDNN ignores a name it does not know
    ({"DNNL_MAX_CPU_ISA": "AVX2"}, "AVX2"),          # the older name
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "DNNL_MAX_CPU_ISA": "AVX2"}, "AVX512_CORE"),
])
def test_the_cap_is_read_as_onednn_reads_it(environ, expected):
    assert cpu.onednn_isa_cap(environ) == expected


@pytest.mark.parametrize("cap, isa, expected", [
    (None, "AVX512_CORE_BF16", True),
    ("AVX2", "AVX2", True),
    ("AVX2", "AVX512_CORE", False),
    ("AVX512_CORE", "AVX512_CORE_BF16", False),
    ("AVX512_CORE_BF16", "AVX512_CORE_BF16", True),
    ("AVX10_1_512", "AVX512_CORE_FP16", True),       # an alias of the same rank
    ("AVX512_CORE_AMX", "avx512_core_bf16", True),
])
def test_onednn_allows_an_instruction_set_up_to_the_cap(cap, isa, expected):
    environ = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    assert cpu.onednn_allows(isa, environ) is expected


def test_tensorflow_bfloat16_needs_avx512_that_onednn_may_use(monkeypatch):
    from bids_lesionchange.model.inference import onednn_runs_bfloat16

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert onednn_runs_bfloat16(CPUINFO) is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert onednn_runs_bfloat16(CPUINFO) is False


def test_hdbet_auto_precision_is_float32_under_a_cap_below_bfloat16(monkeypatch):
    torch = pytest.importorskip("torch")
    from bids_lesionchange.image import hdbet_cli

    # a CPU that computes bfloat16, as PyTorch reports it; PyTorch reports it under the cap too
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert hdbet_cli.resolve_precision("auto") == "bfloat16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hdbet_cli.resolve_precision("auto") == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert hdbet_cli.resolve_precision("auto") == "bfloat16"


def test_hdbet_warns_when_bfloat16_is_asked_for_under_such_a_cap(monkeypatch, tmp_path, caplog):
    pytest.importorskip("torch")
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.image import hdbet_cli

    image = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(image))
    asked = {}

    def fake_mask(data, zooms, **kwargs):  # HD-BET itself is not the point here
        asked.update(kwargs)
        return np.ones(data.shape, np.uint8)

    monkeypatch.setattr(hdbet_cli, "hdbet_mask", fake_mask)
    monkeypatch.setattr(hdbet_cli, "configure_torch", lambda nthreads: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with caplog.at_level(logging.INFO, logger=hdbet_cli.LOGGER.name):
            assert hdbet_cli.main([str(image), str(tmp_path / "mask.nii.gz"), "--precision", "bfloat16"]) == 0
    finally:
        root.handlers = handlers
    assert asked["precision"] == "bfloat16"  # what the user asked for is done, with a warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ONEDNN_MAX_CPU_ISA=AVX2" in w and "float32" in w for w in warnings), warnings
    assert any("capped at AVX2" in r.getMessage() for r in caplog.records)


def test_the_cpu_model_name_comes_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n"
    assert cpu.cpu_model_name(text) == "AMD EPYC 7B13"
    assert cpu.cpu_model_name("processor\t: 0\n")  # another platform: never empty
