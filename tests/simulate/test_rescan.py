"""Simulated rescans and self-pairs: what each guarantees, on small synthetic heads."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.simulate import rescan
from bids_lesionchange.simulate.selfpairs import write_self_pairs


def head(shape=(48, 56, 40), seed=0, noise=0.0):
    """An ellipsoid 'brain': white matter 100, a brighter grey rim 115, dark CSF core 30, lesions 170."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(axis=0))
    data = np.zeros(shape, np.float32)
    data[r < 0.85] = 115.0
    data[r < 0.7] = 100.0
    data[r < 0.2] = 30.0
    data[(np.abs(grid[0] - 0.4) < 0.08) & (np.abs(grid[1]) < 0.08) & (np.abs(grid[2]) < 0.1)] = 170.0
    if noise:
        data = np.where(data > 0, data + noise * 100.0 * rng.standard_normal(shape), 0.0).astype(np.float32)
    return data


def test_white_matter_peak_and_noise_are_measured():
    data = head(noise=0.03)
    mask = rescan.foreground_mask(data)
    peak = rescan.white_matter_peak(data, mask)
    assert abs(peak - 100.0) < 5.0  # the largest bright class, not the lesion or the rim
    assert rescan.estimate_noise(data, mask, peak) == pytest.approx(0.03, rel=0.25)
    assert rescan.estimate_noise(head(), rescan.foreground_mask(head()), 100.0) < 0.003


def test_transfer_curve_keeps_flair_order_and_white_matter():
    for seed in range(20):
        knots, values = rescan.transfer_curve(np.random.default_rng(seed), 0.3)
        assert np.all(np.diff(values) > 0)  # monotone: CSF < WM < GM < lesion stays true
        assert values[list(knots).index(1.0)] == pytest.approx(1.0)
        assert values[0] == 0.0


def test_rescan_draws_its_own_grid_pose_and_noise():
    data = head(noise=0.02)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    source = rescan.prepare_source(data, affine)
    params = rescan.RescanParams(p_2d=1.0)
    out, out_affine, info = rescan.simulate_rescan(source, np.random.default_rng(3), params)
    assert out.dtype == np.int16 and out.min() >= 0
    assert info["acquisition"] == "2D"
    zooms = np.linalg.norm(out_affine[:3, :3], axis=0)
    assert 2.0 <= zooms[2] <= 6.0 * 1.3 + 1e-6 and 0.5 <= zooms[0] <= 1.2
    assert info["noise_relative_to_wm"] >= source.noise
    # the same seed gives the same rescan; another seed another one
    again, _, _ = rescan.simulate_rescan(source, np.random.default_rng(3), params)
    other, _, _ = rescan.simulate_rescan(source, np.random.default_rng(4), params)
    assert np.array_equal(out, again)
    assert out.shape != other.shape or not np.array_equal(out, other)


def test_rescan_covers_the_head_in_world_space():
    """Every world point of the source's head lies inside the rescan's field of view (pose aside)."""
    data = head()
    affine = np.array([[1.0, 0, 0, -24], [0, 1.0, 0, -28], [0, 0, 1.0, -20], [0, 0, 0, 1]])
    source = rescan.prepare_source(data, affine)
    params = rescan.RescanParams(max_rotation_deg=0.0, max_translation_mm=0.0)
    for seed in range(4):
        out, out_affine, _ = rescan.simulate_rescan(source, np.random.default_rng(seed), params)
        idx = np.argwhere(source.head)
        world = affine[:3, :3] @ idx.T + affine[:3, 3:4]
        vox = np.linalg.inv(out_affine)[:3, :3] @ world + np.linalg.inv(out_affine)[:3, 3:4]
        assert np.all(vox > -0.5) and np.all(vox < np.array(out.shape)[:, None] - 0.5)


