"""The shipped model on a 1 mm synthetic Change pair with motion (slow: about 3 minutes)."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.cli.parser import DEFAULT_MODEL_DIR
from bids_lesionchange.simulate.cohort import write_cohort

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").is_file(), reason="no default model")
def test_native_change_mask_overlaps_the_truth(tmp_path):
    bids = write_cohort(tmp_path / "bids", n_nochange=0, n_change=1, seed=31, preset="1mm")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bids_lesionchange.cli.run", str(bids), str(out), "participant",
         "--skull-strip", "threshold", "--nprocs", "2", "--omp-nthreads", "2", "--no-reports",
         "--reference-dir", str(bids / "derivatives" / "truth"), "-w", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    truth_img = nib.load(str(bids / "derivatives" / "truth" / "sub-01" / "ses-02" / "anat"
                             / "sub-01_ses-02_desc-change_mask.nii.gz"))
    native_img = nib.load(str(out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-change_mask.nii.gz"))
    assert native_img.shape == truth_img.shape and np.allclose(native_img.affine, truth_img.affine)
    truth = np.asarray(truth_img.dataobj) > 0
    native = np.asarray(native_img.dataobj) > 0
    assert (truth & native).sum() > 0.3 * truth.sum()  # most changed voxels are found
    metrics = (out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-evaluation_metrics.tsv")
    header, row = (line.split("\t") for line in metrics.read_text().splitlines()[:2])
    assert float(row[header.index("LTPR")]) > 0
