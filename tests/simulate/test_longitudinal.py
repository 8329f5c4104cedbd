"""Three or more sessions (``--sessions N``): files, the truth of every pair, the lesion history."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.analysis.tables import read_table_tsv
from bids_lesionchange.cli.synth import main
from bids_lesionchange.errors import InputError
from bids_lesionchange.simulate.cohort import write_cohort
from bids_lesionchange.simulate.longitudinal import HISTORY_COLUMNS

SESSIONS = ("01", "02", "03")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("three") / "bids"
    assert main([str(root), "--n-nochange", "1", "--n-change", "1", "--sessions", "3", "--seed", "4"]) == 0
    return root


def truth_file(root: Path, sub: str, ses: str, desc: str) -> Path:
    return root / "derivatives" / "truth" / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{desc}"


def data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def history(root: Path, sub: str) -> list[dict]:
    anat = root / "derivatives" / "truth" / f"sub-{sub}" / "anat"
    return read_table_tsv(anat / f"sub-{sub}_desc-lesions_history.tsv")


def test_every_session_and_every_pair_has_its_files(cohort):
    for sub in ("01", "02"):
        for ses in SESSIONS:
            assert (cohort / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz").is_file()
            for desc in ("desc-brain_mask.nii.gz", "desc-lesions_mask.nii.gz", "desc-lesions_dseg.nii.gz",
                         "desc-lesions_dseg.tsv"):
                assert truth_file(cohort, sub, ses, desc).is_file()
        anat = cohort / "derivatives" / "truth" / f"sub-{sub}" / "anat"
        for a, b in zip(SESSIONS, SESSIONS[1:]):
            xfm = np.loadtxt(anat / f"sub-{sub}_from-ses{a}_to-ses{b}_mode-image_xfm.txt")
            np.testing.assert_allclose(xfm[:3, :3] @ xfm[:3, :3].T, np.eye(3), atol=1e-8)
            sidecar = json.loads((anat / f"sub-{sub}_from-ses{a}_to-ses{b}_mode-image_xfm.json").read_text())
            assert set(sidecar["SimulatedRescanEffects"]) == {f"ses-{a}", f"ses-{b}"}
        assert set(json.loads((anat / f"sub-{sub}_desc-lesions_history.json").read_text())) >= set(HISTORY_COLUMNS)
    # change truth for each pair of the Change subject, on the later session's grid; none at ses-01
    for ses in ("02", "03"):
        flair = nib.load(cohort / "sub-02" / f"ses-{ses}" / "anat" / f"sub-02_ses-{ses}_FLAIR.nii.gz")
        for desc in ("desc-change_mask.nii.gz", "desc-change_dseg.nii.gz"):
            image = nib.load(truth_file(cohort, "02", ses, desc))
            assert image.shape == flair.shape
            np.testing.assert_allclose(image.affine, flair.affine)
    assert not truth_file(cohort, "02", "01", "desc-change_mask.nii.gz").exists()
    assert not any((cohort / "derivatives" / "truth" / "sub-01").rglob("*desc-change_mask.nii.gz"))
    participants = read_table_tsv(cohort / "participants.tsv")
    rows = history(cohort, "02")
    assert participants[1]["n_new"] == sum(r["state"] == "new" for r in rows) >= 2
    assert participants[1]["n_enlarging"] == sum(r["state"] == "enlarging" for r in rows) >= 2
    generated_by = json.loads((cohort / "dataset_description.json").read_text())["GeneratedBy"][0]
    assert "sessions=3" in generated_by["Description"]


def test_each_pair_change_is_exactly_the_new_and_enlarging_lesions_of_the_history(cohort):
    rows = history(cohort, "02")
    for ses in ("02", "03"):
        dseg = data(truth_file(cohort, "02", ses, "desc-change_dseg.nii.gz"))
        ids = data(truth_file(cohort, "02", ses, "desc-lesions_dseg.nii.gz"))
        np.testing.assert_array_equal(data(truth_file(cohort, "02", ses, "desc-change_mask.nii.gz")), dseg > 0)
        assert np.all(ids[dseg > 0] > 0), "a change is lesion"
        state = {r["lesion_id"]: r["state"] for r in rows if r["session"] == int(ses)}
        new = {int(v) for v in np.unique(ids[dseg == 1])}
        enlarged = {int(v) for v in np.unique(ids[dseg == 2])}
        assert new == {i for i, s in state.items() if s == "new"} and new
        assert enlarged == {i for i, s in state.items() if s == "enlarging"} and enlarged
    # a lesion that was new at ses-02 enlarges at ses-03: a change followed over sessions grows
    first = {r["lesion_id"]: r["first_session"] for r in rows}
    assert any(r["state"] == "enlarging" and first[r["lesion_id"]] == 2 for r in rows)


@pytest.mark.parametrize("sub", ["01", "02"])
def test_history_matches_the_lesion_id_images(cohort, sub):
    rows = history(cohort, sub)
    assert list(rows[0]) == list(HISTORY_COLUMNS)
    for ses in SESSIONS:
        ids = data(truth_file(cohort, sub, ses, "desc-lesions_dseg.nii.gz"))
        np.testing.assert_array_equal(ids > 0, data(truth_file(cohort, sub, ses, "desc-lesions_mask.nii.gz")) > 0)
        voxel = float(np.prod(nib.load(truth_file(cohort, sub, ses, "desc-lesions_dseg.nii.gz")).header.get_zooms()))
        here = [r for r in rows if r["session"] == int(ses)]
        assert {r["lesion_id"] for r in here} == {int(v) for v in np.unique(ids) if v > 0}
        for r in here:
            assert r["grid_volume_mm3"] == pytest.approx(np.sum(ids == r["lesion_id"]) * voxel)
    by_lesion: dict[int, list[dict]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], []).append(r)
    for lesion_rows in by_lesion.values():
        sessions = [r["session"] for r in lesion_rows]
        assert sessions == list(range(sessions[0], len(SESSIONS) + 1)), "present from its appearance on"
        assert all(r["first_session"] == sessions[0] for r in lesion_rows)
        assert lesion_rows[0]["state"] == ("baseline" if sessions[0] == 1 else "new")
        for before, after in zip(lesion_rows, lesion_rows[1:]):
            grew = after["volume_mm3"] > before["volume_mm3"]
            assert after["state"] == ("enlarging" if grew else "stable")
            assert after["volume_mm3"] >= before["volume_mm3"]
    if sub == "01":  # NoChange: the baseline lesions, unchanged at every session
        assert {r["state"] for r in rows} == {"baseline", "stable"}


def test_sessions_below_two_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "out"), "--sessions", "1"])
    assert exit_info.value.code == 2
    assert "2 or more" in capsys.readouterr().err
    with pytest.raises(InputError, match="give a whole number of 2 or more"):
        write_cohort(tmp_path / "api", 1, 0, n_sessions=1)
