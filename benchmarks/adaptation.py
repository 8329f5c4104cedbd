"""Self-supervised adaptation (``participant --adapt-steps N``) on real FLAIR, against no adaptation.

Usage::

    python benchmarks/adaptation.py [--model DIR] [--steps 0 25 100]   # needs ../shared/data

Runs the app itself (``participant --adapt-steps N``, one run per N, preprocessing shared through
one work dir) on a subset of the real-FLAIR benchmark's pairs (:mod:`real_flair`, same seeds):
held-out real-texture NoChange self-pairs (niivue-demo, the NIH baseline), the real NIH MS pair
and the bidsgate longphantoms of patient 26. Per N: changes and the fraction of the brain above
kappa per pair, lesion F1 on the phantoms, and the seconds the adaptation node took per pair (from
the change QC JSON); subtraction (d > 0.1, same rule) on the same images in the same run.
Writes ``benchmarks/results/adaptation.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, command_line, fmt, machine, markdown_table,  # noqa: E402
                     pair_files, setup_logging, write_results)
import real_flair  # noqa: E402

LOGGER = logging.getLogger("benchmarks.adaptation")
SUBSET = ("nihbase1", "niivue1", "nih01", "phantom1", "phantom2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/bids_lesionchange_bench/real_flair"))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25, 100])
    parser.add_argument("--subjects", nargs="+", default=list(SUBSET))
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--name", default="adaptation")
    opts = parser.parse_args()
    phantom_seeds = [1, 2] if any(s.startswith("phantom") for s in opts.subjects) else []
    real_flair.require_phantom_packages(parser, phantom_seeds,
                                        without="leave the phantom subjects out of --subjects")
    setup_logging()
    model, root, bids = real_flair.benchmark_tree(parser, opts)
    subjects = {**real_flair.write_nochange(bids, root / "self_pairs", 2, opts.seed),
                **real_flair.write_nih(bids), **real_flair.write_phantoms(bids, root / "phantoms", phantom_seeds)}
    subjects = {s: i for s, i in subjects.items() if s in opts.subjects}
    labels = list(subjects)
    methods = {"model": ("model", real_flair.KAPPA, "increase", 0.0),
               "subtraction d > 0.1": ("subtraction", 0.1, "increase", 0.0)}
    runs = {}
    for steps in opts.steps:
        out = root / f"out-{model.name}-adapt{steps}"
        seconds, failed = real_flair.run_app(
            bids, out, model, root, opts.nprocs, extra=("--adapt-steps", steps, "--participant-label", *labels),
            log_name=f"{model.name}-adapt{steps}")
        scores = {}
        for sub, info in subjects.items():
            if sub in failed:
                LOGGER.warning("sub-%s failed (%s)", sub, failed[sub])
                continue
            ref = (bids / "derivatives" / "reference" / f"sub-{sub}" / "ses-02" / "anat"
                   / f"sub-{sub}_ses-02_desc-change_mask.nii.gz")
            qc = json.loads(pair_files(out, sub)["change_qc"].read_text())
            scores[sub] = {**info, "adapt_seconds": (qc.get("adaptation") or {}).get("seconds", 0.0),
                           "scores": real_flair.score_pair(out, sub, methods, ref if ref.is_file() else None,
                                                           root / "scores" / f"{model.name}-adapt{steps}")}
        runs[steps] = {"seconds_participant_run": round(seconds, 1), "failed": failed, "pairs": scores}

    headers = ["steps", "method", *[f"sub-{s}" for s in subjects], "phantom F1 (mean)", "adapt s / pair"]
    rows = []
    for steps, run in runs.items():
        pairs = run["pairs"]
        for m in methods:
            cells = []
            for sub in subjects:
                if sub not in pairs:
                    cells.append("failed")
                    continue
                r = pairs[sub]["scores"][m]
                text = f"{r['n_changes']} / {100 * r['fraction_above']:.2f} %"
                if "lesion_F1" in r:
                    text += f" / F1 {fmt(r['lesion_F1'])}"
                cells.append(text)
            f1 = [pairs[s]["scores"][m]["lesion_F1"] for s in pairs if "lesion_F1" in pairs[s]["scores"][m]]
            spent = [pairs[s]["adapt_seconds"] for s in pairs] if m == "model" else []
            rows.append([steps, m, *cells, fmt(float(np.nanmean(f1))) if f1 else "n/a",
                         f"{np.mean(spent):.1f}" if spent else ""])
    md = ["# Self-supervised adaptation on real FLAIR (participant --adapt-steps N)\n",
          f"Model `{model.name}`; per pair: changes / % of the brain above kappa (/ lesion F1 where a truth "
          "exists). NoChange self-pairs (nihbase*, niivue*): every change is false. nih01: the real MS pair "
          "(no reference). phantom*: bidsgate longphantoms of patient 26 (new + enlarging). Subtraction: "
          "same images, same rule, d > 0.1.\n", f"Command: `{command_line()}`\n",
          markdown_table(headers, rows)]
    data = {"command": command_line(), "machine": machine(), "model": str(model),
            "runs": {str(k): v for k, v in runs.items()}}
    write_results(opts.name, data, "\n".join(md))


if __name__ == "__main__":
    main()
