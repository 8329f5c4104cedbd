"""scripts/default_model/hard_negatives.py: which pairs it finds and what it calls near a hyperintensity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bids_lesionchange.synth.crops import PairVolumes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "default_model" / "hard_negatives.py"


@pytest.fixture(scope="module")
def hard_negatives():
    spec = importlib.util.spec_from_file_location("hard_negatives_script_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_pairs_lists_only_complete_preprocessed_pairs(hard_negatives, tmp_path):
    root = tmp_path / "training_preproc_wf"
    for name, files in (("sub_a_ses_01to02_wf", ("baseline_preproc.nii", "followup_preproc.nii.gz", "mask")),
                        ("sub_b_ses_01to02_wf", ("baseline_preproc.nii", "mask")),  # no follow-up: not ready
                        ("sub_c_ses_01to02_wf", ("baseline_preproc.nii", "followup_preproc.nii"))):  # no mask
        wf = root / name / "preproc_wf"
        for sub in ("normalise_baseline", "normalise_followup", "rigid_reg"):
            (wf / sub).mkdir(parents=True)
        for f in files:
            target = (wf / "rigid_reg" / "brain_mask.nii.gz" if f == "mask" else
                      wf / ("normalise_baseline" if f.startswith("baseline") else "normalise_followup") / f)
            target.write_bytes(b"")
    pairs = hard_negatives.training_pairs(tmp_path)
    assert [p[3] for p in pairs] == ["sub_a_ses_01to02_wf"]
    assert pairs[0][1].endswith("followup_preproc.nii.gz") and pairs[0][2].endswith("brain_mask.nii.gz")
    assert hard_negatives.training_pairs(tmp_path / "nothing") == []


def test_near_hyperintensity_is_within_two_voxels_of_a_bright_voxel_of_either_session(hard_negatives):
    shape = (20, 20, 20)
    mask = np.zeros(shape, bool)
    mask[2:18, 2:18, 2:18] = True
    baseline = np.where(mask, 0.5, 0.0).astype(np.float32)
    followup = baseline.copy()
    baseline[6, 6, 6] = 0.9  # a lesion at baseline only
    followup[13, 13, 13] = 0.8  # one at follow-up only
    near = hard_negatives.near_hyperintensity(PairVolumes("p", baseline, followup, mask))
    for spot in ((6, 6, 6), (13, 13, 13)):
        assert near[spot]
        assert near[spot[0] + 2, spot[1], spot[2]] and not near[spot[0] + 3, spot[1], spot[2]]
    assert not near[10, 10, 2] and not (near & ~mask).any()
    assert not hard_negatives.near_hyperintensity(PairVolumes("p", baseline * 0 + 0.5 * mask, followup * 0, mask)).any()
