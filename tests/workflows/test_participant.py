"""The BIDS-App end to end, as a user runs it: train a micro model at the group level on the
NoChange subjects of a small synthetic cohort, detect change at the participant level, evaluate,
resume from the work dir, and survive a corrupt FLAIR in one subject."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.simulate.cohort import write_cohort

MICRO = """\
vae: {crop_shape: [16, 16, 16], base_filters: 4, levels: 2, latent_channels: 4, iterations: 2,
      crops_per_iteration: 4, batch_size: 2}
supermix: {tau: 0.8, n_segments_min: 50, n_segments_max: 200}
detector: {base_filters: 4, levels: 2}
training: {crop_shape: [16, 16, 16], batch_size: 2, iterations: 2, pairs_per_iteration: 4,
           validation_crops: 2, min_blob_size: 2, graph_mode: false}
"""
FAST = ["--skull-strip", "threshold", "--output-resolution", "2.5", "--nprocs", "2",
        "--skip-bids-validation"]


def app(*args) -> subprocess.CompletedProcess:
    """Run the BIDS-App in its own process, as a user would."""
    return subprocess.run([sys.executable, "-m", "bids_lesionchange.cli.run", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A cohort (2 NoChange, 2 Change) and a micro model trained on its NoChange pairs."""
    root = tmp_path_factory.mktemp("study")
    bids = write_cohort(root / "bids", n_nochange=2, n_change=2, seed=11, preset="small")
    config = root / "micro.yaml"
    config.write_text(MICRO)
    proc = app(bids, root / "train", "group", "--mode", "train", "--config", config,
               "-w", root / "work_train", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "bids": bids, "model": root / "train" / "model"}


def test_group_train_writes_a_model_and_a_report(study):
    model = study["model"]
    spec = json.loads((model / "model.json").read_text())
    assert spec["format"] == "bids_lesionchange-model"
    used = set(spec["training"]["training_pairs"]) | set(spec["training"]["validation_pairs"])
    assert used == {"sub-01_ses-01to02", "sub-02_ses-01to02"}  # the NoChange subjects only
    assert (model / "model_card.md").is_file()
    assert (study["root"] / "train" / "group_desc-training_report.html").is_file()
    # only the NoChange subjects were preprocessed for training
    assert not (study["root"] / "train" / "sub-03").exists()


