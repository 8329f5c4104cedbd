"""Measure the input plausibility statistics on real scans: the calibration of image/plausibility.py.

    python benchmarks/input_checks.py [--data ../shared/data] [--work /tmp/input_checks]

Reads the real FLAIRs (and the one real T1w) of ``../shared/data`` (see its READMEs; nothing of
it is written into the repository), simulates one rescan of five of them
(:func:`bids_lesionchange.simulate.rescan.self_pair`, fixed seeds), and runs the app's own
preprocessing functions: each image on its own 1 mm grid with the ``auto`` skull stripping
(HD-BET) and N4, then each pair's rigid registration. Prints, and writes to
``benchmarks/results/input_checks.md``:

- per image: the field-of-view cut and head extent (:func:`~.plausibility.check_coverage`), also
  for 10- and 20-slice slabs cut from its middle, and the FLAIR-likeness statistic
  (:func:`~.plausibility.contrast_profile`) with the HD-BET and the threshold brain mask;
- per pair (same person: the NIH pair and the self-pairs; same person, other contrast; two people):
  the brain NCC after alignment and the parenchyma volume ratio inside the shared mask
  (:func:`~.plausibility.same_person_measures`), and each session's own mask-volume ratio.

About 30 minutes on two cores (HD-BET on CPU dominates); intermediate files are cached in --work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bids_lesionchange.errors import InputError  # noqa: E402
from bids_lesionchange.image import plausibility as pl  # noqa: E402
from bids_lesionchange.image import preprocess as pp  # noqa: E402
from bids_lesionchange.image.skullstrip import foreground_mask, threshold_brain_mask  # noqa: E402
from bids_lesionchange.simulate.rescan import self_pair  # noqa: E402
from _common import write_results  # noqa: E402

SOURCES = {
    "p26": "ms-flair-patient26/FLAIR.nii.gz",
    "p26T1w": "ms-flair-patient26/T1w.nii.gz",
    "synthsr": "real-flair-singles/synthsr-example_FLAIR.nii.gz",
    "niivue": "real-flair-singles/niivue-demo_FLAIR.nii.gz",
    "tcga": "real-flair-singles/tcga-fg-6692_FLAIR.nii.gz",
    "nih1": "ms-longitudinal-nih/ses-01_FLAIR.nii.gz",
    "nih2": "ms-longitudinal-nih/ses-02_FLAIR.nii.gz",
}
RESCANNED = ("p26", "synthsr", "niivue", "tcga", "p26T1w")
PAIRS = {
    "same person": [("nih1", "nih2"), ("p26", "p26_rescan"), ("synthsr", "synthsr_rescan"),
                    ("niivue", "niivue_rescan"), ("tcga", "tcga_rescan")],
    "same person, T1w vs FLAIR": [("p26T1w", "p26"), ("p26", "p26T1w_rescan")],
    "two people": [("p26", "synthsr"), ("synthsr", "niivue"), ("niivue", "p26"), ("tcga", "nih2"),
                   ("nih1", "synthsr"), ("p26_rescan", "nih2"), ("synthsr", "tcga"), ("niivue_rescan", "nih1")],
}


def _load(path):
    img = nib.load(str(path))
    return img, np.asanyarray(img.dataobj, dtype=np.float32)


def images(data_dir: Path, work: Path) -> dict[str, Path]:
    """The real images and one simulated rescan of each of RESCANNED (cached)."""
    found = {name: data_dir / rel for name, rel in SOURCES.items()}
    for seed, name in enumerate(RESCANNED):
        out = work / f"{name}_rescan.nii.gz"
        if not out.exists():
            img, data = _load(found[name])
            (_, (rescan, affine, _)) = self_pair(data, img.affine, np.random.default_rng(100 + seed))
            nib.save(nib.Nifti1Image(rescan, affine), str(out))
        found[f"{name}_rescan"] = out
    return found


def session(name: str, path: Path, work: Path) -> Path:
    """Common grid, auto (HD-BET) brain mask and N4 of one image, as the follow-up gets them."""
    folder = work / name
    folder.mkdir(exist_ok=True)
    if not (folder / "n4.nii.gz").exists():
        pp.followup_to_common(path, folder / "common.nii.gz", folder / "xfm.txt")
        pp.skullstrip_followup(folder / "common.nii.gz", folder / "mask.nii.gz", method="auto", source_file=path)
        pp.n4_correct_file(folder / "common.nii.gz", folder / "mask.nii.gz", folder / "n4.nii.gz")
    return folder


def register(baseline: str, followup: str, found: dict, work: Path) -> Path:
    """The app's baseline steps (coarse, native mask, N4, refined rigid) with no NCC limit."""
    folder = work / f"pair_{baseline}__{followup}"
    folder.mkdir(exist_ok=True)
    fixed = work / followup
    if not (folder / "reg.json").exists():
        pp.coarse_register_file(fixed / "common.nii.gz", fixed / "mask.nii.gz", found[baseline], folder / "coarse.txt")
        pp.mask_to_native_file(fixed / "mask.nii.gz", found[baseline], folder / "coarse.txt", folder / "nmask.nii.gz")
        pp.n4_correct_file(found[baseline], folder / "nmask.nii.gz", folder / "bn4.nii.gz")
        try:
            pp.register_baseline_file(fixed / "n4.nii.gz", fixed / "mask.nii.gz", folder / "bn4.nii.gz",
                                      folder / "coarse.txt", folder / "bcommon.nii.gz", folder / "bxfm.txt",
                                      folder / "bmask.nii.gz", folder / "reg.json", min_ncc=-1.0)
        except InputError as err:  # coverage below half: the measures are written all the same
            print(f"  {baseline} -> {followup}: {err}")
    return folder


