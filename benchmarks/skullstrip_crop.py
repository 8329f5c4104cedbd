"""HD-BET on the head's box against HD-BET on the whole field of view: brain masks and seconds.

Usage: python benchmarks/skullstrip_crop.py [--rescans-per-source 2] [--seed 36] [--name skullstrip_crop]

Images: every real FLAIR in ``../shared/data`` (read their READMEs; skipped, with a message, when
the directory is absent) and ``--rescans-per-source`` simulated rescans of each real single FLAIR
(the follow-ups of ``bids_lesionchange.simulate.selfpairs``, as ``benchmarks/real_flair.py`` makes
its NoChange self-pairs: thick-slice or 3D, random slice orientation, noise, bias, motion). Each
is put on the app's 1 mm RAS common grid by the app's own step
(:func:`bids_lesionchange.image.preprocess.followup_to_common`: the skullstrip node's input) and
skull-stripped by HD-BET (fast, CPU, 2 threads, ``--hdbet-precision auto``) in its own process
as the app runs it (:func:`bids_lesionchange.image.skullstrip.run_hdbet`), once on the whole grid
(``crop=False``: HD-BET's own behaviour and the app's before stop 36) and once on the head's box
(``crop=True``, the app's default: :func:`bids_lesionchange.image.hdbet_cli.head_box`).

Per image: whether the app runs HD-BET on it at all (with ``--skull-strip auto`` an image that is
already brain-extracted keeps its own support: :func:`.skullstrip.brain_extracted_support`; HD-BET
on such an image is wrong either way, and those rows are left out of the counts), the grid and
the box, each mask's volume (ml), their Dice, the voxels only the whole grid's mask holds, and
each process's wall seconds. A mask above 1800 ml is checked against the
baseline's in the app (``CHECK_BRAIN_MASK_ML``), above 2000 ml flagged (``MAX_BRAIN_MASK_ML``):
face-free HD-BET masks of these heads were 1041-1680 ml. Writes benchmarks/results/<name>.json
and .md, with the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, command_line, machine, markdown_table, setup_logging, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_flair import SOURCES  # noqa: E402  (the real single FLAIRs and their roles)

DATA = REPO.parent / "shared" / "data"
REAL = [
    "ms-flair-patient26/FLAIR.nii.gz",
    "ms-longitudinal-nih/ses-01_FLAIR.nii.gz",
    "ms-longitudinal-nih/ses-02_FLAIR.nii.gz",
    "real-flair-singles/niivue-demo_FLAIR.nii.gz",
    "real-flair-singles/synthsr-example_FLAIR.nii.gz",
    "real-flair-singles/tcga-fg-6692_FLAIR.nii.gz",
]


def _images(scratch: Path, rescans: int, seed: int) -> list[tuple[str, Path]]:
    """(label, file) of the real FLAIRs and the simulated rescans of the real single FLAIRs."""
    from bids_lesionchange.simulate.selfpairs import write_self_pairs

    images = [(name, DATA / name) for name in REAL if (DATA / name).is_file()]
    present = {k: v for k, v in SOURCES.items() if v[0].is_file()}
    if rescans > 0 and present:
        pairs = write_self_pairs({k: [("01", v[0])] for k, v in present.items()}, scratch, rescans, seed=seed)
        for pair in pairs:
            meta = json.loads(Path(str(pair.followup_flair).replace(".nii.gz", ".json")).read_text())
            images.append((f"rescan of {pair.subject} ({meta.get('acquisition')})", Path(pair.followup_flair)))
    return images


def main() -> None:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="skullstrip_crop")
    parser.add_argument("--rescans-per-source", type=int, default=2,
                        help="simulated rescans of each real single FLAIR (0: the real FLAIRs only)")
    parser.add_argument("--seed", type=int, default=36, help="seed of the simulated rescans")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"no real FLAIRs in {DATA}: this benchmark needs ../shared/data (see its READMEs)")
        return

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.image import plausibility
    from bids_lesionchange.image.hdbet_cli import head_box
    from bids_lesionchange.image.preprocess import followup_to_common
    from bids_lesionchange.image.skullstrip import brain_extracted_support, hdbet_available, run_hdbet

    if not hdbet_available("fast"):
        parser.error("HD-BET is not installed: pip install '.[hdbet]'")
    cpu = machine()
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="skullstrip_crop_") as tmp:
        tmp = Path(tmp)
        for label, src in _images(tmp / "rescans", args.rescans_per_source, args.seed):
            grid, _ = followup_to_common(src, tmp / "grid.nii.gz", tmp / "grid_xfm.txt", resolution=1.0)
            img = nib.load(str(grid))
            data = np.asanyarray(img.dataobj, dtype=np.float32)
            box = head_box(data, img.header.get_zooms()[:3])
            app_runs_hdbet = brain_extracted_support(data, img.header.get_zooms()[:3]) is None
            voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
            masks, seconds = {}, {}
            for variant, crop in (("whole", False), ("box", True)):
                out = tmp / f"mask_{variant}.nii.gz"
                began = time.perf_counter()
                run_hdbet(grid, out, mode="fast", device="cpu", nthreads=2, precision="auto", crop=crop)
                seconds[variant] = round(time.perf_counter() - began, 2)
                masks[variant] = np.asanyarray(nib.load(str(out)).dataobj) > 0
            whole, boxed = masks["whole"], masks["box"]
            dice = 2 * np.count_nonzero(whole & boxed) / max(np.count_nonzero(whole) + np.count_nonzero(boxed), 1)
            record = {"image": label, "app_runs_hdbet": app_runs_hdbet, "grid": list(whole.shape), "box": [b.stop - b.start for b in box],
                      "box_fraction": round(float(np.prod([b.stop - b.start for b in box]) / whole.size), 3),
                      "ml": {k: round(float(np.count_nonzero(m) * voxel_ml), 1) for k, m in masks.items()},
                      "dice": round(float(dice), 4),
                      "only_whole_ml": round(float(np.count_nonzero(whole & ~boxed) * voxel_ml), 1),
                      "only_box_ml": round(float(np.count_nonzero(boxed & ~whole) * voxel_ml), 1),
                      "seconds": seconds, "speedup": round(seconds["whole"] / seconds["box"], 2)}
            records.append(record)
            rows.append([label, "yes" if app_runs_hdbet else "no (brain-extracted)",
                         " x ".join(map(str, record["grid"])), record["box_fraction"],
                         record["ml"]["whole"], record["ml"]["box"], record["dice"], record["only_whole_ml"],
                         record["only_box_ml"], seconds["whole"], seconds["box"], record["speedup"]])
            print(rows[-1], flush=True)
    c = cpu["cpu"]
    check, flag = plausibility.CHECK_BRAIN_MASK_ML, plausibility.MAX_BRAIN_MASK_ML
    used = [r for r in records if r["app_runs_hdbet"]]
    counts = {k: (sum(r["ml"][k] > check for r in used), sum(r["ml"][k] > flag for r in used))
              for k in ("whole", "box")}
    speedups = sorted(r["speedup"] for r in used) or [float("nan")]
    md = ["# HD-BET on the head's box against the whole field of view\n",
          f"Command: `{command_line()}`\n",
          "Each image on the app's 1 mm RAS common grid, then HD-BET (fast, CPU, 2 threads, precision auto) in "
          "its own process as the app runs it, on the whole grid and on the head's box (`hdbet_cli.head_box`: "
          "the largest bright region, + 15 mm). Seconds: that process's wall time (torch import, resampling "
          "to 1.5 mm and back included), one run each.\n",
          f"CPU: {c['model']}, {c['cores']} cores, {', '.join(c['extensions'])}; FP32 peak "
          f"{c['fp32_peak_gflops']} GFLOP/s. Load average at start {cpu['load_average_1min']}.\n",
          markdown_table(["image", "app runs HD-BET", "common grid", "box / grid (voxels)", "whole grid: ml", "head's box: ml",
                          "Dice", "only in whole: ml", "only in box: ml", "whole s", "box s", "speed-up"], rows),
          f"\nMasks above {check:.0f} ml (checked against the baseline's) / above {flag:.0f} ml (flagged): "
          f"whole grid {counts['whole'][0]} / {counts['whole'][1]}, head's box {counts['box'][0]} / "
          f"{counts['box'][1]} of the {len(used)} images the app runs HD-BET on. Speed-up there "
          f"{speedups[0]:.2f}-{speedups[-1]:.2f}x (median {float(np.median(speedups)):.2f}x).\n"]
    write_results(args.name, {"command": command_line(), "machine": cpu, "images": records,
                              "above_check_and_flag": counts}, "\n".join(md))


if __name__ == "__main__":
    main()
