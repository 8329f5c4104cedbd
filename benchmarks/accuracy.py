"""Accuracy on a held-out synthetic Change cohort: the model against a subtraction baseline.

Usage::

    python benchmarks/accuracy.py                      # 8 Change subjects, 1 mm, seed 9101 (~15 min)
    python benchmarks/accuracy.py --model DIR --n-change 3 --root /scratch/bench
    python benchmarks/accuracy.py --model DIR --name accuracy_b --cohort-from accuracy   # same pairs, their preprocessing

Writes ``benchmarks/results/accuracy.{json,md}`` and prints the table.

1. ``bids_lesionchange-synth ROOT/accuracy/bids --n-nochange 0 --n-change 8 --seed 9101 --preset
   1mm --thick-slice 0.3``: a seed never used in training (the default model: 2026; the demo:
   1234) nor in development. The cohort of seed 9001 (6 subjects) was used during development to
   study the model's false positives (the change-direction rule and resolution matching came
   from it), so it is no longer a fair test; pass ``--seed 9001 --n-change 6`` to see it.
2. ``bids_lesionchange ... participant --mode infer --reference-dir bids/derivatives/truth`` once
   per ``--min-blob-size`` (20, 100), into one output dir each, sharing one work dir (the second
   run reuses the preprocessing and the prediction), then ``group --mode evaluate``.
3. The model under the paper's rule (``--change-direction any``: every change the network
   finds, darkening included), scored from the same probability maps with the same steps; the
   app's default (``increase``: only where the follow-up is brighter) is the row ``model``.
4. The subtraction baseline on the SAME preprocessed images: d = follow-up - baseline (both
   normalised to [0, 1] by the app) inside the brain mask, change = d > t, the same change rule
   as the model's default (``analysis.components.change_labels``, direction ``increase``: not
   CSF, hyperintense at follow-up; 26-connected, blobs >= 20 / 100 voxels) and the same
   ``evaluate_files`` (truth mapped onto the common grid through the follow-up transform,
   IoU >= 0.01 lesion matching). Several t are reported; the best one (highest pooled lesion F1,
   picked on this very cohort) is an OPTIMISTIC baseline: a real user could not tune t on the
   truth.
5. Where lesions are lost: for the model (p > 0.1) and each t of the subtraction, the reference
   lesions still found after each step of the change rule (:func:`lesions_after_steps`), so that
   a lesion the score map never flags is told apart from one a step of the rule removed; and the
   same results scored by the MSSEG-2 challenge's detection rules (Anima's scorer, which drops
   lesions of <= 3 mm^3), beside the paper's IoU >= 0.01 rule of the tables above.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, app_command, change_subjects, checked_model, command_line,  # noqa: E402
                     ensure_synth_cohort, fmt, machine, markdown_table, pair_files, pair_psf_fwhm, run_checked,
                     setup_logging, write_results)

LOGGER = logging.getLogger("benchmarks.accuracy")
SHOWN = ("LTPR", "LFPR", "PPV", "lesion_F1", "dice")


def _float_row(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        try:
            out[key] = float(value) if value not in ("n/a", "") else float("nan")
        except (TypeError, ValueError):
            out[key] = value
    return out


def run_model(bids: Path, root: Path, model: Path, blob: int, opts, work: Path) -> dict:
    """Run participant inference + group evaluation for one blob size; return per-pair and summary rows.

    ``work``: the app's work dir (``root/work``, or another run's to reuse its preprocessing)."""
    from bids_lesionchange.analysis.tables import read_table_tsv

    out = root / f"out_blob{blob}"
    group_table = out / "group_desc-evaluation_metrics.tsv"
    if opts.reuse_outputs and group_table.is_file():
        LOGGER.info("reusing %s", group_table)
        rows = [_float_row(r) for r in read_table_tsv(group_table)]
        return {"out": out, "seconds": None, "pairs": [r for r in rows if r["pair"] not in ("mean", "pooled")],
                "mean": next(r for r in rows if r["pair"] == "mean"),
                "pooled": next(r for r in rows if r["pair"] == "pooled")}
    args = [bids, out, "participant", "--mode", "infer", "--model", model, "--reference-dir",
            bids / "derivatives" / "truth", "-w", work, "--nprocs", opts.nprocs, "--omp-nthreads",
            opts.omp_nthreads, "--skull-strip", opts.skull_strip, "--min-blob-size", blob,
            "--skip-bids-validation", *shlex.split(opts.app_args),
            *(["--extent-mm", opts.extent_mm] if opts.extent_mm else [])]
    LOGGER.info("model, blobs >= %d voxels: bids_lesionchange %s", blob, " ".join(map(str, args)))
    seconds = run_checked(app_command(*args), log_file=root / f"participant_blob{blob}.log")
    run_checked(app_command(bids, out, "group", "--mode", "evaluate", "--no-reports"),
                log_file=root / f"group_blob{blob}.log")
    rows = [_float_row(r) for r in read_table_tsv(out / "group_desc-evaluation_metrics.tsv")]
    return {"out": out, "seconds": round(seconds, 1), "pairs": [r for r in rows if r["pair"] not in ("mean", "pooled")],
            "mean": next(r for r in rows if r["pair"] == "mean"),
            "pooled": next(r for r in rows if r["pair"] == "pooled")}


def _pair_images(out: Path, sub: str, bids: Path):
    """One pair's files, follow-up image, baseline and follow-up arrays (float32), brain mask and the
    point-spread functions the app's components step reads from the preprocessing QC."""
    import nibabel as nib

    files = pair_files(out, sub, bids)
    follow_img = nib.load(files["followup"])
    followup = np.asarray(follow_img.dataobj, dtype=np.float32)
    baseline = np.asarray(nib.load(files["baseline"]).dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(files["brain_mask"]).dataobj) > 0
    return files, follow_img, baseline, followup, brain, pair_psf_fwhm(files)


