"""Every interface of the app gives its freed memory back when it ends, failed or not."""

from __future__ import annotations

import inspect
import platform

import pytest
from nipype.interfaces.base import BaseInterface, BaseInterfaceInputSpec, TraitedSpec, traits

from bids_lesionchange.interfaces import base, bids, change, preproc


class _InputSpec(BaseInterfaceInputSpec):
    fail = traits.Bool(False, usedefault=True)


class _Probe(base.LeanInterface):
    input_spec = _InputSpec
    output_spec = TraitedSpec

    def _run_interface(self, runtime):
        if self.inputs.fail:
            raise ValueError("this step failed")
        return runtime


def test_every_interface_of_the_app_is_lean():
    interfaces = [cls for module in (bids, change, preproc) for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, BaseInterface) and cls.__module__ == module.__name__]
    assert len(interfaces) >= 20
    assert [cls.__name__ for cls in interfaces if not issubclass(cls, base.LeanInterface)] == []


@pytest.mark.parametrize("fail", [False, True])
def test_a_lean_interface_releases_memory_after_it_runs_even_when_it_fails(tmp_path, monkeypatch, fail):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(base, "release_memory", lambda: calls.append("released") or True)
    if fail:
        with pytest.raises(ValueError, match="this step failed"):
            _Probe(fail=True).run()
    else:
        _Probe().run()
    assert calls == ["released"]


def test_release_memory_trims_the_heap_where_the_c_library_is_glibc():
    assert base.release_memory() is (platform.libc_ver()[0] == "glibc")
