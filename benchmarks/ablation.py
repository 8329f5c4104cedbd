"""The paper's Table 1 ablation re-run on synthetic data with the CPU preset (optionally a reduced budget).

Usage::

    python benchmarks/accuracy.py           # first: writes and preprocesses the held-out Change cohort
    python benchmarks/ablation.py                                             # reduced (50 steps), ~30 min
    python benchmarks/ablation.py --iterations 40 --pairs-per-iteration 20    # the full cpu budget (hours)

Writes ``benchmarks/results/ablation.{json,md}`` and prints the table.

Every variant of ``bids_lesionchange.model.variants.VARIANTS`` is trained with
``train_change_detector`` on the SAME preprocessed NoChange pairs (by default those of the
shipped default model's training: ``/work/train_default/out``, 10 synthetic pairs at 1 mm), with
the default model's hyper-parameters (cpu preset) except the variant's detector settings and the
detector budget. The VAE stage is shared: a finished VAE checkpoint (``--vae-checkpoint``, the
default model's ``WORK/training/vae``) is copied into each variant's work dir, where
``train_vae`` sees ``state.json`` at the last iteration and only loads the weights. Each variant
then predicts the held-out Change cohort preprocessed by ``benchmarks/accuracy.py`` (seed 9001,
never used in training) and is scored with the app's components step (p > 0.1, blobs >= 20 and
>= 100 voxels) and evaluation (IoU >= 0.01): LTPR, LFPR and PPV, mean over pairs as the paper's
Table 1. Each variant runs in its own process and leaves ``ROOT/ablation/VARIANT/result.json``;
a re-run with the same budget reuses it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, RESULTS, change_subjects, command_line, machine, markdown_table,  # noqa: E402
                     pair_files, setup_logging, write_results)

LOGGER = logging.getLogger("benchmarks.ablation")
SHOWN = ("LTPR", "LFPR", "PPV")
PAPER_DETECTOR_STEPS = 40 * 10  # cpu preset: 40 iterations x 20 pairs / batch 2


def training_pairs(pairs_dir: Path) -> list[tuple]:
    """(baseline, follow-up, brain mask, name) of every preprocessed pair under ``pairs_dir``."""
    pairs = []
    for follow in sorted(pairs_dir.glob("sub-*/ses-02/anat/sub-*_ses-02_space-ses02_desc-preproc_FLAIR.nii.gz")):
        sub = follow.name.split("_")[0][4:]
        files = pair_files(pairs_dir, sub)
        if all(files[k].is_file() for k in ("baseline", "followup", "brain_mask")):
            pairs.append((str(files["baseline"]), str(files["followup"]), str(files["brain_mask"]),
                          f"sub-{sub}_ses-01to02"))
    return pairs


def variant_hyperparams(base_model: Path, variant: str, iterations: int, pairs_per_iteration: int):
    """The base model's hyper-parameters with the variant's detector and the given detector budget."""
    from bids_lesionchange.model.io import hyperparams_from_dict
    from bids_lesionchange.params import PRESETS
    from bids_lesionchange.model.variants import variant_params

    spec_file = base_model / "model.json"
    base = hyperparams_from_dict(json.loads(spec_file.read_text())["hyperparams"]) if spec_file.is_file() else PRESETS["cpu"]
    return replace(base, detector=variant_params(variant, base.detector),
                   training=replace(base.training, iterations=iterations, pairs_per_iteration=pairs_per_iteration))


def run_variant(variant: str, opts) -> dict:
    """Train one variant (VAE shared), evaluate it on the held-out cohort; return its result."""
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.analysis.components import change_components
    from bids_lesionchange.analysis.files import evaluate_files
    from bids_lesionchange.analysis.metrics import aggregate_metrics
    from bids_lesionchange.analysis.tables import read_table_tsv
    from bids_lesionchange.model._backend import tf
    from bids_lesionchange.model.inference import predict_change
    from bids_lesionchange.model.io import load_detector
    from bids_lesionchange.model.training import train_change_detector

    tf.config.threading.set_intra_op_parallelism_threads(opts.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    hyperparams = variant_hyperparams(opts.base_model, variant, opts.iterations, opts.pairs_per_iteration)
    root = opts.root.resolve() / "ablation" / variant
    work = root / "work"
    vae_dir = work / "vae"
    state = json.loads((opts.vae_checkpoint / "state.json").read_text())
    if int(state.get("iteration", 0)) < hyperparams.vae.iterations:
        raise RuntimeError(f"the VAE checkpoint {opts.vae_checkpoint} stopped at iteration {state.get('iteration')} "
                           f"of {hyperparams.vae.iterations}; let its training finish first")
    if not vae_dir.is_dir():
        shutil.copytree(opts.vae_checkpoint, vae_dir)
    pairs = training_pairs(opts.pairs_dir)
    began = time.perf_counter()
    model_dir = train_change_detector(pairs, root / "model", hyperparams, work_dir=work, resume=True,
                                      progress=False, seed=opts.seed)
    train_seconds = time.perf_counter() - began
    with open(work / "training_log.tsv", newline="") as handle:  # detector iterations, across resumed runs
        iteration_seconds = sum(float(r["seconds"]) for r in csv.DictReader(handle, delimiter="\t")
                                if r["stage"] == "detector" and r["seconds"])

    eval_bids, eval_out = opts.eval_root / "bids", opts.eval_root / f"out_blob{opts.blob_sizes[0]}"
    rows = {b: [] for b in opts.blob_sizes}
    began = time.perf_counter()
    scratch = root / "evaluation"
    scratch.mkdir(parents=True, exist_ok=True)
    for sub in change_subjects(eval_bids):
        files = pair_files(eval_out, sub, eval_bids)
        # A fresh model per pair: predicting a second volume of another shape with the same
        # siamese model object in one process failed in TensorFlow's dilated convolution
        # (SpaceToBatchND: "padded_shape ... not divisible by block_shape"); the app predicts
        # one pair per process and is not affected.
        model, spec = load_detector(model_dir)
        follow_img = nib.load(files["followup"])
        brain = np.asarray(nib.load(files["brain_mask"]).dataobj) > 0
        probability = predict_change(model, spec, np.asarray(nib.load(files["baseline"]).dataobj, dtype=np.float32),
                                     np.asarray(follow_img.dataobj, dtype=np.float32), brain)
        for b in opts.blob_sizes:
            labels = change_components(probability, threshold=opts.threshold, min_size=b, brain_mask=brain)
            labels_file = scratch / f"sub-{sub}_blob{b}_labels.nii.gz"
            nib.save(nib.Nifti1Image(labels.astype(np.int32), follow_img.affine), str(labels_file))
            metrics_file = scratch / f"sub-{sub}_blob{b}_metrics.tsv"
            evaluate_files(str(labels_file), str(files["reference"]), str(files["followup_xfm"]),
                           str(metrics_file), pair=f"sub-{sub}_ses-01to02")
            rows[b].append(read_table_tsv(metrics_file)[0])
    scores = {}
    for b, pair_rows in rows.items():
        mean_row, pooled_row = aggregate_metrics(pair_rows)
        scores[str(b)] = {"mean": {k: mean_row[k] for k in (*SHOWN, "lesion_F1", "dice")},
                          "pooled": {k: pooled_row[k] for k in ("n_ref", "n_pred", *SHOWN, "lesion_F1", "dice")}}
    steps = hyperparams.training.iterations * max(hyperparams.training.pairs_per_iteration
                                                  // hyperparams.training.batch_size, 1)
    return {"variant": variant, "detector": hyperparams.to_dict()["detector"],
            "budget": {"iterations": hyperparams.training.iterations,
                       "pairs_per_iteration": hyperparams.training.pairs_per_iteration,
                       "batch_size": hyperparams.training.batch_size, "detector_steps": steps,
                       "fraction_of_cpu_preset": round(steps / PAPER_DETECTOR_STEPS, 3)},
            "parameters": int(model.count_params()), "train_seconds": round(train_seconds, 1),
            "detector_iteration_seconds": round(iteration_seconds, 1),
            "evaluate_seconds": round(time.perf_counter() - began, 1), "n_eval_pairs": len(rows[opts.blob_sizes[0]]),
            "validation": spec.get("training", {}).get("validation"), "scores": scores, "seed": opts.seed,
            "training_pairs": len(pairs)}


def _reference_row(blob_sizes) -> list | None:
    """The shipped default model (full cpu budget) as scored by accuracy.py, if that ran."""
    path = RESULTS / "accuracy.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    spec_file = Path(data["model"]["dir"]) / "model.json"
    steps = "?"
    if spec_file.is_file():
        training = json.loads(spec_file.read_text())["hyperparams"]["training"]
        steps = training["iterations"] * max(training["pairs_per_iteration"] // training["batch_size"], 1)
    # the variants are scored with the paper's rule (any direction of change): compare like with like
    by_blob = {m["blob"]: m["mean"] for m in data["results"]
               if m["method"] == "model" and m.get("direction", "any") == "any"}
    if not all(b in by_blob for b in blob_sizes):
        return None
    return [f"{Path(data['model']['dir']).name} (as accuracy.py scored it, any direction)", steps,
            *[by_blob[b][k] for b in blob_sizes for k in SHOWN]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/bids_lesionchange_bench"))
    parser.add_argument("--pairs-dir", type=Path, default=Path("/work/train_default/out"),
                        help="output dir of a group --mode train run (its preprocessed NoChange pairs)")
    parser.add_argument("--vae-checkpoint", type=Path, default=Path("/work/train_default/work/training/vae"),
                        help="a finished VAE checkpoint dir (state.json, vae.weights.h5, optimizer.npz)")
    parser.add_argument("--base-model", type=Path, default=DEFAULT_MODEL,
                        help="model whose hyper-parameters (VAE, SuperMix, training) the variants share")
    parser.add_argument("--eval-root", type=Path, default=None,
                        help="the accuracy.py scratch dir holding bids/ and out_blob20/ (default ROOT/accuracy)")
    parser.add_argument("--variants", nargs="+", default=None, help="default: all of VARIANTS")
    parser.add_argument("--iterations", type=int, default=5, help="detector iterations (cpu preset: 40)")
    parser.add_argument("--pairs-per-iteration", type=int, default=20, help="cpu preset: 20")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--blob-sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--name", default="ablation", help="results file name (results/NAME.json|md)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    opts.eval_root = (opts.eval_root or opts.root / "accuracy").resolve()
    setup_logging()
    if opts.child:
        result = run_variant(opts.child, opts)
        path = opts.root.resolve() / "ablation" / opts.child / "result.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        return

    from bids_lesionchange.model.variants import VARIANTS

    variants = opts.variants or list(VARIANTS)
    if not training_pairs(opts.pairs_dir):
        parser.error(f"no preprocessed pairs under {opts.pairs_dir}")
    if not (opts.eval_root / "bids").is_dir():
        parser.error(f"no held-out cohort in {opts.eval_root}; run benchmarks/accuracy.py first")
    results = []
    for variant in variants:
        path = opts.root.resolve() / "ablation" / variant / "result.json"
        result = json.loads(path.read_text()) if path.is_file() else None
        wanted = [opts.iterations, opts.pairs_per_iteration, opts.seed]
        budget_file = path.parent / "budget.json"
        same_budget = budget_file.is_file() and json.loads(budget_file.read_text()) == wanted
        if result and same_budget:
            LOGGER.info("%s: reusing %s", variant, path)
        else:
            if path.parent.exists() and not same_budget:
                shutil.rmtree(path.parent)  # another budget: start this variant afresh
            path.parent.mkdir(parents=True, exist_ok=True)
            budget_file.write_text(json.dumps(wanted))  # same budget: resume from the checkpoints
            LOGGER.info("%s: training %d iterations x %d pairs (seed %d)", variant, *wanted)
            cmd = [sys.executable, __file__, "--child", variant, *sys.argv[1:]]
            log = opts.root.resolve() / "ablation" / f"{variant}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as handle:
                code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode
            if code != 0:
                LOGGER.error("%s failed (exit %d); see %s", variant, code, log)
                continue
            result = json.loads(path.read_text())
        LOGGER.info("%s: %s", variant, json.dumps({b: s["mean"] for b, s in result["scores"].items()}))
        results.append(result)
    if not results:
        sys.exit("no variant finished")

    budget = results[0]["budget"]
    reduced = budget["detector_steps"] < PAPER_DETECTOR_STEPS
    headers = ["variant", "detector steps"] + [f"{k} ({b})" for b in opts.blob_sizes for k in SHOWN]
    rows = [[r["variant"], r["budget"]["detector_steps"],
             *[r["scores"][str(b)]["mean"][k] for b in opts.blob_sizes for k in SHOWN]] for r in results]
    reference = _reference_row(opts.blob_sizes)
    if reference:
        rows.append(reference)
    timing = markdown_table(["variant", "parameters", "detector training s (sum of iterations)", "evaluate s",
                             "val Dice", "val LTPR", "val PPV"],
                            [[r["variant"], r["parameters"], r.get("detector_iteration_seconds"), r["evaluate_seconds"],
                              *[(r["validation"] or {}).get(k) for k in ("val_dice", "val_ltpr", "val_ppv")]]
                             for r in results])
    command = command_line()
    label = (f"REDUCED BUDGET: {budget['detector_steps']} detector steps of batch {budget['batch_size']} "
             f"({budget['fraction_of_cpu_preset']:.1%} of the cpu preset's {PAPER_DETECTOR_STEPS}); "
             "differences between variants at this budget mostly reflect how fast each one starts to "
             "learn, not where it converges." if reduced else "Full cpu-preset budget.")
    markdown = (
        "# Table 1 ablation on synthetic data (cpu preset)\n\n"
        f"**{label}**\n\n"
        f"Trained on {results[0]['training_pairs']} preprocessed synthetic NoChange pairs at 1 mm (the default "
        f"model's training data), VAE shared (the default model's checkpoint), seed {opts.seed}; evaluated on "
        f"{results[0]['n_eval_pairs']} held-out synthetic Change pairs (accuracy.py, seed 9001): p > "
        f"{opts.threshold}, blobs >= 20 / 100 voxels, IoU >= 0.01; mean over pairs as the paper's Table 1 "
        "(LTPR, PPV higher is better; LFPR lower is better).\n\n"
        f"Command: `{command}`\n\n{markdown_table(headers, rows)}\n"
        f"## Cost and validation (synthetic SuperMix crops of held-out NoChange pairs)\n\n{timing}"
    )
    data = {"command": command, "machine": machine(), "reduced_budget": reduced, "budget": budget,
            "full_cpu_preset_detector_steps": PAPER_DETECTOR_STEPS, "pairs_dir": str(opts.pairs_dir),
            "vae_checkpoint": str(opts.vae_checkpoint), "eval_root": str(opts.eval_root), "results": results}
    write_results(opts.name, data, markdown)


if __name__ == "__main__":
    main()
