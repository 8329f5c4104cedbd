"""Input checks, the common grid, single-interpolation resampling and transform files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.errors import InputError
from bids_lesionchange.image.grid import common_grid, resample_to_grid
from bids_lesionchange.image.io import load_flair
from bids_lesionchange.image.transforms import read_xfm, to_native, write_xfm
from bids_lesionchange.simulate.acquisition import rigid_matrix, rotation_matrix
from bids_lesionchange.simulate.phantom import head_phantom


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32),
                             np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.mark.parametrize("case, data, zooms, words", [
    ("2d", np.ones((32, 32), np.float32), None, "3D"),
    ("slab", np.random.default_rng(0).random((32, 32, 3)), None, "2D"),
    ("4d", np.random.default_rng(0).random((16, 16, 16, 2)), None, "single 3D volume"),
    ("zero", np.zeros((16, 16, 16)), None, "all zero"),
    ("nan", np.where(np.eye(16)[..., None] > 0, np.nan, 1.0) * np.ones((16, 16, 16)), None, "NaN"),
    ("constant", np.full((16, 16, 16), 3.0), None, "constant"),
    ("zooms", np.random.default_rng(0).random((16, 16, 16)), 50.0, "voxel size"),
])
def test_bad_inputs_raise_input_error_naming_file_and_step(tmp_path, case, data, zooms, words):
    affine = np.eye(4) if zooms is None else np.diag([zooms, zooms, zooms, 1.0])
    path = _save(tmp_path / f"{case}.nii.gz", data, affine)
    with pytest.raises(InputError) as info:
        load_flair(path)
    assert info.value.path == path
    assert info.value.step == "load"
    assert str(info.value).startswith(f"load: {path}: ")
    assert words in str(info.value)


def test_unreadable_file_raises_input_error(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="cannot be read"):
        load_flair(path)


def test_single_volume_4d_is_accepted_as_3d(tmp_path):
    data = np.random.default_rng(1).random((16, 16, 16, 1)).astype(np.float32)
    img = load_flair(_save(tmp_path / "one.nii.gz", data))
    assert img.shape == (16, 16, 16)
    np.testing.assert_array_equal(img.get_fdata(), data[..., 0])


def test_common_grid_of_a_ras_image_at_its_own_resolution_is_its_own_grid():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40.0, -50.0, -30.0]
    shape, grid = common_grid((40, 48, 36), affine, resolution=2.0)
    assert shape == (40, 48, 36)
    np.testing.assert_allclose(grid, affine, atol=1e-9)


def test_common_grid_reorients_to_ras_and_resampling_is_exact():
    data = np.random.default_rng(2).random((20, 24, 16)).astype(np.float32)
    las = np.diag([-2.0, 2.0, 2.0, 1.0])  # x flipped (LAS)
    las[:3, 3] = [19 * 2.0, 0.0, 0.0]
    shape, grid = common_grid(data.shape, las, resolution=2.0)
    assert nib.aff2axcodes(grid) == ("R", "A", "S")
    assert shape == data.shape
    out = resample_to_grid(data, las, shape, grid, order=3)
    # A pure flip lands on voxel centres: cubic interpolation returns the values exactly.
    np.testing.assert_allclose(out, data[::-1], atol=1e-5)


def test_common_grid_at_coarser_resolution_halves_the_shape():
    shape, grid = common_grid((40, 40, 40), np.eye(4), resolution=2.0)
    assert shape == (20, 20, 20)
    assert np.allclose(np.diag(grid)[:3], 2.0)
    # The field of view is kept: the first voxel corner sits at the same world corner.
    np.testing.assert_allclose(grid[:3, 3] - 1.0, [-0.5, -0.5, -0.5])


def test_composed_transform_interpolates_once():
    """Composing reorientation and motion in one matrix differs from resampling twice."""
    phantom = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, noise=0.0, bias=0.0)
    motion = rigid_matrix(rotation_matrix((7.0, 0.0, 0.0)), (1.3, 0.0, 0.0))
    once = resample_to_grid(phantom.data, phantom.affine, phantom.data.shape, phantom.affine,
                            motion, order=1)
    half = rigid_matrix(rotation_matrix((3.5, 0.0, 0.0)), (0.65, 0.0, 0.0))
    step = resample_to_grid(phantom.data, phantom.affine, phantom.data.shape, phantom.affine,
                            half, order=1)
    twice = resample_to_grid(step, phantom.affine, phantom.data.shape, phantom.affine, half, order=1)
    brain = phantom.brain_mask
    # The two half motions compose to the full one, yet interpolating twice blurs more.
    np.testing.assert_allclose(half @ half, motion, atol=1e-9)
    assert np.abs(twice - once)[brain].mean() > 1e-3
    assert twice[brain].std() < once[brain].std()


def test_xfm_round_trip_and_to_native_maps_back_onto_the_original_grid(tmp_path):
    baseline = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, rotation_deg=(5, -3, 8),
                            translation_mm=(2, -3, 1.5), noise=0.0, bias=0.0)
    reference = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, noise=0.0, bias=0.0)
    native_to_common = np.linalg.inv(baseline.motion)
    path = write_xfm(native_to_common, tmp_path / "from-baseline_to-common_mode-image_xfm.txt")
    assert path.read_text().startswith("#")
    np.testing.assert_allclose(read_xfm(path), native_to_common, atol=1e-9)

    common_mask = nib.Nifti1Image(reference.brain_mask.astype(np.uint8), reference.affine)
    native_ref = nib.Nifti1Image(baseline.data, baseline.affine)
    native = to_native(common_mask, native_ref, path, order=0)
    assert native.shape == baseline.data.shape
    assert native.get_data_dtype() == np.uint8
    np.testing.assert_allclose(native.affine, baseline.affine)
    mapped = np.asanyarray(native.dataobj) > 0
    dice = 2 * (mapped & baseline.brain_mask).sum() / (mapped.sum() + baseline.brain_mask.sum())
    assert dice > 0.97
    # The identity transform would not fit the moved head.
    wrong = np.asanyarray(to_native(common_mask, native_ref, np.eye(4), order=0).dataobj) > 0
    assert 2 * (wrong & baseline.brain_mask).sum() / (wrong.sum() + baseline.brain_mask.sum()) < dice - 0.05

    linear = to_native(nib.Nifti1Image(reference.data, reference.affine), native_ref, path, order=1)
    assert linear.get_data_dtype() == np.float32
    inside = baseline.brain_mask
    assert np.corrcoef(np.asanyarray(linear.dataobj)[inside], baseline.data[inside])[0, 1] > 0.95


def test_write_xfm_refuses_a_non_matrix(tmp_path):
    with pytest.raises(ValueError):
        write_xfm(np.eye(3), tmp_path / "bad_xfm.txt")


@pytest.mark.parametrize("order", [0, 1, 3])
def test_threaded_resampling_cuts_the_output_into_slabs_and_gives_the_same_image(monkeypatch, order):
    """Issue 15: resample_to_grid on two threads = on one, up to float rounding (ndimage's
    interpolation releases the GIL; each slab is one call with its own offset)."""
    import scipy.ndimage

    from bids_lesionchange.image import grid

    rng = np.random.default_rng(3)
    data = scipy.ndimage.gaussian_filter(rng.random((30, 34, 28)).astype(np.float32) * 100, 1.5)
    if order == 0:
        data = (data > np.median(data)).astype(np.uint8)
    source_affine = np.diag([1.1, 0.9, 1.3, 1.0])
    source_affine[:3, 3] = [-15.0, -16.0, -18.0]
    grid_affine = np.eye(4)
    grid_affine[:3, 3] = [-16.0, -14.5, -17.0]
    transform = rigid_matrix((3.0, -2.0, 4.0), (0.7, -1.1, 0.4))
    one = resample_to_grid(data, source_affine, (32, 30, 36), grid_affine, transform, order=order)
    monkeypatch.setattr(grid, "MIN_VOXELS_PER_THREAD", 1000)  # split even this small grid
    calls = []
    original = scipy.ndimage.affine_transform
    monkeypatch.setattr(scipy.ndimage, "affine_transform",
                        lambda *a, **k: calls.append(k.get("output_shape")) or original(*a, **k))
    two = resample_to_grid(data, source_affine, (32, 30, 36), grid_affine, transform, order=order,
                           threads=2)
    assert calls == [(16, 30, 36), (16, 30, 36)]  # two slabs of the first axis
    assert two.dtype == one.dtype == np.float32 and two.shape == one.shape
    assert np.abs(two - one).max() <= 1e-5 * max(float(np.abs(one).max()), 1.0)
    assert one.std() > 0  # a real image, not an empty grid
    calls.clear()
    resample_to_grid(data, source_affine, (32, 30, 36), grid_affine, transform, order=order, threads=1)
    assert calls == [(32, 30, 36)]  # one thread: one call over the whole grid