def score_maps(bids: Path, out: Path, subjects: list[str], thresholds, blobs, scratch: Path, make_map,
               direction: str = "any", extent_mm: float = 0.0) -> dict:
    """Score ``make_map(files, baseline, followup) > t`` with the app's change rule and evaluation steps."""
    import nibabel as nib

    from bids_lesionchange.analysis.components import change_labels
    from bids_lesionchange.analysis.files import evaluate_files
    from bids_lesionchange.analysis.metrics import aggregate_metrics
    from bids_lesionchange.analysis.tables import read_table_tsv

    scratch.mkdir(parents=True, exist_ok=True)
    per_pair = {(t, b): [] for t in thresholds for b in blobs}
    for sub in subjects:
        files, follow_img, baseline, followup, brain, psf = _pair_images(out, sub, bids)
        score = make_map(files, baseline, followup)
        for t in thresholds:
            for b in blobs:
                labels = change_labels(score, brain, t, b, direction=direction, baseline=baseline,
                                       followup=followup, psf_fwhm=psf,
                                       extent_mm=extent_mm if direction == "increase" else 0.0)
                labels_file = scratch / f"sub-{sub}_t{t}_blob{b}_labels.nii.gz"
                nib.save(nib.Nifti1Image(labels.astype(np.int32), follow_img.affine), str(labels_file))
                metrics_file = scratch / f"sub-{sub}_t{t}_blob{b}_metrics.tsv"
                evaluate_files(str(labels_file), str(files["reference"]), str(files["followup_xfm"]),
                               str(metrics_file), pair=f"sub-{sub}_ses-01to02")
                per_pair[(t, b)].append(_float_row(read_table_tsv(metrics_file)[0]))
    results = {}
    for (t, b), rows in per_pair.items():
        mean_row, pooled_row = aggregate_metrics(rows)
        results[(t, b)] = {"threshold": t, "blob": b, "pairs": rows, "mean": mean_row, "pooled": pooled_row}
    return results


STEPS = ("any direction", "threshold", "dark", "preexisting", "diffuse", "rim", "extent")


