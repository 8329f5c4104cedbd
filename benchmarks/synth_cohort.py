"""Benchmark the synthetic cohort generator at 1 mm, picture a Change pair, compare contrast with a real FLAIR.

Usage:
  python benchmarks/synth_cohort.py --stage timing   # write 10 subjects at 1 mm, time it
  python benchmarks/synth_cohort.py --stage figure   # one Change pair at 1 mm: PNG + contrast ratios
  python benchmarks/synth_cohort.py                  # both

Writes benchmarks/results/synth_cohort.json (merged across stages) and
benchmarks/results/synth_change_pair.png. The real FLAIR (Lesjak et al. 2018, patient 26) is read
from ../shared/data/ms-flair-patient26 when present; its tissue classes come from a 3-class Gaussian
mixture on its T1 (posterior > 0.95), the synthetic classes from the true tissue fractions (> 0.95).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, update_results  # noqa: E402

HERE = Path(__file__).resolve().parent
REAL_FLAIR_DIR = HERE.parents[1] / "shared" / "data" / "ms-flair-patient26"
LOGGER = logging.getLogger("benchmarks.synth_cohort")


def time_cohort(n_subjects: int, seed: int, keep: Path | None) -> dict:
    """Write ``n_subjects`` (half NoChange, half Change, half the follow-ups thick-slice) at 1 mm."""
    from bids_lesionchange.simulate.acquisition import RescanEffects
    from bids_lesionchange.simulate.cohort import write_cohort

    n_nochange = n_subjects // 2
    with tempfile.TemporaryDirectory() as tmp:
        out = keep if keep is not None else Path(tmp) / "bids"
        began = time.perf_counter()
        write_cohort(out, n_nochange, n_subjects - n_nochange, seed=seed, preset="1mm",
                     effects=RescanEffects(thick_slice=0.5))
        seconds = time.perf_counter() - began
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return {"timing_1mm": {"n_subjects": n_subjects, "seconds_total": round(seconds, 1),
                           "seconds_per_subject": round(seconds / n_subjects, 1),
                           "dataset_mb": round(size_mb, 1), "seed": seed,
                           "note": "includes loading the 1 mm template once (~5 s) and writing gzip NIfTI"}}


def real_flair_ratios() -> dict | None:
    """Return median FLAIR intensity of CSF, GM and lesions relative to WM on the real scan."""
    if not REAL_FLAIR_DIR.exists():
        return None
    import nibabel as nib
    from scipy import ndimage as ndi
    from sklearn.mixture import GaussianMixture

    flair = np.asarray(nib.load(REAL_FLAIR_DIR / "FLAIR.nii.gz").dataobj, dtype=np.float32)
    t1 = np.asarray(nib.load(REAL_FLAIR_DIR / "T1w.nii.gz").dataobj, dtype=np.float32)
    lesions = np.asarray(nib.load(REAL_FLAIR_DIR / "lesion_mask.nii.gz").dataobj) > 0
    brain = ndi.binary_erosion((flair > 0) & (t1 > 0), iterations=2)
    normal = brain & ~ndi.binary_dilation(lesions, iterations=2)
    values = t1[normal][:, None]
    mixture = GaussianMixture(3, random_state=0).fit(values[::20])
    posterior = mixture.predict_proba(values)
    order = np.argsort(mixture.means_.ravel())
    medians = {name: float(np.median(flair[normal][posterior[:, k] > 0.95]))
               for name, k in zip(("csf", "gm", "wm"), order)}
    medians["lesion"] = float(np.median(flair[lesions]))
    return {name: round(value / medians["wm"], 3) for name, value in medians.items()}


def synthetic_ratios(session) -> dict:
    """Return median intensity (bias removed) of pure CSF, GM, WM and of lesions, relative to WM."""
    image = session.image / session.bias
    lesion = session.lesion_mask
    medians = {name: float(np.median(image[(fraction > 0.95) & ~lesion]))
               for name, fraction in session.tissues.items()}
    medians["lesion"] = float(np.median(image[lesion]))
    return {name: round(value / medians["wm"], 3) for name, value in medians.items()}


def figure(seed: int) -> dict:
    """Simulate one 1 mm Change subject (thick-slice follow-up), save the PNG, measure contrast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from bids_lesionchange.simulate.acquisition import RescanEffects
    from bids_lesionchange.simulate.cohort import simulate_subject

    began = time.perf_counter()
    subject = simulate_subject(0, "Change", seed=seed, preset="1mm", effects=RescanEffects(thick_slice=1.0),
                               keep_tissues=True)
    seconds = time.perf_counter() - began
    baseline, follow = subject.sessions
    change = subject.change_dseg
    # the follow-up axial slice with most change, and the baseline slice at the same anatomy
    k2 = int(np.argmax((change > 0).sum(axis=(0, 1))))
    centre2 = follow.affine @ np.array([follow.image.shape[0] / 2, follow.image.shape[1] / 2, k2, 1.0])
    centre1 = np.linalg.inv(subject.ses01_to_ses02) @ centre2
    k1 = int(round((np.linalg.inv(baseline.affine) @ centre1)[2]))
    overlay = ListedColormap([(0, 0, 0, 0), (1.0, 0.2, 0.2, 0.8), (1.0, 0.85, 0.1, 0.8)])

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), facecolor="black")
    panels = [(baseline.image[:, :, k1], baseline, f"ses-01 (3D, {baseline.protocol.zooms} mm), slice {k1}"),
              (follow.image[:, :, k2], follow, f"ses-02 (2D, {follow.protocol.zooms} mm), slice {k2}"),
              (follow.image[:, :, k2], follow, "ses-02 + truth: red = new, yellow = enlarging")]
    for ax, (image, session, title) in zip(axes, panels):
        zooms = session.protocol.zooms
        ax.imshow(image.T, origin="lower", cmap="gray", vmin=0, vmax=np.percentile(session.image, 99.8),
                  aspect=zooms[1] / zooms[0])
        ax.set_title(title, color="white", fontsize=10)
        ax.axis("off")
    axes[2].imshow(change[:, :, k2].T, origin="lower", cmap=overlay, vmin=0, vmax=2, interpolation="nearest",
                   aspect=follow.protocol.zooms[1] / follow.protocol.zooms[0])
    motion = subject.ses01_to_ses02
    angle = np.degrees(np.arccos(np.clip((np.trace(motion[:3, :3]) - 1) / 2, -1, 1)))
    fig.suptitle(f"Synthetic Change pair at 1 mm (seed {seed}): {subject.n_new} new, {subject.n_enlarging} "
                 f"enlarging; motion {angle:.1f} deg / {np.linalg.norm(motion[:3, 3]):.1f} mm",
                 color="white")
    fig.tight_layout()
    png = RESULTS / "synth_change_pair.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90, facecolor="black")
    plt.close(fig)
    return {"figure": {"png": str(png.relative_to(HERE.parent)), "seconds_one_subject_in_memory": round(seconds, 1),
                       "n_new": subject.n_new, "n_enlarging": subject.n_enlarging},
            "contrast_ratios_to_wm": {"synthetic_ses01": synthetic_ratios(baseline), "real_patient26": real_flair_ratios(),
                                      "method": "median intensity per class / WM median (synthetic: bias removed)"}}


def main() -> None:
    """Run the requested stages and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("timing", "figure", "all"), default="all")
    parser.add_argument("--n-subjects", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the timed dataset here instead of a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    update = {}
    if args.stage in ("timing", "all"):
        update.update(time_cohort(args.n_subjects, args.seed, args.keep))
    if args.stage in ("figure", "all"):
        update.update(figure(args.seed))
    update_results("synth_cohort", update)
    print(json.dumps(update, indent=2))


if __name__ == "__main__":
    main()
