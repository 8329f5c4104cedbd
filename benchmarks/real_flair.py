"""Real FLAIR: false changes on real-texture NoChange pairs, the real MS pair, a third-party phantom.

Usage::

    python benchmarks/real_flair.py                    # needs ../shared/data (~25 min on 2 cores)
    python benchmarks/real_flair.py --model DIR        # another model directory
    python benchmarks/real_flair.py --growth-factors 2 3   # enlarging lesions grown x 2, x 3 too (default: x 2)

Writes ``benchmarks/results/real_flair.{json,md}``, the picture
``docs/img/real_pair_detections.png`` and prints the tables. The model and a subtraction baseline
are scored in the same run, on the same preprocessed images and with the same change rule
(threshold, follow-up brighter, not CSF, hyperintense, components >= 20 voxels).

Three parts, all from the real scans in ``../shared/data`` (skipped, with a message, when a file
is absent):

1. **Real-texture NoChange pairs.** Self-pairs (the scan and a simulated rescan of it, or two
   rescans: :mod:`bids_lesionchange.simulate.rescan`) of every real single FLAIR, with a seed
   (``--seed``, default 777) that training never used. Two of the sources are held out of the
   shipped model's training altogether: ``niivue-demo`` and the baseline of the NonCommercial
   NIH pair (test-only by its license); the others (patient 26, synthsr-example,
   tcga-fg-6692) were training sources, with other rescans. Reported: changes per pair and the
   fraction of the brain above kappa (nothing changed, so every change is false).
2. **The real longitudinal MS pair** (``ms-longitudinal-nih``, raw 2D 3 mm, skull on, no
   reference): number of changes, fraction above kappa, and a picture for a person to judge.
3. **A third-party longitudinal phantom**: ``bidsgate``'s ``longphantom`` (with ``lesiontrack``;
   ``pip install bidsgate lesiontrack``) on patient 26 (T1w, FLAIR, lesion mask; brain mask =
   the filled non-zero FLAIR): visits at 0 and 1 year with new lesions, enlarging, shrinking and
   resolving ones, atrophy, repositioning, gain and noise. Reference change = the new lesions
   and the enlarging ones (whole lesion at follow-up: the visits are not voxel-aligned, so the
   grown rim alone cannot be cut out), without stray fragments of <= 3 mm^3 (the MSSEG-2 rule:
   bidsgate's label maps hold a few single voxels of a lesion's label). LTPR, LFPR, PPV, lesion F1
   (IoU >= 0.01); voxel Dice is therefore pessimistic for enlarging lesions. bidsgate enlarges a
   lesion by pushing its edge outward (a radial displacement; 0.37 mm, median, at its x 1.3 per
   year); part 3b repeats these phantoms with the enlarging lesions grown by ``--growth-factors``
   and counts the new and the enlarging lesions found (:func:`found_by_kind`).
4. **New-lesion phantoms of the other real FLAIRs** (``--new-lesion-seeds``; same bidsgate
   generator, no lesion mask, so new lesions only): four more scanners and geometries (1 mm 3D,
   2D with 3 and 5.5 mm slices), so that detection is not judged on one scan
   (:func:`write_new_lesion_phantoms`).

On the phantoms of parts 3 and 4 the rule of the model and of subtraction d > 0.1 is also followed
step by step (section 6 of the results): after each step of the app's rule, how many new and
enlarging reference lesions a change still matches, so that a lesion the score map never flags is
told apart from one a step of the rule removed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_MODEL, REAL_FLAIR_ROOT, REPO, app_command, checked_model, command_line,  # noqa: E402
                     fmt, load_pair_arrays, machine, markdown_table, pair_psf_fwhm, reference_mask,
                     score_labels, setup_logging, write_results)

LOGGER = logging.getLogger("benchmarks.real_flair")
DATA = REPO.parent / "shared" / "data"
SOURCES = {  # label: (file, role in the shipped model's training)
    "niivue": (DATA / "real-flair-singles" / "niivue-demo_FLAIR.nii.gz", "held out"),
    "nihbase": (DATA / "ms-longitudinal-nih" / "ses-01_FLAIR.nii.gz", "held out (test-only license)"),
    "p26": (DATA / "ms-flair-patient26" / "FLAIR.nii.gz", "training source, other rescans"),
    "synthsr": (DATA / "real-flair-singles" / "synthsr-example_FLAIR.nii.gz", "training source, other rescans"),
    "tcga": (DATA / "real-flair-singles" / "tcga-fg-6692_FLAIR.nii.gz", "training source, other rescans"),
}
NIH = DATA / "ms-longitudinal-nih"
P26 = DATA / "ms-flair-patient26"
KAPPA = 0.1
BLOB = 20
#: The methods whose rule is followed step by step on the phantoms (section 6: which step of the
#: rule removed the reference lesions a method does not find).
STEP_METHODS = ("model", "subtraction d > 0.1")


def benchmark_tree(parser: argparse.ArgumentParser, opts, name: str = "real FLAIR benchmark") -> tuple[Path, Path, Path]:
    """Check that the shared real FLAIRs and ``opts.model`` are there, make the BIDS tree under
    ``opts.root`` (with the reference directory the app is given, phantoms or not); return
    ``(model, root, bids)``."""
    if not DATA.is_dir():
        parser.error(f"{DATA} is missing: this benchmark needs the shared real FLAIRs (see their READMEs)")
    model = checked_model(parser, opts.model)
    root = opts.root.resolve()
    bids = root / "bids"
    (bids / "derivatives" / "reference").mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": name, "BIDSVersion": "1.9.0"}) + "\n")
    return model, root, bids


def _flair(bids: Path, sub: str, ses: str) -> Path:
    path = bids / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_nochange(bids: Path, scratch: Path, pairs_per_source: int, seed: int,
                   sources: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Self-pairs of every real single FLAIR (or of the ``sources``, keys of :data:`SOURCES`) as
    subjects ``<source><k>`` (ses-01, ses-02)."""
    from bids_lesionchange.simulate.selfpairs import write_self_pairs

    subjects = {}
    chosen = {k: SOURCES[k] for k in (SOURCES if sources is None else sources)}
    present = {k: v for k, v in chosen.items() if v[0].is_file()}
    for label, (path, role) in chosen.items():
        if label not in present:
            LOGGER.warning("%s is absent: no self-pairs of it", path)
    pairs = write_self_pairs({k: [("01", v[0])] for k, v in present.items()}, scratch, pairs_per_source, seed=seed)
    for pair in pairs:
        k = int(pair.baseline_session[len("selfpair"):-1])
        sub = f"{pair.subject}{k}"
        for ses, src in (("01", pair.baseline_flair), ("02", pair.followup_flair)):
            dest = _flair(bids, sub, ses)
            if not dest.is_file():
                shutil.copyfile(src, dest)
        subjects[sub] = {"kind": "nochange", "source": pair.subject, "role": present[pair.subject][1],
                         "members": [json.loads(Path(str(f).replace(".nii.gz", ".json")).read_text()).get(
                             "acquisition") for f in (pair.baseline_flair, pair.followup_flair)]}
    return subjects


