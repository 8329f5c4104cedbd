"""Fine-tune a trained model on its own false positives: hard-negative crops from NoChange pairs.

A model trained by ``scripts/default_model/train.sh`` is run on every NoChange pair it was trained
on (preprocessed, in the training work directory); on such a pair every brain voxel above κ is a
false positive. A share of the fine-tuning crops is then centred on those voxels (the rest as in
training), with SuperMix's synthetic changes as usual, at a fraction of the training learning rate
(``bids_lesionchange.model.adapt.fine_tune_detector``). No held-out scan is read.

    python scripts/default_model/hard_negatives.py WORK_ROOT/work MODEL_DIR OUT_DIR [--steps 400]

WORK_ROOT is the directory ``train.sh`` was given; MODEL_DIR the model to start from.
``--exclude-near-hyperintensity`` leaves out the false positives at lesions already there;
``--mine-only`` only finds and describes them. Not part of the shipped model's recipe: the two
candidates it made in stop 46 are in docs/benchmarks.md (v8hn, v8hn2).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("hard_negatives")
PREPROCESSED = ("normalise_baseline/baseline_preproc", "normalise_followup/followup_preproc")
HYPERINTENSE = 0.7  # white matter is at 0.5 after the app's wm-peak normalisation; lesions lie above this
NEAR_MM = 2  # voxels of 1 mm


def near_hyperintensity(pair) -> np.ndarray:
    """Brain voxels within ``NEAR_MM`` of a voxel above ``HYPERINTENSE`` in either session (lesions
    already there, and their edges)."""
    from scipy import ndimage

    bright = (np.maximum(pair.baseline, pair.followup) > HYPERINTENSE) & pair.brain_mask
    return ndimage.binary_dilation(bright, iterations=NEAR_MM) & pair.brain_mask


def training_pairs(work: Path) -> list[tuple[str, str, str, str]]:
    """(baseline, follow-up, brain mask, name) of every pair ``group --mode train`` preprocessed in ``work``."""
    pairs = []
    for pair_dir in sorted((work / "training_preproc_wf").glob("*_wf")):
        wf = pair_dir / "preproc_wf"
        images = [next(iter(sorted(wf.glob(f"{stem}.nii*"))), None) for stem in PREPROCESSED]
        mask = wf / "rigid_reg" / "brain_mask.nii.gz"
        if all(images) and mask.is_file():
            pairs.append((str(images[0]), str(images[1]), str(mask), pair_dir.name))
    return pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="the training work directory (train.sh's WORK_ROOT/work)")
    parser.add_argument("model", type=Path, help="the model directory to start from")
    parser.add_argument("out", type=Path, help="the fine-tuned model directory to write")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--focus-fraction", type=float, default=0.5,
                        help="share of the crops centred on a false positive (default 0.5)")
    parser.add_argument("--learning-rate-factor", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--exclude-near-hyperintensity", action="store_true",
                        help=f"leave out the false positives within {NEAR_MM} mm of a voxel above {HYPERINTENSE} "
                        "(lesions already there: two rescans draw their edges differently, as an enlarging "
                        "lesion does)")
    parser.add_argument("--mine-only", action="store_true",
                        help="only find and describe the false positives (no fine-tuning; OUT is not written)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    pairs = training_pairs(args.work)
    if not pairs:
        parser.error(f"no preprocessed pair in {args.work / 'training_preproc_wf'}; give the work directory "
                     "of a 'group --mode train' run (train.sh's WORK_ROOT/work)")
    from bids_lesionchange.model._backend import tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from bids_lesionchange.model.adapt import fine_tune_detector, hard_negatives
    from bids_lesionchange.model.io import hyperparams_from_dict, load_detector
    from bids_lesionchange.model.training import load_pairs

    model, spec = load_detector(args.model)
    training = hyperparams_from_dict(spec["hyperparams"]).training
    volumes = load_pairs(pairs, tuple(training.crop_shape))
    began = time.time()
    found_near = []  # (false positives, how many of them near a hyperintensity) per pair
    for pair in volumes:
        found = hard_negatives(model, spec, pair)
        near = near_hyperintensity(pair)
        at_lesion = near.ravel()[found]
        found_near.append((found.size, int(at_lesion.sum())))
        pair.focus = found[~at_lesion] if args.exclude_near_hyperintensity else found
        LOGGER.info("%s: %d false-positive voxels (%.3f %% of the brain); %.0f %% of them within %d mm of a "
                    "voxel above %.1f, where %.1f %% of the brain lies; %d kept as crop centres", pair.name,
                    found.size, 100.0 * found.size / max(pair.brain_voxels, 1),
                    100.0 * at_lesion.mean() if found.size else float("nan"), NEAR_MM, HYPERINTENSE,
                    100.0 * near.sum() / max(pair.brain_voxels, 1), pair.focus.size)
    total, at_lesions = (sum(column) for column in zip(*found_near))
    LOGGER.info("mined %d pairs in %.0f s; %d have false positives; %.0f %% of all of them lie within %d mm of a "
                "voxel above %.1f", len(volumes), time.time() - began, sum(n > 0 for n, _ in found_near),
                100.0 * at_lesions / max(total, 1), NEAR_MM, HYPERINTENSE)
    if args.mine_only:
        return 0
    del model
    fine_tune_detector(args.model, volumes, args.out, steps=args.steps, seed=args.seed, progress=True,
                       learning_rate_factor=args.learning_rate_factor, interpolation=1.0,
                       focus_fraction=args.focus_fraction, swap_sessions=True,
                       description=f"hard-negative fine-tuning on {len(volumes)} NoChange training pairs",
                       record={"hard_negative_centres": {p.name: int(p.focus.size) for p in volumes},
                               "exclude_near_hyperintensity": bool(args.exclude_near_hyperintensity),
                               "command": " ".join(["python", "scripts/default_model/hard_negatives.py",
                                                    *map(str, sys.argv[1:] if argv is None else argv)])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
