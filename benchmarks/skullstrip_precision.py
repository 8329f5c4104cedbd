"""HD-BET in bfloat16 against float32 on the real FLAIRs: seconds and brain masks.

Usage: python benchmarks/skullstrip_precision.py [--name skullstrip_precision] [--repeats 1]

Every real FLAIR in ``../shared/data`` (read their READMEs; skipped, with a message, when the
directory is absent) is put on the app's 1 mm RAS common grid by the app's own step
(:func:`bids_lesionchange.image.preprocess.followup_to_common`: the skullstrip node's input)
and skull-stripped by HD-BET (fast mode, CPU, 2 threads) in its own process, as the app runs it
(:func:`bids_lesionchange.image.skullstrip.run_hdbet`), once in float32 (the baseline, HD-BET's
own precision) and once in bfloat16 (PyTorch autocast). Per image: the process's wall seconds
(best of ``--repeats``), the speed-up, and the Dice and the number of differing voxels of the
two masks. bfloat16 is fast only where the CPU computes it natively (AVX512_BF16 or AMX: see the
CPU description in the results); elsewhere the app's ``--hdbet-precision auto`` keeps float32.
Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import REPO, command_line, machine, markdown_table, setup_logging, write_results

DATA = REPO.parent / "shared" / "data"
IMAGES = [
    "ms-flair-patient26/FLAIR.nii.gz",
    "ms-longitudinal-nih/ses-01_FLAIR.nii.gz",
    "ms-longitudinal-nih/ses-02_FLAIR.nii.gz",
    "real-flair-singles/niivue-demo_FLAIR.nii.gz",
    "real-flair-singles/synthsr-example_FLAIR.nii.gz",
    "real-flair-singles/tcga-fg-6692_FLAIR.nii.gz",
]
PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="skullstrip_precision")
    parser.add_argument("--repeats", type=int, default=1, help="runs per image and precision (best kept)")
    args = parser.parse_args()
    images = [DATA / name for name in IMAGES if (DATA / name).is_file()]
    if not images:
        print(f"no real FLAIRs in {DATA}: this benchmark needs ../shared/data (see its READMEs)")
        return

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.image.preprocess import followup_to_common
    from bids_lesionchange.image.skullstrip import hdbet_available, run_hdbet

    if not hdbet_available("fast"):
        parser.error("HD-BET is not installed: pip install '.[hdbet]'")
    cpu = machine()
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="skullstrip_precision_") as tmp:
        for src in images:
            grid, _ = followup_to_common(src, Path(tmp) / "grid.nii.gz", Path(tmp) / "grid_xfm.txt",
                                         resolution=1.0)  # the skullstrip node's input
            masks, seconds = {}, {}
            for precision in PRECISIONS:
                best = float("inf")
                for _ in range(max(1, args.repeats)):
                    out = Path(tmp) / f"mask_{precision}.nii.gz"
                    began = time.perf_counter()
                    _, ran = run_hdbet(grid, out, mode="fast", device="cpu", nthreads=2, precision=precision,
                                       return_precision=True)
                    best = min(best, time.perf_counter() - began)
                    assert ran == precision, (ran, precision)
                seconds[precision] = round(best, 2)
                masks[precision] = np.asanyarray(nib.load(str(out)).dataobj) > 0
            a, b = masks["float32"], masks["bfloat16"]
            dice = 2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)
            record = {"image": str(src.relative_to(DATA)), "grid": list(a.shape),
                      "seconds": seconds, "speedup": round(seconds["float32"] / seconds["bfloat16"], 2),
                      "brain_ml_float32": round(np.count_nonzero(a) / 1e3, 1),
                      "mask_dice": round(float(dice), 5), "differing_voxels": int(np.count_nonzero(a ^ b))}
            records.append(record)
            rows.append([record["image"], " x ".join(map(str, a.shape)), seconds["float32"],
                         seconds["bfloat16"], record["speedup"], record["brain_ml_float32"],
                         record["mask_dice"], record["differing_voxels"]])
            print(rows[-1], flush=True)
    c = cpu["cpu"]
    speedups = sorted(r["speedup"] for r in records)
    md = ["# HD-BET: bfloat16 against float32 on real FLAIRs\n",
          f"Command: `{command_line()}`\n",
          "Each image resampled onto the app's 1 mm RAS common grid, then HD-BET (fast, CPU, 2 threads) "
          "in its own process as the app runs it; seconds = that process's wall time (torch import, "
          f"resampling to 1.5 mm and back included), best of {max(1, args.repeats)}.\n",
          f"CPU: {c['model']}, {c['cores']} cores, {', '.join(c['extensions'])}; FP32 peak "
          f"{c['fp32_peak_gflops']} GFLOP/s. Load average at start {cpu['load_average_1min']}.\n",
          markdown_table(["image", "common grid", "float32 s", "bfloat16 s", "speed-up", "brain ml",
                          "mask Dice", "differing voxels"], rows),
          f"\nSpeed-up {speedups[0]:.2f}-{speedups[-1]:.2f}x; lowest mask Dice "
          f"{min(r['mask_dice'] for r in records):.4f}.\n"]
    write_results(args.name, {"command": command_line(), "machine": cpu, "images": records}, "\n".join(md))


if __name__ == "__main__":
    main()
