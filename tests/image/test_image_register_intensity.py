"""Rigid registration, similarity measures, N4, normalisation, QC and reportlets (pure layer)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.errors import InputError
from bids_lesionchange.image import preprocess as pp
from bids_lesionchange.image import register as reg
from bids_lesionchange.image.intensity import n4_bias_correct, normalise_intensity
from bids_lesionchange.image.reportlets import plot_mask_outline, plot_registration
from bids_lesionchange.image.transforms import read_xfm
from bids_lesionchange.simulate.acquisition import rigid_matrix, rotation_matrix
from bids_lesionchange.simulate.phantom import head_phantom

SHAPE, VOXEL, RADIUS = (40, 40, 40), 2.0, 36.0
MOTION = dict(rotation_deg=(6.0, -4.0, 8.0), translation_mm=(3.0, -4.0, 2.5))


def _save(path, phantom):
    nib.save(nib.Nifti1Image(phantom.data, phantom.affine), str(path))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A follow-up and a baseline moved by a known rigid motion, preprocessed step by step."""
    root = tmp_path_factory.mktemp("pair")
    followup = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, seed=1)
    baseline = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, seed=2, **MOTION)
    files = {"followup_file": _save(root / "followup.nii.gz", followup),
             "baseline_file": _save(root / "baseline.nii.gz", baseline)}
    pp.check_pair(files["baseline_file"], files["followup_file"])
    pp.followup_to_common(files["followup_file"], root / "common.nii.gz", root / "fu_xfm.txt",
                          resolution=VOXEL)
    pp.skullstrip_followup(root / "common.nii.gz", root / "mask.nii.gz", method="threshold")
    pp.n4_correct_file(root / "common.nii.gz", root / "mask.nii.gz", root / "fu_n4.nii.gz")
    pp.coarse_register_file(root / "fu_n4.nii.gz", root / "mask.nii.gz", files["baseline_file"],
                            root / "coarse_xfm.txt")
    pp.mask_to_native_file(root / "mask.nii.gz", files["baseline_file"], root / "coarse_xfm.txt",
                           root / "bl_mask.nii.gz")
    pp.n4_correct_file(files["baseline_file"], root / "bl_mask.nii.gz", root / "bl_n4.nii.gz")
    measures = pp.register_baseline_file(
        root / "fu_n4.nii.gz", root / "mask.nii.gz", root / "bl_n4.nii.gz", root / "coarse_xfm.txt",
        root / "bl_common.nii.gz", root / "bl_xfm.txt", root / "final_mask.nii.gz",
        root / "registration.json", source_file=files["baseline_file"])
    return {"root": root, "followup": followup, "baseline": baseline, "measures": measures, **files}


def test_registration_recovers_the_known_motion(pair):
    estimated = read_xfm(pair["root"] / "bl_xfm.txt")
    true_native_to_common = np.linalg.inv(pair["baseline"].motion)
    rotation, translation = reg.rigid_error(estimated, true_native_to_common)
    assert rotation < 1.0  # degrees, at 2 mm voxels
    assert translation < 1.0  # mm, half a voxel
    coarse_rotation, _ = reg.rigid_error(read_xfm(pair["root"] / "coarse_xfm.txt"),
                                         true_native_to_common)
    assert coarse_rotation < 2.0
    assert pair["measures"]["registration_failed"] is False
    assert pair["measures"]["ncc_brain"] > pair["measures"]["ncc_brain_before"] + 0.2
    assert json.loads((pair["root"] / "registration.json").read_text())["ncc_brain"] > 0.8


def test_registered_baseline_matches_the_followup_in_the_brain(pair):
    root = pair["root"]
    moved = nib.load(str(root / "bl_common.nii.gz"))
    mask = np.asanyarray(nib.load(str(root / "final_mask.nii.gz")).dataobj) > 0
    fixed = nib.load(str(root / "fu_n4.nii.gz")).get_fdata()
    np.testing.assert_allclose(moved.affine, nib.load(str(root / "common.nii.gz")).affine)
    assert reg.normalised_cross_correlation(moved.get_fdata(), fixed, mask) > 0.8