def write_nih(bids: Path) -> dict[str, dict]:
    """The real longitudinal pair as subject ``nih01``."""
    if not (NIH / "ses-02_FLAIR.nii.gz").is_file():
        LOGGER.warning("%s is absent: no real pair", NIH)
        return {}
    for ses in ("01", "02"):
        dest = _flair(bids, "nih01", ses)
        if not dest.is_file():
            shutil.copyfile(NIH / f"ses-{ses}_FLAIR.nii.gz", dest)
    return {"nih01": {"kind": "real pair"}}


def _reference_path(bids: Path, sub: str) -> Path:
    """Where a phantom's reference change mask lives (the app's ``--reference-dir`` layout)."""
    return reference_mask(bids / "derivatives" / "reference", sub)


def _add_phantom(bids: Path, sub: str, out: Path, reference: np.ndarray, affine: np.ndarray,
                 zooms) -> tuple[int, int, int]:
    """Put a bidsgate phantom (``out``: visit-00, visit-01) in the BIDS tree as ``sub`` (ses-01, ses-02)
    with its reference change mask; return (reference voxels, components, lesions kept).

    bidsgate's label maps hold a few stray voxels of a lesion's label away from its body (single
    voxels: 2 in phantom 3, 1 in phantoms 5 and 6); matched lesion by lesion they would count as
    lesions of their own. Components of <= 3 mm^3 are not lesions (the MSSEG-2 rule,
    analysis.msseg2.drop_small_components), so they leave the reference.
    """
    import nibabel as nib

    from bids_lesionchange.analysis.components import label_connected_components
    from bids_lesionchange.analysis.msseg2 import drop_small_components, voxel_volume_mm3

    for ses, visit in (("01", "visit-00"), ("02", "visit-01")):
        dest = _flair(bids, sub, ses)
        if not dest.is_file():
            shutil.copyfile(out / visit / "FLAIR.nii.gz", dest)
    parts, n_parts = label_connected_components(reference)
    lesions, n_lesions = drop_small_components(parts, n_parts, voxel_volume_mm3(zooms))
    kept = (lesions > 0).astype(np.uint8)
    path = _reference_path(bids, sub)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(kept, affine), str(path))
    (bids / "derivatives" / "reference" / "dataset_description.json").write_text(json.dumps(
        {"Name": "bidsgate longphantom reference", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}) + "\n")
    return int(kept.sum()), n_parts, n_lesions


def _radial_growth_mm(truth_tsv: Path, lesions: list[int]) -> list[float]:
    """How far (mm) each enlarging lesion's edge moved: the growth of its equivalent sphere's radius.

    bidsgate's longphantom enlarges a lesion by a radial displacement field (the lesion and the
    tissue around it are pushed outward, volume x ``grow`` per year), so the change a scanner can
    see is the edge's shift, ``r1 - r0`` with ``r = (3 V / 4 pi)^(1/3)`` of the volumes of its truth
    table at the two visits.
    """
    rows = [line.split("\t") for line in truth_tsv.read_text().splitlines()]
    header = rows[0]
    volume = {(int(r[header.index("visit")]), int(r[header.index("lesion")])): float(r[header.index("volume_mm3")])
              for r in rows[1:]}
    return [round(float((3 * volume[(1, k)] / (4 * np.pi)) ** (1 / 3) - (3 * volume[(0, k)] / (4 * np.pi)) ** (1 / 3)), 2)
            for k in lesions]


