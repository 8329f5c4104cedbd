"""Input plausibility (issue 16 items 1 and 2): voxel size, coverage, FLAIR contrast, same person."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.errors import InputError
from bids_lesionchange.image import plausibility as pl
from bids_lesionchange.image.preprocess import check_pair
from bids_lesionchange.image.skullstrip import foreground_mask


def _head(shape, zooms, radii_mm, centre_mm=None) -> np.ndarray:
    """A solid ellipsoid 'head' (bool) on a grid of ``shape`` voxels of ``zooms`` mm."""
    zooms = np.asarray(zooms, dtype=float)
    centre = (np.asarray(shape) - 1) / 2.0 * zooms if centre_mm is None else np.asarray(centre_mm, dtype=float)
    grids = np.meshgrid(*[np.arange(n) * z for n, z in zip(shape, zooms)], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii_mm)) <= 1.0


RADII = (70.0, 85.0, 65.0)  # an adult head, mm


# ----------------------------------------------------------------------------------- voxel size
@pytest.mark.parametrize("zooms", [(1, 1, 1), (0.45, 0.45, 3.0), (0.9, 0.9, 6.0), (1.0, 1.0, 7.0)])
def test_voxel_sizes_of_3d_and_2d_flair_pass(zooms):
    pl.check_voxel_size(zooms, "f.nii.gz")


@pytest.mark.parametrize("zooms", [(1.0, 1.0, 7.5), (0.9, 10.0, 0.9), (12.0, 12.0, 12.0)])
def test_slices_thicker_than_7_mm_are_refused_with_the_file_and_the_fix(zooms):
    with pytest.raises(InputError) as err:
        pl.check_voxel_size(zooms, "/d/sub-01_ses-02_FLAIR.nii.gz")
    text = str(err.value)
    assert text.startswith("check_inputs: /d/sub-01_ses-02_FLAIR.nii.gz: the voxel size")
    assert f"{max(zooms):g} mm, above the limit of 7 mm" in text and "slices of at most 7 mm" in text
    assert "\n" not in text


# ------------------------------------------------------------------------------------- coverage
def test_a_whole_head_passes_and_its_faces_do_not_cut_it():
    zooms = (2.0, 2.0, 2.0)
    head = _head((80, 95, 75), zooms, RADII)
    measures = pl.check_coverage(head, zooms, "f.nii.gz")
    assert np.max(measures["fov_cut"]) == 0.0
    assert measures["head_extent_mm"] == pytest.approx([140, 170, 130], abs=4)


def test_a_2d_scan_from_the_neck_to_below_the_vertex_passes():
    """As the real 2D FLAIRs: the first slice cuts the widest part (neck and skull base), the last one
    cuts the top of the head over 42 % of its largest cross-section."""
    zooms = (1.0, 1.0, 5.0)
    centre = (70.0, 85.0, 0.0)  # the widest section lies on the first slice
    top = RADII[2] * np.sqrt(1 - 0.42)  # where the cross-section is 42 % of the largest one
    head = _head((141, 171, int(top // 5) + 1), zooms, RADII, centre)
    cut = pl.field_of_view_cut(head)
    assert cut[2, 0] == pytest.approx(1.0) and 0.3 < cut[2, 1] < pl.MAX_CUT_FRACTION
    pl.check_coverage(head, zooms, "f.nii.gz")


@pytest.mark.parametrize("n_slices, zooms", [(10, (1.0, 1.0, 1.0)), (10, (1.0, 1.0, 3.0)),
                                             (20, (1.0, 1.0, 3.0)), (14, (1.0, 1.0, 6.0))])
def test_a_slab_through_the_middle_of_the_head_is_refused(n_slices, zooms):
    shape = (141, 171, n_slices)
    centre = (70.0, 85.0, (n_slices - 1) / 2.0 * zooms[2])
    head = _head(shape, zooms, RADII, centre)
    with pytest.raises(InputError) as err:
        pl.check_coverage(head, zooms, "/d/slab_FLAIR.nii.gz")
    text = str(err.value)
    assert text.startswith("check_inputs: /d/slab_FLAIR.nii.gz: the field of view cuts through the head "
                           "at both ends of its third axis")
    assert f"({n_slices} slices of {zooms[2]:g} mm;" in text and "the scan must cover the whole brain" in text


def test_a_slab_at_the_top_of_the_head_is_refused_by_its_extent():
    """Its last slice cuts little of the head (the vertex), but it spans less than any brain."""
    zooms = (1.0, 1.0, 3.0)
    head = _head((141, 171, 10), zooms, RADII, (70.0, 85.0, 27.0 - RADII[2]))
    assert pl.field_of_view_cut(head)[2, 1] < 0.01
    with pytest.raises(InputError, match=r"the head spans only \d+ mm along the third axis .* "
                                         r"the scan must cover the whole brain"):
        pl.check_coverage(head, zooms, "f.nii.gz")


def test_the_tests_phantom_heads_pass_the_coverage_check():
    from bids_lesionchange.simulate.phantom import head_phantom

    for skull in (True, False):
        phantom = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, skull=skull, noise=0.0)
        pl.check_coverage(foreground_mask(phantom.data, (2.0,) * 3), (2.0,) * 3, "phantom.nii.gz")


def _save(path, data, zooms):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([*zooms, 1.0])), str(path))
    return path


def test_check_pair_refuses_a_10_mm_scan_and_a_slab_and_passes_a_whole_head(tmp_path):
    zooms = (2.0, 2.0, 2.0)
    good = _save(tmp_path / "good.nii.gz", 100.0 * _head((80, 95, 75), zooms, RADII), zooms)
    other = _save(tmp_path / "other.nii.gz", 90.0 * _head((80, 95, 75), zooms, RADII), zooms)
    coverage = check_pair(good, other)
    assert set(coverage) == {"baseline", "followup"}
    head = nib.load(str(good))
    from bids_lesionchange.image.skullstrip import foreground_mask

    expected = foreground_mask(np.asarray(head.dataobj), zooms).sum() * 8.0 / 1000.0
    assert coverage["baseline"]["foreground_ml"] == pytest.approx(expected, abs=0.05)

    thick = _save(tmp_path / "thick.nii.gz", 100.0 * _head((70, 85, 14), (2.0, 2.0, 10.0), RADII), (2.0, 2.0, 10.0))
    with pytest.raises(InputError, match=rf"^check_inputs: {thick}: the voxel size \(2.0, 2.0, 10.0\) mm"):
        check_pair(good, thick)
    slab_head = _head((70, 85, 10), zooms, RADII, (70.0, 85.0, 9.0))
    slab = _save(tmp_path / "slab.nii.gz", 100.0 * slab_head, zooms)
    with pytest.raises(InputError, match=rf"^check_inputs: {slab}: .*the scan must cover the whole brain"):
        check_pair(slab, good)


def test_check_pair_refuses_a_copy_of_the_baseline_and_passes_a_rescan(tmp_path):
    """Two files with the same voxels on the same grid are a copy, not two sessions (a copy would give
    a plausible 'no change'); one voxel of difference, or the same voxels on another grid, passes."""
    zooms = (2.0, 2.0, 2.0)
    data = 100.0 * _head((80, 95, 75), zooms, RADII)
    base = _save(tmp_path / "sub-01_ses-01_FLAIR.nii.gz", data, zooms)
    copy = _save(tmp_path / "sub-01_ses-02_FLAIR.nii.gz", data, zooms)
    with pytest.raises(InputError, match=rf"^check_inputs: {copy}: it holds the same voxels as the baseline "
                                         r"sub-01_ses-01_FLAIR.nii.gz .*put each session's own FLAIR"):
        check_pair(base, copy)
    rescan = data.copy()
    rescan[40, 47, 37] += 1.0
    check_pair(base, _save(tmp_path / "rescan.nii.gz", rescan, zooms))
    check_pair(base, _save(tmp_path / "finer.nii.gz", data, (1.9, 2.0, 2.0)))


# ------------------------------------------------------------------------------- FLAIR contrast
def _brain(cortex: float, white: float, *, seed: int = 0):
    """A 1 mm sphere brain of radius 60 mm: 3 mm of dark CSF, a 6 mm cortex, white matter, dark
    ventricles (CSF 18 % of the mask, as in real brain masks), noise."""
    zooms = (1.0, 1.0, 1.0)
    shape = (124, 124, 124)
    centre = np.full(3, 61.5)
    grids = np.meshgrid(*[np.arange(n) * 1.0 for n in shape], indexing="ij")
    radius = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    mask = radius <= 60.0
    data = np.where(radius > 51.0, cortex, white)
    data = np.where((radius < 20.0) | (radius > 57.0), 0.1, data)  # CSF: dark in FLAIR and T1w
    data = data + np.random.default_rng(seed).normal(0.0, 0.03, shape)
    return np.where(mask, data, 0.0).astype(np.float32), mask, zooms


def test_a_flair_contrast_is_flair_like():
    data, mask, zooms = _brain(cortex=0.8, white=0.6)
    profile = pl.contrast_profile(data, mask, zooms)
    assert profile["flair_like"] is True
    assert profile["depth_intensity_correlation"] < -0.3  # cortex brighter than white matter


def test_a_t1w_contrast_is_not_flair_like_whatever_its_scale():
    data, mask, zooms = _brain(cortex=0.6, white=0.8)
    profile = pl.contrast_profile(data, mask, zooms)
    assert profile["flair_like"] is False and profile["depth_intensity_correlation"] > 0.3
    # rank-based: a monotone change of intensities (scanner gain, gamma) gives the same value
    assert pl.contrast_profile(1000.0 * np.sqrt(np.clip(data, 0, None)), mask, zooms) == profile


def test_contrast_is_not_judged_without_enough_brain_or_where_the_cortex_is_not_resolved():
    data, mask, zooms = _brain(0.6, 0.8)
    empty = pl.contrast_profile(data, np.zeros_like(mask), zooms)
    assert empty["flair_like"] is None and empty["depth_intensity_correlation"] is None
    # 2D with 0.9 mm in-plane and 5.5 mm slices: judged; 2.5 mm voxels, or 2 x 6 x 6 mm: not judged
    assert pl.contrast_profile(data, mask, zooms, resolution_mm=(0.9, 0.9, 5.5))["flair_like"] is False
    for resolution in ((2.5, 2.5, 2.5), (2.0, 6.0, 6.0)):
        coarse = pl.contrast_profile(data, mask, zooms, resolution_mm=resolution)
        assert coarse["flair_like"] is None and coarse["resolution_mm"] > pl.MAX_CONTRAST_RESOLUTION_MM


def test_each_session_is_judged_at_its_own_resolution_before_resolution_matching(tmp_path):
    """A 1 mm FLAIR smoothed to its partner's 4-5 mm slices scored like a T1w (+0.11) and was flagged
    (a real FLAIR, patient 26, against a 2D rescan): the QC judges each session on the image before
    matching, at its own resolution, when the workflow gives it (``unmatched``)."""
    import json

    from bids_lesionchange.image.preprocess import quality_file

    flair, mask, zooms = _brain(cortex=0.8, white=0.6)
    t1w_like, _, _ = _brain(cortex=0.6, white=0.8, seed=1)  # what the matched image may look like
    affine = np.eye(4)
    files = {}
    for name, data in (("flair", flair), ("matched", t1w_like), ("mask", mask.astype(np.uint8)),
                       ("sub-01_ses-01_FLAIR", flair), ("sub-01_ses-02_FLAIR", flair)):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(files[name]))
    registration = tmp_path / "registration.json"
    registration.write_text(json.dumps({"ncc_brain": 0.9, "registration_failed": False, "min_ncc": 0.5}))
    report = tmp_path / "resolution.json"
    report.write_text(json.dumps({"fwhm_mm": {"baseline": [1.0, 1.0, 1.0], "followup": [0.9, 1.4, 5.0]}}))

    def qc(**kwargs):
        return quality_file(files["matched"], files["flair"], files["mask"], registration, tmp_path / "qc.json",
                            resolution_json=report, baseline_source=files["sub-01_ses-01_FLAIR"],
                            followup_source=files["sub-01_ses-02_FLAIR"], **kwargs)["plausibility"]

    matched = qc()  # no unmatched images: the matched ones at the coarser resolution, as before
    assert matched["baseline_contrast"]["flair_like"] is False
    assert matched["flags"][0].startswith("sub-01_ses-01_FLAIR.nii.gz does not look like a FLAIR")
    own = qc(unmatched=(files["flair"], files["flair"]))
    assert own["baseline_contrast"]["flair_like"] is True and own["flags"] == []
    assert own["baseline_contrast"]["resolution_mm"] == 1.0 and own["followup_contrast"]["resolution_mm"] == 1.4
    # a follow-up too coarse to judge does not keep a 1 mm baseline from being judged
    report.write_text(json.dumps({"fwhm_mm": {"baseline": [1.0, 1.0, 1.0], "followup": [2.0, 6.0, 6.0]}}))
    coarse = qc(unmatched=(files["matched"], files["flair"]))
    assert coarse["baseline_contrast"]["flair_like"] is False and coarse["followup_contrast"]["flair_like"] is None
    assert qc()["baseline_contrast"]["flair_like"] is None  # judged at the pair's coarser resolution: not at all


# ---------------------------------------------------------------------------------- same person
def test_same_person_measures_and_flags():
    ok = pl.same_person_measures(0.95, 1000.0, 1010.0)
    assert ok["same_person"] is True and ok["parenchyma_volume_ratio"] == pytest.approx(1.01)
    other = pl.same_person_measures(pl.MIN_SAME_PERSON_NCC - 0.05, 1000.0, 1010.0)
    assert other["same_person"] is False
    # the parenchyma ratio is reported, not judged: a thick slice's partial volume moves it for one person
    thick = pl.same_person_measures(0.80, 1000.0, 1180.0)
    assert thick["same_person"] is True and thick["parenchyma_volume_ratio"] == pytest.approx(1.18)
    flair = {"flair_like": True, "depth_intensity_correlation": -0.1, "max_correlation": 0.10}
    assert pl.input_flags(flair, flair, ok, baseline_file="/d/b.nii.gz", followup_file="/d/f.nii.gz") == []
    flags = pl.input_flags(flair, flair, other, baseline_file="/d/b.nii.gz", followup_file="/d/f.nii.gz")
    assert len(flags) == 1 and flags[0].startswith("b.nii.gz and f.nii.gz may not be the same person or the same contrast")
    assert "check that both files are this subject's FLAIRs" in flags[0]


def test_a_t1w_session_is_flagged_by_name():
    flair = {"flair_like": True, "depth_intensity_correlation": -0.1, "max_correlation": 0.10}
    t1w = {"flair_like": False, "depth_intensity_correlation": 0.26, "max_correlation": 0.10}
    same = pl.same_person_measures(0.9, 1000.0, 1000.0)
    flags = pl.input_flags(flair, t1w, same, baseline_file="/d/b.nii.gz", followup_file="/d/f_FLAIR.nii.gz")
    assert flags == [flags[0]] and flags[0].startswith("f_FLAIR.nii.gz does not look like a FLAIR")
    assert "(depth-intensity correlation +0.26 > +0.10," in flags[0]
    unknown = {"flair_like": None, "depth_intensity_correlation": None, "max_correlation": 0.10}
    assert pl.input_flags(unknown, unknown, same, baseline_file="b", followup_file="f") == []


def test_a_brain_mask_larger_than_an_adult_skull_holds_is_flagged_by_the_follow_up_name():
    same = pl.same_person_measures(0.9, 1000.0, 1000.0)
    brain = pl.brain_mask_measures(1450.0)  # an adult brain
    assert brain["plausible"] is True
    assert pl.input_flags({}, {}, same, baseline_file="b", followup_file="f", brain_mask=brain) == []
    face = pl.brain_mask_measures(2227.0)  # HD-BET took in the face (a simulated rescan, stop 30)
    assert face["plausible"] is False and face["max_ml"] == pl.MAX_BRAIN_MASK_ML
    flags = pl.input_flags({}, {}, same, baseline_file="/d/b.nii.gz", followup_file="/d/f_FLAIR.nii.gz",
                           brain_mask=face)
    assert len(flags) == 1 and flags[0].startswith("the brain mask of f_FLAIR.nii.gz holds 2227 ml")
    assert f"(limit {pl.MAX_BRAIN_MASK_ML:.0f} ml)" in flags[0] and "--skull-strip none" in flags[0]
    # the limit itself is a brain's
    assert pl.brain_mask_measures(pl.MAX_BRAIN_MASK_ML)["plausible"] is True


# ---------------------------------------------------------------------------- lesion persistence
def _brain_with_lesions(rng, centres, shape=(40, 40, 40)):
    """White matter at 0.5 with noise, a dark CSF slab, 6^3-voxel lesions at 0.8 (1.6 x white matter)."""
    data = (0.5 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
    data[:, :, 30:] = 0.1
    for x, y, z in centres:
        data[x:x + 6, y:y + 6, z:z + 6] = 0.8
    return data


def test_lesion_persistence_flags_a_follow_up_without_the_baseline_lesions():
    rng = np.random.default_rng(1)
    mask = np.ones((40, 40, 40), bool)
    zooms = (2.0, 2.0, 2.0)  # 8 mm3 voxels: each lesion 1.7 ml
    lesions = [(4, 4, 4), (20, 20, 10), (4, 28, 18)]
    baseline = _brain_with_lesions(rng, lesions)
    # the same lesions, shifted by one voxel (residual misalignment), and a new one
    same = _brain_with_lesions(rng, [(x + 1, y, z) for x, y, z in lesions] + [(28, 4, 4)])
    kept = pl.lesion_persistence(baseline, same, mask, zooms)
    assert kept["lesions_persist"] is True and kept["persistent_fraction"] == pytest.approx(1.0)
    assert kept["baseline_lesion_ml"] == pytest.approx(3 * 216 * 8 / 1000, rel=0.02)
    other = _brain_with_lesions(rng, [(28, 4, 4), (28, 28, 20)])  # another person's lesions
    gone = pl.lesion_persistence(baseline, other, mask, zooms)
    assert gone["lesions_persist"] is False and gone["persistent_fraction"] < pl.MIN_LESION_PERSISTENCE
    flags = pl.input_flags({}, {}, {"same_person": True}, baseline_file="/d/b.nii.gz",
                           followup_file="/d/f.nii.gz", persistence=gone)
    assert len(flags) == 1 and flags[0].startswith("f.nii.gz does not show the lesions of b.nii.gz: 0 % of")
    assert "check that both files are this subject's FLAIRs" in flags[0]
    # one shrinking lesion of three keeps two thirds: not flagged
    shrunk = _brain_with_lesions(rng, lesions[:2])
    assert pl.lesion_persistence(baseline, shrunk, mask, zooms)["lesions_persist"] is True
    # under 1 ml of baseline lesion (1 mm voxels: 0.65 ml) is not judged
    small = pl.lesion_persistence(baseline, other, mask, (1.0, 1.0, 1.0))
    assert small["lesions_persist"] is None and small["persistent_fraction"] is not None
    # no lesion at baseline: nothing to judge
    clean = _brain_with_lesions(rng, [])
    assert pl.lesion_persistence(clean, other, mask, zooms)["persistent_fraction"] is None


def test_mask_depth_on_the_bounding_box_equals_the_whole_grid():
    from scipy import ndimage

    mask = np.zeros((30, 40, 20), bool)
    mask[5:20, 8:35, 3:20] = True  # touches the grid's last slice: the border counts as outside
    mask[10:12, 15:17, 10:12] = False
    zooms = (1.0, 0.8, 2.5)
    whole = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=zooms)[1:-1, 1:-1, 1:-1]
    np.testing.assert_allclose(pl.mask_depth_mm(mask, zooms), whole)
    assert not pl.mask_depth_mm(np.zeros((4, 4, 4)), zooms).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_is_scipys_with_ties_and_without(seed):
    from scipy.stats import rankdata, spearmanr

    from bids_lesionchange.image.plausibility import average_ranks, spearman

    rng = np.random.default_rng(seed)
    a = rng.normal(size=500).astype(np.float32)
    b = np.round(a + rng.normal(size=500), 1)  # many ties
    np.testing.assert_array_equal(average_ranks(b), rankdata(b))
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(500)))


def test_a_head_sized_foreground_skips_the_brain_extracted_test(tmp_path, monkeypatch):
    from bids_lesionchange.image import preprocess as pp

    assert not pp.could_be_brain_extracted(3600.0)  # a skull-on head
    assert not pp.could_be_brain_extracted(250.0)
    assert pp.could_be_brain_extracted(1300.0) and pp.could_be_brain_extracted(None)
    assert pp.could_be_brain_extracted(2800.0)  # within the margin: tested
    zooms = (2.0, 2.0, 2.0)
    image = _save(tmp_path / "head.nii.gz", 100.0 * _head((80, 95, 75), zooms, RADII), zooms)
    calls = []
    monkeypatch.setattr(pp, "brain_extracted_support", lambda *a: calls.append(a) or None)
    monkeypatch.setattr(pp, "resolve_skull_strip_method", lambda method, mode: "threshold")  # no HD-BET here
    pp.skullstrip_followup(image, tmp_path / "m1.nii.gz", method="auto", foreground_ml=3600.0)
    assert calls == []
    pp.skullstrip_followup(image, tmp_path / "m2.nii.gz", method="auto", foreground_ml=1300.0)
    pp.skullstrip_followup(image, tmp_path / "m3.nii.gz", method="auto")
    assert len(calls) == 2


def test_check_pair_on_two_threads_measures_the_same_and_names_the_baseline_first(tmp_path):
    """Issue 15: both sessions are checked at once; when both are bad the baseline is named."""
    zooms = (1.5, 1.5, 1.5)
    affine = np.diag(list(zooms) + [1.0])
    rng = np.random.default_rng(0)
    paths = {}
    for name, radii in (("baseline", (70, 90, 75)), ("followup", (68, 88, 74))):
        data = _head((120, 150, 120), zooms, radii) * 100.0 + rng.random((120, 150, 120)) * 2.0
        paths[name] = tmp_path / f"{name}_FLAIR.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(paths[name]))
    one = check_pair(paths["baseline"], paths["followup"])
    two = check_pair(paths["baseline"], paths["followup"], threads=2)
    assert one == two and one["baseline"]["foreground_ml"] != one["followup"]["foreground_ml"]
    bad = {}
    for name in ("baseline", "followup"):
        bad[name] = tmp_path / f"bad_{name}_FLAIR.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(bad[name]))
    with pytest.raises(InputError) as info:
        check_pair(bad["baseline"], bad["followup"], threads=2)
    assert info.value.path == bad["baseline"]
    with pytest.raises(InputError) as info:
        check_pair(paths["baseline"], bad["followup"], threads=2)
    assert info.value.path == bad["followup"]


# ------------------------------------------------------------------------------ the image's zero
def test_a_magnitude_flair_passes_and_a_z_scored_one_is_flagged_by_name(tmp_path):
    """A FLAIR's zero is the scanner's; a standardised (z-scored) one has much of its brain below zero,
    and the white-matter-peak scaling, which keeps the zero, would misjudge it: flagged, naming the file."""
    import json

    from bids_lesionchange.image.preprocess import quality_file

    flair, mask, _ = _brain(cortex=0.8, white=0.6)
    assert pl.intensity_zero(flair, mask)["plausible"] is True
    assert pl.intensity_zero(flair, mask)["negative_fraction"] == 0.0
    z = np.where(mask, (flair - flair[mask].mean()) / flair[mask].std(), 0.0).astype(np.float32)
    measure = pl.intensity_zero(z, mask)
    assert measure["plausible"] is False and measure["negative_fraction"] > 0.2 and measure["lowest"] < 0
    assert pl.intensity_zero(z, np.zeros_like(mask))["plausible"] is True  # nothing to judge
    # interpolation noise: a few voxels just below zero are not a shifted image
    edge = flair.copy()
    edge[np.argwhere(mask)[:5].T.tolist()] = -0.001
    assert pl.intensity_zero(edge, mask)["plausible"] is True

    files = {}
    for name, data in (("flair", flair), ("z", z), ("mask", mask.astype(np.uint8)),
                       ("sub-01_ses-01_FLAIR", flair), ("sub-01_ses-02_FLAIR", z)):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(files[name]))
    registration = tmp_path / "registration.json"
    registration.write_text(json.dumps({"ncc_brain": 0.9, "registration_failed": False, "min_ncc": 0.5}))

    def qc(unnormalised):
        return quality_file(files["flair"], files["flair"], files["mask"], registration, tmp_path / "qc.json",
                            baseline_source=files["sub-01_ses-01_FLAIR"], followup_source=files["sub-01_ses-02_FLAIR"],
                            unnormalised=unnormalised)["plausibility"]

    flagged = qc((files["flair"], files["z"]))
    assert flagged["intensity_zero"]["baseline"]["plausible"] is True
    assert flagged["intensity_zero"]["followup"]["plausible"] is False
    zero_flags = [f for f in flagged["flags"] if "below zero" in f]
    assert len(zero_flags) == 1 and zero_flags[0].startswith("sub-01_ses-02_FLAIR.nii.gz holds intensities below zero")
    assert "z-scored" in zero_flags[0] and "as exported from the scanner" in zero_flags[0]
    # without the images before normalisation (which clips at zero) nothing is judged
    assert qc((None, None))["intensity_zero"] is None


def test_check_pair_refuses_a_z_scored_flair_by_name_before_preprocessing(tmp_path):
    """A standardised FLAIR (z-scored: a third or more of it below zero) derails the skull strip and
    the registration, which then failed with a misleading message: it is refused at once, by name,
    with the fix; a magnitude FLAIR, and one with a resampling's few voxels just below zero, pass."""
    flair, mask, zooms = _brain(cortex=0.8, white=0.6)
    assert pl.check_standardised(flair, "x.nii.gz") < 0.001  # noise on dark CSF: a few voxels
    edge = flair.copy()
    edge[tuple(np.argwhere(mask)[:500].T)] = -0.05  # undershoot at a few hundred voxels
    assert pl.check_standardised(edge, "x.nii.gz") < pl.MAX_STANDARDISED_FRACTION
    z = np.where(mask, (flair - flair[mask].mean()) / flair[mask].std(), 0.0).astype(np.float32)
    base = _save(tmp_path / "sub-01_ses-01_FLAIR.nii.gz", flair, zooms)
    bad = _save(tmp_path / "sub-01_ses-02_FLAIR.nii.gz", z, zooms)
    with pytest.raises(InputError, match=rf"^check_inputs: {bad}: \d+ % of its non-zero voxels are below zero"
                                         r".*z-scored.*give the FLAIRs as exported from the scanner"):
        check_pair(base, bad)
    # a z-scored whole head (background included) as well
    with pytest.raises(InputError, match="below zero"):
        pl.check_standardised((flair - flair.mean()) / flair.std(), "head.nii.gz")


def test_the_qc_node_hashes_the_checks_code():
    """A work directory kept across versions runs the input checks again (the digest is in the node's hash)."""
    from bids_lesionchange.workflows.preproc import init_preproc_wf

    workflow = init_preproc_wf(skull_strip="threshold")
    qc = workflow.get_node("qc")
    digest = pl.checks_digest()
    assert qc.inputs.checks_digest == digest and len(digest) == 16
    assert "checks_digest" in dict(qc.inputs.get_hashval()[0])
