"""Each preprocessing interface runs on small images and wires its outputs."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.errors import InputError
from bids_lesionchange.simulate.phantom import head_phantom
from bids_lesionchange.image.register import rigid_error
from bids_lesionchange.image.transforms import read_xfm
from bids_lesionchange.interfaces import preproc as ifaces

SHAPE, VOXEL, RADIUS = (40, 40, 40), 2.0, 36.0


def _save(path, phantom):
    nib.save(nib.Nifti1Image(phantom.data, phantom.affine), str(path))
    return str(path)


def _data(path):
    return np.asanyarray(nib.load(path).dataobj)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run the interfaces in order once; each test checks one of them."""
    root = tmp_path_factory.mktemp("ifaces")
    followup = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, seed=1)
    baseline = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, seed=2, rotation_deg=(5, 3, -6),
                            translation_mm=(2, 3, -2))
    files = {"followup": _save(root / "followup.nii.gz", followup),
             "baseline": _save(root / "baseline.nii.gz", baseline)}
    results = {}

    def run(name, interface):
        (root / name).mkdir()
        cwd = os.getcwd()
        os.chdir(root / name)
        try:
            results[name] = interface.run().outputs
        finally:
            os.chdir(cwd)
        return results[name]

    run("check", ifaces.CheckInputs(baseline_flair=files["baseline"], followup_flair=files["followup"]))
    common = run("common", ifaces.CommonGrid(in_file=files["followup"], resolution=VOXEL))
    mask = run("skullstrip", ifaces.SkullStrip(in_file=common.out_file, method="threshold",
                                               source_file=files["followup"]))
    n4f = run("n4_followup", ifaces.N4Correct(in_file=common.out_file, mask_file=mask.out_mask,
                                              out_name="followup_n4.nii.gz"))
    coarse = run("coarse", ifaces.CoarseRegistration(fixed_file=n4f.out_file, mask_file=mask.out_mask,
                                                     moving_file=files["baseline"]))
    native_mask = run("native_mask", ifaces.MaskToNative(mask_file=mask.out_mask,
                                                         native_file=files["baseline"],
                                                         xfm_file=coarse.out_xfm))
    n4b = run("n4_baseline", ifaces.N4Correct(in_file=files["baseline"], mask_file=native_mask.out_file,
                                              out_name="baseline_n4.nii.gz"))
    rigid = run("rigid", ifaces.RigidRegistration(fixed_file=n4f.out_file, mask_file=mask.out_mask,
                                                  moving_file=n4b.out_file, init_xfm=coarse.out_xfm,
                                                  source_file=files["baseline"]))
    norm_b = run("norm_b", ifaces.Normalise(in_file=rigid.out_file, mask_file=rigid.out_mask,
                                            out_name="baseline_preproc.nii.gz"))
    norm_f = run("norm_f", ifaces.Normalise(in_file=n4f.out_file, mask_file=rigid.out_mask,
                                            out_name="followup_preproc.nii.gz"))
    run("qc", ifaces.PreprocQC(baseline_file=norm_b.out_file, followup_file=norm_f.out_file,
                               mask_file=rigid.out_mask, registration_json=rigid.out_report,
                               skull_strip="threshold", baseline_source=files["baseline"],
                               followup_source=files["followup"]))
    run("mask_report", ifaces.MaskReport(in_file=n4f.out_file, mask_file=rigid.out_mask))
    run("registration_report", ifaces.RegistrationReport(
        followup_file=n4f.out_file, baseline_before=rigid.out_before,
        baseline_common=rigid.out_file, mask_file=rigid.out_mask))
    run("to_native", ifaces.ResampleToNative(in_file=rigid.out_mask, native_ref=files["baseline"],
                                             xfm_file=rigid.out_xfm, order=0,
                                             out_name="mask_native.nii.gz"))
    return {"root": root, "files": files, "results": results, "followup": followup,
            "baseline": baseline, "run": run}


def test_check_inputs_passes_good_files_and_refuses_bad_ones(chain, tmp_path, monkeypatch):
    out = chain["results"]["check"]
    assert out.baseline_flair == chain["files"]["baseline"]
    bad = tmp_path / "sub-01_ses-01_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16, 3), np.float32), np.eye(4)), str(bad))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        ifaces.CheckInputs(baseline_flair=str(bad), followup_flair=chain["files"]["followup"]).run()
    assert info.value.step == "load" and info.value.path == bad


def test_check_inputs_refuses_a_slab_and_a_10_mm_scan(chain, tmp_path, monkeypatch):
    """Issue 16 item 2: 10 slices through the middle of the head, or slices of 10 mm."""
    monkeypatch.chdir(tmp_path)
    slab = head_phantom((40, 40, 10), VOXEL, head_radius_mm=RADIUS, seed=1)
    path = _save(tmp_path / "sub-01_ses-02_FLAIR.nii.gz", slab)
    with pytest.raises(InputError) as info:
        ifaces.CheckInputs(baseline_flair=chain["files"]["baseline"], followup_flair=path).run()
    assert info.value.step == "check_inputs" and str(info.value.path) == path
    assert "is a slab; the scan must cover the whole brain" in info.value.message
    thick = nib.Nifti1Image(_data(chain["files"]["followup"])[:, :, ::5], np.diag([VOXEL, VOXEL, 5 * VOXEL, 1.0]))
    nib.save(thick, str(tmp_path / "thick_FLAIR.nii.gz"))
    with pytest.raises(InputError, match=r"has a dimension of 10 mm, above the limit of 7 mm"):
        ifaces.CheckInputs(baseline_flair=chain["files"]["baseline"],
                           followup_flair=str(tmp_path / "thick_FLAIR.nii.gz")).run()


