"""The participant level through Nipype's SLURM plugins on a real single-node SLURM.

A two-subject synthetic cohort (2 mm, threshold skull stripping, a tiny random-weight model) is run
three times: sub-01 with MultiProc and with SLURMGraph, then both subjects with SLURM on a copy in
which sub-02's follow-up FLAIR holds no image (all zero). The cluster runs must send every step to
the scheduler, give the same derivatives as MultiProc voxel for voxel, and report the bad subject as
failed with its SLURM log while sub-01 completes. (sub-01 alone keeps the CPU time down.)

The tests assert what the code guarantees, never what the network outputs: the model has random
weights, and whether its probabilities cross a threshold depends on the CPU's floating-point path
(an Intel AVX-512 machine gave an empty change mask where AMD Zen 3 gave a non-empty one). So the
derivatives are compared with MultiProc's, and checked for their files, grids, dtypes and value
sets (a binary mask inside the brain and above the threshold, labels 1..n of components of at
least --min-blob-size voxels, probabilities in [0, 1]).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

THRESHOLD, MIN_BLOB = 0.5, 20
FAST = ["--skull-strip", "threshold", "--output-resolution", "2", "--skip-bids-validation",
        "--no-reports", "--nprocs", "2", "--omp-nthreads", "1", "--no-native",
        "--threshold", str(THRESHOLD), "--min-blob-size", str(MIN_BLOB)]
#: The derivatives of one pair in the common space (``--no-native``).
PAIR_IMAGES = ("ses-01/anat/sub-{s}_ses-01_space-ses02_desc-preproc_FLAIR.nii.gz",
               "ses-02/anat/sub-{s}_ses-02_space-ses02_desc-preproc_FLAIR.nii.gz",
               "ses-02/anat/sub-{s}_ses-02_space-ses02_desc-brain_mask.nii.gz",
               "ses-02/anat/sub-{s}_ses-02_space-ses02_label-change_probseg.nii.gz",
               "ses-02/anat/sub-{s}_ses-02_space-ses02_desc-change_mask.nii.gz",
               "ses-02/anat/sub-{s}_ses-02_space-ses02_desc-change_dseg.nii.gz")


def _app(*args: str, env=None) -> subprocess.CompletedProcess:
    """Run the installed BIDS-App in a fresh process (as a user would)."""
    code = "import sys; from bids_lesionchange.cli.run import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A synthetic two-subject cohort, a tiny model, and its MultiProc derivatives."""
    root = tmp_path_factory.mktemp("cohort")
    synth = subprocess.run(
        [sys.executable, "-c",
         "import sys; from bids_lesionchange.cli.synth import main; sys.exit(main(sys.argv[1:]))",
         str(root / "bids"), "--n-nochange", "0", "--n-change", "2", "--preset", "small", "--seed", "3"],
        capture_output=True, text=True, timeout=300)
    assert synth.returncode == 0, synth.stderr[-2000:]

    from bids_lesionchange.model.detector import build_detector
    from bids_lesionchange.model.io import DETECTOR_WEIGHTS, write_model_spec
    from bids_lesionchange.params import DetectorParams, HyperParams

    model_dir = root / "model"
    model_dir.mkdir()
    hyper = HyperParams(detector=DetectorParams(base_filters=4, levels=3))
    build_detector(hyper.detector).save_weights(str(model_dir / DETECTOR_WEIGHTS))
    write_model_spec(model_dir, hyper, software={"test": "slurm"})

    local = _app(root / "bids", root / "out-multiproc", "participant", "--model", model_dir,
                 "--participant-label", "01", "--work-dir", root / "work-multiproc",
                 "--plugin", "MultiProc", *FAST)
    assert local.returncode == 0, local.stderr[-3000:]
    return root, model_dir


def _images(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in sorted(out.glob("sub-*/**/*.nii.gz"))}


def _assert_same_images(expected: dict[str, Path], got: dict[str, Path]) -> None:
    import nibabel as nib

    assert sorted(got) == sorted(expected)
    for name, path in expected.items():
        want, have = nib.load(path), nib.load(got[name])
        np.testing.assert_array_equal(have.affine, want.affine, err_msg=name)
        np.testing.assert_array_equal(np.asanyarray(have.dataobj), np.asanyarray(want.dataobj),
                                      err_msg=name)


