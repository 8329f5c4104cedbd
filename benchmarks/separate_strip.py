"""Sessions skull-stripped separately: does a brain-extracted pair whose two masks differ make false changes?

Public longitudinal MS data are often released brain-extracted, each session stripped on its own
(BET, ROBEX, HD-BET run per scan), so the two brain masks differ at the brain's edge by a voxel to
a few millimetres. The app takes a brain-extracted input's own support as its brain mask and
intersects it with the voxels the aligned baseline covers (``image.preprocess``); what remains is
a thin edge where one session is cut and the other is not, and cubic resampling blends the cut
into the tissue next to it. The self-pairs of ``real_flair.py`` share their source's single mask,
so they never show this. Here the same pairs are run twice, as made and with each session
stripped again on its own grid (:func:`strip_again`), side by side with subtraction:

1. **NoChange self-pairs** of the brain-extracted real FLAIRs in ``../shared/data`` (niivue-demo,
   held out of the shipped model's training; patient 26, a training source, other rescans):
   every change is false.
2. **bidsgate longphantoms of patient 26** (new and enlarging lesions, ``pip install bidsgate
   lesiontrack``): lesion scores, so that a stricter mask's cost in lesions found shows too.

:func:`strip_again` cuts each session's brain (the image's foreground) deeper by a smooth random
depth: 0 over about a third of the edge, up to ``--max-mm`` elsewhere, drawn independently for
the two sessions; outside the new mask the image is 0, as in a release. Nothing of the app is
changed or tuned here.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, command_line, fmt, machine, markdown_table,  # noqa: E402
                     setup_logging, write_results)
import real_flair as rf  # noqa: E402

LOGGER = logging.getLogger("benchmarks.separate_strip")
DEFAULT_ROOT = Path("/tmp/bids_lesionchange_bench/separate_strip")
#: The real FLAIRs that are distributed brain-extracted (the others have their skull on).
BRAIN_EXTRACTED_SOURCES = ("niivue", "p26")
#: Smoothing (mm) of the random field that sets how deep each part of the edge is cut.
FIELD_MM = 12.0


def strip_again(data: np.ndarray, zooms, rng: np.random.Generator, max_mm: float) -> tuple[np.ndarray, float]:
    """Return ``data`` stripped again (0 outside a new, smaller brain mask) and the ml of image it cut away.

    The new mask is the image's foreground (``image.skullstrip.foreground_mask``) without the
    voxels closer to its edge than a smooth random depth (Gaussian noise smoothed by
    :data:`FIELD_MM`, mapped to 0..``max_mm``, 0 over about a third of the edge).
    """
    from scipy import ndimage

    from bids_lesionchange.image.skullstrip import foreground_mask

    zooms = np.asarray(zooms, dtype=float)[:3]
    data = np.asarray(data)
    support = foreground_mask(data.astype(np.float32), zooms)
    depth = ndimage.distance_transform_edt(support, sampling=zooms)
    field = ndimage.gaussian_filter(rng.standard_normal(data.shape).astype(np.float32), FIELD_MM / zooms)
    field = (field - field.min()) / max(float(field.max() - field.min()), 1e-12)
    cut = np.clip(1.6 * field - 0.3, 0.0, 1.0) * max_mm
    keep = support & (depth > cut)
    removed = support & ~keep & (data != 0)
    return np.where(keep, data, 0).astype(data.dtype), float(removed.sum() * np.prod(zooms) / 1e3)


def add_stripped_copy(bids: Path, sub: str, rng: np.random.Generator, max_mm: float) -> tuple[str, list[float]]:
    """Copy subject ``sub`` of ``bids`` to ``<sub>s`` with each session stripped again (reference too)."""
    import nibabel as nib

    new = f"{sub}s"
    removed = []
    for ses in ("01", "02"):
        src = rf._flair(bids, sub, ses)
        dest = rf._flair(bids, new, ses)
        img = nib.load(str(src))
        data = np.asanyarray(img.dataobj)
        stripped, ml = strip_again(data, img.header.get_zooms(), rng, max_mm)
        removed.append(round(ml, 1))
        if not dest.is_file():
            out = nib.Nifti1Image(stripped, img.affine, img.header)
            nib.save(out, str(dest))
        sidecar = Path(str(src).replace(".nii.gz", ".json"))
        if sidecar.is_file():
            shutil.copyfile(sidecar, str(dest).replace(".nii.gz", ".json"))
    reference = rf._reference_path(bids, sub)
    if reference.is_file():
        target = rf._reference_path(bids, new)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reference, target)
    return new, removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=781, help="seed of the self-pairs and of the second strip")
    parser.add_argument("--pairs-per-source", type=int, default=3)
    parser.add_argument("--phantom-seeds", type=int, nargs="*", default=[1, 2],
                        help="bidsgate phantoms of patient 26 (none: skip them)")
    parser.add_argument("--max-mm", type=float, default=3.0, help="deepest cut of the second strip, mm")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.15, 0.2],
                        help="thresholds of the subtraction baseline (follow-up - baseline, images in [0, 1])")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--name", default="separate_strip")
    opts = parser.parse_args()
    rf.require_phantom_packages(parser, opts.phantom_seeds, without="pass --phantom-seeds with no seeds")
    setup_logging()
    model, root, bids = rf.benchmark_tree(parser, opts, "separately stripped sessions")
    subjects = {**rf.write_nochange(bids, root / "self_pairs", opts.pairs_per_source, opts.seed,
                                    BRAIN_EXTRACTED_SOURCES),
                **(rf.write_phantoms(bids, root / "phantoms", opts.phantom_seeds) if opts.phantom_seeds else {})}
    if not subjects:
        parser.error("no pair to run: the brain-extracted FLAIRs of ../shared/data are absent")
    rng = np.random.default_rng(opts.seed)
    for sub in list(subjects):
        new, removed = add_stripped_copy(bids, sub, rng, opts.max_mm)
        subjects[new] = {**subjects[sub], "stripped_again_ml": removed, "as_made": sub}
    out = root / f"out-{model.name}"
    seconds, failed = rf.run_app(bids, out, model, root, opts.nprocs)
    methods = {"model": ("model", rf.KAPPA, "increase", 0.0)}
    methods.update({f"subtraction d > {t}": ("subtraction", t, "increase", 0.0) for t in opts.thresholds})
    results = {}
    for sub, info in subjects.items():
        if sub in failed:
            LOGGER.warning("sub-%s failed in the app (%s); not scored", sub, failed[sub])
            continue
        ref = rf._reference_path(bids, sub)
        kind_map = Path(info["kind_map"]) if "kind_map" in info else None
        results[sub] = {**info, "scores": rf.score_pair(out, sub, methods, ref if ref.is_file() else None,
                                                        root / "scores" / model.name, kind_map)}

    md = ["# Sessions skull-stripped separately: the same pairs as made and with each session stripped again\n",
          f"Model `{model.name}` against subtraction on the same preprocessed images, same rule (kappa / t, "
          f"follow-up brighter, not CSF, hyperintense, blobs >= {rf.BLOB} voxels). Second strip: each session's "
          f"brain cut deeper by a smooth random depth of 0-{opts.max_mm:g} mm, independently per session.\n",
          f"Command: `{command_line()}`\n"]
    pairs = [s for s, r in results.items() if r["kind"] == "nochange" and "as_made" not in r and f"{s}s" in results]
    if pairs:
        headers = ["pair", "source", "ml cut away (ses-01 / ses-02)"]
        for m in methods:
            headers += [f"{m}: as made", f"{m}: stripped again"]
        rows = []
        for s in pairs:
            r, t = results[s], results[f"{s}s"]
            row = [s, f"{r['source']} ({r['role']})", " / ".join(f"{v:g}" for v in t["stripped_again_ml"])]
            for m in methods:
                row += [f"{r['scores'][m]['n_changes']} / {100 * r['scores'][m]['fraction_above']:.2f} %",
                        f"{t['scores'][m]['n_changes']} / {100 * t['scores'][m]['fraction_above']:.2f} %"]
            rows.append(row)
        mean = ["mean", "", ""]
        for m in methods:
            for key in (lambda s: s, lambda s: f"{s}s"):
                mean.append(f"{np.mean([results[key(s)]['scores'][m]['n_changes'] for s in pairs]):.2f} / "
                            f"{100 * np.mean([results[key(s)]['scores'][m]['fraction_above'] for s in pairs]):.2f} %")
        md += ["## 1. NoChange self-pairs of the brain-extracted real FLAIRs: changes / % of the brain above the "
               "threshold (every change is false)\n", markdown_table(headers, rows + [mean])]
    phantoms = [s for s, r in results.items() if r["kind"] == "phantom" and "as_made" not in r and f"{s}s" in results]
    if phantoms:
        keys = ("LTPR", "PPV", "lesion_F1", "LFP")
        headers = ["method", "pairs", *keys, "new / enlarging found"]
        rows = []
        for m in methods:
            for label, names in (("as made", phantoms), ("stripped again", [f"{s}s" for s in phantoms])):
                found = [results[s]["scores"][m]["found"] for s in names]
                rows.append([m, label, *[fmt(float(np.mean([results[s]["scores"][m][k] for s in names])))
                                         for k in keys],
                             " / ".join(f"{sum(f[kind][0] for f in found)} of {sum(f[kind][1] for f in found)}"
                                        for kind in ("new", "enlarging"))])
        md += ["## 2. bidsgate longphantoms of patient 26 (new + enlarging; mean over phantoms; LFP: false changes)\n",
               markdown_table(headers, rows),
               "Phantoms: " + ", ".join(f"{s} (cut away {' / '.join(f'{v:g}' for v in results[s + 's']['stripped_again_ml'])} ml)"
                                        for s in phantoms) + "\n"]
    if failed:
        md += ["## Pairs the app could not process\n",
               markdown_table(["pair", "step: message"], [[f"sub-{s}", m[:200]] for s, m in failed.items()])]
    write_results(opts.name, {"command": command_line(), "machine": machine(), "model": str(model),
                              "seconds_participant_run": round(seconds, 1), "failed": failed, "results": results},
                  "\n".join(md))


if __name__ == "__main__":
    main()