def lesions_after_steps(bids: Path, out: Path, subjects: list[str], scores: dict, blob: int,
                        extent_mm: float = 0.0) -> tuple[dict, dict]:
    """Reference lesions still matched (IoU >= 0.01) after each step of the app's change rule, and
    the rule's result scored by the MSSEG-2 challenge's detection rules.

    ``scores``: name -> (threshold, ``"model"`` or ``"subtraction"``). Per name and step of
    :data:`STEPS` (``"any direction"``: the score above the threshold alone, components of ``blob``
    voxels; then the steps of :func:`bids_lesionchange.analysis.components.change_labels`, the last
    one its result; ``"extent"`` only with ``extent_mm``), ``[found, present]`` summed over the
    pairs; a step that did not run on a pair (a flat baseline) removed nothing there. The truth's lesions are its
    connected components on the common grid (nearest neighbour through the follow-up transform),
    as the evaluation counts them. A lesion missing after ``"any direction"`` is one the score map
    does not flag at all; one lost later, a step of the rule removed.

    Second result: per name, ``{"mean": ..., "pooled": ...}`` of the rule's result scored with
    ``match="msseg2"`` (:mod:`bids_lesionchange.analysis.msseg2`, Anima's scorer as MSSEG-2 used it:
    6-connected lesions, components of <= 3 mm^3 dropped from both masks, a lesion detected when
    more than 10 % of it is covered by components that lie mostly in lesions of the other mask).
    """
    import nibabel as nib

    from bids_lesionchange.analysis.components import change_labels, label_connected_components
    from bids_lesionchange.analysis.metrics import aggregate_metrics, lesion_metrics, match_matrix
    from bids_lesionchange.image.transforms import to_common

    names = STEPS if extent_mm > 0 else tuple(step for step in STEPS if step != "extent")
    counts = {name: {step: [0, 0] for step in names} for name in scores}
    msseg2_rows = {name: [] for name in scores}
    for sub in subjects:
        files, img, baseline, followup, brain, psf = _pair_images(out, sub, bids)
        probability = np.asarray(nib.load(files["probability"]).dataobj, dtype=np.float32)
        reference, n_ref = label_connected_components(
            to_common(files["reference"], files["followup_xfm"], followup.shape, img.affine) > 0)
        for name, (threshold, kind) in scores.items():
            score = probability if kind == "model" else followup - baseline
            steps = {"any direction": change_labels(score, brain, threshold, blob, direction="any")}
            result = change_labels(score, brain, threshold, blob, direction="increase", baseline=baseline,
                                   followup=followup, psf_fwhm=psf, steps=steps, extent_mm=extent_mm)
            found = None
            for step in names:
                if step in steps or found is None:  # a step that did not run removed nothing
                    found = match_matrix(steps[step], reference).any(axis=0)[1:]
                counts[name][step][0] += int(found.sum())
                counts[name][step][1] += int(n_ref)
            msseg2_rows[name].append(lesion_metrics(result, reference > 0, match="msseg2",
                                                    zooms=img.header.get_zooms()[:3]))
    msseg2 = {}
    for name, rows in msseg2_rows.items():
        mean_row, pooled_row = aggregate_metrics(rows)
        msseg2[name] = {"mean": _summary(mean_row), "pooled": _summary(pooled_row, counts_as_int=True)}
    return counts, msseg2


def subtraction_baseline(bids: Path, out: Path, subjects: list[str], thresholds, blobs, scratch: Path,
                         extent_mm: float = 0.0) -> dict:
    """Score ``followup - baseline > t`` under the app's default rule (brighter, not CSF, hyperintense)."""
    return score_maps(bids, out, subjects, thresholds, blobs, scratch,
                      lambda files, baseline, followup: (followup - baseline).astype(np.float32),
                      direction="increase", extent_mm=extent_mm)


def model_any_direction(bids: Path, out: Path, subjects: list[str], blobs, scratch: Path) -> dict:
    """Score the model's probability maps under the paper's rule: p > 0.1, brighter or darker."""
    import nibabel as nib

    return score_maps(bids, out, subjects, [0.1], blobs, scratch, lambda files, baseline, followup: np.asarray(
        nib.load(files["probability"]).dataobj, dtype=np.float32))