def test_two_different_heads_end_with_an_input_error(pair, tmp_path):
    root = pair["root"]
    other = head_phantom(SHAPE, VOXEL, head_radius_mm=24.0, anatomy_seed=5, seed=4)
    other_file = _save(tmp_path / "sub-02_FLAIR.nii.gz", other)
    pp.coarse_register_file(root / "fu_n4.nii.gz", root / "mask.nii.gz", other_file,
                            tmp_path / "coarse_xfm.txt")
    with pytest.raises(InputError) as info:
        pp.register_baseline_file(
            root / "fu_n4.nii.gz", root / "mask.nii.gz", other_file, tmp_path / "coarse_xfm.txt",
            tmp_path / "out.nii.gz", tmp_path / "xfm.txt", tmp_path / "mask.nii.gz",
            tmp_path / "registration.json", source_file=other_file)
    assert info.value.step == "rigid_reg"
    assert info.value.path == other_file
    assert "same subject" in str(info.value)
    measures = json.loads((tmp_path / "registration.json").read_text())
    assert measures["registration_failed"] is True
    assert not (tmp_path / "out.nii.gz").exists()


def test_similarity_measures():
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 16))
    mask = np.ones(image.shape, bool)
    assert reg.normalised_cross_correlation(image, 2 * image + 3, mask) == pytest.approx(1.0)
    assert reg.normalised_cross_correlation(image, -image, mask) == pytest.approx(-1.0)
    assert abs(reg.normalised_cross_correlation(image, rng.random(image.shape), mask)) < 0.1
    mi_same, nmi_same = reg.mutual_information(image, image, mask)
    mi_noise, nmi_noise = reg.mutual_information(image, rng.random(image.shape), mask)
    assert mi_same > 3.0 > 0.5 > mi_noise
    assert nmi_same == pytest.approx(2.0) and nmi_noise < 1.1
    assert reg.registration_failed(0.3) and not reg.registration_failed(0.9)
    assert reg.registration_failed(float("nan"))


def test_rigid_error_measures_rotation_and_translation():
    assert reg.rigid_error(np.eye(4), np.eye(4)) == pytest.approx((0.0, 0.0))
    rotation, translation = reg.rigid_error(rigid_matrix(rotation_matrix((0, 0, 5)), (0, 0, 0)), np.eye(4))
    assert rotation == pytest.approx(5.0)
    assert translation == pytest.approx(0.0)
    _, translation = reg.rigid_error(rigid_matrix(np.eye(3), (3, 4, 0)), np.eye(4))
    assert translation == pytest.approx(5.0)


def test_n4_removes_a_multiplicative_bias_inside_the_mask():
    phantom = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, noise=0.0, bias=0.0)
    x = np.linspace(-1, 1, SHAPE[0])[:, None, None]
    field = 1.0 + 0.4 * x * np.ones(SHAPE)
    biased = phantom.data * field
    corrected = n4_bias_correct(biased, phantom.brain_mask, (VOXEL,) * 3, shrink_factor=2)
    inside = phantom.brain_mask
    ratio_before = biased[inside] / phantom.data[inside]
    ratio_after = corrected[inside] / phantom.data[inside]
    # Up to a global scale, the corrected image follows the clean one far more closely.
    cv = lambda values: values.std() / values.mean()  # noqa: E731
    assert cv(ratio_after) < 0.35 * cv(ratio_before)
    assert corrected.dtype == np.float32


def test_n4_keeps_zero_background_zero():
    phantom = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, skull=False)
    corrected = n4_bias_correct(phantom.data, phantom.brain_mask, (VOXEL,) * 3, shrink_factor=2)
    assert np.all(corrected[phantom.data == 0] == 0)


def test_normalise_maps_percentiles_to_zero_and_one():
    rng = np.random.default_rng(1)
    data = rng.normal(100, 20, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[4:16, 4:16, 4:16] = True
    out = normalise_intensity(data, mask)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[~mask] == 0)
    inside = out[mask]
    assert inside.min() == 0.0
    assert np.mean(inside >= 1.0) == pytest.approx(0.01, abs=0.002)  # the top 1 % is clipped
    with pytest.raises(ValueError):
        normalise_intensity(np.ones_like(data), mask)


def _flair_brain(scale=1.0, lesion_fraction=0.0, seed=0):
    """CSF 0.3, white matter 1.0 (the largest class), grey 1.15, lesions 1.6 (x ``scale``), noisy."""
    rng = np.random.default_rng(seed)
    n = 40000
    classes = rng.choice([0.3, 1.0, 1.15], size=n, p=[0.15, 0.5, 0.35])
    classes[rng.uniform(size=n) < lesion_fraction] = 1.6
    data = np.zeros(n + 1000, np.float32)
    data[:n] = scale * classes * (1 + 0.03 * rng.standard_normal(n))
    tissue = np.zeros(n + 1000)
    tissue[:n] = classes
    return data.reshape(-1, 10, 10), tissue.reshape(-1, 10, 10)