def write_phantoms(bids: Path, scratch: Path, seeds: list[int], growth_factors: list[float] = ()) -> dict[str, dict]:
    """bidsgate longphantoms of patient 26 (visits 0 and 1 year) with their reference change masks.

    Subjects ``phantom<seed>`` use bidsgate's design (enlarging lesions grow x 1.3 in volume per
    year); ``phantom<seed>g<10 x factor>`` (``growth_factors``) are the same phantoms (same seed: the
    same new lesions, the same lesions enlarge) with the enlarging lesions grown by ``factor``
    instead: how detection of enlarging lesions depends on how far their edge moves. Each phantom's
    directory also gets ``reference_kind.nii.gz`` (1 new, 2 enlarging) for the per-kind counts.
    """
    import nibabel as nib
    from scipy import ndimage

    if not seeds:
        return {}
    try:
        from bidsgate.longphantom.core import Design, build
    except ImportError:
        LOGGER.warning("bidsgate is not installed (pip install bidsgate lesiontrack): no phantom")
        return {}
    if not (P26 / "FLAIR.nii.gz").is_file():
        LOGGER.warning("%s is absent: no phantom", P26)
        return {}
    img = nib.load(str(P26 / "FLAIR.nii.gz"))
    brain = ndimage.binary_fill_holes(np.asarray(img.dataobj) > 0).astype(np.uint8)
    brain_file = scratch / "p26_brainmask.nii.gz"
    scratch.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(brain, img.affine), str(brain_file))
    subjects = {}
    designs = [(f"phantom{seed}", seed, None) for seed in seeds]
    designs += [(f"phantom{seed}g{round(10 * g)}", seed, float(g)) for g in growth_factors for seed in seeds]
    for sub, seed, grow in designs:
        out = scratch / sub
        if not (out / "truth.tsv").is_file():
            design = Design(times=(0.0, 1.0), seed=seed) if grow is None else \
                Design(times=(0.0, 1.0), seed=seed, grow=grow)
            build(str(P26 / "T1w.nii.gz"), str(P26 / "FLAIR.nii.gz"), str(P26 / "lesion_mask.nii.gz"),
                  str(brain_file), str(out), design)
        after_img = nib.load(str(out / "visit-01" / "truth_labels.nii.gz"))
        after = np.asarray(after_img.dataobj)
        design = json.loads((out / "design.json").read_text())
        enlarging = [int(k) for k in design["enlarging"]]
        new = after >= 1000
        # Each visit has its own rigid repositioning and atrophy warp, so the grown rim of an
        # enlarging lesion cannot be cut out voxel-wise: the whole lesion at follow-up is the
        # reference unit (lesion-wise matching at IoU >= 0.01 then counts a detected rim).
        voxels, n_parts, n_lesions = _add_phantom(bids, sub, out, new | np.isin(after, enlarging), after_img.affine,
                                                  after_img.header.get_zooms())
        kind_map = out / "reference_kind.nii.gz"
        nib.save(nib.Nifti1Image((new + 2 * np.isin(after, enlarging)).astype(np.uint8), after_img.affine),
                 str(kind_map))
        n_new = int(len(np.unique(after[new])))
        subjects[sub] = {"kind": "phantom" if grow is None else "growth phantom", "seed": seed,
                         "grow": design["grow"], "new_lesions": n_new, "enlarging": len(enlarging),
                         "edge_shift_mm": _radial_growth_mm(out / "truth.tsv", enlarging),
                         "reference_voxels": voxels, "stray_components_dropped": n_parts - n_lesions,
                         "kind_map": str(kind_map)}
    return subjects


def pair_paths(out: Path, sub: str) -> dict[str, Path]:
    from _common import pair_files

    files = pair_files(out, sub)
    return {**files, "xfm": files["followup_xfm"]}


def difference_stats(base: np.ndarray, follow: np.ndarray, brain: np.ndarray) -> dict:
    """What the difference of a pair looks like: its robust sd and how fine-grained it is.

    ``sd``: 1.4826 x MAD of follow-up - baseline in the brain (images in [0, 1]); ``fine``: the
    share of that spread above a 1.5-voxel Gaussian (1 = noise-like, 0 = smooth). A self-pair is
    only a faithful stand-in for a real rescan if these resemble a real pair's.
    """
    from scipy import ndimage

    d = (follow - base).astype(np.float32)
    def robust_sd(v):
        return float(1.4826 * np.median(np.abs(v - np.median(v))))
    sd = robust_sd(d[brain])
    fine = robust_sd((d - ndimage.gaussian_filter(d, 1.5))[brain]) / sd if sd > 0 else float("nan")
    return {"sd": sd, "fine": fine}


# Sources of the new-lesion phantoms: every real single FLAIR but patient 26 (whose full phantoms,
# with enlarging lesions from its lesion mask, are part 3): four scanners, 1 mm 3D and 2D with 3 and
# 5.5 mm slices, skull on and brain-extracted.
NEW_LESION_SOURCES = ("niivue", "nihbase", "synthsr", "tcga")


def _wm_likelihood(flair_img, brain_img) -> np.ndarray:
    """A T1w stand-in for bidsgate's lesion placement: 1000 x exp(-((x / wm_peak - 1) / 0.08)^2 / 2)."""
    from scipy import ndimage

    from bids_lesionchange.image.intensity import white_matter_peak

    data = np.asarray(flair_img.dataobj, dtype=np.float32)
    brain = np.asarray(brain_img.dataobj) > 0
    relative = data / white_matter_peak(data, brain)
    zooms = np.asarray(flair_img.header.get_zooms()[:3], dtype=float)
    likelihood = ndimage.gaussian_filter(np.exp(-0.5 * ((relative - 1.0) / 0.08) ** 2), 1.0 / zooms)
    return np.where(brain, 1000.0 * likelihood, 0.0).astype(np.float32)


def _build_keeping_painted(build, sources: tuple, out: Path, design) -> None:
    """bidsgate's ``build``, keeping the label map of the lesions it paints (``out/painted_labels.nii.gz``).

    bidsgate measures its truth on the label map warped with each visit; a lesion one thick slice
    deep can vanish from that warp (a sub-voxel shift through 3-5.5 mm slices changes the sign of
    its signed distance) while its intensity, warped by interpolation, stays in the image. Its
    own label map of the painted lesions (the fifth argument of ``bidsgate.inject_lesions.inject``,
    deleted by ``build``) says where such lesions are. If bidsgate's internals change and the copy
    fails, the phantom is built without it (a warning; no lesion is then ignored).
    """
    import bidsgate.inject_lesions as inject_lesions

    original = inject_lesions.inject

    def inject_and_keep(*args, **kwargs):
        result = original(*args, **kwargs)
        try:
            shutil.copyfile(args[4], out / "painted_labels.nii.gz")
        except (IndexError, OSError) as exc:
            LOGGER.warning("could not keep bidsgate's painted lesion labels for %s: %s", out, exc)
        return result

    inject_lesions.inject = inject_and_keep
    try:
        build(*map(str, sources), str(out), design)
    finally:
        inject_lesions.inject = original


def _lost_lesions_region(out: Path) -> tuple[Path | None, int]:
    """Where bidsgate painted new lesions that its truth lost (visit-1 volume 0), or (None, 0).

    The region is bidsgate's own paint region (each lesion's label dilated by 2 voxels), written
    as ``out/lost_lesions.nii.gz`` on the phantom's grid; a change that touches it is neither a true
    nor a false change (:func:`score_pair`'s ``ignore``)."""
    import nibabel as nib
    import pandas as pd
    from scipy import ndimage

    painted_file = out / "painted_labels.nii.gz"
    if not painted_file.is_file():
        return None, 0
    truth = pd.read_csv(out / "truth.tsv", sep="\t")
    after = truth[(truth["visit"] == 1) & (truth["origin"] == "new")]
    lost = [int(row.lesion) - 1000 for row in after.itertuples() if row.volume_mm3 <= 0]
    img = nib.load(str(painted_file))
    painted = np.asarray(img.dataobj).astype(np.int64)
    region = ndimage.binary_dilation(np.isin(painted, lost), iterations=2) if lost else np.zeros(painted.shape, bool)
    path = out / "lost_lesions.nii.gz"
    nib.save(nib.Nifti1Image(region.astype(np.uint8), img.affine), str(path))
    return path, len(lost)