def _summary(row: dict, counts_as_int: bool = False) -> dict:
    counts = ("n_ref", "n_pred", "LTP_ref", "LTP_pred", "LFN", "LFP", "ref_voxels", "pred_voxels", "overlap_voxels")
    out = {k: row.get(k) for k in (*counts, *SHOWN)}
    if counts_as_int:
        out.update({k: int(out[k]) for k in counts})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/bids_lesionchange_bench"),
                        help="scratch directory for the cohort, work and output dirs")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=9101)
    parser.add_argument("--n-change", type=int, default=8)
    parser.add_argument("--preset", choices=["small", "1mm"], default="1mm")
    parser.add_argument("--thick-slice", type=float, default=0.3)
    parser.add_argument("--blob-sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3],
                        help="thresholds t of the subtraction baseline (images are in [0, 1])")
    parser.add_argument("--skull-strip", default="auto")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--omp-nthreads", type=int, default=2)
    parser.add_argument("--app-args", default="", help="more arguments for the app, e.g. '--output-resolution 2.5'")
    parser.add_argument("--extent-mm", type=float, default=0.0,
                        help="the app's --extent-mm (grow each change into the new hyperintensity around it), "
                             "for the model and the subtraction alike (default: 0, off)")
    parser.add_argument("--reuse-outputs", action="store_true",
                        help="skip the app when an output dir already holds its group metrics table")
    parser.add_argument("--name", default="accuracy", help="results file name (results/NAME.json|md)")
    parser.add_argument("--cohort-from", metavar="NAME",
                        help="use the cohort and the work dir (so the preprocessing) of an earlier run under the "
                             "same --root, named NAME, e.g. to score another model on the same pairs; the "
                             "cohort arguments must be the same (checked)")
    opts = parser.parse_args()
    setup_logging()

    root = opts.root.resolve() / opts.name
    root.mkdir(parents=True, exist_ok=True)
    model = checked_model(parser, opts.model)
    source = root if opts.cohort_from is None else opts.root.resolve() / opts.cohort_from
    if opts.cohort_from is not None and not (source / "bids").is_dir():
        parser.error(f"--cohort-from {opts.cohort_from}: no cohort in {source / 'bids'}")
    bids = ensure_synth_cohort(source / "bids", n_nochange=0, n_change=opts.n_change, seed=opts.seed,
                               preset=opts.preset, thick_slice=opts.thick_slice)
    subjects = change_subjects(bids)

    model_runs = {b: run_model(bids, root, model, b, opts, work=source / "work") for b in opts.blob_sizes}
    LOGGER.info("subtraction baseline at t = %s", opts.thresholds)
    baseline = subtraction_baseline(bids, model_runs[opts.blob_sizes[0]]["out"], subjects, opts.thresholds,
                                    opts.blob_sizes, root / "subtraction", extent_mm=opts.extent_mm)
    LOGGER.info("the model under the paper's rule (change direction any)")
    model_any = model_any_direction(bids, model_runs[opts.blob_sizes[0]]["out"], subjects, opts.blob_sizes,
                                    root / "model_any")
    best = {b: max(opts.thresholds, key=lambda t: np.nan_to_num(baseline[(t, b)]["pooled"]["lesion_F1"], nan=-1))
            for b in opts.blob_sizes}
    LOGGER.info("reference lesions after each step of the rule")
    blob = opts.blob_sizes[0]
    step_scores = {"model (p > 0.1)": (0.1, "model"), **{f"subtraction d > {t}": (t, "subtraction")
                                                        for t in opts.thresholds}}
    after_steps, msseg2 = lesions_after_steps(bids, model_runs[blob]["out"], subjects, step_scores, blob,
                                              extent_mm=opts.extent_mm)

    import json

    spec = json.loads((model / "model.json").read_text())
    methods = []
    for b in opts.blob_sizes:
        methods.append({"method": "model", "direction": "increase", "blob": b, "threshold": 0.1,
                        "mean": _summary(model_runs[b]["mean"]),
                        "pooled": _summary(model_runs[b]["pooled"], counts_as_int=True),
                        "pairs": [{"pair": r["pair"], **_summary(r, True)} for r in model_runs[b]["pairs"]],
                        "seconds_participant_run": model_runs[b]["seconds"]})
        entry = model_any[(0.1, b)]
        methods.append({"method": "model", "direction": "any", "blob": b, "threshold": 0.1,
                        "mean": _summary(entry["mean"]), "pooled": _summary(entry["pooled"], counts_as_int=True),
                        "pairs": [{"pair": r["pair"], **_summary(r, True)} for r in entry["pairs"]]})
        for t in opts.thresholds:
            entry = baseline[(t, b)]
            methods.append({"method": "subtraction", "blob": b, "threshold": t, "optimistic_best": t == best[b],
                            "mean": _summary(entry["mean"]), "pooled": _summary(entry["pooled"], counts_as_int=True),
                            "pairs": [{"pair": r["pair"], **_summary(r, True)} for r in entry["pairs"]]})

    def label(m):
        if m["method"] == "model":
            return (f"model (p > {m['threshold']}, default: follow-up brighter)" if m["direction"] == "increase"
                    else f"model (p > {m['threshold']}, any direction: the paper's rule)")
        return f"subtraction d > {m['threshold']}" + (" (best t, optimistic)" if m.get("optimistic_best") else "")

    headers = ["method", "min blob", "LTPR", "LFPR", "PPV", "lesion F1", "Dice"]
    mean_rows = [[label(m), m["blob"], *[m["mean"][k] for k in SHOWN]] for m in methods]
    pooled_headers = ["method", "min blob", "ref lesions", "pred blobs", "LTPR", "LFPR", "PPV", "lesion F1", "Dice"]
    pooled_rows = [[label(m), m["blob"], m["pooled"]["n_ref"], m["pooled"]["n_pred"], *[m["pooled"][k] for k in SHOWN]]
                   for m in methods]
    import nibabel as nib

    from bids_lesionchange.analysis.metrics import aggregate_metrics

    thick = {f"sub-{sub}_ses-01to02": max(nib.load(str(next((bids / f"sub-{sub}" / "ses-02" / "anat").glob(
        "*_FLAIR.nii.gz")))).header.get_zooms()[:3]) > 1.5 for sub in subjects}
    split_headers = ["method", "min blob", f"3D follow-up ({sum(not v for v in thick.values())} pairs): LTPR",
                     "LFP", "lesion F1", f"thick-slice follow-up ({sum(thick.values())} pairs): LTPR", "LFP",
                     "lesion F1"]
    split_rows = []
    for m in methods:
        cells = []
        for is_thick in (False, True):
            subset = [r for r in m["pairs"] if thick.get(r["pair"]) == is_thick]
            pooled = aggregate_metrics(subset)[1] if subset else {}
            cells += [pooled.get("LTPR"), pooled.get("LFP"), pooled.get("lesion_F1")]
            m.setdefault("pooled_by_followup", {})["thick_slice" if is_thick else "3d"] = {
                k: pooled.get(k) for k in ("LTPR", "LFP", "PPV", "lesion_F1", "dice")}
        split_rows.append([label(m), m["blob"], *cells])
    verdict = []
    for b in opts.blob_sizes:
        model_f1 = model_runs[b]["pooled"]["lesion_F1"]
        base_f1 = baseline[(best[b], b)]["pooled"]["lesion_F1"]
        model_mean = model_runs[b]["mean"]["lesion_F1"]
        base_mean = baseline[(best[b], b)]["mean"]["lesion_F1"]
        verdict.append(f"- blobs >= {b} voxels: model (app default) lesion F1 pooled {fmt(model_f1)} / mean "
                       f"{fmt(model_mean)} vs best subtraction (t = {best[b]}) pooled {fmt(base_f1)} / mean "
                       f"{fmt(base_mean)}: the model is "
                       + ("better on both." if model_f1 > base_f1 and model_mean > base_mean else
                          "better pooled only." if model_f1 > base_f1 else
                          "better on the mean only." if model_mean > base_mean else "NOT better."))
    command = command_line()
    markdown = (
        f"# Accuracy on a held-out synthetic Change cohort\n\n"
        f"{len(subjects)} Change subjects, `bids_lesionchange-synth --n-nochange 0 --n-change {opts.n_change} "
        f"--seed {opts.seed} --preset {opts.preset} --thick-slice {opts.thick_slice}`; model `{model.name}` "
        f"(sha256 of weights {str(spec.get('sha256', {}).get('detector.weights.h5', ''))[:12]}), "
        f"skull strip `{opts.skull_strip}`. Lesions matched at IoU >= 0.01."
        + (f" The app's `--extent-mm {opts.extent_mm:g}`: every change (the model's and the subtraction's) grown "
           f"into the new hyperintensity around it." if opts.extent_mm else "") + "\n\n"
        f"Command: `{command}`\n\n"
        f"## Mean over pairs (as the paper's Table 1)\n\n{markdown_table(headers, mean_rows)}\n"
        f"## Pooled over pairs (counts summed, then rates)\n\n{markdown_table(pooled_headers, pooled_rows)}\n"
        + "\n".join(verdict) + "\n\n"
        f"## Pooled, by follow-up acquisition (3D 1 mm or 2D thick-slice 0.9 x 0.9 x 3 mm)\n\n"
        f"{markdown_table(split_headers, split_rows)}\n"
        "The subtraction baseline uses the app's own preprocessed images (normalised to [0, 1]), "
        "brain mask, components step and evaluation; its best t is chosen on this cohort's truth, "
        "so it is an optimistic baseline.\n\n"
        f"## Where lesions are lost: reference lesions found after each step of the rule (blobs >= {blob}, pooled)\n\n"
        "`any direction`: the score above the threshold alone (the paper's rule); then the app's steps in order: "
        "`threshold` (where the follow-up is brighter and in parenchyma), `dark`, `preexisting`, `diffuse`, "
        + ("`rim`, `extent` (the result: each change grown into the new hyperintensity around it). " if opts.extent_mm
           else "`rim` (the result). ")
        + "A lesion not found under `any direction` is one the score map does not flag at all.\n\n"
        + markdown_table(["score", *next(iter(after_steps.values()))],
                         [[name, *[f"{found} / {present}" for found, present in c.values()]]
                          for name, c in after_steps.items()]) + "\n\n"
        f"## The same results scored by the MSSEG-2 challenge's rules (Anima's scorer; blobs >= {blob})\n\n"
        "The app's own evaluation with `match=msseg2` (`bids_lesionchange.analysis.msseg2`): lesions are "
        "6-connected components, components of <= 3 mm^3 are dropped from both masks, and a lesion is detected "
        "when more than 10 % of it is covered by components lying mostly in lesions of the other mask. The tables "
        "above use the paper's rule (IoU >= 0.01 between components, every reference component a lesion).\n\n"
        + markdown_table(["score", "ref lesions (pooled)", "LTPR, mean", "PPV, mean", "lesion F1, mean",
                          "LTPR, pooled", "PPV, pooled", "lesion F1, pooled"],
                         [[name, r["pooled"]["n_ref"], r["mean"]["LTPR"], r["mean"]["PPV"], r["mean"]["lesion_F1"],
                           r["pooled"]["LTPR"], r["pooled"]["PPV"], r["pooled"]["lesion_F1"]]
                          for name, r in msseg2.items()]) + "\n"
    )
    data = {"command": command, "machine": machine(), "cohort": {
                "seed": opts.seed, "n_change": opts.n_change, "preset": opts.preset, "thick_slice": opts.thick_slice,
                "subjects": subjects, "command": f"bids_lesionchange-synth BIDS --n-nochange 0 --n-change "
                f"{opts.n_change} --seed {opts.seed} --preset {opts.preset} --thick-slice {opts.thick_slice}"},
            "cohort_from": opts.cohort_from, "model": {"dir": str(model), "sha256": spec.get("sha256"), "training": spec.get("training", {}).get("command")},
            "skull_strip": opts.skull_strip, "app_args": opts.app_args, "extent_mm": opts.extent_mm,
            "match": "iou >= 0.01",
            "best_subtraction_threshold": {str(b): best[b] for b in opts.blob_sizes},
            "lesions_after_steps": {"blob": blob, "counts": after_steps},
            "msseg2": {"blob": blob, "scores": msseg2},
            "results": methods}
    write_results(opts.name, data, markdown)


if __name__ == "__main__":
    main()