def test_wm_peak_normalisation_puts_white_matter_at_half_and_keeps_lesions_below_one():
    from bids_lesionchange.image.intensity import normalise, white_matter_peak

    data, tissue = _flair_brain(scale=730.0, lesion_fraction=0.02)
    mask = tissue > 0
    assert white_matter_peak(data, mask) == pytest.approx(730.0, rel=0.03)
    out = normalise(data, mask, "wm-peak")
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert np.all(out[~mask] == 0)
    assert np.median(out[tissue == 1.0]) == pytest.approx(0.5, abs=0.02)
    assert np.median(out[tissue == 1.6]) == pytest.approx(0.8, abs=0.04) and (out[tissue == 1.6] < 1).all()
    # one scale for any gain, and a heavy lesion load does not move it (the 99th percentile moves)
    heavy, heavy_tissue = _flair_brain(scale=250.0, lesion_fraction=0.08, seed=1)
    heavy_mask = heavy_tissue > 0
    assert np.median(normalise(heavy, heavy_mask, "wm-peak")[heavy_tissue == 1.0]) == pytest.approx(0.5, abs=0.02)
    assert np.median(normalise(heavy, heavy_mask, "percentile")[heavy_tissue == 1.0]) < \
        np.median(normalise(data, mask, "percentile")[tissue == 1.0]) - 0.015
    with pytest.raises(ValueError, match="unknown intensity normalisation"):
        normalise(data, mask, "zscore")


def test_quality_file_reports_volumes_and_similarity(pair, tmp_path):
    root = pair["root"]
    pp.normalise_file(root / "bl_common.nii.gz", root / "final_mask.nii.gz", tmp_path / "b.nii.gz")
    pp.normalise_file(root / "fu_n4.nii.gz", root / "final_mask.nii.gz", tmp_path / "f.nii.gz")
    qc = pp.quality_file(tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", root / "final_mask.nii.gz",
                         root / "registration.json", tmp_path / "qc.json", skull_strip="threshold")
    assert json.loads((tmp_path / "qc.json").read_text()) == qc
    true_volume = pair["followup"].brain_mask.sum() * VOXEL ** 3 / 1000
    assert qc["brain_mask_volume_ml"] == pytest.approx(true_volume, rel=0.1)
    for session in ("baseline", "followup"):
        assert 0.5 * true_volume < qc["brain_volume_ml"][session] < qc["brain_mask_volume_ml"]
    assert qc["ncc_brain"] > 0.8
    assert qc["registration_failed"] is False
    assert "NCC" in qc["registration_failed_rule"]
    assert qc["plausibility"]["brain_mask"]["plausible"] is True and qc["plausibility"]["flags"] == []


def test_quality_file_flags_a_brain_mask_larger_than_a_skull_holds(pair, tmp_path, monkeypatch):
    from bids_lesionchange.image import plausibility

    root = pair["root"]
    pp.normalise_file(root / "bl_common.nii.gz", root / "final_mask.nii.gz", tmp_path / "b.nii.gz")
    pp.normalise_file(root / "fu_n4.nii.gz", root / "final_mask.nii.gz", tmp_path / "f.nii.gz")
    # the phantom's head is small: a limit below its mask's volume stands in for a 2.2 l mask
    monkeypatch.setattr(plausibility, "MAX_BRAIN_MASK_ML", 1.0)
    qc = pp.quality_file(tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", root / "final_mask.nii.gz",
                         root / "registration.json", tmp_path / "qc.json", followup_source=pair["followup_file"],
                         baseline_source=pair["baseline_file"])
    assert qc["plausibility"]["brain_mask"] == {"volume_ml": round(qc["brain_mask_volume_ml"], 1), "max_ml": 1.0,
                                                "plausible": False}
    (flag,) = qc["plausibility"]["flags"]
    assert flag.startswith(f"the brain mask of {Path(pair['followup_file']).name} holds")


