"""Test-time mirroring against one pass of a model, on real preprocessed pairs (an experiment).

Usage: python benchmarks/mirroring.py [--model DIR] [--outputs DIR] [--subjects nih01 phantom1 ...]

nnU-Net averages its predictions over mirrored copies of the input. Here each pair that
``benchmarks/real_flair.py`` preprocessed (its ``out-<model>`` directory: real NoChange
self-pairs, the real NIH pair, bidsgate phantoms) is predicted on the pair as it is, mirrored
left-right, and mirrored along every combination of the three axes (8 passes); the averaged
probability goes through the app's change rule (kappa 0.1, follow-up brighter, blobs >= 20 voxels,
as real_flair.py). Side by side in the same run: one pass (the app), the left-right average, the
8-way average, and subtraction (d > 0.1, same rule). Per pair: changes, % of the brain above the
threshold and, where there is a reference (phantoms), LTPR, PPV, lesion F1 and false changes.
Writes ``benchmarks/results/NAME.{json,md}``; skips (exit 0, a message) when the pairs are absent.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, REAL_FLAIR_ROOT, checked_model, command_line, fmt, machine,  # noqa: E402
                     markdown_table, pair_files, pair_psf_fwhm, real_flair_pairs, reference_mask, score_labels,
                     setup_logging, write_results)
from real_flair import BLOB, KAPPA  # noqa: E402  the same change rule as the real-FLAIR benchmark

SUBJECTS = ["nihbase1", "nihbase2", "niivue1", "niivue2", "p261", "p262", "synthsr1", "synthsr2", "tcga1",
            "tcga2", "nih01", "phantom1", "phantom2", "phantom3", "phantom4", "phantom5", "phantom6"]
NOCHANGE = ("nihbase", "niivue", "p26", "synthsr", "tcga")  # sources of real_flair.py's self-pairs <source><k>


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--outputs", type=Path, default=None,
                        help="real_flair.py's derivatives (default: its out-<model name> directory)")
    parser.add_argument("--reference", type=Path, default=REAL_FLAIR_ROOT / "bids" / "derivatives" / "reference")
    parser.add_argument("--subjects", nargs="+", default=SUBJECTS)
    parser.add_argument("--name", default="mirroring")
    opts = parser.parse_args()
    setup_logging()
    model_dir = checked_model(parser, opts.model)
    outputs, present = real_flair_pairs(opts.outputs, model_dir, opts.subjects)
    if not present:
        print(f"no preprocessed pairs in {outputs}: run benchmarks/real_flair.py first")
        return

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.analysis.components import change_labels
    from bids_lesionchange.model.inference import predict_change
    from bids_lesionchange.model.io import load_detector

    model, spec = load_detector(model_dir)
    scratch = outputs.parent / "scores" / f"mirroring-{model_dir.name}"
    axis_sets = [a for k in range(4) for a in itertools.combinations(range(3), k)]
    results = {}
    for sub in present:
        files = pair_files(outputs, sub)
        img = nib.load(str(files["followup"]))
        follow = np.asarray(img.dataobj, dtype=np.float32)
        base = np.asarray(nib.load(str(files["baseline"])).dataobj, dtype=np.float32)
        brain = np.asarray(nib.load(str(files["brain_mask"])).dataobj) > 0
        left_right = int(np.argmax(np.abs(img.affine[0, :3])))  # the grid axis closest to world x
        psf = pair_psf_fwhm(files)  # the app's components step reads it from the preprocessing QC
        passes = {}
        for axes in axis_sets:
            def flip(a, axes=axes):
                return np.ascontiguousarray(np.flip(a, axes)) if axes else a
            passes[axes] = flip(predict_change(model, spec, flip(base), flip(follow), flip(brain)))
        scores = {"one pass (the app)": (passes[()], KAPPA),
                  "left-right mirrored, averaged": (0.5 * (passes[()] + passes[(left_right,)]), KAPPA),
                  "8 mirrorings, averaged": (np.mean(list(passes.values()), axis=0), KAPPA),
                  "subtraction d > 0.1": (follow - base, 0.1)}
        reference = reference_mask(opts.reference, sub)
        row = {}
        for method, (score, threshold) in scores.items():
            labels = change_labels(score, brain, threshold, BLOB, direction="increase", baseline=base, followup=follow,
                                   psf_fwhm=psf)
            entry = {"changes": int(labels.max()), "percent_above": round(100 * float((score[brain] > threshold).mean()), 3)}
            if reference.is_file():
                tag = method.split()[0].replace("-", "")
                m = score_labels(labels, img.affine, reference, files["followup_xfm"], scratch / f"{sub}_{tag}", sub)
                entry.update({k: m[k] for k in ("LTPR", "PPV", "lesion_F1", "LFP")})
            row[method] = entry
        results[sub] = row
        print(sub, {m: (e["changes"], e.get("lesion_F1")) for m, e in row.items()}, flush=True)

    methods = list(next(iter(results.values())))
    nochange = [s for s in results if any(s == f"{src}{k}" for src in NOCHANGE for k in range(1, 10))]
    phantoms = [s for s in results if s.startswith("phantom")]
    table = []
    for m in methods:
        line = [m]
        line.append(f"{np.mean([results[s][m]['changes'] for s in nochange]):.2f} / "
                    f"{np.mean([results[s][m]['percent_above'] for s in nochange]):.2f}" if nochange else "")
        line.append(f"{results['nih01'][m]['changes']} / {results['nih01'][m]['percent_above']:.2f}"
                    if "nih01" in results else "")
        line.append(" / ".join(fmt(np.mean([results[s][m][k] for s in phantoms])) for k in ("LTPR", "PPV", "lesion_F1"))
                    if phantoms else "")
        table.append(line)
    md = [f"# Test-time mirroring ({model_dir.name}) against one pass and subtraction, real pairs\n",
          f"Command: `{command_line()}`\n",
          markdown_table(["method", f"NoChange self-pairs ({len(nochange)}): changes / % above, mean",
                          "NIH real pair: changes / % above", f"bidsgate phantoms ({len(phantoms)}): LTPR / PPV / F1, mean"],
                         table)]
    write_results(opts.name, {"command": command_line(), "machine": machine(), "model": str(model_dir),
                              "outputs": str(outputs), "results": results}, "\n".join(md))


if __name__ == "__main__":
    main()
