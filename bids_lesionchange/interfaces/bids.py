"""Write derivatives into the output dataset atomically."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec, File, TraitedSpec, traits,
)

from bids_lesionchange.atomic import atomic_copy, atomic_gzip, atomic_write_json
from bids_lesionchange.interfaces.base import LeanInterface
from bids_lesionchange.derivatives import sidecar_path


class _DerivativeSinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="file to store")
    base_directory = traits.Str(mandatory=True, desc="root of the derivatives dataset")
    out_path = traits.Str(mandatory=True, desc="path relative to base_directory (BIDS name)")
    meta_dict = traits.Dict(desc="JSON sidecar contents (written beside the file)")


class _DerivativeSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the stored derivative")


class DerivativeSink(LeanInterface):
    """Copy a result to its BIDS-Derivatives name, then write its optional JSON sidecar, each atomically.

    An uncompressed ``.nii`` from the work directory is gzipped when its derivative name ends in
    ``.nii.gz``.
    """

    input_spec = _DerivativeSinkInputSpec
    output_spec = _DerivativeSinkOutputSpec

    def _run_interface(self, runtime):
        dst = Path(self.inputs.base_directory) / self.inputs.out_path
        # The data file first: a write that fails (full disk) then leaves no sidecar describing a
        # file that is not there (issue 16); each write is atomic on its own.
        if str(self.inputs.in_file).endswith(".nii") and dst.name.endswith(".nii.gz"):
            # an image the work dir keeps uncompressed (read by several steps) is stored gzipped
            self._results["out_file"] = str(atomic_gzip(self.inputs.in_file, dst))
        else:
            self._results["out_file"] = str(atomic_copy(self.inputs.in_file, dst))
        if self.inputs.meta_dict:
            atomic_write_json(sidecar_path(dst), self.inputs.meta_dict)
        return runtime
