"""The written BIDS dataset: layout, ground truth files, determinism, validator, CLI errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.cli.synth import main
from bids_lesionchange.errors import InputError
from bids_lesionchange.simulate.acquisition import RescanEffects
from bids_lesionchange.simulate.cohort import PRESETS, write_cohort

ARGS = ["--n-nochange", "1", "--n-change", "1", "--seed", "4", "--preset", "small", "--thick-slice", "1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bids"
    assert main([str(out), *ARGS]) == 0
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_participants_and_sidecars(cohort):
    lines = (cohort / "participants.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["participant_id", "group", "n_new", "n_enlarging"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[:2] for r in rows] == [["sub-01", "NoChange"], ["sub-02", "Change"]]
    assert rows[0][2:] == ["0", "0"] and int(rows[1][2]) >= 1 and int(rows[1][3]) >= 1
    description = json.loads((cohort / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw"
    truth = cohort / "derivatives" / "truth"
    assert json.loads((truth / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert (truth / "desc-change_dseg.tsv").read_text().splitlines() == ["index\tname", "1\tnew", "2\tenlarging"]
    for sub in ("01", "02"):
        for ses in ("01", "02"):
            sidecar = json.loads((cohort / f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_FLAIR.json").read_text())
            for key in ("MagneticFieldStrength", "EchoTime", "RepetitionTime", "InversionTime", "MRAcquisitionType"):
                assert key in sidecar
            assert sidecar["MRAcquisitionType"] == ("2D" if ses == "02" else "3D")
            for desc in ("brain", "lesions"):
                assert (truth / f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_desc-{desc}_mask.nii.gz").exists()
        assert (truth / f"sub-{sub}/anat/sub-{sub}_from-ses01_to-ses02_mode-image_xfm.txt").exists()
    assert not list(truth.glob("sub-01/**/*desc-change*")), "NoChange subjects have no change mask"


def test_truth_images_are_on_the_follow_up_grid(cohort):
    truth = cohort / "derivatives" / "truth" / "sub-02" / "ses-02" / "anat"
    flair = nib.load(cohort / "sub-02/ses-02/anat/sub-02_ses-02_FLAIR.nii.gz")
    change = nib.load(truth / "sub-02_ses-02_desc-change_mask.nii.gz")
    dseg = nib.load(truth / "sub-02_ses-02_desc-change_dseg.nii.gz")
    lesions = nib.load(truth / "sub-02_ses-02_desc-lesions_mask.nii.gz")
    for image in (change, dseg, lesions):
        assert image.shape == flair.shape
        np.testing.assert_allclose(image.affine, flair.affine)
    assert change.get_data_dtype() == np.uint8
    change_data, dseg_data = np.asarray(change.dataobj), np.asarray(dseg.dataobj)
    assert set(np.unique(change_data)) == {0, 1}
    np.testing.assert_array_equal(change_data, (dseg_data > 0).astype(np.uint8))
    assert np.all(np.asarray(lesions.dataobj)[change_data > 0] == 1)
    xfm = np.loadtxt(cohort / "derivatives/truth/sub-02/anat/sub-02_from-ses01_to-ses02_mode-image_xfm.txt")
    assert xfm.shape == (4, 4)
    np.testing.assert_allclose(xfm[:3, :3] @ xfm[:3, :3].T, np.eye(3), atol=1e-8)


def test_thick_slice_option_sets_the_zooms(cohort):
    zooms_1 = nib.load(cohort / "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz").header.get_zooms()
    zooms_2 = nib.load(cohort / "sub-01/ses-02/anat/sub-01_ses-02_FLAIR.nii.gz").header.get_zooms()
    np.testing.assert_allclose(zooms_1, PRESETS["small"].zooms)
    np.testing.assert_allclose(zooms_2, PRESETS["small"].thick_zooms)


def test_same_seed_gives_identical_files(cohort, tmp_path):
    again = tmp_path / "again"
    assert main([str(again), *ARGS]) == 0
    first, second = _files(cohort), _files(again)
    assert first.keys() == second.keys()
    differing = [name for name in first if first[name] != second[name] and name != "README"]
    assert differing == []
    other = write_cohort(tmp_path / "other", 1, 0, seed=5, effects=RescanEffects(thick_slice=1.0))
    name = "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz"
    assert (other / name).read_bytes() != first[name]


def _validator() -> str | None:
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    return exe if Path(exe).exists() else None


@pytest.mark.skipif(_validator() is None, reason="bids-validator-deno is not installed")
def test_bids_validator_reports_no_error(cohort):
    proc = subprocess.run([_validator(), "--format", "json", str(cohort)], capture_output=True, text=True,
                          timeout=300)
    report = json.loads(proc.stdout)
    errors = [issue for issue in report["issues"]["issues"] if issue["severity"] == "error"]
    assert errors == []
    assert sorted(report["summary"]["subjects"]) == ["01", "02"]


@pytest.mark.parametrize("argv, message", [
    (["--n-nochange", "0", "--n-change", "0"], "no subjects"),
    (["--thick-slice", "1.5"], "between 0 and 1"),
    (["--n-change", "-1"], "0 or more"),
    (["--preset", "3mm"], "invalid choice"),
])
def test_cli_usage_errors_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_to_overwrite_a_dataset(cohort, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(cohort), *ARGS])
    assert exit_info.value.code == 2
    with pytest.raises(InputError, match="already holds a dataset"):
        write_cohort(cohort, 1, 1)
