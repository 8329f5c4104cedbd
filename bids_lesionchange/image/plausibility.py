"""Are two inputs a usable FLAIR pair of one person? Checks before detection, on arrays.

A pair that is not what the detector expects does not crash it: it returns a plausible-looking
wrong answer (issue 16: another subject's scan, or a T1w named FLAIR, gave one "new lesion" of
about a litre; a 10 mm scan gave 47). The checks here catch such pairs, each with a limit
measured on real scans (docs/method.md, "Input checks", gives the values and the data):

- **Refusals** (:class:`~bids_lesionchange.errors.InputError`, the pair is not processed) where
  the image itself makes the answer meaningless and no real FLAIR pair comes near the limit:
  :func:`check_voxel_size` (slices thicker than :data:`MAX_VOXEL_MM`) and :func:`check_coverage`
  (a slab: the field of view cuts through the head on both sides of an axis, or spans less than
  :data:`MIN_HEAD_EXTENT_MM` of head).
- **Flags** (the pair is processed; the QC JSON, the summary TSV and the report say why the
  result is doubtful) where the evidence is statistical: :func:`contrast_profile` (is each
  session a FLAIR?), :func:`same_person_measures` (do the two sessions show the same brain?) and
  :func:`lesion_persistence` (does the follow-up still show the baseline's lesions?), turned into
  sentences by :func:`input_flags`.

Pure numpy/scipy: no file is read here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from bids_lesionchange.errors import InputError

CHECK_STEP = "check_inputs"

#: Largest voxel dimension (mm) of a usable FLAIR. 2D FLAIR with 3-6 mm slices (plus a gap) is
#: common and passes; at larger spacing new lesions of 3-10 mm fall between slices or vanish in
#: partial volume, and the detector reads the interpolation between slices as change (a 10 mm
#: synthetic scan gave 47 "new lesions", 353 ml).
MAX_VOXEL_MM = 7.0

#: A field of view that cuts the head on both sides of an axis, over at least this fraction of
#: the head's largest cross-section on each side, is a slab. Whole-brain real scans reach 0.42
#: (2D FLAIR whose first slice is in the neck and last below the vertex); slabs of 10 slices from
#: real scans 0.87 or more, of 20 slices 0.53 or more.
MAX_CUT_FRACTION = 0.6

#: The head (foreground) must span at least this along every axis of the field of view (no
#: brain, adult or child, is smaller; the tests' smallest brain-extracted phantom spans 52 mm).
MIN_HEAD_EXTENT_MM = 40.0

COVERAGE_FIX = ("the scan must cover the whole brain: give a FLAIR whose field of view holds the "
                "head from the vertex to the cerebellum")


def check_voxel_size(zooms, path, *, step: str = CHECK_STEP) -> None:
    """Refuse an image whose largest voxel dimension exceeds :data:`MAX_VOXEL_MM`.

    Raises
    ------
    bids_lesionchange.errors.InputError
        Naming ``path``, the voxel size and the limit.
    """
    zooms = np.asarray(zooms, dtype=float)[:3]
    largest = float(zooms.max())
    if largest > MAX_VOXEL_MM:
        raise InputError(path, step, f"the voxel size {tuple(round(float(z), 2) for z in zooms)} mm has a dimension of "
                         f"{largest:g} mm, above the limit of {MAX_VOXEL_MM:g} mm: new lesions of 3-10 mm "
                         "are lost between such slices; give a FLAIR with slices of at most "
                         f"{MAX_VOXEL_MM:g} mm (3D, or 2D with 3-6 mm slices)")


def field_of_view_cut(foreground: np.ndarray) -> np.ndarray:
    """Return how much of the head each face of the field of view cuts through.

    ``cut[axis, side] = area(foreground in the first (side 0) or last (side 1) slice across axis)
    / largest area of the foreground in any slice across that axis``; 0 where the head lies inside
    the field of view, near 1 where the face cuts through the widest part of the head.

    Returns
    -------
    ndarray of shape (3, 2)
        All zeros for an empty foreground.
    """
    foreground = np.asarray(foreground, dtype=bool)
    cut = np.zeros((3, 2))
    for axis in range(3):
        others = tuple(i for i in range(3) if i != axis)
        area = foreground.sum(axis=others)
        largest = area.max()
        if largest:
            cut[axis] = area[0] / largest, area[-1] / largest
    return cut


def head_extent_mm(foreground: np.ndarray, zooms) -> np.ndarray:
    """Return the extent (mm) of the foreground along each voxel axis (0 for an empty foreground)."""
    foreground = np.asarray(foreground, dtype=bool)
    extent = np.zeros(3)
    for axis in range(3):
        others = tuple(i for i in range(3) if i != axis)
        where = np.flatnonzero(foreground.any(axis=others))
        if where.size:
            extent[axis] = (where[-1] - where[0] + 1) * float(zooms[axis])
    return extent


def check_coverage(foreground: np.ndarray, zooms, path, *, step: str = CHECK_STEP) -> dict:
    """Refuse an image whose field of view does not hold the whole head (a slab).

    Refused when, along some axis, both faces of the field of view cut through more than
    :data:`MAX_CUT_FRACTION` of the head's largest cross-section (see :func:`field_of_view_cut`),
    or the head spans less than :data:`MIN_HEAD_EXTENT_MM`.

    Parameters
    ----------
    foreground : ndarray of bool
        The head (or, for a brain-extracted image, the brain) on the image's voxel grid.
    zooms : sequence of float
        Voxel size (mm).
    path
        The file named in the error.

    Returns
    -------
    dict
        ``fov_cut`` (3x2 list) and ``head_extent_mm`` (3 floats), when the image passes.
    """
    names = ("first", "second", "third")
    cut = field_of_view_cut(foreground)
    extent = head_extent_mm(foreground, zooms)
    n_slices = np.asarray(foreground).shape
    for axis in range(3):
        if cut[axis].min() > MAX_CUT_FRACTION:
            raise InputError(path, step, f"the field of view cuts through the head at both ends of its "
                             f"{names[axis]} axis ({n_slices[axis]} slices of {round(float(zooms[axis]), 2):g} mm; "
                             f"{100 * cut[axis, 0]:.0f} % and {100 * cut[axis, 1]:.0f} % of the head's "
                             f"largest cross-section lie on its first and last slice), so it is a slab; "
                             f"{COVERAGE_FIX}")
        if 0 < extent[axis] < MIN_HEAD_EXTENT_MM:
            raise InputError(path, step, f"the head spans only {extent[axis]:.0f} mm along the "
                             f"{names[axis]} axis of the field of view ({n_slices[axis]} slices of "
                             f"{round(float(zooms[axis]), 2):g} mm), less than any brain; {COVERAGE_FIX}")
    return {"fov_cut": np.round(cut, 3).tolist(), "head_extent_mm": np.round(extent, 1).tolist()}


# --------------------------------------------------------------------------- flags (statistical)
#: Parenchyma within these depths (mm from the brain mask's edge) enter the contrast statistic:
#: from just inside the cortex to the deep white matter.
CONTRAST_DEPTH_MM = (1.0, 30.0)

#: The contrast is judged only where the cortex (2-4 mm thick) is resolved: in at least one plane
#: (the second-finest axis) the resolution must be this fine or finer. Coarser, the cortex merges
#: with the dark CSF around it in partial volume, and FLAIRs score like T1w (synthetic FLAIRs of 2.5
#: mm voxels: up to +0.30; of 1 mm voxels: -0.10 to +0.04).
MAX_CONTRAST_RESOLUTION_MM = 1.5

#: Above this depth-intensity correlation a session does not look like a FLAIR (see
#: :func:`contrast_profile`). Real FLAIRs: -0.145 to +0.006 (seven scans of five scanners, 3D and
#: 2D, skull on and off, and simulated rescans of four of them); the real T1w of an MS patient
#: (Lesjak et al. 2018, patient 26): +0.263, a simulated rescan of it +0.189.
MAX_FLAIR_DEPTH_CORRELATION = 0.10

#: Below this brain NCC after rigid alignment (bias-corrected images; see
#: :func:`bids_lesionchange.image.register.normalised_cross_correlation`) a pair is flagged: the
#: two sessions may be two people or two contrasts. Real same-person FLAIR pairs: 0.771 (the NIH
#: 2D pair, skull on) to 0.936 (simulated rescans of four real FLAIRs onto other grids, 2D and
#: 3D); the same person's T1w against its FLAIR: 0.50-0.55; two people: 0.00-0.23, which the
#: registration check (:data:`bids_lesionchange.image.register.MIN_BRAIN_NCC`, 0.5) already refuses.
MIN_SAME_PERSON_NCC = 0.70

#: Baseline voxels brighter than this multiple of the white-matter peak, in clusters of at least
#: :data:`MIN_LESION_VOXELS`, are the baseline's lesions for :func:`lesion_persistence` (FLAIR
#: lesions are 1.3-2 x white matter; grey matter 1.05-1.15 x).
LESION_LEVEL = 1.3
MIN_LESION_VOXELS = 10
#: Below this share of the baseline's lesion volume still hyperintense at follow-up a pair is
#: flagged (when the baseline holds at least :data:`MIN_BASELINE_LESION_ML`). MS lesions shrink
#: but do not all vanish between two sessions. Measured share: 0.38-1.00 on 10 self-pairs of five
#: real FLAIRs (simulated rescans onto other grids, contrasts and noise: a rescan that changes the
#: contrast turns some bright grey matter and artefacts normal), 0.97-1.00 on two bidsgate
#: longphantoms (lesions shrink and resolve by design), 1.00 on 8 synthetic Change pairs; another
#: synthetic subject's follow-up in a subject's place: 0.02.
MIN_LESION_PERSISTENCE = 0.2
MIN_BASELINE_LESION_ML = 1.0

#: Above this volume (ml) the brain mask is flagged: it holds more than an adult's whole
#: intracranial volume (about 1.2-1.9 l; brain, CSF and meninges inside the skull), so the skull
#: strip took in tissue outside the brain (face, neck, skull), where a "change" is not a lesion.
#: A flag, not an error: the outputs are written and the user can check the mask's figure.
MAX_BRAIN_MASK_ML = 2000.0

#: Above this volume (ml) an HD-BET mask of the follow-up is checked against HD-BET's mask of the
#: registered baseline (:func:`.preprocess.second_opinion_mask`), below the flag's limit: a brain
#: mask this large is rare (about two standard deviations above an adult man's mean intracranial
#: volume of 1.5-1.6 l; HD-BET's 45 masks that held no face, of four real heads and their
#: simulated rescans in three runs of ``benchmarks/real_flair.py``: 1041-1680 ml when HD-BET saw
#: the whole grid, 1372-1612 ml for the skull-on ones of the validation run since it sees the
#: head's box), while the masks that took in the face, all on simulated thick-slice rescans with
#: HD-BET on the whole grid, were 1906-2512 ml. A check costs one more HD-BET run; on a large head
#: whose mask was right, both masks agree and the pair keeps their common voxels.
CHECK_BRAIN_MASK_ML = 1800.0


#: A FLAIR is a magnitude image: nothing in it is below zero, and the app's resampling makes nothing
#: below the source's minimum (:func:`.grid.resample_to_grid` clips to the source's range). A share of
#: the brain below zero says the intensities were shifted after reconstruction (standardised, e.g.
#: z-scored: 39 % of the real NIH pair's brain would be below zero), so the image's zero is not the
#: scanner's, and the white-matter-peak scaling (:func:`.intensity.normalise_wm_peak`), which keeps
#: FLAIR's zero, misjudges grey matter and lesions. Flagged above 1 % of the brain below -2 % of the
#: brain's 99th percentile of absolute intensity (0 % on the real FLAIRs measured).
MAX_NEGATIVE_FRACTION = 0.01
NEGATIVE_LEVEL = 0.02
#: Above this share of an input's non-zero voxels below zero (same level), the FLAIR is refused at
#: once (:func:`check_standardised`) instead of flagged: such an image (a z-scored brain has 30-50 %
#: of its voxels below zero) derails the preprocessing itself (skull stripping, registration,
#: N4, which take the zero as the background's), which would otherwise fail later with a
#: misleading message, such as an empty brain mask blamed on the registration.
MAX_STANDARDISED_FRACTION = 0.05


def _share_below_zero(values: np.ndarray, scale_stride: int = 1) -> float:
    """Share of the finite ``values`` below -:data:`NEGATIVE_LEVEL` x their 99th percentile of
    absolute intensity (taken from every ``scale_stride``-th value); 0 when that percentile is 0."""
    scale = float(np.percentile(np.abs(values[::scale_stride]), 99))
    return float(np.mean(values < -NEGATIVE_LEVEL * scale)) if scale > 0 else 0.0


def check_standardised(data: np.ndarray, path, *, step: str = CHECK_STEP) -> float:
    """Refuse a FLAIR whose intensities were standardised (e.g. z-scored); return the share below zero.

    The share of the image's non-zero voxels below -:data:`NEGATIVE_LEVEL` x their 99th
    percentile of absolute intensity (a magnitude image from the scanner holds none; a
    resampling's undershoot stays far below :data:`MAX_STANDARDISED_FRACTION`).

    Raises
    ------
    bids_lesionchange.errors.InputError
        Naming ``path``, the share and the limit, and what to give instead.
    """
    values = np.asarray(data).ravel()
    values = values[(values != 0) & np.isfinite(values)]
    if values.size == 0:
        return 0.0
    # the scale from every 8th voxel of a whole image: this runs before every pair's first step
    fraction = _share_below_zero(values, scale_stride=8 if values.size > 80_000 else 1)
    if fraction > MAX_STANDARDISED_FRACTION:
        raise InputError(path, step, f"{100 * fraction:.0f} % of its non-zero voxels are below zero (lowest "
                         f"{float(values.min()):.3g}; limit {100 * MAX_STANDARDISED_FRACTION:.0f} %): a FLAIR from "
                         "the scanner has none, so its intensities were standardised after reconstruction "
                         "(e.g. z-scored), which the skull stripping, registration and intensity scaling "
                         "cannot use; give the FLAIRs as exported from the scanner, before any intensity "
                         "standardisation (brain extraction and bias correction are fine)")
    return fraction


def checks_digest() -> str:
    """A digest of the input checks' code (this module and ``image.preprocess``, whose ``quality_file``
    runs them): the QC node hashes it with its inputs, so that a work directory reused with a newer
    version of the app runs the checks again instead of serving the old QC from Nipype's cache."""
    import hashlib

    digest = hashlib.sha256()
    for path in (Path(__file__), Path(__file__).with_name("preprocess.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def intensity_zero(data: np.ndarray, brain_mask: np.ndarray) -> dict:
    """Measure whether a FLAIR's zero is the scanner's: the share of the brain below zero.

    ``negative_fraction``: share of the brain's voxels below -:data:`NEGATIVE_LEVEL` x the 99th
    percentile of the brain's absolute intensities; ``lowest``: the brain's lowest value;
    ``plausible``: the share is at most :data:`MAX_NEGATIVE_FRACTION` (an empty mask passes).
    """
    values = np.asarray(data, dtype=np.float32)[np.asarray(brain_mask, dtype=bool)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"negative_fraction": None, "lowest": None, "max_negative_fraction": MAX_NEGATIVE_FRACTION,
                "plausible": True}
    fraction = _share_below_zero(values)
    return {"negative_fraction": round(fraction, 4), "lowest": round(float(values.min()), 4),
            "max_negative_fraction": MAX_NEGATIVE_FRACTION, "plausible": bool(fraction <= MAX_NEGATIVE_FRACTION)}


def lesion_persistence(baseline: np.ndarray, followup: np.ndarray, brain_mask: np.ndarray, zooms) -> dict:
    """Measure how much of the baseline's lesion volume is still hyperintense at follow-up.

    On two aligned, intensity-normalised sessions: the baseline's lesions are its voxels above
    :data:`LESION_LEVEL` x its white-matter peak (clusters of at least :data:`MIN_LESION_VOXELS`);
    a lesion voxel persists when the follow-up, within one voxel of it (residual misalignment),
    is above :data:`bids_lesionchange.image.intensity.HYPERINTENSE_LEVEL` x the follow-up's
    white-matter peak. ``lesions_persist`` is False when less than
    :data:`MIN_LESION_PERSISTENCE` of at least :data:`MIN_BASELINE_LESION_ML` persists: the
    follow-up does not show the baseline's lesions, as when it is another person's scan.

    Returns
    -------
    dict
        ``baseline_lesion_ml``, ``persistent_fraction`` (None when the baseline has no lesion),
        ``min_persistent_fraction`` and ``lesions_persist`` (None when not judged: less than
        :data:`MIN_BASELINE_LESION_ML` of baseline lesion, or no white-matter peak).
    """
    from bids_lesionchange.analysis.components import label_connected_components, relabel_by_size
    from bids_lesionchange.image.intensity import HYPERINTENSE_LEVEL, white_matter_peak

    result = {"baseline_lesion_ml": 0.0, "persistent_fraction": None,
              "min_persistent_fraction": MIN_LESION_PERSISTENCE, "lesions_persist": None}
    baseline = np.asarray(baseline, dtype=np.float32)
    followup = np.asarray(followup, dtype=np.float32)
    brain = np.asarray(brain_mask) > 0
    try:
        peaks = [white_matter_peak(image, brain) for image in (baseline, followup)]
    except ValueError:
        return result
    labels, _ = label_connected_components(brain & (baseline > LESION_LEVEL * peaks[0]), connectivity=26)
    lesion = relabel_by_size(labels, min_size=MIN_LESION_VOXELS) > 0
    n = int(lesion.sum())
    if n == 0:
        return result
    still = ndimage.maximum_filter(followup, size=3)[lesion] > HYPERINTENSE_LEVEL * peaks[1]
    fraction = float(still.mean())
    volume = n * float(np.prod(np.asarray(zooms, dtype=float)[:3])) / 1000.0
    judged = volume >= MIN_BASELINE_LESION_ML
    result.update(baseline_lesion_ml=round(volume, 3), persistent_fraction=round(fraction, 4),
                  lesions_persist=bool(fraction >= MIN_LESION_PERSISTENCE) if judged else None)
    return result


def mask_depth_mm(mask: np.ndarray, zooms) -> np.ndarray:
    """Distance (mm) of every voxel of ``mask`` from the nearest voxel outside it (0 outside).

    Computed on the mask's bounding box padded by one voxel (the image's border counts as outside),
    which gives the same distances as the whole grid at a fraction of the cost.
    """
    mask = np.asarray(mask) > 0
    depth = np.zeros(mask.shape, dtype=np.float64)
    if not mask.any():
        return depth
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))
    inner = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=np.asarray(zooms, dtype=float)[:3])
    depth[box] = inner[1:-1, 1:-1, 1:-1]
    return depth