def test_reportlets_are_svg_with_outlines(tmp_path):
    phantom = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS)
    mask_svg = plot_mask_outline(phantom.data, phantom.brain_mask, tmp_path / "mask.svg")
    text = mask_svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert text.count("<image") == 15  # three views of five slices
    moved = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, **MOTION)
    registration_svg = plot_registration(phantom.data, moved.data, phantom.data,
                                         phantom.brain_mask, tmp_path / "registration.svg")
    text = registration_svg.read_text()
    assert text.count("<image") == 18  # before and after, three views of three slices
    assert "before" in text and "after" in text


def test_a_source_whose_qform_disagrees_with_its_sform_is_flagged_in_the_qc(pair, tmp_path):
    """Issue 16: the sform was used without a word. The flag names the user's file, not the intermediate."""
    import nibabel as nib

    from bids_lesionchange.image.io import qform_sform_distance, qform_sform_note

    root = pair["root"]
    img = nib.load(str(pair["followup_file"]))
    assert qform_sform_note(pair["followup_file"]) is None  # written with qform = sform
    qform = img.affine.copy()
    qform[:3, 3] += [1.0, -2.0, 0.5]
    img.set_qform(qform, code=1)
    source = tmp_path / "sub-01_ses-02_FLAIR.nii.gz"
    nib.save(img, str(source))
    assert qform_sform_distance(nib.load(str(source))) == pytest.approx((1 + 4 + 0.25) ** 0.5, rel=1e-4)
    pp.normalise_file(root / "bl_common.nii.gz", root / "final_mask.nii.gz", tmp_path / "b.nii.gz")
    pp.normalise_file(root / "fu_n4.nii.gz", root / "final_mask.nii.gz", tmp_path / "f.nii.gz")
    qc = pp.quality_file(tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", root / "final_mask.nii.gz",
                         root / "registration.json", tmp_path / "qc.json", followup_source=source,
                         baseline_source=pair["baseline_file"])
    (flag,) = qc["plausibility"]["flags"]
    assert flag.startswith("sub-01_ses-02_FLAIR.nii.gz: its qform and sform disagree (they place the field "
                           "of view up to 2.29 mm apart") and "the sform is used" in flag


def test_an_oblique_image_with_equal_qform_and_sform_is_not_flagged(tmp_path):
    """The float32 quaternion of a rotated qform rounds far below the 0.01 mm limit."""
    import nibabel as nib
    from scipy.spatial.transform import Rotation

    from bids_lesionchange.image.io import MAX_QFORM_SFORM_MM, qform_sform_distance, qform_sform_note

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [17, -8, 31], degrees=True).as_matrix() @ np.diag([0.9, 0.9, 3.0])
    affine[:3, 3] = [-120.3, 95.7, -60.1]
    img = nib.Nifti1Image(np.zeros((256, 256, 60), np.int16), affine)
    img.set_qform(affine, code=1)  # both set, as dcm2niix writes them
    img.set_sform(affine, code=1)
    nib.save(img, str(tmp_path / "oblique.nii.gz"))
    assert qform_sform_distance(nib.load(str(tmp_path / "oblique.nii.gz"))) < MAX_QFORM_SFORM_MM / 10
    assert qform_sform_note(tmp_path / "oblique.nii.gz") is None


def _fake_hdbet(mask, calls):
    """A stand-in for HD-BET's child process: writes ``mask`` on the input's grid, records the call."""
    def run(in_file, out_mask, **settings):
        calls.append((Path(in_file), settings))
        img = nib.load(str(in_file))
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), img.affine), str(out_mask))
        return out_mask
    return run


def _face_case(tmp_path):
    """A 1 mm grid with a brain ball (~ 1.15 l) and, below it, a face block the follow-up's mask took in."""
    shape = (140, 140, 140)
    grid = np.indices(shape)
    brain = ((grid - np.array([70, 75, 80])[:, None, None, None]) ** 2).sum(0) < 65 ** 2
    face = np.zeros(shape, bool)
    face[25:115, 0:60, 0:40] = True  # a block below and in front of the ball, partly overlapping it
    image = tmp_path / "baseline_common.nii.gz"
    nib.save(nib.Nifti1Image(np.where(brain | face, 100.0, 0.0).astype(np.float32), np.eye(4)), str(image))
    return brain, face, image