def write_new_lesion_phantoms(bids: Path, scratch: Path, seeds: list[int]) -> dict[str, dict]:
    """bidsgate longphantoms with new lesions only, of the real FLAIRs that have no lesion mask.

    Each source gets ``bidsgate``'s longphantom (visits at 0 and 1 year: 6 new lesions,
    repositioning by at most 1 degree and 1 mm, atrophy, gain, noise) with an empty lesion mask (so nothing enlarges or
    shrinks) and the app's own skull strip of the native FLAIR as the brain mask. bidsgate places
    lesions in white matter found on a T1w (its bright part); these scans have no T1w, so a
    white-matter likelihood made from the FLAIR stands in for it: bright where the FLAIR is near
    its white-matter peak (:func:`bids_lesionchange.image.intensity.white_matter_peak`), dark in grey
    matter (1.05-1.15 x white matter on FLAIR), CSF and lesions. bidsgate writes the visits
    brain-masked, so the app sees brain-extracted images of each scanner's texture and geometry.
    Subjects ``nph<source><seed>``; reference = the new lesions (components > 3 mm^3). A new lesion
    bidsgate painted but lost from its truth (:func:`_build_keeping_painted`) is ignored: a change
    on it counts neither as found nor as false (``ignore``, :func:`_lost_lesions_region`).
    """
    import nibabel as nib

    from bids_lesionchange.image.preprocess import skullstrip_followup

    try:
        from bidsgate.longphantom.core import Design, build
    except ImportError:
        LOGGER.warning("bidsgate is not installed (pip install bidsgate lesiontrack): no new-lesion phantom")
        return {}
    subjects = {}
    for label in NEW_LESION_SOURCES:
        path, role = SOURCES[label]
        if not path.is_file():
            LOGGER.warning("%s is absent: no new-lesion phantom of it", path)
            continue
        src = scratch / label
        src.mkdir(parents=True, exist_ok=True)
        brain_file, empty_file = src / "brainmask.nii.gz", src / "no_lesions.nii.gz"
        if not brain_file.is_file():
            skullstrip_followup(str(path), str(brain_file), method="auto", nthreads=2)
        t1_file = src / "wm_likelihood.nii.gz"
        img = nib.load(str(path))
        if not (empty_file.is_file() and t1_file.is_file()):
            nib.save(nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine), str(empty_file))
            nib.save(nib.Nifti1Image(_wm_likelihood(img, nib.load(str(brain_file))), img.affine), str(t1_file))
        # bidsgate repositions each visit by up to one voxel (and 1 degree), by interpolating the
        # image: on 3-5.5 mm slices that is a blend of slices 3-5.5 mm apart, which no rescan makes
        # (a rescan samples the head anew). So the shift is capped at 1 mm, as on the 1 mm grids it
        # was designed for.
        shift_vox = min(1.0, 1.0 / float(max(img.header.get_zooms()[:3])))
        for seed in seeds:
            sub = f"nph{label}{seed}"
            out = src / f"seed{seed}"
            if not (out / "truth.tsv").is_file() or not (out / "painted_labels.nii.gz").is_file():
                # (a phantom built before the painted labels were kept is built again: same seed, same images)
                _build_keeping_painted(build, (t1_file, path, empty_file, brain_file), out,
                                       Design(times=(0.0, 1.0), seed=seed, rigid_trans_vox=shift_vox))
            lost_region, n_lost = _lost_lesions_region(out)
            after_img = nib.load(str(out / "visit-01" / "truth_labels.nii.gz"))
            zooms = after_img.header.get_zooms()[:3]
            voxels, _, n_lesions = _add_phantom(bids, sub, out, np.asarray(after_img.dataobj) >= 1000,
                                                after_img.affine, zooms)
            subjects[sub] = {"kind": "new-lesion phantom", "source": label, "role": role, "seed": seed,
                             "voxel_mm": [round(float(z), 2) for z in zooms], "new_lesions": n_lesions,
                             "reference_voxels": voxels, "lost_lesions": n_lost,
                             **({"ignore": str(lost_region)} if n_lost else {})}
    return subjects