def _assert_outputs_are_consistent(images: dict[str, Path], subject: str = "01") -> None:
    """What the code guarantees about one pair's derivatives, whatever the network predicts."""
    import nibabel as nib
    from scipy import ndimage

    paths = {name.format(s=subject).split("_space-ses02_")[1]: images[f"sub-{subject}/" + name.format(s=subject)]
             for name in PAIR_IMAGES}  # KeyError: a derivative is missing
    loaded = {key: nib.load(path) for key, path in paths.items()}
    brain_img = loaded["desc-brain_mask.nii.gz"]
    for key, img in loaded.items():
        assert img.shape == brain_img.shape and np.allclose(img.affine, brain_img.affine), key
    brain = np.asanyarray(brain_img.dataobj) > 0
    prob_img, mask_img, dseg_img = (loaded[k] for k in ("label-change_probseg.nii.gz",
                                                         "desc-change_mask.nii.gz", "desc-change_dseg.nii.gz"))
    prob = np.asanyarray(prob_img.dataobj)
    mask = np.asanyarray(mask_img.dataobj)
    labels = np.asanyarray(dseg_img.dataobj)
    assert prob_img.get_data_dtype() == np.float32 and np.all((prob >= 0) & (prob <= 1))
    assert not prob[~brain].any()
    assert mask_img.get_data_dtype() == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.issubdtype(dseg_img.get_data_dtype(), np.integer)
    changed = mask > 0
    assert not (changed & ~brain).any() and np.all(prob[changed] > THRESHOLD)
    np.testing.assert_array_equal(labels > 0, changed)
    n = int(labels.max())
    assert sorted(np.unique(labels[changed]).tolist()) == list(range(1, n + 1))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, n + 1))
    assert np.all(np.asarray(sizes) >= MIN_BLOB)
    assert np.all(np.diff(sizes) <= 0)  # label 1 is the largest


def _summary(out: Path) -> dict[str, dict]:
    (summary,) = sorted((out / "logs").glob("summary-*.tsv"))
    with summary.open() as fh:
        return {row["pair"]: row for row in csv.DictReader(fh, delimiter="\t")}


def test_slurmgraph_runs_every_step_as_a_job_and_matches_multiproc(local_slurm, cohort):
    root, model_dir = cohort
    work = root / "work-graph"
    run = _app(root / "bids", root / "out-graph", "participant", "--model", model_dir,
               "--participant-label", "01", "--work-dir", work, "--allow-tmp-workdir",
               "--plugin", "SLURMGraph", *FAST)
    assert run.returncode == 0, run.stderr[-3000:]

    batch = work / "bids_lesionchange_wf" / "batch"
    scripts = sorted(batch.glob("batchscript_*.sh"))
    steps = [s for s in scripts if ".sub_01_ses_01to02_wf" in s.name]
    assert steps and steps == scripts  # only sub-01 was selected
    for step in ("preproc_wf_skullstrip", "preproc_wf_rigid_reg", "change_wf_predict",
                 "change_wf_components", "ds_pair_wf_ds_mask"):
        assert any(s.name.endswith(f"{step}.sh") for s in steps), step
    # every step ran under SLURM: its job wrote the output log named next to its script
    assert all(Path(f"{s}.o").is_file() for s in steps)
    assert _summary(root / "out-graph")["sub-01_ses-01to02"]["status"] == "ok"
    graph_images = _images(root / "out-graph")
    _assert_same_images(_images(root / "out-multiproc"), graph_images)
    _assert_outputs_are_consistent(graph_images)


def test_slurm_reports_a_corrupt_subject_with_its_log(local_slurm, cohort):
    root, model_dir = cohort
    bids = root / "bids-corrupt"
    shutil.copytree(root / "bids", bids)
    flair = bids / "sub-02" / "ses-02" / "anat" / "sub-02_ses-02_FLAIR.nii.gz"
    # a complete NIfTI without an image: it passes the check before the graph (which would refuse
    # a corrupt file before any job) and fails in its first job, so there is a SLURM log to name
    import nibabel as nib

    valid = nib.load(flair)
    nib.save(nib.Nifti1Image(np.zeros(valid.shape, np.float32), valid.affine), str(flair))
    work = root / "work-slurm"
    run = _app(bids, root / "out-slurm", "participant", "--model", model_dir, "--work-dir", work,
               "--allow-tmp-workdir", "--plugin", "SLURM", "--plugin-args=--time=00:15:00", *FAST)
    assert run.returncode == 1 and "sub-02_ses-01to02 FAILED" in run.stderr, run.stderr[-3000:]
    assert "the image is all zero" in run.stderr and str(flair) in run.stderr

    summary = _summary(root / "out-slurm")
    assert summary["sub-01_ses-01to02"]["status"] == "ok"
    failed = summary["sub-02_ses-01to02"]
    assert failed["status"] == "failed" and failed["step"] != "n/a"
    batch = work / "bids_lesionchange_wf" / "batch"
    log = Path(failed["message"].split("SLURM log: ", 1)[1].rstrip(")"))
    assert log.parent == batch and log.is_file() and log.name.startswith(f"slurm-{failed['step']}.")
    assert str(log) in run.stderr

    # the healthy subject's steps ran as jobs and match MultiProc
    jobs = sorted(batch.glob("slurm-*.sub_01_ses_01to02_wf.*.out"))
    (predict,) = [j for j in jobs if j.name.startswith("slurm-predict.")]
    # inference declares 3 GB: the scheduler was asked for it
    job_id = predict.name.rsplit("-", 1)[1].removesuffix(".out")
    job = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         check=True).stdout
    assert "MinMemoryNode=3G" in job and "JobState=COMPLETED" in job
    slurm_images = _images(root / "out-slurm")
    _assert_same_images(_images(root / "out-multiproc"),
                        {k: v for k, v in slurm_images.items() if k.startswith("sub-01")})
    _assert_outputs_are_consistent(slurm_images)
