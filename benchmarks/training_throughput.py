"""Detector training throughput on preprocessed training pairs: pairs cut to the brain, batches prefetched.

Usage:
    python benchmarks/training_throughput.py --work-dir ROOT/work [--pairs 8] [--iterations 3] [--name NAME]

``ROOT/work`` is the work directory of a ``group --mode train`` run (``scripts/default_model/train.sh
ROOT``) after its preprocessing and VAE: its preprocessed pairs (``training_preproc_wf``) and its VAE
(``training/vae``). Two measurements, each against the way it was done before, in the same run:

1. SuperMix samples (``synthetic_change_sample``, the v8 recipe's settings, 4 samples with one seed per
   pair) on every pair, on the whole 1 mm common grid and cut to the brain with half a crop of margin
   (``synth.crops.brain_box``), both loaded by training's own ``load_pairs``: seconds per sample and
   voxels held.
2. ``train_change_detector`` with ``prefetch=False`` and ``True`` (the next batch made while one
   trains), alternating, ``--iterations`` iterations of the v8 recipe (10 steps and a validation each)
   on ``--pairs`` of the pairs, with the run's VAE: the detector iterations' seconds from
   ``training_log.tsv``.

Both changes leave the batches the same (``tests/synth/test_crops_brain_box.py``,
``tests/model/test_training.py``); only the time differs. Writes ``benchmarks/results/NAME.{json,md}``
with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, command_line, machine, write_results  # noqa: E402

from bids_lesionchange.interfaces.preproc import SCRATCH_NII  # noqa: E402


def preprocessed_pairs(work: Path) -> list[tuple[str, str, str, str]]:
    """(baseline, follow-up, brain mask, name) of every preprocessed pair of a training work directory."""
    pairs = []
    for pair_dir in sorted((work / "training_preproc_wf").glob("*_wf")):
        wf = pair_dir / "preproc_wf"
        files = (wf / "normalise_baseline" / f"baseline_preproc{SCRATCH_NII}",
                 wf / "normalise_followup" / f"followup_preproc{SCRATCH_NII}",
                 wf / "rigid_reg" / "brain_mask.nii.gz")
        if all(f.is_file() for f in files):
            pairs.append((*map(str, files), pair_dir.name))
    return pairs


def sampling(pairs, hyperparams) -> list[dict]:
    """Seconds per SuperMix sample of each pair as training loads it, on its whole grid and cut to the
    brain (``load_pairs(cut_to_brain=...)``; the same samples)."""
    from bids_lesionchange.model.training import load_pairs, min_pair_shape
    from bids_lesionchange.synth.crops import synthetic_change_sample

    training = hyperparams.training
    rows = []
    for pair in pairs:
        row = {"pair": pair[3]}
        for label, cut in (("whole", False), ("cut", True)):
            (volumes,) = load_pairs([pair], min_pair_shape(hyperparams), cut_to_brain=cut)
            row["grid" if label == "whole" else "cut"] = list(volumes.brain_mask.shape)
            rng = np.random.default_rng(5)
            began = time.perf_counter()
            for _ in range(4):
                synthetic_change_sample(volumes, training.crop_shape, lambda v, r: v * 0.98, rng, hyperparams.supermix,
                                        min_brain_fraction=training.min_brain_fraction,
                                        intensity_augmentation=training.intensity_augmentation,
                                        acquisition_augmentation=training.acquisition_augmentation)
            row[f"seconds_per_sample_{label}"] = round((time.perf_counter() - began) / 4, 3)
        rows.append(row)
    return rows


def prefetch_runs(pairs, hyperparams, vae_dir: Path, repeats: int = 2) -> dict:
    """Detector iterations' seconds without and with prefetch, alternating, on one work directory."""
    from bids_lesionchange.model.training import train_change_detector

    runs = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="throughput_") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(vae_dir, work / "vae")
        for prefetch in [False, True] * repeats:
            shutil.rmtree(work / "detector", ignore_errors=True)
            train_change_detector(pairs, Path(tmp) / "model", hyperparams, work_dir=work, progress=False, seed=5,
                                  prefetch=prefetch)
            with open(work / "training_log.tsv") as handle:
                rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["stage"] == "detector"]
            seconds = [float(r["seconds"]) for r in rows[-hyperparams.training.iterations:]]
            runs["with" if prefetch else "without"].append(round(sum(seconds), 1))
            print(f"prefetch {prefetch}: {sum(seconds):.1f} s for {len(seconds)} iterations", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="work directory of a group --mode train run (ROOT/work of scripts/default_model/train.sh)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs for the training runs (every 6th pair)")
    parser.add_argument("--iterations", type=int, default=3, help="detector iterations per training run")
    parser.add_argument("--name", default="training_throughput")
    args = parser.parse_args()
    from bids_lesionchange.params import hyperparams_from_mapping

    pairs = preprocessed_pairs(args.work_dir)
    vae_dir = args.work_dir / "training" / "vae"
    if not pairs or not (vae_dir / "state.json").is_file():
        sys.exit(f"{args.work_dir}: no preprocessed training pairs or no trained VAE (training/vae); run "
                 "scripts/default_model/train.sh ROOT until its detector stage starts and pass ROOT/work")
    config = tomllib.loads((REPO / "scripts" / "default_model" / "train.toml").read_text())
    config["training"]["iterations"] = args.iterations
    hyperparams = hyperparams_from_mapping("cpu", config)
    samples = sampling(pairs, hyperparams)
    runs = prefetch_runs(pairs[::6][: args.pairs], hyperparams, vae_dir)
    whole = float(np.mean([r["seconds_per_sample_whole"] for r in samples]))
    cut = float(np.mean([r["seconds_per_sample_cut"] for r in samples]))
    voxels = [float(np.mean([np.prod(r[k]) for r in samples])) / 1e6 for k in ("grid", "cut")]
    data = {"command": command_line(), "machine": machine(), "pairs": len(pairs), "sampling": samples,
            "seconds_per_sample": {"whole": round(whole, 3), "cut": round(cut, 3)},
            "million_voxels_per_pair": {"whole": round(voxels[0], 1), "cut": round(voxels[1], 1)},
            "training_pairs": args.pairs, "iterations": args.iterations, "detector_seconds": runs}
    cpu = data["machine"]["cpu"]
    markdown = "\n".join([
        "# Detector training throughput", "",
        f"Command: `{data['command']}`; CPU: {cpu.get('model')} (family {cpu.get('family')}, model "
        f"{cpu.get('model_number')}), {data['machine']['cpu_count']} cores.", "",
        "| measure | before (whole grid / no prefetch) | now (cut to the brain / prefetch) |", "|---|---|---|",
        f"| SuperMix sample, mean over {len(pairs)} pairs (s) | {whole:.3f} | {cut:.3f} |",
        f"| voxels held per pair (million) | {voxels[0]:.1f} | {voxels[1]:.1f} |",
        f"| {args.iterations} detector iterations on {args.pairs} pairs (s), alternating runs | "
        f"{', '.join(map(str, runs['without']))} | {', '.join(map(str, runs['with']))} |", ""])
    write_results(args.name, data, markdown)


if __name__ == "__main__":
    main()