def contrast_profile(data: np.ndarray, brain_mask: np.ndarray, zooms, *, resolution_mm=None,
                     max_voxels: int = 200_000, depth_mm: np.ndarray | None = None) -> dict:
    """Measure whether an image has a FLAIR's contrast: cortex brighter than deep white matter.

    In FLAIR the grey matter of the cortex is brighter than the white matter beneath it (and CSF
    is dark); in T1w the white matter is the brightest tissue. So among the parenchyma voxels
    (brain mask voxels above the Otsu threshold of the brain's intensities, which drops dark CSF)
    at a depth of :data:`CONTRAST_DEPTH_MM` from the mask's edge, the Spearman correlation
    ``rho`` between intensity and depth is about zero or negative in FLAIR (bright lesions deep in
    the white matter pull it up a little) and positive in T1w. Rank-based: any monotone change of
    intensities (scanner scaling, gamma, normalisation) leaves it unchanged. A session is
    ``flair_like`` when ``rho <= MAX_FLAIR_DEPTH_CORRELATION``. Not judged (``flair_like`` None)
    when the second-finest axis of ``resolution_mm`` is coarser than
    :data:`MAX_CONTRAST_RESOLUTION_MM`: the cortex is then not resolved.

    Not told apart: T2w (CSF bright, cortex brighter than white matter as in FLAIR), for which no
    real scan was at hand to calibrate a rule.

    Parameters
    ----------
    data : ndarray
        The session's intensities.
    brain_mask : ndarray
        Its brain mask (voxels > 0), same shape.
    zooms : sequence of float
        Voxel size (mm).
    resolution_mm : sequence of float, optional
        The image's effective resolution along its axes (FWHM, mm), e.g. that of a thick-slice
        acquisition resampled onto a finer grid; default ``zooms``.
    max_voxels : int
        At most this many voxels (a regular subsample) enter the correlation.
    depth_mm : ndarray, optional
        :func:`mask_depth_mm` of ``brain_mask`` when the caller has it (two sessions share one mask).

    Returns
    -------
    dict
        ``depth_intensity_correlation`` (float, or None when not judged: too few voxels or too
        coarse), ``max_correlation``, ``flair_like`` (bool, or None when not judged) and
        ``resolution_mm`` (the second-finest axis, mm).
    """
    from skimage.filters import threshold_otsu

    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(brain_mask) > 0
    zooms = np.asarray(zooms, dtype=float)[:3]
    resolution = np.maximum(zooms, np.asarray(zooms if resolution_mm is None else resolution_mm, dtype=float)[:3])
    second_finest = float(np.sort(resolution)[1])
    result = {"depth_intensity_correlation": None, "max_correlation": MAX_FLAIR_DEPTH_CORRELATION,
              "flair_like": None, "resolution_mm": round(second_finest, 3)}
    values = data[mask]
    if second_finest > MAX_CONTRAST_RESOLUTION_MM or values.size < 100 or values.min() == values.max():
        return result
    depth = mask_depth_mm(mask, zooms) if depth_mm is None else np.asarray(depth_mm)
    low, high = CONTRAST_DEPTH_MM
    chosen = mask & (data > threshold_otsu(values)) & (depth >= low) & (depth <= high)
    n = int(chosen.sum())
    if n < 100:
        return result
    step = max(1, n // max_voxels)
    rho = spearman(data[chosen][::step], depth[chosen][::step])
    if not math.isfinite(rho):
        return result
    result.update(depth_intensity_correlation=round(rho, 4), flair_like=rho <= MAX_FLAIR_DEPTH_CORRELATION)
    return result


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties sharing their mean rank (``scipy.stats.rankdata``'s "average")."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks; NaN when one side is constant).

    numpy only: ``scipy.stats`` takes about a second to import in each worker process.
    """
    a, b = average_ranks(first), average_ranks(second)
    a -= a.mean()
    b -= b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else math.nan


def same_person_measures(ncc_brain: float, parenchyma_ml_baseline: float, parenchyma_ml_followup: float) -> dict:
    """Measure whether two aligned sessions show the same brain.

    ``ncc_brain``: normalised cross-correlation of the two bias-corrected sessions inside the brain
    after rigid alignment (higher is more alike); ``parenchyma_volume_ratio``: the larger over the
    smaller parenchyma volume inside the shared brain mask (1 is identical), reported, not judged.
    ``same_person`` is False when ``ncc_brain < MIN_SAME_PERSON_NCC``.

    The ratio was judged (> 1.10 flagged) until stop 41. Real same-person FLAIR pairs: 1.004-1.033;
    T1w against FLAIR of one person: 1.18-1.24; two people: 1.005-1.26 (rigid alignment puts
    another brain into the mask). Every pair above 1.10 that was not one person's FLAIRs was
    already flagged by the correlation (T1w/FLAIR: 0.50-0.55) or refused (two people: <= 0.35);
    the pairs that only the ratio put above 1.10 were all one person's FLAIRs: self-pairs of the
    NIH baseline, its 3 mm slices against a rescan sliced along another axis or with another CSF
    suppression (1.11-1.18), where the Otsu threshold's CSF boundary moves with the partial volume
    and the contrast.
    """
    small, large = sorted((float(parenchyma_ml_baseline), float(parenchyma_ml_followup)))
    ratio = large / small if small > 0 else math.inf
    ncc = float(ncc_brain)
    alike = math.isfinite(ncc) and ncc >= MIN_SAME_PERSON_NCC
    return {"ncc_brain": round(ncc, 4), "min_ncc": MIN_SAME_PERSON_NCC,
            "parenchyma_volume_ratio": round(ratio, 4) if math.isfinite(ratio) else None,
            "same_person": bool(alike)}


def brain_mask_measures(volume_ml: float) -> dict:
    """Whether a brain mask's volume (ml) is that of a brain: at most :data:`MAX_BRAIN_MASK_ML`."""
    return {"volume_ml": round(float(volume_ml), 1), "max_ml": MAX_BRAIN_MASK_ML,
            "plausible": bool(float(volume_ml) <= MAX_BRAIN_MASK_ML)}


def input_flags(baseline_contrast: dict, followup_contrast: dict, same_person: dict, *,
                baseline_file, followup_file, persistence: dict | None = None,
                brain_mask: dict | None = None, zero: dict | None = None) -> list[str]:
    """Return one sentence per failed plausibility check of a pair (empty when all pass).

    Each names the file concerned, what was measured against which limit, and what to check.
    ``brain_mask``: :func:`brain_mask_measures` of the pair's one brain mask (made on the follow-up).
    ``zero``: :func:`intensity_zero` of each session (``{"baseline": ..., "followup": ...}``).
    """
    flags = []
    for key, path in (("baseline", baseline_file), ("followup", followup_file)):
        measure = (zero or {}).get(key) or {}
        if measure.get("plausible") is False:
            flags.append(f"{Path(path).name} holds intensities below zero in "
                         f"{100 * measure['negative_fraction']:.0f} % of the brain (lowest {measure['lowest']:.3g}; limit "
                         f"{100 * measure['max_negative_fraction']:.0f} %): a FLAIR from the scanner has none, so "
                         "its intensities were shifted after reconstruction (standardised, e.g. z-scored), and the "
                         "app, which scales each FLAIR by its white-matter peak from zero, misjudges its grey "
                         "matter and lesions; give the FLAIRs as exported from the scanner, before any intensity "
                         "standardisation (brain extraction and bias correction are fine)")
    if brain_mask and brain_mask.get("plausible") is False:
        flags.append(f"the brain mask of {Path(followup_file).name} holds {brain_mask['volume_ml']:.0f} ml, more "
                     f"than an adult's whole intracranial volume (limit {brain_mask['max_ml']:.0f} ml): the skull "
                     "strip took in tissue outside the brain (face, neck or skull), where changes are not lesions; "
                     "check the brain-mask figure of the report; if the mask takes in the face or neck, "
                     "brain-extract the FLAIRs with a tool you trust and give them with --skull-strip none")
    for contrast, path in ((baseline_contrast, baseline_file), (followup_contrast, followup_file)):
        if contrast.get("flair_like") is False:
            flags.append(f"{Path(path).name} does not look like a FLAIR: its white matter is as bright as "
                         f"or brighter than its cortex, as in a T1w image (depth-intensity correlation "
                         f"{contrast['depth_intensity_correlation']:+.2f} > {contrast['max_correlation']:+.2f}, "
                         "real FLAIRs <= +0.01); "
                         "check that this file is the FLAIR of that session")
    if not same_person.get("same_person", True):
        flags.append(f"{Path(baseline_file).name} and {Path(followup_file).name} may not be the same person "
                     f"or the same contrast: their brains differ after alignment (brain correlation "
                     f"{same_person['ncc_brain']:.2f}, limit {same_person['min_ncc']:.2f}); "
                     "check that both files are this subject's FLAIRs")
    if persistence and persistence.get("lesions_persist") is False:
        flags.append(f"{Path(followup_file).name} does not show the lesions of {Path(baseline_file).name}: "
                     f"{100 * persistence['persistent_fraction']:.0f} % of the baseline's "
                     f"{persistence['baseline_lesion_ml']:.1f} ml of hyperintense lesion is still hyperintense "
                     f"at follow-up (limit {100 * persistence['min_persistent_fraction']:.0f} %; MS lesions shrink "
                     "but do not all vanish); check that both files are this subject's FLAIRs")
    return flags
