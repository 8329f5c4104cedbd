"""Shared fixtures: tiny BIDS trees built in tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str):
    """Import ``benchmarks/<script>.py`` as a module, leaving the environment and sys.path as they were
    (``benchmarks/_common.py`` sets TensorFlow defaults and the scripts put benchmarks/ on the path)."""
    import importlib.util
    import sys

    saved_env, saved_path = dict(os.environ), list(sys.path)
    spec = importlib.util.spec_from_file_location(f"benchmarks_{script}_under_test", BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
    return module


def write_flair(path: Path, shape=(16, 16, 16), zooms=(1.0, 1.0, 1.0), value=1.0, seed=0) -> Path:
    """Write a small random FLAIR-like NIfTI image."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = (value * rng.random(shape)).astype(np.float32)
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def make_bids(root: Path, layout: dict[str, list[str]], participants: dict[str, str] | None = None) -> Path:
    """Build a BIDS tree; ``layout`` maps subject label to FLAIR file names relative to sub-X/.

    Example: ``{"01": ["ses-01/anat/sub-01_ses-01_FLAIR.nii.gz", ...]}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    for i, (subject, files) in enumerate(sorted(layout.items())):
        for j, rel in enumerate(files):
            write_flair(root / f"sub-{subject}" / rel, seed=10 * i + j)
    if participants:
        lines = ["participant_id\tgroup"] + [f"sub-{s}\t{g}" for s, g in sorted(participants.items())]
        (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Path:
    """A BIDS tree with two good subjects and three that cannot be paired."""
    return make_bids(
        tmp_path / "bids",
        {
            "01": ["ses-01/anat/sub-01_ses-01_FLAIR.nii.gz", "ses-02/anat/sub-01_ses-02_FLAIR.nii.gz"],
            "02": [
                "ses-01/anat/sub-02_ses-01_FLAIR.nii.gz",
                "ses-02/anat/sub-02_ses-02_FLAIR.nii.gz",
                "ses-03/anat/sub-02_ses-03_FLAIR.nii.gz",
            ],
            "03": ["ses-01/anat/sub-03_ses-01_FLAIR.nii.gz"],
            "04": ["ses-01/anat/sub-04_ses-01_T1w.nii.gz", "ses-02/anat/sub-04_ses-02_T1w.nii.gz"],
            "05": [
                "ses-01/anat/sub-05_ses-01_FLAIR.nii.gz",
                "ses-02/anat/sub-05_ses-02_FLAIR.nii.gz",
                "ses-02/anat/sub-05_ses-02_FLAIR.nii",
            ],
        },
        participants={"01": "NoChange", "02": "Change", "03": "NoChange", "04": "Change", "05": "Change"},
    )


@pytest.fixture
def restore_root_logging():
    """main() adds its handlers to the root logger (stderr of the test, a log file): remove them after."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
