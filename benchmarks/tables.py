"""Render the JSON results of the older benchmarks as markdown tables (results/NAME.md).

Usage::

    python benchmarks/tables.py                       # synth_cohort, preprocessing, training, inference
    python benchmarks/tables.py inference training

synth_cohort.py, preprocessing.py, training.py and inference.py write JSON only; this script
turns each into ``results/NAME.md`` (and prints it) without re-running anything. The newer
scripts (accuracy.py, end_to_end.py, ablation.py) write their own markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, markdown_table, write_results  # noqa: E402


def synth_cohort(data: dict) -> str:
    timing, figure = data.get("timing_1mm", {}), data.get("figure", {})
    contrast = data.get("contrast_ratios_to_wm", {})
    text = "# Synthetic cohort generator (1 mm)\n\nCommand: `python benchmarks/synth_cohort.py`\n\n"
    text += markdown_table(["subjects", "seconds total", "seconds / subject", "dataset MB", "seed"],
                           [[timing.get("n_subjects"), timing.get("seconds_total"), timing.get("seconds_per_subject"),
                             timing.get("dataset_mb"), timing.get("seed")]])
    text += f"\nOne Change pair in memory: {figure.get('seconds_one_subject_in_memory')} s " \
            f"({figure.get('n_new')} new, {figure.get('n_enlarging')} enlarging lesions); picture " \
            f"`{figure.get('png')}`.\n\n## Contrast: class median / white-matter median\n\n"
    rows = [[name, *[values.get(k) for k in ("csf", "gm", "wm", "lesion")]]
            for name, values in contrast.items() if isinstance(values, dict)]
    return text + markdown_table(["image", "CSF", "GM", "WM", "lesion"], rows)


def preprocessing(data: dict) -> str:
    commands = {"synthetic_1mm_threshold": "--method threshold", "synthetic_1mm_hdbet": "--method hdbet",
                "real_flair_none": "--real", "real_flair_threshold": "--real"}
    runs = {k: v for k, v in data.items() if isinstance(v, dict) and "seconds_per_step" in v}
    text = "# Preprocessing of one pair (steps in sequence, no Nipype)\n\n"
    text += "Commands: " + ", ".join(f"`python benchmarks/preprocessing.py {c}`"
                                     for c in dict.fromkeys(commands[k] for k in runs if k in commands)) + "\n\n"
    rows = []
    for name, run in runs.items():
        accuracy = run.get("skullstrip_dice", run.get("mask_dice_vs_nonzero"))
        rows.append([name, run["seconds_total"], run.get("seconds_critical_path_2_processes"),
                     round(run["peak_rss_mb"] / 1024, 2), run.get("rotation_error_deg"),
                     run.get("translation_error_mm"), accuracy])
    text += markdown_table(["run", "seconds (sum of steps)", "seconds (critical path, 2 processes)",
                            "peak RSS GB", "rotation error deg", "translation error mm", "mask Dice"], rows)
    steps = list(dict.fromkeys(s for run in runs.values() for s in run["seconds_per_step"]))
    text += "\n## Seconds per step\n\n"
    text += markdown_table(["step", *runs], [[s, *[run["seconds_per_step"].get(s) for run in runs.values()]]
                                             for s in steps])
    targets = data.get("targets")
    if targets:
        text += "\nTargets: " + ", ".join(f"{k} {v}" for k, v in targets.items()) + "\n"
    return text


def _peak_header(data: dict) -> str:
    """Column header of the fraction of the FP32 peak, naming the peak recorded with the results."""
    peak = data.get("peak_gflops")
    return f"fraction of {peak:g} peak" if peak else "fraction of peak"


def training(data: dict) -> str:
    text = ("# Detector training speed (cpu preset crops, batch 2)\n\n"
            "Command: `python benchmarks/training.py`\n\n")
    rows = [[r["config"], r["parameters"], r["step_seconds"], r["gflop_per_step"], r["gflops_per_s"],
             r["fraction_of_peak"], r["peak_rss_gb"]] for r in data["results"]]
    text += markdown_table(["config", "parameters", "s / step", "GFLOP / step", "GFLOP/s", _peak_header(data),
                            "peak RSS GB"], rows)
    cpu = next((r for r in data["results"] if r["config"] == "cpu"), None)
    if cpu and "estimated_cpu_preset_training_minutes" in cpu:
        text += (f"\nVAE step {cpu['vae_step_seconds']} s, SuperMix sample {cpu['supermix_sample_seconds']} s; "
                 f"estimated cpu-preset training ({cpu['vae_steps']} VAE + {cpu['detector_steps']} detector steps): "
                 f"{cpu['estimated_cpu_preset_training_minutes']} min.\n")
    return text


def inference(data: dict) -> str:
    text = ("# Full-brain inference (random weights, one pass over the brain box)\n\n"
            f"Command: `{data.get('command', 'python benchmarks/inference.py')}`\n\n")
    rows = [[r["config"], " x ".join(map(str, r["network_input"])), r["parameters"], r["seconds"], r["gflop"],
             r["gflops_per_s"], r["fraction_of_peak"], r["peak_rss_gb"], r.get("load_average_1min")]
            for r in data["results"]]
    return text + markdown_table(["config", "network input", "parameters", "seconds", "GFLOP", "GFLOP/s",
                                  _peak_header(data), "peak RSS GB", "load (1 min)"], rows)


RENDERERS = {"synth_cohort": synth_cohort, "preprocessing": preprocessing, "training": training,
             "inference": inference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(RENDERERS)} (default: all)")
    opts = parser.parse_args()
    unknown = set(opts.names) - set(RENDERERS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(RENDERERS)}")
    for name in opts.names or RENDERERS:
        source = RESULTS / f"{name}.json"
        if not source.is_file():
            print(f"skipping {name}: no {source}", file=sys.stderr)
            continue
        markdown = RENDERERS[name](json.loads(source.read_text()))
        write_results(name, None, markdown)


if __name__ == "__main__":
    main()
