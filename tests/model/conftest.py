"""Tiny synthetic brains and a micro configuration for model tests."""

from __future__ import annotations

import numpy as np
import pytest

from bids_lesionchange.params import hyperparams_from_mapping


def synthetic_brain(shape=(40, 40, 40), seed=0):
    """Return (baseline, follow-up, brain mask): a textured ellipsoid with bright blobs, no change."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.8
    texture = gaussian_filter(rng.standard_normal(shape), 2.0)
    image = 0.45 + 0.6 * texture
    for _ in range(4):
        centre = rng.uniform(-0.4, 0.4, 3)
        image += 0.4 * np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / 0.01)
    baseline = np.clip(image, 0, 1) * mask
    followup = np.clip(image + 0.02 * rng.standard_normal(shape), 0, 1) * mask
    return baseline.astype(np.float32), followup.astype(np.float32), mask


MICRO = {
    "vae": {"crop_shape": [16, 16, 16], "base_filters": 4, "levels": 2, "latent_channels": 4,
            "iterations": 2, "crops_per_iteration": 4, "batch_size": 2},
    "supermix": {"tau": 0.8, "n_segments_min": 50, "n_segments_max": 200},
    "detector": {"base_filters": 4, "levels": 2},
    "training": {"crop_shape": [16, 16, 16], "batch_size": 2, "iterations": 2, "pairs_per_iteration": 4,
                 "validation_crops": 2, "min_blob_size": 2,
                 "graph_mode": False},
}


@pytest.fixture
def micro_hyperparams():
    """A configuration small enough to train end to end in seconds."""
    return hyperparams_from_mapping("cpu", MICRO)


@pytest.fixture
def nifti_pairs(tmp_path):
    """Two preprocessed NoChange pairs written as NIfTI: list of (baseline, follow-up, mask, name)."""
    import nibabel as nib

    pairs = []
    for index in range(2):
        baseline, followup, mask = synthetic_brain(seed=index)
        paths = []
        for kind, data in (("baseline", baseline), ("followup", followup), ("mask", mask.astype(np.uint8))):
            path = tmp_path / "data" / f"pair{index}_{kind}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
            paths.append(path)
        pairs.append((*paths, f"sub-{index:02d}"))
    return pairs


@pytest.fixture
def make_brain():
    """The synthetic brain factory: ``make_brain(shape, seed) -> (baseline, follow-up, mask)``."""
    return synthetic_brain