def test_rescan_noise_is_its_own_not_the_source_noise_on_top():
    """The source's noise is removed before rescanning: a rescan holds the noise drawn for it.

    Source noise 5 % and drawn noise 5 %: the rescan measures about 5 %, where keeping the source's
    noise would give sqrt(2) x 5 % = 7 % (and two rescans would share half of their noise).
    """
    data = head(shape=(64, 72, 56), noise=0.05)
    params = rescan.RescanParams(p_2d=0.0, iso_mm=(1.0, 1.0), max_tilt_deg=0.0, max_rotation_deg=0.0,
                                 max_translation_mm=0.0, max_bias=0.0, gamma_range=(1.0, 1.0),
                                 contrast_jitter=0.0, p_gibbs=0.0, p_ghosts=0.0, p_flow=0.0,
                                 noise_range=(0.05, 0.05))
    (a, affine, info), _ = rescan.self_pair(data, np.eye(4), np.random.default_rng(0), mode="both", params=params)
    assert info["noise_relative_to_wm"] == pytest.approx(0.05, rel=0.05)
    measured = rescan.prepare_source(a.astype(np.float32), affine).noise
    assert 0.04 < measured < 0.06
    with pytest.raises(ValueError):
        rescan.self_pair(data, np.eye(4), np.random.default_rng(0), mode="twice")


def test_write_self_pairs_is_resumable_and_deterministic(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    src = tmp_path / "in" / "sub-x_FLAIR.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(head(shape=(32, 36, 28), noise=0.02), affine), str(src))
    pairs = write_self_pairs({"x": [("01", src)]}, tmp_path / "sp", 2, seed=5)
    assert [p.name for p in pairs] == ["sub-x_ses-selfpair01atoselfpair01b", "sub-x_ses-selfpair02atoselfpair02b"]
    sidecar = json.loads(pairs[0].followup_flair.with_name(
        pairs[0].followup_flair.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["SelfPairOf"] == str(src) and sidecar["Simulated"] is True
    first = json.loads(pairs[0].baseline_flair.with_name(
        pairs[0].baseline_flair.name.replace(".nii.gz", ".json")).read_text())
    assert first["Simulated"] is False  # pair 1: the scan itself, then a rescan
    assert np.allclose(nib.load(str(pairs[0].baseline_flair)).get_fdata(), nib.load(str(src)).get_fdata())
    stamp = pairs[1].followup_flair.stat().st_mtime_ns
    again = write_self_pairs({"x": [("01", src)]}, tmp_path / "sp", 2, seed=5)
    assert again == pairs and pairs[1].followup_flair.stat().st_mtime_ns == stamp  # found, not rewritten
    fresh = write_self_pairs({"x": [("01", src)]}, tmp_path / "sp2", 2, seed=5)
    assert np.array_equal(nib.load(str(fresh[1].followup_flair)).get_fdata(),
                          nib.load(str(pairs[1].followup_flair)).get_fdata())


def test_write_self_pairs_names_an_unusable_flair(tmp_path):
    from bids_lesionchange.errors import InputError

    src = tmp_path / "flat_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)), str(src))
    with pytest.raises(InputError, match="flat_FLAIR.nii.gz"):
        write_self_pairs({"x": [(None, src)]}, tmp_path / "sp", 1)


def test_a_drawn_2d_grid_never_has_slices_the_app_refuses():
    """Thickness + gap is capped at the app's voxel limit, so every self-pair passes check_inputs."""
    from bids_lesionchange.image.plausibility import MAX_VOXEL_MM

    params = rescan.RescanParams(p_2d=1.0, slice_mm=(6.0, 6.0), gap_fraction=(0.3, 0.3))
    box = np.array([[x, y, z] for x in (-80, 80) for y in (-100, 100) for z in (-70, 80)], dtype=float)
    rng = np.random.default_rng(0)
    grids = [rescan.draw_grid(np.eye(4), box, rng, params) for _ in range(5)]
    assert all(max(g.zooms) == pytest.approx(MAX_VOXEL_MM) for g in grids)  # 7.8 mm drawn, 7 mm kept
    assert all(g.slice_thickness == pytest.approx(6.0) for g in grids)