def test_a_mask_too_large_for_a_brain_is_cut_to_what_the_baseline_calls_brain(tmp_path, monkeypatch, caplog):
    from bids_lesionchange.image import plausibility

    brain, face, image = _face_case(tmp_path)
    followup_mask = brain | face
    ml = followup_mask.sum() / 1000
    monkeypatch.setattr(plausibility, "CHECK_BRAIN_MASK_ML", brain.sum() / 1000 + 10)  # the brain fits, brain+face not
    calls = []
    monkeypatch.setattr(pp, "run_hdbet", _fake_hdbet(brain, calls))
    with caplog.at_level("WARNING"):
        mask, repair = pp.second_opinion_mask(followup_mask, image, tmp_path / "b_mask.nii.gz", (1.0, 1.0, 1.0),
                                              hdbet={"mode": "fast", "precision": "float32", "device": "cpu"},
                                              followup_source=tmp_path / "sub-01_ses-02_FLAIR.nii.gz")
    assert len(calls) == 1 and calls[0][0] == image and calls[0][1]["precision"] == "float32"
    np.testing.assert_array_equal(mask, brain)  # the face is gone, no brain voxel lost
    assert repair["used"] is True and repair["followup_mask_ml"] == pytest.approx(ml, abs=0.1)
    assert repair["intersection_ml"] == repair["baseline_mask_ml"] == pytest.approx(brain.sum() / 1000, abs=0.1)
    assert "sub-01_ses-02_FLAIR.nii.gz held" in caplog.text and "both masks call brain" in caplog.text


def test_a_plausible_mask_is_not_checked_and_a_bad_second_opinion_is_not_used(tmp_path, monkeypatch):
    from bids_lesionchange.image import plausibility

    brain, face, image = _face_case(tmp_path)
    calls = []
    monkeypatch.setattr(pp, "run_hdbet", _fake_hdbet(brain, calls))
    hdbet = {"mode": "fast", "precision": "auto", "device": "cpu"}
    mask, repair = pp.second_opinion_mask(brain, image, tmp_path / "m.nii.gz", (1.0, 1.0, 1.0), hdbet=hdbet)
    assert repair is None and calls == [] and mask is brain  # a brain-sized mask: HD-BET is not run again
    monkeypatch.setattr(plausibility, "CHECK_BRAIN_MASK_ML", 100.0)
    small = np.zeros_like(brain)
    small[60:80, 60:80, 60:80] = True  # the baseline's HD-BET found a sliver: it would cut the brain
    monkeypatch.setattr(pp, "run_hdbet", _fake_hdbet(small, calls))
    mask, repair = pp.second_opinion_mask(brain | face, image, tmp_path / "m.nii.gz", (1.0, 1.0, 1.0), hdbet=hdbet)
    assert repair["used"] is False and repair["intersection_ml"] == pytest.approx(8.0)
    np.testing.assert_array_equal(mask, brain | face)  # kept as it was: the plausibility flag will say so

    def failing(in_file, out_mask, **settings):
        raise InputError(in_file, "skullstrip", "HD-BET failed (exit 1)")

    monkeypatch.setattr(pp, "run_hdbet", failing)  # a failed check keeps the mask; the pair goes on
    mask, repair = pp.second_opinion_mask(brain | face, image, tmp_path / "m.nii.gz", (1.0, 1.0, 1.0), hdbet=hdbet)
    assert repair["used"] is False and "HD-BET failed" in repair["error"]
    np.testing.assert_array_equal(mask, brain | face)


@pytest.mark.parametrize("ml, checked", [(1700, False), (1800, False), (1900, True), (2100, True)])
def test_the_second_opinion_starts_below_the_flag_at_the_largest_adult_brains(tmp_path, monkeypatch, ml, checked):
    from bids_lesionchange.image import plausibility

    # between the largest face-free HD-BET mask (1680 ml) and the smallest face-including one (1906 ml)
    assert 1680 < plausibility.CHECK_BRAIN_MASK_ML < 1906 and plausibility.CHECK_BRAIN_MASK_ML < plausibility.MAX_BRAIN_MASK_ML
    shape = (130, 130, 130)  # 1 mm voxels: 2197 ml
    mask = np.zeros(shape, bool).ravel()
    mask[: ml * 1000] = True
    mask = mask.reshape(shape)
    image = tmp_path / "baseline_common.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(image))
    brain = mask.copy()
    brain[:, :, :4] = False  # the baseline's own mask: a few slices less
    calls = []
    monkeypatch.setattr(pp, "run_hdbet", _fake_hdbet(brain, calls))
    monkeypatch.setattr(pp, "check_brain_mask", lambda *args, **kwargs: None)  # a slab is not brain-shaped
    out, repair = pp.second_opinion_mask(mask, image, tmp_path / "m.nii.gz", (1.0, 1.0, 1.0),
                                         hdbet={"mode": "fast", "precision": "auto", "device": "cpu"})
    assert bool(calls) is checked and (repair is not None) is checked
    if checked:
        assert repair["used"] is True and repair["check_ml"] == plausibility.CHECK_BRAIN_MASK_ML
        np.testing.assert_array_equal(out, brain)
    else:
        assert out is mask


