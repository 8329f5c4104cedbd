"""bfloat16 against float32 inference (or the polyphase graph against the plain one) on real pairs.

Usage: python benchmarks/precision.py [--model DIR] [--outputs DIR] [--subjects nih01 phantom1 ...]
                                      [--variant bfloat16|polyphase]

Reads the preprocessed pairs that ``benchmarks/real_flair.py`` wrote (its ``out-<model>``
directory: real NoChange self-pairs, the real NIH pair, bidsgate phantoms) and predicts each
pair twice in this process, once with the model loaded in float32 (the app's) and once under
Keras' ``mixed_bfloat16`` policy (``load_detector(..., precision="bfloat16")``). Per pair: the
seconds of one full-brain pass (after a warm-up pass), GFLOP/s against this CPU's FP32 peak,
the largest probability difference, the number of changes and the Dice of the two change masks
(same rule as real_flair.py: kappa 0.1, follow-up brighter, blobs >= 20 voxels) and, where the pair has
a reference (bidsgate phantoms), LTPR, PPV, lesion F1 and false changes of each precision. bfloat16 is
fast only where the CPU has AVX512_BF16 or AMX (recorded in the results' CPU description).
``--variant polyphase`` compares, in float32, the app's graph (thin convolutions as polyphase
ones, :mod:`bids_lesionchange.model.polyphase`) against the plain Keras graph instead: it must
give the same maps, only faster.
Writes benchmarks/results/precision.json and .md; skips (exit 0, a message) when the real pairs
are absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import (DEFAULT_MODEL, REAL_FLAIR_ROOT, checked_model, command_line, machine, markdown_table, pair_files,
                     pair_psf_fwhm, real_flair_pairs, reference_mask, score_labels, setup_logging, write_results)
from real_flair import BLOB, KAPPA  # the same change rule as the real-FLAIR benchmark
SUBJECTS = ["nih01", "nihbase1", "nihbase2", "niivue1", "niivue2", "p261", "p262", "synthsr1", "synthsr2", "tcga1",
            "tcga2", "phantom1", "phantom2", "phantom3", "phantom4", "phantom5", "phantom6", "nphniivue1",
            "nphniivue2", "nphnihbase1", "nphnihbase2", "nphsynthsr1", "nphsynthsr2", "nphtcga1", "nphtcga2"]
SCORES = ("LTPR", "PPV", "lesion_F1", "LFP")


def predict_timed(model, spec, baseline, followup, brain, polyphase=True):
    """Return (probability, seconds of the second of two identical passes)."""
    from bids_lesionchange.model.inference import predict_change

    predict_change(model, spec, baseline, followup, brain, polyphase=polyphase)  # warm-up: tracing, oneDNN
    began = time.perf_counter()
    probability = predict_change(model, spec, baseline, followup, brain, polyphase=polyphase)
    return probability, time.perf_counter() - began


def main() -> None:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--outputs", type=Path, default=None,
                        help="real_flair.py's output directory (default: its out-<model name> under "
                             "/tmp/bids_lesionchange_bench/real_flair)")
    parser.add_argument("--subjects", nargs="+", default=SUBJECTS)
    parser.add_argument("--reference", type=Path, default=REAL_FLAIR_ROOT / "bids" / "derivatives" / "reference",
                        help="real_flair.py's reference change masks (phantoms are scored where one exists)")
    parser.add_argument("--variant", choices=("bfloat16", "polyphase"), default="bfloat16",
                        help="bfloat16: mixed_bfloat16 against float32 (both the app's polyphase graph); "
                             "polyphase: the app's float32 graph against the plain Keras graph")
    parser.add_argument("--name", default="precision")
    args = parser.parse_args()
    model_dir = checked_model(parser, args.model)
    outputs, subjects = real_flair_pairs(args.outputs, model_dir, args.subjects)
    if not subjects:
        print(f"no preprocessed real pairs in {outputs}: run benchmarks/real_flair.py --model {args.model} first")
        return

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.analysis.components import change_labels
    from bids_lesionchange.model.detector import forward_flops
    from bids_lesionchange.model.inference import brain_bounding_box
    from bids_lesionchange.model.io import hyperparams_from_dict, load_detector

    if args.variant == "bfloat16":
        models = {p: (*load_detector(model_dir, precision=p), True) for p in ("float32", "bfloat16")}
        names = ("float32", "bfloat16")
    else:
        model, spec = load_detector(model_dir)
        models = {"plain": (model, spec, False), "polyphase": (model, spec, True)}
        names = ("plain", "polyphase")
    first, second = names
    spec = models[first][1]
    detector = hyperparams_from_dict(spec["hyperparams"]).detector
    multiple = int(spec["input_multiple"])
    cpu = machine()
    peak = cpu["cpu"]["fp32_peak_gflops"]
    rows, records = [], []
    scratch = outputs.parent / "scores" / f"precision-{model_dir.name}"
    for sub in subjects:
        files = pair_files(outputs, sub)
        base = nib.load(files["baseline"]).get_fdata(dtype=np.float32)
        follow = nib.load(files["followup"]).get_fdata(dtype=np.float32)
        brain = np.asarray(nib.load(files["brain_mask"]).dataobj) > 0
        box = brain_bounding_box(brain)
        shape = tuple(int(np.ceil((s.stop - s.start) / multiple) * multiple) for s in box)
        gflop = forward_flops(detector, shape, final_only=True) / 1e9
        result = {}
        psf = pair_psf_fwhm(files)  # the app's components step reads it from the preprocessing QC
        for precision, (model, _, polyphase) in models.items():
            probability, seconds = predict_timed(model, spec, base, follow, brain, polyphase)
            labels = change_labels(probability, brain, KAPPA, BLOB, direction="increase", baseline=base,
                                   followup=follow, psf_fwhm=psf)
            result[precision] = {"seconds": round(seconds, 3), "gflops_per_s": round(gflop / seconds, 1),
                                 "fraction_of_fp32_peak": round(gflop / seconds / peak, 3),
                                 "changes": int(labels.max()), "mask": labels > 0, "probability": probability}
            reference = reference_mask(args.reference, sub)
            if reference.is_file():
                scored = score_labels(labels, nib.load(files["followup"]).affine, reference, files["followup_xfm"],
                                      scratch / f"{sub}_{precision}", sub)
                result[precision]["scores"] = {k: round(scored[k], 3) for k in SCORES}
        a, b = result[first], result[second]
        both = int(np.count_nonzero(a["mask"] & b["mask"]))
        total = int(np.count_nonzero(a["mask"]) + np.count_nonzero(b["mask"]))
        record = {"subject": sub, "network_input": list(shape), "gflop": round(gflop, 1),
                  "max_abs_probability_difference": round(float(np.abs(a["probability"] - b["probability"]).max()), 4),
                  "probability_identical": bool(np.array_equal(a["probability"], b["probability"])),
                  "mask_dice": round(2 * both / total, 4) if total else 1.0,
                  "mask_voxels": [int(np.count_nonzero(a["mask"])), int(np.count_nonzero(b["mask"]))],
                  "speedup": round(a["seconds"] / b["seconds"], 2),
                  **{p: {k: v for k, v in r.items() if k not in ("mask", "probability")} for p, r in result.items()}}
        records.append(record)
        f1 = [f"{r['scores']['lesion_F1']:.3f}" if "scores" in r else "" for r in (a, b)]
        rows.append([sub, " x ".join(map(str, shape)), a["seconds"], b["seconds"], record["speedup"],
                     a["fraction_of_fp32_peak"], b["fraction_of_fp32_peak"], a["changes"], b["changes"], *f1, record["mask_dice"],
                     record["max_abs_probability_difference"]])
    speedups = [r["speedup"] for r in records]
    same = sum(r[first]["changes"] == r[second]["changes"] for r in records)
    identical = sum(r["probability_identical"] for r in records)
    md = [f"# Inference: {second} against {first} on real pairs\n",
          f"Command: `{command_line()}`\n",
          f"Model: `{model_dir.name}`; pairs preprocessed by `benchmarks/real_flair.py` ({outputs}).\n",
          f"CPU: {cpu['cpu']['model']}, {cpu['cpu']['cores']} cores, {', '.join(cpu['cpu']['extensions'])}; "
          f"FP32 peak {peak} GFLOP/s ({cpu['cpu']['clock_ghz']} GHz x {cpu['cpu']['fp32_flop_per_cycle']} "
          f"FLOP/cycle x cores). Load average at start {cpu['load_average_1min']}.\n",
          markdown_table(["pair", "network input", f"{first} s", f"{second} s", "speed-up",
                          f"{first}: fraction of FP32 peak", f"{second}: fraction of FP32 peak", f"changes {first}", f"changes {second}",
                          f"lesion F1 {first}", f"lesion F1 {second}", "mask Dice", "max |dp|"], rows),
          f"\nMedian speed-up {float(np.median(speedups)):.2f}x; same number of changes on {same} of "
          f"{len(records)} pairs; lowest mask Dice {min(r['mask_dice'] for r in records):.3f}; "
          f"probability maps equal to the last bit on {identical} of {len(records)} pairs.\n"]
    scored = [r for r in records if "scores" in r[first]]
    if scored:
        md.append(markdown_table(["precision", f"scored pairs ({len(scored)}): mean " + ", ".join(SCORES)],
                                 [[p, ", ".join(f"{np.mean([r[p]['scores'][k] for r in scored]):.3f}" for k in SCORES)]
                                  for p in names]))
    write_results(args.name, {"command": command_line(), "machine": cpu, "model": str(model_dir),
                              "variant": args.variant,
                              "kappa": KAPPA, "min_blob_voxels": BLOB, "pairs": records}, "\n".join(md))


if __name__ == "__main__":
    main()
