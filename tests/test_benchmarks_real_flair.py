"""The real-FLAIR benchmark's scoring of bidsgate phantoms: new lesions that bidsgate's truth lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def real_flair():
    return load_benchmark("real_flair")


def write_phantom(out: Path, volumes: dict[int, float], painted: np.ndarray) -> None:
    import nibabel as nib

    rows = ["visit\ttime_years\tlesion\torigin\tfate\tvolume_mm3"]
    rows += [f"0\t0.0\t{1000 + k}\tnew\tnew at 1 y\t0.0" for k in volumes]
    rows += [f"1\t1.0\t{1000 + k}\tnew\tnew at 1 y\t{v}" for k, v in volumes.items()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "truth.tsv").write_text("\n".join(rows) + "\n")
    nib.save(nib.Nifti1Image(painted.astype(np.int16), np.diag([0.9, 0.9, 5.5, 1.0])),
             str(out / "painted_labels.nii.gz"))


def test_lost_lesions_region_covers_only_the_painted_lesions_the_truth_lost(real_flair, tmp_path):
    import nibabel as nib

    painted = np.zeros((20, 20, 10), np.int16)
    painted[3:6, 3:6, 2] = 1  # kept by bidsgate's truth (volume > 0)
    painted[12:15, 12:15, 6] = 2  # one slice deep: lost from the truth (volume 0)
    write_phantom(tmp_path / "p", {1: 80.0, 2: 0.0}, painted)
    path, n_lost = real_flair._lost_lesions_region(tmp_path / "p")
    assert n_lost == 1
    region = np.asarray(nib.load(str(path)).dataobj) > 0
    assert region[13, 13, 6] and not region[4, 4, 2]
    # bidsgate's paint region: the lesion's label dilated by 2 voxels (here, 2 slices up and down)
    assert region[13, 13, 4] and region[13, 13, 8] and not region[13, 13, 3]
    assert region.sum() > painted[painted == 2].size


def test_lost_lesions_region_without_painted_labels_or_lost_lesions(real_flair, tmp_path):
    # a phantom whose painted labels could not be kept: nothing to ignore
    (tmp_path / "a").mkdir()
    assert real_flair._lost_lesions_region(tmp_path / "a") == (None, 0)
    # every painted lesion is in the truth: an empty region
    painted = np.zeros((8, 8, 8), np.int16)
    painted[2:4, 2:4, 2:4] = 1
    write_phantom(tmp_path / "b", {1: 40.0}, painted)
    path, n_lost = real_flair._lost_lesions_region(tmp_path / "b")
    assert n_lost == 0
    import nibabel as nib

    assert not np.asarray(nib.load(str(path)).dataobj).any()


def test_step_table_sums_the_lesions_found_after_each_step_over_a_groups_phantoms(real_flair):
    """Section 6 of the results: per group and method, new and enlarging lesions found after each
    step, summed over the group's phantoms, in the rule's order; a phantom scored without the
    steps leaves its group out rather than counting as none found."""
    def phantom(after):
        return {"scores": {m: {"found_after_step": {step: {"new": list(n), "enlarging": list(e)}
                                                    for step, (n, e) in after.items()}}
                           for m in real_flair.STEP_METHODS}}

    group = {"a": phantom({"threshold": ((6, 6), (2, 4)), "preexisting": ((6, 6), (1, 4))}),
             "b": phantom({"threshold": ((5, 6), (3, 4)), "preexisting": ((5, 6), (3, 4))})}
    table = real_flair.step_table({"x 2": group})
    header, _, *rows = table.strip().splitlines()
    assert header.index("after 'threshold'") < header.index("after 'preexisting'")
    assert len(rows) == len(real_flair.STEP_METHODS)
    assert "| x 2 | model | 11 of 12 / 5 of 8 | 11 of 12 / 4 of 8 |" in rows
    unscored = {**group, "c": {"scores": {m: {} for m in real_flair.STEP_METHODS}}}
    assert real_flair.step_table({"x 2": unscored}) == ""


def write_qc(out: Path, sub: str, preproc: dict | None, change: dict | None) -> None:
    import json

    from bids_lesionchange.derivatives import pair_outputs

    outputs = pair_outputs(sub=sub, baseline="01", followup="02")
    for path, content in ((outputs.preproc_qc, preproc), (outputs.change_qc, change)):
        if content is not None:
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_text(json.dumps(content))


def plausibility(**changed) -> dict:
    checks = {"baseline_contrast": {"flair_like": True}, "followup_contrast": {"flair_like": True},
              "same_person": {"same_person": True}, "lesion_persistence": {"lesions_persist": True},
              "brain_mask": {"plausible": True},
              "intensity_zero": {"baseline": {"plausible": True}, "followup": {"plausible": True}}}
    for name, value in changed.items():
        checks[name] = value
    return checks


def test_app_flags_names_each_check_the_app_raised_and_nothing_else(real_flair, tmp_path):
    write_qc(tmp_path, "a", {"registration_failed": False, "plausibility": plausibility()}, {"out_of_domain": False})
    write_qc(tmp_path, "b", {"registration_failed": True,
                             "plausibility": plausibility(baseline_contrast={"flair_like": False},
                                                          intensity_zero={"baseline": {"plausible": True},
                                                                          "followup": {"plausible": False}})},
             {"out_of_domain": True})
    assert real_flair.app_flags(tmp_path, "a") == []
    assert real_flair.app_flags(tmp_path, "b") == ["baseline not FLAIR-like", "follow-up below zero",
                                                   "registration failed", "out of domain"]


def test_app_flags_reports_a_missing_qc_file_and_ignores_checks_an_older_app_did_not_write(real_flair, tmp_path):
    write_qc(tmp_path, "c", {"plausibility": {}}, None)
    assert real_flair.app_flags(tmp_path, "c") == ["no sub-c_ses-02_space-ses02_desc-change_qc.json"]


def test_phantoms_asked_for_without_bidsgate_stop_the_run_before_it_starts(real_flair, monkeypatch, capsys):
    """Without bidsgate the phantom sections would be missing from a results file that looks complete."""
    installed = {"lesiontrack"}
    fake = lambda name: object() if name in installed else None  # noqa: E731
    assert real_flair.missing_phantom_packages([1], [], find_spec=fake) == ["bidsgate"]
    assert real_flair.missing_phantom_packages([], [3], find_spec=fake) == ["bidsgate"]
    assert real_flair.missing_phantom_packages([], [], find_spec=fake) == []  # none asked for
    installed.add("bidsgate")
    assert real_flair.missing_phantom_packages([1, 2], [1], find_spec=fake) == []

    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr("sys.argv", ["real_flair.py", "--phantom-seeds", "1"])
    with pytest.raises(SystemExit) as exit_info:
        real_flair.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "bidsgate and lesiontrack" in err and "pip install bidsgate lesiontrack" in err


class _PastTheCheck(Exception):
    pass


@pytest.mark.parametrize("script, args, without", [
    ("adaptation", [], "leave the phantom subjects out of --subjects"),
    ("separate_strip", [], "pass --phantom-seeds with no seeds")])
def test_the_other_phantom_benchmarks_stop_at_the_start_without_bidsgate(script, args, without, monkeypatch,
                                                                          capsys, restore_root_logging):
    """adaptation.py and separate_strip.py make patient-26 phantoms with real_flair's writer: without
    bidsgate they stop before any work, naming the fix; without phantoms asked for they go on."""
    import importlib.util

    module = load_benchmark(script)
    rf = module.real_flair if script == "adaptation" else module.rf

    def past(*_args, **_kwargs):
        raise _PastTheCheck

    monkeypatch.setattr(rf, "benchmark_tree", past)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr("sys.argv", [f"{script}.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "pip install bidsgate lesiontrack" in err and without in err
    no_phantoms = ["--subjects", "nihbase1", "nih01"] if script == "adaptation" else ["--phantom-seeds"]
    monkeypatch.setattr("sys.argv", [f"{script}.py", *no_phantoms])
    with pytest.raises(_PastTheCheck):
        module.main()