def test_registration_checks_an_oversized_hdbet_mask_and_the_qc_records_it(pair, tmp_path, monkeypatch):
    from bids_lesionchange.image import plausibility

    root = pair["root"]
    full = nib.load(str(root / "final_mask.nii.gz")).get_fdata() > 0
    trimmed = full.copy()
    trimmed[:, :, : int(np.argwhere(full)[:, 2].min()) + 3] = False  # the baseline's mask: 3 slices less
    calls = []
    monkeypatch.setattr(pp, "run_hdbet", _fake_hdbet(trimmed, calls))
    monkeypatch.setattr(plausibility, "CHECK_BRAIN_MASK_ML", 1.0)  # stands in for a 2.2 l mask (small phantom)
    args = (root / "fu_n4.nii.gz", root / "mask.nii.gz", root / "bl_n4.nii.gz", root / "coarse_xfm.txt",
            tmp_path / "bl_common.nii.gz", tmp_path / "bl_xfm.txt", tmp_path / "final_mask.nii.gz",
            tmp_path / "registration.json")
    pp.register_baseline_file(*args)  # no HD-BET settings (threshold or none made the mask): unchanged
    assert calls == [] and "mask_repair" not in json.loads((tmp_path / "registration.json").read_text())
    measures = pp.register_baseline_file(*args, hdbet={"mode": "fast", "precision": "auto", "device": "cpu"})
    assert len(calls) == 1 and calls[0][0] == tmp_path / "bl_common.nii.gz"  # the registered baseline
    assert measures["mask_repair"]["used"] is True
    final = nib.load(str(tmp_path / "final_mask.nii.gz")).get_fdata() > 0
    assert final.sum() < full.sum() and not (final & ~trimmed).any()
    qc = pp.quality_file(tmp_path / "bl_common.nii.gz", root / "fu_n4.nii.gz", tmp_path / "final_mask.nii.gz",
                         tmp_path / "registration.json", tmp_path / "qc.json")
    assert qc["plausibility"]["brain_mask"]["repair"] == measures["mask_repair"]


def test_registration_writes_the_baseline_by_scanner_coordinates_for_the_reportlet(pair, tmp_path):
    """The reportlet's 'before' comes from rigid_reg (issue 15: the report no longer resamples the
    native baseline again): the bias-corrected baseline placed by its header only, and its
    brain NCC is the ``ncc_brain_before`` of the registration measures."""
    from bids_lesionchange.image.grid import resample_to_grid

    root = pair["root"]
    measures = pp.register_baseline_file(
        root / "fu_n4.nii.gz", root / "mask.nii.gz", root / "bl_n4.nii.gz", root / "coarse_xfm.txt",
        tmp_path / "bl_common.nii.gz", tmp_path / "bl_xfm.txt", tmp_path / "final_mask.nii.gz",
        tmp_path / "registration.json", source_file=pair["baseline_file"], nthreads=2,
        out_before=tmp_path / "before.nii")
    fixed, moving = nib.load(str(root / "fu_n4.nii.gz")), nib.load(str(root / "bl_n4.nii.gz"))
    before = nib.load(str(tmp_path / "before.nii"))
    assert before.shape == fixed.shape and np.allclose(before.affine, fixed.affine)
    expected = resample_to_grid(np.asanyarray(moving.dataobj, dtype=np.float32), moving.affine,
                                fixed.shape, fixed.affine, None, order=1)
    assert np.allclose(before.get_fdata(), expected, atol=1e-4)
    mask = np.asanyarray(nib.load(str(root / "mask.nii.gz")).dataobj) > 0
    ncc = reg.normalised_cross_correlation(expected, fixed.get_fdata(dtype=np.float32), mask)
    assert measures["ncc_brain_before"] == pytest.approx(ncc, abs=1e-6)
    assert measures["ncc_brain_before"] < measures["ncc_brain"]  # the motion was there before
    assert json.loads((tmp_path / "registration.json").read_text())["ncc_brain"] == pytest.approx(
        pair["measures"]["ncc_brain"], abs=1e-3)  # two threads: the same registration
