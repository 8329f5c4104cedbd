"""Out-of-domain guard: the fraction of the brain above kappa, strictly compared with the limit."""

import json
import math

import numpy as np
import pytest

from bids_lesionchange.analysis.plausibility import (MAX_PLAUSIBLE_FRACTION, PLAUSIBILITY_FIELDS,
                                                     change_plausibility)

SHAPE = (20, 20, 25)  # 10,000 voxels


def _brain():
    return np.ones(SHAPE, bool)


def _map_with(n_above: int, value: float = 0.9) -> np.ndarray:
    """A probability map with exactly ``n_above`` voxels at ``value`` and the rest at 0.05."""
    prob = np.full(SHAPE, 0.05, np.float32)
    prob.ravel()[:n_above] = value
    return prob


def test_a_map_that_floods_the_brain_is_flagged_with_one_sentence():
    prob = np.full(SHAPE, 0.5, np.float32)
    prob[:1] = 0.0  # 5 % of the brain below kappa
    qc = change_plausibility(prob, _brain(), 0.1, 96)
    assert tuple(qc) == PLAUSIBILITY_FIELDS
    assert qc["fraction_above_threshold"] == pytest.approx(0.95)
    assert qc["n_changes"] == 96
    assert qc["max_plausible_fraction"] == MAX_PLAUSIBLE_FRACTION
    assert qc["out_of_domain"] is True
    message = qc["message"]
    assert "95.0 % of the brain above kappa = 0.1, 96 changes" in message
    assert "`bids_lesionchange BIDS_DIR OUT_DIR group --mode train`" in message
    assert "docs/method.md" in message and "\n" not in message
    json.dumps(qc)  # plain Python types, written as JSON as is


def test_a_few_small_changes_are_not_flagged():
    qc = change_plausibility(_map_with(50), _brain(), 0.1, 2)  # 0.5 % of the brain
    assert qc["fraction_above_threshold"] == pytest.approx(0.005)
    assert qc["out_of_domain"] is False and qc["message"] == ""


def test_the_limit_itself_is_not_flagged_one_voxel_more_is():
    at_limit = change_plausibility(_map_with(200), _brain(), 0.1, 1, max_plausible_fraction=0.02)
    above = change_plausibility(_map_with(201), _brain(), 0.1, 1, max_plausible_fraction=0.02)
    assert at_limit["fraction_above_threshold"] == 0.02 and not at_limit["out_of_domain"]
    assert above["out_of_domain"] and "1 change)" in above["message"]


def test_threshold_is_strict_and_only_brain_voxels_count():
    prob = _map_with(5000, value=0.1)  # half the volume exactly at kappa: not above it
    assert change_plausibility(prob, _brain(), 0.1, 0)["fraction_above_threshold"] == 0.0
    prob = np.full(SHAPE, 0.9, np.float32)
    brain = np.zeros(SHAPE, bool)
    brain[:10] = True
    prob[:10] = 0.0  # everything above kappa lies outside the brain
    prob[0, 0, :5] = np.nan  # NaN is no change
    assert change_plausibility(prob, brain, 0.1, 0)["fraction_above_threshold"] == 0.0


def test_the_limit_is_a_keyword():
    qc = change_plausibility(_map_with(500), _brain(), 0.1, 3, max_plausible_fraction=0.1)
    assert qc["max_plausible_fraction"] == 0.1 and not qc["out_of_domain"]
    assert change_plausibility(_map_with(500), _brain(), 0.1, 3)["out_of_domain"]


def test_empty_brain_is_not_judged():
    qc = change_plausibility(np.ones(SHAPE, np.float32), np.zeros(SHAPE, np.uint8), 0.1, 0)
    assert qc["fraction_above_threshold"] is None
    assert qc["out_of_domain"] is False and qc["message"] == ""


@pytest.mark.parametrize("kwargs", [{"max_plausible_fraction": 0.0}, {"max_plausible_fraction": 1.5},
                                    {"threshold": math.nan}, {"n_changes": -1}])
def test_invalid_arguments_raise(kwargs):
    args = {"threshold": 0.1, "n_changes": 0, **kwargs}
    with pytest.raises(ValueError):
        change_plausibility(np.zeros(SHAPE), _brain(), **args)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differs"):
        change_plausibility(np.zeros(SHAPE), np.ones((4, 4, 4)), 0.1, 0)


def test_plausibility_files_writes_the_json(tmp_path):
    import nibabel as nib

    from bids_lesionchange.analysis.files import plausibility_files

    for name, data in (("p.nii.gz", np.full(SHAPE, 0.9, np.float32)),
                       ("m.nii.gz", np.ones(SHAPE, np.uint8))):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / name))
    out, qc = plausibility_files(str(tmp_path / "p.nii.gz"), str(tmp_path / "m.nii.gz"), 7,
                                 str(tmp_path / "qc.json"), 0.2)
    written = json.loads((tmp_path / "qc.json").read_text())
    assert written == qc and out == str(tmp_path / "qc.json")
    assert written["fraction_above_threshold"] == 1.0 and written["out_of_domain"] is True
    assert written["threshold"] == 0.2 and "kappa = 0.2, 7 changes" in written["message"]
    assert written["compute"] is None  # not known here
    _, qc = plausibility_files(str(tmp_path / "p.nii.gz"), str(tmp_path / "m.nii.gz"), 7, str(tmp_path / "qc2.json"),
                               0.2, compute={"graph": "polyphase", "onednn_max_cpu_isa": "AVX2"})
    assert json.loads((tmp_path / "qc2.json").read_text())["compute"] == {"graph": "polyphase",
                                                                         "onednn_max_cpu_isa": "AVX2"}


def test_reference_plausibility_limits():
    """A change mask of a few lesions passes; one covering > 10 % of the brain, or lying mostly (> 1 ml)
    outside it, does not; a small lesion half outside a tight brain mask, or an empty mask, passes."""
    from bids_lesionchange.analysis.plausibility import reference_flag, reference_plausibility

    grid = np.indices((40, 40, 40))
    brain = ((grid - 19.5) ** 2).sum(0) < 15 ** 2  # about 14 ml at 1 mm
    lesion = ((grid - np.array([20, 20, 20])[:, None, None, None]) ** 2).sum(0) < 3 ** 2
    assert reference_plausibility(lesion, brain, 1.0)["plausible"]
    assert reference_plausibility(np.zeros_like(brain), brain, 1.0) == {
        "fraction_of_brain": 0.0, "fraction_outside_brain": 0.0, "outside_brain_ml": 0.0, "plausible": True}
    big = reference_plausibility(grid[0] < 20, brain, 1.0)
    assert not big["plausible"] and big["fraction_of_brain"] == pytest.approx(0.5, abs=0.02)
    edge = ((grid - np.array([20, 20, 35])[:, None, None, None]) ** 2).sum(0) < 3 ** 2
    assert reference_plausibility(edge, brain, 1.0)["fraction_outside_brain"] > 0.5
    assert reference_plausibility(edge, brain, 1.0)["plausible"]  # 0.1 ml outside: below 1 ml
    outside = reference_plausibility(edge, brain, 27.0)  # the same mask at 3 mm: 2.7 ml outside
    assert not outside["plausible"]
    assert "lies outside the brain mask (limit 50%)" in reference_flag(outside, "ref.nii.gz")
    assert reference_flag(reference_plausibility(lesion, brain, 1.0), "ref.nii.gz") is None