def slab(img, data, n_slices):
    zooms = np.asarray(img.header.get_zooms()[:3])
    axis = int(np.argmax(zooms)) if zooms.max() > 1.5 else 2
    start = data.shape[axis] // 2 - n_slices // 2
    index = [slice(None)] * 3
    index[axis] = slice(start, start + n_slices)
    return data[tuple(index)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/input_checks"))
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data} not found: this benchmark needs the real scans", file=sys.stderr)
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    found = images(args.data, args.work)
    lines = ["# Input plausibility statistics on real scans (`python benchmarks/input_checks.py`)", "",
             "## Coverage and contrast, per image", "",
             "| image | voxel (mm) | FOV cut, slice axis (first, last) | slab 10: cut | slab 20: cut | "
             "depth-intensity rho (HD-BET mask) | rho (threshold mask) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, path in found.items():
        img, data = _load(path)
        zooms = np.asarray(img.header.get_zooms()[:3])
        cuts = []
        for volume in (data, slab(img, data, 10), slab(img, data, 20)):
            cut = pl.field_of_view_cut(foreground_mask(volume, zooms))
            axis = int(np.argmax(cut.min(axis=1)))
            cuts.append(f"{cut[axis, 0]:.2f}, {cut[axis, 1]:.2f}")
        folder = session(name, path, args.work)
        n4img, n4 = _load(folder / "n4.nii.gz")
        grid = n4img.header.get_zooms()[:3]
        hdbet = np.asanyarray(nib.load(str(folder / "mask.nii.gz")).dataobj) > 0
        threshold = threshold_brain_mask(_load(folder / "common.nii.gz")[1], grid)
        rho = [pl.contrast_profile(n4, mask, grid, resolution_mm=np.sort(zooms))
               ["depth_intensity_correlation"] for mask in (hdbet, threshold)]
        lines.append(f"| {name} | {tuple(round(float(z), 2) for z in zooms)} | {' | '.join(cuts)} | "
                     f"{rho[0]:+.3f} | {rho[1]:+.3f} |")
        print(lines[-1], flush=True)
    lines += ["", "## Pairs", "", "| kind | baseline -> follow-up | brain NCC | parenchyma ratio | own-mask ratio |",
              "| --- | --- | --- | --- | --- |"]
    for kind, pairs in PAIRS.items():
        for baseline, followup in pairs:
            session(followup, found[followup], args.work)
            session(baseline, found[baseline], args.work)
            folder = register(baseline, followup, found, args.work)
            measures = json.loads((folder / "reg.json").read_text())
            ratio = "refused (coverage)"
            if (folder / "bmask.nii.gz").exists():
                mask = np.asanyarray(nib.load(str(folder / "bmask.nii.gz")).dataobj) > 0
                volumes = [pp.parenchyma_volume_ml(_load(p)[1], mask, (1, 1, 1))
                           for p in (folder / "bcommon.nii.gz", args.work / followup / "n4.nii.gz")]
                ratio = f"{max(volumes) / min(volumes):.3f}"
            own = [float((np.asanyarray(nib.load(str(args.work / n / "mask.nii.gz")).dataobj) > 0).sum())
                   for n in (baseline, followup)]
            lines.append(f"| {kind} | {baseline} -> {followup} | {measures['ncc_brain']:.3f} | {ratio} | "
                         f"{max(own) / min(own):.3f} |")
            print(lines[-1], flush=True)
    (out,) = write_results("input_checks", None, "\n".join(lines) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