def test_participant_infer_evaluate_resume_and_isolate_a_failure(study, tmp_path):
    """One run over a good subject and one with a corrupt FLAIR, then the same run again."""
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids)
    bad = bids / "sub-04" / "ses-02" / "anat" / "sub-04_ses-02_FLAIR.nii.gz"
    bad.write_bytes(b"this is not a NIfTI image")
    out, work = tmp_path / "out", tmp_path / "work"
    args = [bids, out, "participant", "--model", study["model"], "--participant-label", "03", "04",
            "--reference-dir", bids / "derivatives" / "truth", "-w", work, *FAST]
    proc = app(*args)

    # the corrupt subject fails, by name, step and file; the other one is complete
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "sub-04_ses-01to02 FAILED at step" in proc.stderr
    assert "sub-04_ses-02_FLAIR.nii.gz" in proc.stderr
    summary = next((out / "logs").glob("summary-*.tsv")).read_text()
    assert "sub-03_ses-01to02\tok" in summary and "sub-04_ses-01to02\tfailed" in summary

    anat = out / "sub-03" / "ses-02" / "anat"
    mask = anat / "sub-03_ses-02_space-ses02_desc-change_mask.nii.gz"
    table = anat / "sub-03_ses-02_space-ses02_desc-change_lesions.tsv"
    native = anat / "sub-03_ses-02_desc-change_mask.nii.gz"
    metrics = anat / "sub-03_ses-02_desc-evaluation_metrics.tsv"
    for path in (mask, table, native, metrics, out / "sub-03.html", out / "sub-04.html",
                 out / "dataset_description.json",
                 anat / "sub-03_ses-02_space-ses02_desc-change_dseg.nii.gz",
                 anat / "sub-03_ses-02_space-ses02_desc-change_dseg.tsv",
                 anat / "sub-03_ses-02_space-ses02_label-change_probseg.nii.gz",
                 out / "sub-03" / "ses-01" / "anat" / "sub-03_ses-01_space-ses02_desc-preproc_FLAIR.nii.gz"):
        assert path.is_file(), path
    assert "check_inputs" in (out / "sub-04.html").read_text()  # the report names the failed step
    # the lesion table's volumes add up to the mask's volume
    img = nib.load(str(mask))
    voxel_mm3 = float(np.prod(img.header.get_zooms()[:3]))
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    header, body = rows[0], rows[1:]
    volumes = [float(r[header.index("volume_mm3")]) for r in body]
    assert np.isclose(sum(volumes), np.asarray(img.dataobj).sum() * voxel_mm3)
    # native outputs sit on the follow-up's original grid
    flair = nib.load(str(bids / "sub-03" / "ses-02" / "anat" / "sub-03_ses-02_FLAIR.nii.gz"))
    native_img = nib.load(str(native))
    assert native_img.shape == flair.shape and np.allclose(native_img.affine, flair.affine)
    header = metrics.read_text().splitlines()[0].split("\t")
    assert {"LTPR", "LFPR", "PPV", "lesion_F1", "dice"} <= set(header)
    assert not list(out.rglob(".tmp-*"))  # no half-written file
    validator = Path(sys.executable).with_name("bids-validator-deno")
    if validator.exists():  # the derivatives are valid BIDS
        report = subprocess.run([str(validator), "--format", "json", str(out)],
                                capture_output=True, text=True, timeout=300).stdout
        errors = [i for i in json.loads(report)["issues"]["issues"] if i["severity"] == "error"]
        assert errors == [], errors[:5]

    # a second run reuses the work dir: finished nodes are not recomputed
    result = next((work / "bids_lesionchange_wf").rglob("predict/result_predict.pklz"))
    stamp = result.stat().st_mtime_ns
    proc = app(*args)
    assert proc.returncode == 1
    assert result.stat().st_mtime_ns == stamp

    # the group level aggregates the evaluated pairs
    proc = app(bids, out, "group", "--mode", "evaluate", "--skip-bids-validation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    group = (out / "group_desc-evaluation_metrics.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in group[1:]] == ["sub-03_ses-01to02", "mean", "pooled"]