def reference_lesions(reference: Path, kind_map: Path, xfm: Path, grid_shape, grid_affine,
                      rise: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """A phantom's reference lesions on the common grid, and each one's kind, size and contrast.

    The reference and its kind map (1 new, 2 enlarging) are brought onto the common grid as the
    app's evaluation does (nearest neighbour through the follow-up's transform,
    :func:`bids_lesionchange.image.transforms.to_common`); a reference lesion (connected
    component) takes the kind most of its voxels have. Returns its labels and, per lesion 1..n:
    kind, voxels on the grid, mean of ``rise`` (follow-up - baseline) over it.
    """
    from bids_lesionchange.analysis.components import label_connected_components
    from bids_lesionchange.image.transforms import to_common

    ref_labels, n_ref = label_connected_components(to_common(reference, xfm, grid_shape, grid_affine) > 0)
    kinds = to_common(kind_map, xfm, grid_shape, grid_affine).astype(np.int64)
    lesions = []
    for lesion in range(1, n_ref + 1):
        inside = ref_labels == lesion
        new, enlarging = np.bincount(kinds[inside], minlength=3)[1:3]
        lesions.append({"kind": "new" if new >= enlarging else "enlarging", "voxels": int(inside.sum()),
                        "rise": round(float(rise[inside].mean()), 3)})
    return ref_labels, lesions


def found_by_kind(labels: np.ndarray, ref_labels: np.ndarray, lesions: list[dict]) -> dict:
    """How many reference lesions of each kind (:func:`reference_lesions`) ``labels`` found: a
    lesion is found when a change matches it at IoU >= 0.01
    (:func:`bids_lesionchange.analysis.metrics.match_matrix`, the lesion-wise rule of the scores).
    ``lesions`` in the result lists each one with ``found``."""
    from bids_lesionchange.analysis.metrics import match_matrix

    found = match_matrix(labels, ref_labels).any(axis=0)
    counts = {"new": [0, 0], "enlarging": [0, 0], "lesions": []}
    for lesion, info in enumerate(lesions, start=1):
        counts[info["kind"]][0] += int(found[lesion])
        counts[info["kind"]][1] += 1
        counts["lesions"].append({**info, "found": bool(found[lesion])})
    return counts


#: The app's own checks of a pair (``desc-preproc_qc.json``'s ``plausibility``, its registration check,
#: ``desc-change_qc.json``'s out-of-domain guard), as :func:`app_flags` names them: (file, keys, value
#: that raises the flag, label).
APP_CHECKS = (
    ("preproc_qc", ("plausibility", "baseline_contrast", "flair_like"), False, "baseline not FLAIR-like"),
    ("preproc_qc", ("plausibility", "followup_contrast", "flair_like"), False, "follow-up not FLAIR-like"),
    ("preproc_qc", ("plausibility", "same_person", "same_person"), False, "same person?"),
    ("preproc_qc", ("plausibility", "lesion_persistence", "lesions_persist"), False, "baseline lesions gone"),
    ("preproc_qc", ("plausibility", "brain_mask", "plausible"), False, "brain mask too large"),
    ("preproc_qc", ("plausibility", "intensity_zero", "baseline", "plausible"), False, "baseline below zero"),
    ("preproc_qc", ("plausibility", "intensity_zero", "followup", "plausible"), False, "follow-up below zero"),
    ("preproc_qc", ("registration_failed",), True, "registration failed"),
    ("change_qc", ("out_of_domain",), True, "out of domain"),
)


def app_flags(out: Path, sub: str) -> list[str]:
    """What the app itself reported about one pair (:data:`APP_CHECKS`), so that a table shows whether a
    pair with false changes was one the app had warned about. A check absent from a QC file (an older
    app) raises no flag; a QC file that is missing is itself reported."""
    from _common import pair_files

    files = pair_files(out, sub)
    loaded, flags = {}, []
    for name in ("preproc_qc", "change_qc"):
        path = files[name]
        try:
            loaded[name] = json.loads(path.read_text())
        except (OSError, ValueError):
            loaded[name] = {}
            flags.append(f"no {path.name}")
    for name, keys, raised_by, label in APP_CHECKS:
        value = loaded[name]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is raised_by:
            flags.append(label)
    return flags


def score_pair(out: Path, sub: str, methods: dict, reference: Path | None, scratch: Path,
               kind_map: Path | None = None, ignore: Path | None = None, extent_mm: float = 0.0) -> dict:
    """Apply every method's rule to one pair; count changes, the fraction above threshold, and metrics
    (with ``kind_map``: also the new and the enlarging reference lesions found, :func:`found_by_kind`,
    of the reference lesions resampled once per pair, :func:`reference_lesions`). ``ignore``: a mask
    (the phantom's grid) of changes in the image that the reference does not know about; a change
    touching it is left out of the counts and the metrics (``ignored`` says how many)."""
    from bids_lesionchange.analysis.components import change_labels, relabel_by_size
    from bids_lesionchange.image.transforms import to_common

    files = pair_paths(out, sub)
    img, base, follow, brain, prob = load_pair_arrays(files)
    psf = pair_psf_fwhm(files)  # the app's pre-existing-lesion step widens by thick slices
    rows = {"difference": difference_stats(base, follow, brain)}
    lesions = (reference_lesions(reference, kind_map, files["xfm"], follow.shape, img.affine, follow - base)
               if reference is not None and kind_map is not None else None)
    ignored = to_common(ignore, files["xfm"], follow.shape, img.affine) > 0 if ignore is not None else None
    def without_ignored(labels):
        if ignored is None:
            return labels, 0
        touching = np.unique(labels[ignored & (labels > 0)])
        return relabel_by_size(np.where(np.isin(labels, touching), 0, labels)), int(touching.size)

    for name, (kind, threshold, direction, noise_z) in methods.items():
        score = prob if kind == "model" else follow - base
        steps = {} if lesions is not None and name in STEP_METHODS else None
        labels = change_labels(score, brain, threshold, BLOB, direction=direction, baseline=base, followup=follow,
                               noise_z=noise_z, psf_fwhm=psf, steps=steps,
                               extent_mm=extent_mm if direction == "increase" else 0.0)
        labels, n_ignored = without_ignored(labels)
        row = {"n_changes": int(labels.max()), "fraction_above": float((score[brain] > threshold).mean()),
               "change_voxels": int((labels > 0).sum()), "ignored": n_ignored}
        if reference is not None:
            m = score_labels(labels, img.affine, reference, files["xfm"], scratch / f"{sub}_{name}", sub)
            row.update({k: m[k] for k in ("LTPR", "LFPR", "PPV", "lesion_F1", "dice", "n_ref", "LFP")})
            if lesions is not None:
                row["found"] = found_by_kind(labels, *lesions)
            if steps:  # which step of the rule removed the reference lesions it does not find
                row["found_after_step"] = {step: {k: v for k, v in found_by_kind(without_ignored(step_labels)[0],
                                                                               *lesions).items() if k != "lesions"}
                                           for step, step_labels in steps.items()}
        rows[name] = row
    return rows


def phantom_table(phantoms: dict, methods) -> str:
    """Markdown table of lesion-wise scores per method: means over the phantoms, and F1/false per phantom."""
    keys = ("LTPR", "LFPR", "PPV", "lesion_F1", "dice")
    rows = []
    for m in methods:
        vals = {k: float(np.nanmean([r["scores"][m][k] for r in phantoms.values()])) for k in keys}
        rows.append([m, *[vals[k] for k in keys],
                     " ".join(f"{fmt(r['scores'][m]['lesion_F1'])}/{int(r['scores'][m]['LFP'])}"
                              for r in phantoms.values())])
    return markdown_table(["method", *keys, "per phantom F1/LFP"], rows)


SIZE_BINS = (0, 30, 60, 150)  # voxels of the 1 mm grid (mm^3)
RISE_BINS = (0.0, 0.12, 0.15, 0.2)  # mean follow-up - baseline over the lesion (white matter at 0.5)


def _bin_labels(edges, unit=""):
    return [f"{a:g}-{b:g}{unit}" for a, b in zip(edges[:-1], edges[1:])] + [f">= {edges[-1]:g}{unit}"]


def detection_limits_table(results: dict, methods) -> str:
    """Markdown table: new lesions found / present per method, by size and by mean rise (pooled)."""
    rows = []
    for m in methods:
        lesions = [les for r in results.values() for les in r["scores"][m]["found"]["lesions"] if les["kind"] == "new"]
        cells = []
        for key, edges in (("voxels", SIZE_BINS), ("rise", RISE_BINS)):
            index = np.digitize([les[key] for les in lesions], edges[1:])
            for b in range(len(edges)):
                chosen = [les for les, i in zip(lesions, index) if i == b]
                cells.append(f"{sum(les['found'] for les in chosen)} / {len(chosen)}")
        rows.append([m, *cells])
    return markdown_table(["method", *[f"{b} voxels" for b in _bin_labels(SIZE_BINS)],
                           *[f"rise {b}" for b in _bin_labels(RISE_BINS)]], rows)


def growth_table(groups: dict[float, dict], methods) -> str:
    """Markdown table: per volume growth factor and method, the new and the enlarging lesions found
    (sums over the phantoms), false changes (sum) and the mean lesion F1; with the edge shifts."""
    rows = []
    for grow, phantoms in groups.items():
        shifts = [x for r in phantoms.values() for x in r["edge_shift_mm"]]
        for m in methods:
            found = [r["scores"][m]["found"] for r in phantoms.values()]
            rows.append([f"x {grow:g}", f"{np.median(shifts):.2f} ({min(shifts):.2f}-{max(shifts):.2f})", m,
                         *[f"{sum(f[k][0] for f in found)} / {sum(f[k][1] for f in found)}" for k in ("new", "enlarging")],
                         int(sum(r["scores"][m]["LFP"] for r in phantoms.values())),
                         fmt(np.mean([r["scores"][m]["lesion_F1"] for r in phantoms.values()]))])
    return markdown_table(["enlarging lesions' volume per year", "edge shift, mm: median (range)", "method",
                           "new lesions found", "enlarging lesions found", "false changes", "lesion F1, mean"], rows)


def step_table(groups: dict[str, dict]) -> str:
    """Markdown table: per phantom group and method of :data:`STEP_METHODS`, the new and the enlarging
    reference lesions (sums over the phantoms) still found after each step of the app's rule
    (:func:`bids_lesionchange.analysis.components.change_labels`), from the threshold to the result."""
    rows, steps = [], None
    for label, phantoms in groups.items():
        for m in STEP_METHODS:
            found = [r["scores"][m].get("found_after_step") for r in phantoms.values()]
            if not found or any(f is None for f in found):
                continue
            steps = steps or list(found[0])
            rows.append([label, m, *[" / ".join(f"{sum(f[step][k][0] for f in found)} of {sum(f[step][k][1] for f in found)}"
                                                for k in ("new", "enlarging")) for step in steps]])
    if not rows:
        return ""
    return markdown_table(["phantoms", "method", *[f"after '{step}': new / enlarging found" for step in steps]], rows)


def picture(out: Path, sub: str, path: Path, title: str) -> None:
    """Axial slices of baseline, follow-up and the detections, for a person to judge."""
    import matplotlib
    import nibabel as nib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = pair_paths(out, sub)
    base = np.asarray(nib.load(str(files["baseline"])).dataobj, dtype=np.float32)
    follow = np.asarray(nib.load(str(files["followup"])).dataobj, dtype=np.float32)
    prob = np.asarray(nib.load(str(files["probability"])).dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(str(files["labels"])).dataobj)
    brain = np.asarray(nib.load(str(files["brain_mask"])).dataobj) > 0
    xs, ys, zs = (np.flatnonzero(brain.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    box = (slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1))
    if labels.max() > 0:
        zs_changes = np.flatnonzero((labels > 0).any(axis=(0, 1)))
        picks = list(np.unique(np.percentile(zs_changes, [10, 50, 90]).astype(int)))
    else:
        picks = []
    picks = (picks + list(np.percentile(zs, [40, 55, 70]).astype(int)))[:3]
    fig, axes = plt.subplots(len(picks), 4, figsize=(12, 3.2 * len(picks)))
    axes = np.atleast_2d(axes)
    for row, z in zip(axes, picks):
        for ax, (img, name) in zip(row, ((base, "baseline"), (follow, "follow-up"),
                                         (prob, f"p (> {KAPPA} in red)"), (follow, "detections"))):
            ax.imshow(np.rot90(img[box + (z,)]), cmap="magma" if img is prob else "gray", vmin=0, vmax=1)
            if name == "detections":
                ax.contour(np.rot90(labels[box + (z,)] > 0), levels=[0.5], colors="lime", linewidths=0.8)
            if img is prob:
                ax.contour(np.rot90(prob[box + (z,)] > KAPPA), levels=[0.5], colors="red", linewidths=0.5)
            ax.set_title(f"{name}, z={z}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_app(bids: Path, out: Path, model: Path, root: Path, nprocs: int, extra: tuple = (),
            log_name: str | None = None) -> tuple[float, dict[str, str]]:
    """Run the participant level (``extra``: more app arguments); a failed pair is reported (exit
    code 1), not fatal. Returns the seconds and {subject: "step: message"} of the failed pairs
    (from the summary TSV)."""
    import subprocess
    import time

    log = root / f"participant-{log_name or model.name}.log"
    began = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(list(map(str, app_command(
            bids, out, "participant", "--mode", "infer", "--model", model,
            "--reference-dir", bids / "derivatives" / "reference", "-w", root / "work",
            "--nprocs", nprocs, "--skip-bids-validation", "--no-reports", *extra))),
            stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - began
    if code not in (0, 1):
        raise RuntimeError(f"the app exited with {code}; see {log}")
    summary = max((out / "logs").glob("summary-*.tsv"), key=lambda p: p.stat().st_mtime)
    rows = [line.split("\t") for line in summary.read_text().splitlines()]
    header = rows[0]
    failed = {r[0].split("_")[0][4:]: f"{r[header.index('step')]}: {r[header.index('message')]}"
              for r in rows[1:] if r[header.index("status")] != "ok"}
    return seconds, failed


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it (as the docs cite it), else as given."""
    path = Path(path).resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def missing_phantom_packages(phantom_seeds, new_lesion_seeds, find_spec=None) -> list[str]:
    """The packages the requested phantoms need and this Python lacks (bidsgate, lesiontrack).

    Checked before anything runs: without them the phantom sections would be left out of a results
    file that otherwise looks complete, after half an hour of preprocessing.
    """
    if not (phantom_seeds or new_lesion_seeds):
        return []
    if find_spec is None:
        from importlib.util import find_spec
    return [name for name in ("bidsgate", "lesiontrack") if find_spec(name) is None]


def require_phantom_packages(parser, phantom_seeds, new_lesion_seeds=(), *,
                             without: str = "pass --phantom-seeds and --new-lesion-seeds with no seeds to run "
                                            "without phantoms") -> None:
    """Stop at the start (``parser.error``, exit 2) with the fix when the phantoms asked for need
    packages this Python lacks; ``without`` says how to run without them."""
    missing = missing_phantom_packages(phantom_seeds, new_lesion_seeds)
    if missing:
        parser.error(f"the phantoms need {' and '.join(missing)}, which this Python lacks: "
                     f"pip install bidsgate lesiontrack (or {without})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REAL_FLAIR_ROOT)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=777, help="seed of the NoChange self-pairs (training used 2026)")
    parser.add_argument("--pairs-per-source", type=int, default=2)
    parser.add_argument("--phantom-seeds", type=int, nargs="*", default=[1, 2],
                        help="seeds of the bidsgate phantoms of patient 26 (none: skip them)")
    parser.add_argument("--growth-factors", type=float, nargs="*", default=[2.0],
                        help="also the patient-26 phantoms with their enlarging lesions grown by these volume "
                             "factors instead of bidsgate's 1.3 (none: skip)")
    parser.add_argument("--new-lesion-seeds", type=int, nargs="*", default=[1, 2],
                        help="seeds of the new-lesion phantoms of the other real FLAIRs (none: skip them)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2],
                        help="thresholds of the subtraction baseline (follow-up - baseline, images in [0, 1])")
    parser.add_argument("--noise-z", type=float, nargs="*", default=[2.0],
                        help="also score the model with the follow-up brighter by more than z robust sd "
                             "of the pair's smoothed difference (analysis.components.brighter_on_followup)")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--extent-mm", type=float, default=0.0,
                        help="the app's --extent-mm (grow each change into the new hyperintensity around it), "
                             "for the model and the subtraction alike (default: 0, off)")
    parser.add_argument("--name", default="real_flair")
    parser.add_argument("--picture", type=Path, default=REPO / "docs" / "img" / "real_pair_detections.png")
    opts = parser.parse_args()
    require_phantom_packages(parser, opts.phantom_seeds, opts.new_lesion_seeds)
    setup_logging()
    model, root, bids = benchmark_tree(parser, opts)
    opts.picture = opts.picture.resolve()
    subjects = {**write_nochange(bids, root / "self_pairs", opts.pairs_per_source, opts.seed),
                **write_nih(bids), **write_phantoms(bids, root / "phantoms", opts.phantom_seeds, opts.growth_factors),
                **write_new_lesion_phantoms(bids, root / "new_lesion_phantoms", opts.new_lesion_seeds)}
    out = root / f"out-{model.name}"
    seconds, failed = run_app(bids, out, model, root, opts.nprocs,
                              extra=("--extent-mm", opts.extent_mm) if opts.extent_mm else ())
    methods = {"model": ("model", KAPPA, "increase", 0.0), "model, any direction": ("model", KAPPA, "any", 0.0)}
    methods.update({f"model, brighter by > {z} sd": ("model", KAPPA, "increase", z) for z in opts.noise_z})
    methods.update({f"subtraction d > {t}": ("subtraction", t, "increase", 0.0) for t in opts.thresholds})
    results = {}
    for sub in failed:
        LOGGER.warning("sub-%s failed in the app (%s); not scored", sub, failed[sub])
    for sub, info in ((s, i) for s, i in subjects.items() if s not in failed):
        ref = _reference_path(bids, sub)
        kind_map = Path(info["kind_map"]) if "kind_map" in info else (ref if info["kind"] == "new-lesion phantom" else None)
        results[sub] = {**info, "app_flags": app_flags(out, sub), "scores": score_pair(out, sub, methods, ref if ref.is_file() else None,
                                                     root / "scores" / model.name, kind_map,
                                                     Path(info["ignore"]) if "ignore" in info else None,
                                                     extent_mm=opts.extent_mm)}

    def group(kind):
        return {s: r for s, r in results.items() if r["kind"] == kind}

    md = ["# Real FLAIR: NoChange self-pairs, the real MS pair, a bidsgate phantom\n",
          f"Model `{model.name}` against subtraction on the same preprocessed images, same rule "
          f"(kappa / t, follow-up brighter, not CSF, hyperintense, blobs >= {BLOB} voxels). "
          "Paper's any-direction rule shown for the model.\n", f"Command: `{command_line()}`\n"]
    if opts.extent_mm:
        md.append(f"With the app's `--extent-mm {opts.extent_mm:g}`: every change (the model's and the "
                  "subtraction's) grown into the new hyperintensity around it.\n")
    nochange = group("nochange")
    if nochange:
        headers = ["pair", "source", "members", "diff sd / fine", "the app's flags",
                   *[f"{m}: changes / % brain" for m in methods]]
        rows = [[s, f"{r['source']} ({r['role']})", " / ".join(map(str, r["members"])),
                 f"{r['scores']['difference']['sd']:.3f} / {r['scores']['difference']['fine']:.2f}",
                 ", ".join(r["app_flags"]) or "none",
                 *[f"{r['scores'][m]['n_changes']} / {100 * r['scores'][m]['fraction_above']:.2f}" for m in methods]]
                for s, r in nochange.items()]
        means = ["mean", "", "", "", "", *[f"{np.mean([r['scores'][m]['n_changes'] for r in nochange.values()]):.2f} / "
                                   f"{100 * np.mean([r['scores'][m]['fraction_above'] for r in nochange.values()]):.2f}"
                                   for m in methods]]
        md += ["## 1. Real-texture NoChange self-pairs (every change is false)\n",
               markdown_table(headers, rows + [means])]
    nih = group("real pair")
    if nih:
        r = nih["nih01"]["scores"]
        md += ["## 2. The real longitudinal MS pair (NIH, 2D 3 mm, skull on; no reference)\n",
               markdown_table(["method", "changes", "% of brain above threshold", "change voxels"],
                              [[m, r[m]["n_changes"], f"{100 * r[m]['fraction_above']:.2f}", r[m]["change_voxels"]]
                               for m in methods]),
               f"Difference of the real pair: sd {r['difference']['sd']:.3f}, fine-grained share "
               f"{r['difference']['fine']:.2f} (compare the self-pairs' column in part 1). The app's flags: "
               f"{', '.join(nih['nih01']['app_flags']) or 'none'}.\n"]
        picture(out, "nih01", opts.picture, f"NIH pair, model {model.name}: {r['model']['n_changes']} changes, "
                f"{100 * r['model']['fraction_above']:.2f} % of the brain above kappa")
        md.append(f"Picture: `{_shown(opts.picture)}`\n")
    phantoms = group("phantom")
    if phantoms:
        md += ["## 3. bidsgate longphantom of patient 26 (0 -> 1 year; new + enlarging, mean over phantoms)\n",
               phantom_table(phantoms, methods),
               "Phantoms: " + ", ".join(f"{s} ({r['new_lesions']} new, {r['enlarging']} enlarging)"
                                        for s, r in phantoms.items()) + "\n"]
        grown = group("growth phantom")
        by_growth = {phantoms[next(iter(phantoms))]["grow"]: phantoms}
        for r in sorted(grown.values(), key=lambda r: r["grow"]):
            by_growth.setdefault(r["grow"], {})
        for s, r in grown.items():
            by_growth[r["grow"]][s] = r
        md += ["### 3b. New and enlarging lesions found, against how far the enlarging lesions' edge moved\n",
               "bidsgate enlarges a lesion by pushing it and the tissue around it outward (a radial "
               "displacement), so what changes in the image is the lesion's edge, shifted by the growth of "
               "its radius. The rows below x 1.3 (bidsgate's design, the phantoms above) are the same "
               "phantoms (same seeds: the same new lesions, the same lesions enlarge) with the enlarging "
               "lesions grown more (`--growth-factors`).\n",
               growth_table(by_growth, methods)]
    new_lesion = group("new-lesion phantom")
    if new_lesion:
        md += ["## 4. New-lesion phantoms of the other real FLAIRs (bidsgate, 0 -> 1 year; mean over phantoms)\n",
               phantom_table(new_lesion, methods),
               "Phantoms: " + ", ".join(f"{s} ({r['source']}, {'x'.join(map(str, r['voxel_mm']))} mm, "
                                        f"{r['new_lesions']} new)" for s, r in new_lesion.items()) + "\n",
               "bidsgate painted new lesions that its truth lost (on thick slices, a lesion one slice deep can "
               "vanish from bidsgate's warped label map but not from the image): " + (", ".join(
                   f"{s} {r['lost_lesions']}" for s, r in new_lesion.items() if r.get("lost_lesions")) or "none") +
               ". A change touching one is neither true nor false; changes left out so: " + "; ".join(
                   f"{m} {sum(r['scores'][m].get('ignored', 0) for r in new_lesion.values())}" for m in methods) + "\n",
               "Per source, the model: " + "; ".join(
                   f"{s}: LTPR {fmt(r['scores']['model']['LTPR'])}, {int(r['scores']['model']['LFP'])} false"
                   for s, r in new_lesion.items()) + "\n"]
    limits = {**phantoms, **new_lesion} if phantoms or new_lesion else {}
    if limits:
        md += ["## 5. New lesions found by size and by contrast (parts 3 and 4 pooled)\n",
               "Each new reference lesion of the patient-26 phantoms (bidsgate's design) and of the new-lesion "
               "phantoms, by its voxels on the 1 mm common grid (mm^3) and by the mean rise of the follow-up over "
               "it (images normalised so that white matter is at 0.5): found / present.\n",
               detection_limits_table(limits, methods)]
    step_groups = {}
    if phantoms:
        for grow, members in by_growth.items():
            step_groups[f"patient 26, enlarging x {grow:g}"] = members
    if new_lesion:
        step_groups["new-lesion phantoms"] = new_lesion
    steps_md = step_table(step_groups) if step_groups else ""
    if steps_md:
        md += ["## 6. Where the rule loses reference lesions (the steps of the app's rule, in order)\n",
               "The reference lesions (new / enlarging, summed over the phantoms) that a change still matches "
               "(IoU >= 0.01) after each step of the app's rule: `threshold` (score above kappa or t where the "
               "follow-up is brighter and in parenchyma, components of >= 20 voxels), `dark` (hyperintense "
               "components only), `preexisting` (enough tissue that was normal-appearing at baseline and is "
               "hyperintense at follow-up), `diffuse` (focal rise), `rim` (not mostly in the brain's outer rim), "
               "`extent` (each change grown into the new hyperintensity around it: the result). A lesion missing "
               "after `threshold` is one the score map itself does not flag.\n",
               steps_md]
    if failed:
        md += ["## Pairs the app could not process\n",
               markdown_table(["pair", "step: message"], [[f"sub-{s}", m[:200]] for s, m in failed.items()])]
    markdown = "\n".join(md)
    data = {"command": command_line(), "machine": machine(), "model": str(model),
            "seconds_participant_run": round(seconds, 1), "failed": failed, "results": results}
    write_results(opts.name, data, markdown)


if __name__ == "__main__":
    main()
