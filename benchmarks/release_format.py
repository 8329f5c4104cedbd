"""Release format: does the answer depend on the form a lab has its scans in?

Usage::

    python benchmarks/release_format.py                 # needs ../shared/data (~6 min on 2 cores)
    python benchmarks/release_format.py --model DIR

Public MS datasets come raw (2D FLAIR with thick slices, skull on) or as "releases": resampled to
1 mm isotropic and brain-extracted before they are shared. The real longitudinal pair
(``ms-longitudinal-nih``, 0.94 x 0.94 x 3 mm, skull on; test-only by its license) is run four ways:

- ``nihraw``: both sessions as acquired (the app's usual input);
- ``nihrel``: both as a release: each session resampled to 1 mm isotropic (cubic B-spline, in its
  own orientation) and brain-extracted with HD-BET, zero outside (:func:`make_release`); its
  header then says 1 mm, whatever the slices were;
- ``nihmix``: the raw baseline against the released follow-up (a lab that mixes its archive
  with a release);
- ``nihsame``: the raw baseline against the release of the *same* baseline scan: nothing changed,
  so every change is false (what the format alone makes).

Per subject, the model and subtraction d > 0.1 under the same rule (the app's, as
``real_flair.py`` scores it): changes, fraction of the brain above threshold, and how many of the
changes lie within 6 mm (centre to centre, world coordinates) of a change of ``nihraw`` by the
same method. Writes ``benchmarks/results/release_format.{json,md}`` (``--name``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DEFAULT_MODEL, REAL_FLAIR_ROOT, checked_model, command_line, fmt, load_pair_arrays,  # noqa: E402
                     machine, markdown_table, pair_psf_fwhm, setup_logging, write_results)
from real_flair import BLOB, KAPPA, NIH, _flair, pair_paths, run_app  # noqa: E402

LOGGER = logging.getLogger("benchmarks.release_format")
#: Two changes are the same finding when their centres are this close (mm).
MATCH_MM = 6.0
SUBTRACTION = 0.1
METHODS = {"model": ("model", KAPPA), f"subtraction d > {SUBTRACTION}": ("subtraction", SUBTRACTION)}
#: subject: (baseline source, follow-up source); "raw" is the file as acquired, "release" its release
SUBJECTS = {"nihraw": (("01", "raw"), ("02", "raw")), "nihrel": (("01", "release"), ("02", "release")),
            "nihmix": (("01", "raw"), ("02", "release")), "nihsame": (("01", "raw"), ("01", "release"))}


def isotropic_1mm(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data`` resampled to 1 mm voxels along its own axes (cubic B-spline, negative overshoot
    clipped), and the new affine: the first voxel's centre stays where it was."""
    from scipy import ndimage

    zooms = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    shape = tuple(int(v) for v in np.ceil(np.asarray(data.shape) * zooms))
    resampled = ndimage.affine_transform(np.asarray(data, dtype=np.float32), 1.0 / zooms, output_shape=shape,
                                         order=3, mode="nearest")
    new_affine = np.array(affine, dtype=float)
    new_affine[:3, :3] = new_affine[:3, :3] / zooms
    return np.clip(resampled, 0.0, None).astype(np.float32), new_affine