def test_common_grid_writes_the_followup_and_an_identity_xfm(chain):
    out = chain["results"]["common"]
    img = nib.load(out.out_file)
    assert img.shape == SHAPE and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(read_xfm(out.out_xfm), np.eye(4))
    assert out.out_xfm.endswith("_xfm.txt")


def test_skullstrip_writes_a_uint8_brain_mask(chain):
    out = chain["results"]["skullstrip"]
    mask = nib.load(out.out_mask)
    assert mask.get_data_dtype() == np.uint8
    truth = chain["followup"].brain_mask
    found = _data(out.out_mask) > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.93


def test_skullstrip_none_and_empty_mask(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stripped = head_phantom(SHAPE, VOXEL, head_radius_mm=RADIUS, skull=False)
    path = _save(tmp_path / "stripped.nii.gz", stripped)
    out = ifaces.SkullStrip(in_file=path, method="none").run().outputs
    found = _data(out.out_mask) > 0
    assert 2 * (found & stripped.brain_mask).sum() / (found.sum() + stripped.brain_mask.sum()) > 0.97
    dots = (np.random.default_rng(0).random(SHAPE) > 0.97).astype(np.float32)
    dots_path = tmp_path / "dots.nii.gz"
    nib.save(nib.Nifti1Image(dots, np.diag([2.0, 2.0, 2.0, 1.0])), str(dots_path))
    with pytest.raises(InputError) as info:
        ifaces.SkullStrip(in_file=str(dots_path), method="threshold", source_file=path).run()
    assert info.value.step == "skullstrip" and str(info.value.path) == path


def test_n4_and_coarse_registration_outputs(chain):
    results = chain["results"]
    assert nib.load(results["n4_followup"].out_file).get_data_dtype() == np.float32
    native_mask = _data(results["native_mask"].out_file) > 0
    assert native_mask.shape == SHAPE and native_mask[chain["baseline"].brain_mask].mean() > 0.98
    rotation, _ = rigid_error(read_xfm(results["coarse"].out_xfm),
                              np.linalg.inv(chain["baseline"].motion))
    assert rotation < 2.0


def test_rigid_registration_outputs(chain):
    out = chain["results"]["rigid"]
    rotation, translation = rigid_error(read_xfm(out.out_xfm), np.linalg.inv(chain["baseline"].motion))
    assert rotation < 1.0 and translation < 1.0
    assert json.loads(open(out.out_report).read())["registration_failed"] is False
    assert nib.load(out.out_mask).get_data_dtype() == np.uint8
    assert nib.load(out.out_file).shape == SHAPE


def test_normalise_outputs_lie_in_unit_range_and_zero_outside(chain):
    mask = _data(chain["results"]["rigid"].out_mask) > 0
    for name in ("norm_b", "norm_f"):
        img = nib.load(chain["results"][name].out_file)
        data = np.asanyarray(img.dataobj)
        assert img.get_data_dtype() == np.float32
        assert data.min() == 0.0 and data.max() == 1.0
        assert np.all(data[~mask] == 0)
    assert chain["results"]["norm_b"].out_file.endswith("baseline_preproc.nii.gz")


def test_qc_and_reportlets(chain):
    qc = json.loads(open(chain["results"]["qc"].out_json).read())
    assert qc["skull_strip"] == "threshold" and qc["registration_failed"] is False
    assert set(qc["brain_volume_ml"]) == {"baseline", "followup"}
    # two sessions of one phantom: no plausibility flag; at 2 mm the cortex is not resolved enough
    # for the FLAIR-likeness check, which says so
    block = qc["plausibility"]
    assert block["flags"] == [] and block["same_person"]["same_person"] is True
    assert block["baseline_contrast"]["flair_like"] is None and block["followup_contrast"]["resolution_mm"] == 2.0
    for name in ("mask_report", "registration_report"):
        text = open(chain["results"][name].out_report).read()
        assert "<svg" in text and "<image" in text


def test_resample_to_native_maps_the_mask_onto_the_baseline(chain):
    native = nib.load(chain["results"]["to_native"].out_file)
    np.testing.assert_allclose(native.affine, chain["baseline"].affine)
    found = np.asanyarray(native.dataobj) > 0
    truth = chain["baseline"].brain_mask
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.9


def test_rigid_registration_of_another_head_raises(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = chain["results"]
    other = _save(tmp_path / "other.nii.gz",
                  head_phantom(SHAPE, VOXEL, head_radius_mm=30.0, anatomy_seed=9, seed=3,
                               rotation_deg=(0, 90, 0)))
    with pytest.raises(InputError) as info:
        ifaces.RigidRegistration(fixed_file=results["n4_followup"].out_file,
                                 mask_file=results["skullstrip"].out_mask, moving_file=other,
                                 init_xfm=results["coarse"].out_xfm, source_file=other).run()
    assert info.value.step == "rigid_reg" and str(info.value.path) == other


def test_rigid_registration_hash_holds_the_before_output(chain):
    """A work directory made before rigid_reg wrote its 'before' image (the registration reportlet
    reads it) has no such output: the input that asks for it is part of the hash, so such a cached
    step runs again instead of handing the reportlet nothing."""
    writes = ifaces.RigidRegistration(write_before=True)
    skips = ifaces.RigidRegistration(write_before=False)
    assert writes.inputs.get_hashval()[1] != skips.inputs.get_hashval()[1]
    assert ifaces.RigidRegistration().inputs.write_before is True
    before = chain["results"]["rigid"].out_before
    assert nib.load(before).shape == nib.load(chain["results"]["rigid"].out_file).shape