def test_group_train_with_self_pairs_takes_single_session_subjects(study, tmp_path):
    """--self-pairs: a subject with one FLAIR session is training material (rescans of its scan)."""
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids)
    shutil.rmtree(bids / "sub-02" / "ses-02")  # sub-02 now has a single session
    config = study["root"] / "micro.yaml"
    out, work = tmp_path / "out", tmp_path / "work"
    proc = app(bids, out, "group", "--mode", "train", "--config", config, "--nochange-label", "01", "02",
               "--self-pairs", "1", "-w", work, "--no-reports", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = json.loads((out / "model" / "model.json").read_text())
    used = set(spec["training"]["training_pairs"]) | set(spec["training"]["validation_pairs"])
    assert used == {"sub-01_ses-01to02", "sub-01_ses-selfpair01atoselfpair01b",
                    "sub-02_ses-selfpair01atoselfpair01b"}
    assert "skipping sub-02" not in proc.stderr
    # the rescans are kept in the work dir, say what they are, and went through preprocessing
    sidecar = json.loads((work / "self_pairs" / "sub-02" / "ses-selfpair01b" / "anat"
                          / "sub-02_ses-selfpair01b_FLAIR.json").read_text())
    assert sidecar["Simulated"] is True and sidecar["SelfPairOf"].endswith("sub-02_ses-01_FLAIR.nii.gz")
    assert (out / "sub-02" / "ses-selfpair01b" / "anat"
            / "sub-02_ses-selfpair01b_space-sesselfpair01b_desc-preproc_FLAIR.nii.gz").is_file()
    # the model says how its inputs must be normalised, and its card carries no path of this machine
    assert spec["hyperparams"]["training"]["intensity_normalisation"] == "percentile"
    assert str(tmp_path) not in (out / "model" / "model_card.md").read_text()


def test_participant_adapts_a_copy_of_the_model_to_the_pair(study, tmp_path):
    """--adapt-steps: a copy fine-tuned on the pair's own sessions lands in the work dir and is reported."""
    from bids_lesionchange.model.io import sha256_of

    base_digest = sha256_of(study["model"] / "detector.weights.h5")
    out, work = tmp_path / "out", tmp_path / "work"
    proc = app(study["bids"], out, "participant", "--model", study["model"], "--participant-label", "03",
               "--adapt-steps", "2", "--seed", "5", "-w", work, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sha256_of(study["model"] / "detector.weights.h5") == base_digest  # the given model is untouched
    anat = out / "sub-03" / "ses-02" / "anat"
    qc = json.loads((anat / "sub-03_ses-02_space-ses02_desc-change_qc.json").read_text())
    adaptation = qc["adaptation"]
    assert adaptation["steps"] == 2 and adaptation["seed"] == 5
    assert adaptation["base_detector_sha256"] == base_digest
    assert len(adaptation["sessions"]) == 2
    sidecar = json.loads((anat / "sub-03_ses-02_space-ses02_label-change_probseg.json").read_text())
    assert sidecar["AdaptationSteps"] == 2
    adapted = list(work.rglob("adapted_model/model.json"))
    assert len(adapted) == 1 and not list(out.rglob("*.weights.h5"))  # weights stay out of the derivatives
    assert sha256_of(adapted[0].parent / "detector.weights.h5") != base_digest
    assert "adapted to this pair before inference: 2 fine-tuning steps" in (out / "sub-03.html").read_text()

    # the same work dir with other steps: the adapted copy is rewritten in place, and inference must
    # not be served from the cache of the first run (its model path is the same)
    probseg = anat / "sub-03_ses-02_space-ses02_label-change_probseg.nii.gz"
    result = next(work.rglob("predict/result_predict.pklz"))
    stamp = result.stat().st_mtime_ns
    proc = app(study["bids"], out, "participant", "--model", study["model"], "--participant-label", "03",
               "--adapt-steps", "3", "--seed", "5", "-w", work, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((anat / "sub-03_ses-02_space-ses02_desc-change_qc.json").read_text())["adaptation"]["steps"] == 3
    assert result.stat().st_mtime_ns != stamp  # predict ran again with the new weights
    assert probseg.is_file()


def test_group_adapt_writes_an_adapted_model_with_its_card(study, tmp_path):
    """group --mode adapt: every session of the cohort, each against itself; the result runs with --model."""
    from bids_lesionchange.model.io import read_model_spec, sha256_of

    out, work = tmp_path / "out", tmp_path / "work"
    proc = app(study["bids"], out, "group", "--mode", "adapt", "--model", study["model"], "--participant-label",
               "01", "03", "--adapt-steps", "2", "-w", work, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = read_model_spec(out / "model-adapted")
    adaptation = spec["training"]["adaptation"]
    assert adaptation["steps"] == 2
    assert adaptation["base_detector_sha256"] == sha256_of(study["model"] / "detector.weights.h5")
    assert sorted(adaptation["sessions"]) == ["sub-01_ses-01", "sub-01_ses-02", "sub-03_ses-01", "sub-03_ses-02"]
    card = (out / "model-adapted" / "model_card.md").read_text()
    assert "sub-03_ses-02" in card and "--mode adapt" in card and str(tmp_path) not in card
    proc = app(study["bids"], tmp_path / "out2", "participant", "--model", out / "model-adapted",
               "--participant-label", "03", "-w", work, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_group_adapt_refuses_a_missing_model(study, tmp_path):
    proc = app(study["bids"], tmp_path / "out", "group", "--mode", "adapt", "--model", tmp_path / "nothing",
               *FAST)
    assert proc.returncode == 2 and "nothing" in proc.stderr