def make_release(source: Path, dest: Path, scratch: Path) -> Path:
    """Write ``source`` as a release: :func:`isotropic_1mm`, then brain-extracted (HD-BET, fast
    mode), 0 outside."""
    import nibabel as nib

    from bids_lesionchange.image.skullstrip import run_hdbet

    img = nib.load(str(source))
    resampled, affine = isotropic_1mm(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    scratch.mkdir(parents=True, exist_ok=True)
    stem = source.name.split(".")[0]
    one_mm = scratch / f"{stem}_1mm.nii.gz"
    nib.save(nib.Nifti1Image(resampled, affine), str(one_mm))
    mask = run_hdbet(one_mm, scratch / f"{stem}_1mm_mask.nii.gz")
    brain = np.asarray(nib.load(str(mask)).dataobj) > 0
    nib.save(nib.Nifti1Image(np.where(brain, resampled, 0.0).astype(np.float32), affine), str(dest))
    return dest


def write_subjects(bids: Path, scratch: Path) -> dict[str, dict]:
    """The four subjects of the module docstring in ``bids`` (releases made once, in ``scratch``)."""
    import shutil

    releases = {}
    for sub, sessions in SUBJECTS.items():
        for ses, (source_ses, form) in zip(("01", "02"), sessions):
            dest = _flair(bids, sub, ses)
            if dest.is_file():
                continue
            source = NIH / f"ses-{source_ses}_FLAIR.nii.gz"
            if form == "raw":
                shutil.copyfile(source, dest)
                continue
            if source_ses not in releases:
                releases[source_ses] = make_release(source, scratch / f"release_ses-{source_ses}.nii.gz", scratch)
            shutil.copyfile(releases[source_ses], dest)
    return {sub: {"baseline": f"ses-{a[0]} {a[1]}", "followup": f"ses-{b[0]} {b[1]}"}
            for sub, (a, b) in SUBJECTS.items()}


def change_centres(out: Path, sub: str) -> dict[str, dict]:
    """Per method: the changes of the app's rule (``n``, ``fraction_above``) and their centres (mm)."""
    from scipy import ndimage

    from bids_lesionchange.analysis.components import change_labels

    files = pair_paths(out, sub)
    img, base, follow, brain, prob = load_pair_arrays(files)
    psf = pair_psf_fwhm(files)
    result = {}
    for name, (kind, threshold) in METHODS.items():
        score = prob if kind == "model" else follow - base
        labels = change_labels(score, brain, threshold, BLOB, direction="increase", baseline=base,
                               followup=follow, psf_fwhm=psf)
        voxels = ndimage.center_of_mass(labels > 0, labels, range(1, int(labels.max()) + 1))
        centres = [(img.affine[:3, :3] @ np.asarray(v) + img.affine[:3, 3]).round(2).tolist() for v in voxels]
        result[name] = {"n": int(labels.max()), "fraction_above": float((score[brain] > threshold).mean()),
                        "centres_mm": centres}
    return result


def matched(centres, reference) -> int:
    """How many of ``centres`` lie within :data:`MATCH_MM` of one of ``reference``."""
    if not centres or not reference:
        return 0
    distance = np.linalg.norm(np.asarray(centres)[:, None] - np.asarray(reference)[None], axis=2)
    return int((distance.min(axis=1) < MATCH_MM).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REAL_FLAIR_ROOT.parent / "release_format")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--name", default="release_format")
    opts = parser.parse_args()
    setup_logging()
    if not (NIH / "ses-02_FLAIR.nii.gz").is_file():
        parser.error(f"{NIH} is missing: this benchmark needs the shared real pair (see its README)")
    model = checked_model(parser, opts.model)
    root = opts.root.resolve()
    bids = root / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "release format", "BIDSVersion": "1.9.0"}))
    (bids / "derivatives" / "reference").mkdir(parents=True, exist_ok=True)
    subjects = write_subjects(bids, root / "releases")
    out = root / f"out-{model.name}"
    seconds, failed = run_app(bids, out, model, root, opts.nprocs)
    if failed:
        raise SystemExit(f"the app failed on {failed}; see {root}")
    scores = {sub: change_centres(out, sub) for sub in subjects}
    rows = []
    for sub, info in subjects.items():
        for method in METHODS:
            row = scores[sub][method]
            same = "-" if sub == "nihraw" else f"{matched(row['centres_mm'], scores['nihraw'][method]['centres_mm'])} of {row['n']}"
            rows.append([sub, info["baseline"], info["followup"], method, row["n"],
                         fmt(100 * row["fraction_above"], 2), same])
    md = ["# Release format: the real NIH pair raw, as a 1 mm brain-extracted release, and mixed\n",
          f"Command: `{command_line()}`\n",
          f"Model `{model.name}` against subtraction d > {SUBTRACTION} on the same preprocessed images, same rule "
          f"(the app's: kappa / t, follow-up brighter, not CSF, hyperintense, blobs >= {BLOB} voxels). "
          "A release: each session resampled to 1 mm isotropic (cubic) and brain-extracted (HD-BET), its header "
          "then saying 1 mm. `nihsame` pairs the raw baseline with the release of the same scan: every change "
          "is false.\n",
          markdown_table(["subject", "baseline", "follow-up", "method", "changes", "% of brain above threshold",
                          f"changes within {MATCH_MM:g} mm of one of nihraw's"], rows),
          f"\nMachine: {machine()['cpu'].get('model', 'unknown CPU')} ({machine()['cpu'].get('cores')} cores); "
          "the app's time is in the JSON (a rerun reuses the work directory).\n"]
    # counts only: where the changes of the NIH pair lie stays out of the results (its license)
    counts = {sub: {method: {"n": row["n"], "fraction_above": row["fraction_above"],
                             "matched_to_nihraw": matched(row["centres_mm"], scores["nihraw"][method]["centres_mm"])}
                    for method, row in per_method.items()} for sub, per_method in scores.items()}
    write_results(opts.name, {"command": command_line(), "model": str(model), "machine": machine(),
                              "subjects": subjects, "scores": counts, "app_seconds": seconds}, "\n".join(md))


if __name__ == "__main__":
    main()
