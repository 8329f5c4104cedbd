"""Resolution matching: PSF widths on the common grid and the smoothing that equalises them."""

import json

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.image.preprocess import match_resolution_file
from bids_lesionchange.image.resolution import FWHM_TO_SIGMA, effective_fwhm, matching_sigmas, smooth
from bids_lesionchange.image.transforms import write_xfm

GRID = np.diag([1.0, 1.0, 1.0, 1.0])


def test_fwhm_of_axial_thick_slices_is_the_voxel_size():
    native = np.diag([0.9, 0.9, 3.0, 1.0])
    np.testing.assert_allclose(effective_fwhm(native, np.eye(4), GRID), [0.9, 0.9, 3.0])


def test_fwhm_follows_the_slice_direction_of_a_sagittal_acquisition():
    # native axis 0 (3 mm slices) points along world y: the thick direction on the grid is y
    native = np.array([[0, 1.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(effective_fwhm(native, np.eye(4), GRID), [1.0, 3.0, 1.0])


def test_fwhm_of_a_rotated_session_mixes_the_axes():
    angle = np.deg2rad(30)
    rot = np.eye(4)
    rot[:3, :3] = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    native = np.diag([1.0, 1.0, 3.0, 1.0])
    fwhm = effective_fwhm(native, rot, GRID)
    assert fwhm[0] == pytest.approx(1.0)
    assert fwhm[1] == pytest.approx(np.sqrt(np.cos(angle) ** 2 + 9 * np.sin(angle) ** 2))
    assert fwhm[2] == pytest.approx(np.sqrt(np.sin(angle) ** 2 + 9 * np.cos(angle) ** 2))


def test_same_protocol_gets_no_smoothing_and_thick_slices_blur_the_other_session():
    a, b = matching_sigmas([1, 1, 1], [1, 1, 1], [1, 1, 1])
    assert not a.any() and not b.any()
    a, b = matching_sigmas([1, 1, 1], [0.9, 0.9, 3.0], [1, 1, 1])
    assert a[2] == pytest.approx(np.sqrt(9 - 1) * FWHM_TO_SIGMA)  # the 3D session takes the slice blur
    assert a[0] == 0 and a[1] == 0  # and is already the coarser one in-plane
    assert b[2] == 0 and b[0] == pytest.approx(np.sqrt(1 - 0.81) * FWHM_TO_SIGMA)
    a, b = matching_sigmas([1, 1, 1], [1.2, 1.2, 1.0], [1, 1, 1])
    assert a[0] == pytest.approx(np.sqrt(1.44 - 1) * FWHM_TO_SIGMA) and a[2] == 0


def test_smoothing_a_sharp_edge_matches_a_blurred_one():
    sharp = np.zeros((8, 8, 40), np.float32)
    sharp[..., 20:] = 1.0
    out = smooth(sharp, [0, 0, 1.2])
    assert out[..., 19].mean() > 0.2 and out[..., 20].mean() < 0.8  # the edge spread along z only
    np.testing.assert_array_equal(out[:, :, :10], 0.0)
    assert smooth(sharp, [0, 0, 0]) is not None and np.array_equal(smooth(sharp, [0, 0, 0]), sharp)


def test_match_resolution_file_smooths_only_the_sharper_session(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((20, 20, 20)).astype(np.float32)
    files = {}
    for name, affine in (("base", np.diag([0.9, 0.9, 1.0, 1.0])), ("follow", np.diag([0.9, 0.9, 3.0, 1.0]))):
        files[name] = tmp_path / f"{name}_common.nii.gz"
        nib.save(nib.Nifti1Image(data, GRID), str(files[name]))
        files[name + "_native"] = tmp_path / f"{name}_native.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), affine), str(files[name + "_native"]))
        files[name + "_xfm"] = write_xfm(np.eye(4), tmp_path / f"{name}_xfm.txt")
    out_b, out_f, out_json = tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", tmp_path / "r.json"
    report = match_resolution_file(files["base"], files["follow"], files["base_native"], files["follow_native"],
                                   files["base_xfm"], files["follow_xfm"], out_b, out_f, out_json)
    assert report["smoothed"] == ["baseline"]
    assert json.loads(out_json.read_text())["fwhm_mm"]["followup"] == [0.9, 0.9, 3.0]
    np.testing.assert_array_equal(nib.load(str(out_f)).get_fdata(dtype=np.float32), data)
    smoothed = nib.load(str(out_b)).get_fdata()
    assert smoothed.std() < 0.8 * data.std()  # noise averaged along z
