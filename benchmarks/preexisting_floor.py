"""What the pre-existing-lesion step's floor keeps and drops, on every set with real anatomy or truth.

Usage::

    python benchmarks/preexisting_floor.py [--floors 0.2 0.3 0.4 0.45 0.5]
        [--real-flair DIR] [--accuracy DIR ...]

The app drops a change of which fewer than ``MIN_NEW_FRACTION`` (0.2) of the voxels were
normal-appearing at baseline (at or below 1.15 x the baseline's white-matter peak, and, for a pair
with thick slices, not within half the coarser session's point-spread function of a voxel above
it): a lesion that was already there
(:func:`bids_lesionchange.analysis.components.drop_preexisting_components`).
The step is a filter on each change, so a higher floor removes exactly the kept changes whose
fraction is below it. This script reads the changes the app already wrote (``real_flair.py``'s
``out-<model>``: NoChange self-pairs, the NIH pair, the bidsgate phantoms; ``accuracy.py``'s
outputs with their synthetic truth), measures each change's normal-appearing fraction, and
counts, per floor, the true and false changes kept (true: overlaps the reference). Nothing is
re-run. Writes ``benchmarks/results/NAME.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REAL_FLAIR_ROOT, command_line, machine, markdown_table, pair_files, pair_psf_fwhm,  # noqa: E402
                     setup_logging, write_results)

SELF_PAIRS = ["nihbase1", "nihbase2", "niivue1", "niivue2", "p261", "p262", "synthsr1", "synthsr2", "tcga1", "tcga2"]
HELD_OUT = ("nihbase1", "nihbase2", "niivue1", "niivue2")


def changes(out: Path, sub: str, truth: Path | None) -> list[tuple[float, bool | None]]:
    """[(normal-appearing fraction, overlaps the truth or None without one), ...] of a pair's changes."""
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.analysis.components import normal_appearing
    from bids_lesionchange.image.transforms import to_common

    files = pair_files(out, sub)
    img = nib.load(str(files["followup"]))
    base = np.asarray(nib.load(str(files["baseline"])).dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(str(files["brain_mask"])).dataobj) > 0
    labels = np.asarray(nib.load(str(files["labels"])).dataobj)
    reference = None
    if truth is not None and truth.is_file():
        ref = nib.load(str(truth))
        binary = nib.Nifti1Image((np.asarray(ref.dataobj) > 0).astype(np.uint8), ref.affine)
        reference = to_common(binary, files["followup_xfm"], labels.shape, img.affine) > 0
    psf = pair_psf_fwhm(files)  # as the app: thick slices widen "already hyperintense"
    normal = normal_appearing(base, brain, None if psf is None else psf / np.asarray(img.header.get_zooms()[:3]))
    found = []
    for label in range(1, int(labels.max()) + 1):
        member = labels == label
        found.append((float(normal[member].mean()), None if reference is None else bool((member & reference).any())))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floors", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.45, 0.5])
    parser.add_argument("--real-flair", type=Path, default=REAL_FLAIR_ROOT / "out-v8",
                        help="real_flair.py's derivatives of the model")
    parser.add_argument("--accuracy", type=Path, nargs="*",
                        default=[Path("/tmp/bench_v8/accuracy_thick_v8_rim"), Path("/tmp/bench_v8/accuracy_thick2d_v8_rim")],
                        help="accuracy.py roots (bids/ with derivatives/truth, out_blob20/)")
    parser.add_argument("--name", default="preexisting_floor")
    opts = parser.parse_args()
    setup_logging()
    sets: dict[str, dict[str, list]] = {}
    out, bids = opts.real_flair, opts.real_flair.parent / "bids"
    reference = bids / "derivatives" / "reference"

    def present(o, s):
        return pair_files(o, s)["labels"].is_file()

    sets["NoChange self-pairs"] = {s: changes(out, s, None) for s in SELF_PAIRS if present(out, s)}
    sets["NIH real pair"] = {s: changes(out, s, None) for s in ["nih01"] if present(out, s)}
    phantoms = sorted(p.name[4:] for p in reference.glob("sub-*")) if reference.is_dir() else []
    for kind, prefix in (("patient-26 phantoms", "phantom"), ("new-lesion phantoms", "nph")):
        sets[kind] = {s: changes(out, s, reference / f"sub-{s}" / "ses-02" / "anat" / f"sub-{s}_ses-02_desc-change_mask.nii.gz")
                      for s in phantoms if s.startswith(prefix) and present(out, s)}
    for root in opts.accuracy:
        truth = root / "bids" / "derivatives" / "truth"
        subs = sorted(p.name[4:] for p in (root / "out_blob20").glob("sub-*") if p.is_dir())
        sets[f"synthetic cohort {root.name}"] = {
            s: changes(root / "out_blob20", s, truth / f"sub-{s}" / "ses-02" / "anat" / f"sub-{s}_ses-02_desc-change_mask.nii.gz")
            for s in subs if present(root / "out_blob20", s)}
    sets = {k: v for k, v in sets.items() if v}
    if not sets:
        print("no outputs found: run benchmarks/real_flair.py (and accuracy.py) first")
        return
    rows, data = [], {}
    for floor in opts.floors:
        cells = [f"{floor:g}" + (" (the app)" if floor == 0.2 else "")]
        data[floor] = {}
        for name, pairs in sets.items():
            kept = {s: [(f, tp) for f, tp in found if f >= floor] for s, found in pairs.items()}
            true = sum(tp is True for v in kept.values() for _, tp in v)
            false = sum(tp is False or tp is None and name.startswith("NoChange") for v in kept.values() for _, tp in v)
            total = sum(len(v) for v in kept.values())
            data[floor][name] = {"true": true, "false": false, "total": total, "per_pair": {s: len(v) for s, v in kept.items()}}
            if name.startswith("NoChange"):
                held = ", ".join(str(len(kept[s])) for s in HELD_OUT if s in kept)
                cells.append(f"{total / len(kept):.1f} per pair (held out: {held})")
            elif name.startswith("NIH"):
                cells.append(str(total))
            else:
                cells.append(f"{true} / {false}")
        rows.append(cells)
    headers = ["floor (share of a change's voxels normal-appearing at baseline)"] + [
        f"{n}: false changes" if n.startswith("NoChange") else (f"{n}: changes" if n.startswith("NIH") else f"{n}: true / false")
        for n in sets]
    thin = {name: sorted(round(f, 3) for found in pairs.values() for f, tp in found if tp) for name, pairs in sets.items()}
    md = ["# The pre-existing-lesion step's floor: changes kept per floor\n", f"Command: `{command_line()}`\n",
          markdown_table(headers, rows),
          "Lowest normal-appearing fraction of a true change: " + "; ".join(
              f"{n} {v[0]}" for n, v in thin.items() if v) + "\n"]
    write_results(opts.name, {"command": command_line(), "machine": machine(), "floors": data,
                              "true_change_fractions": thin}, "\n".join(md))


if __name__ == "__main__":
    main()
