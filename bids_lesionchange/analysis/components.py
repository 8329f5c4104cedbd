"""Turn a change probability map into labelled change blobs (threshold + 3D connected components).

The paper (To et al. 2021, section 3.4) thresholds the network output with ``y~ > kappa``
(strictly greater, kappa = 0.1) and keeps connected components of at least 20 (or 100) voxels.

The detector is trained on generic change (SuperMix swaps superpixels for the VAE's
reconstruction, brighter or darker). New and enlarging MS lesions are hyperintense on the
follow-up FLAIR, so by default (``direction="increase"``) a voxel can only be a change where the
follow-up is brighter than the baseline (:func:`brighter_on_followup`) and in parenchyma, not
CSF (:func:`bids_lesionchange.image.intensity.parenchyma_mask`: follow-up above the Otsu
threshold of the brain), and a change must
be a hyperintensity at follow-up: components whose mean follow-up intensity does not exceed the
median of the follow-up's brain are dropped (:func:`drop_dark_components`). The CSF step comes
first so that a new periventricular lesion is not dropped with the ventricle it touches. Last, a
change must turn tissue that was not yet hyperintense into hyperintense tissue: at least
``MIN_NEW_FRACTION`` of its voxels must have been at or below ``HYPERINTENSE_LEVEL`` times the
baseline's white-matter peak and be above that level of the follow-up's peak
(:func:`drop_preexisting_components` with :func:`newly_hyperintense`). A component that was already
hyperintense at baseline is a lesion (or bright grey matter) that was already there and only got
brighter (with thick slices, voxels within half the coarser session's point-spread function of
such tissue do not count as normal-appearing either, :func:`psf_reach`); one that stays at
white-matter level at follow-up is not a lesion; and only voxels that were tissue at baseline count
(not CSF: the baseline above the Otsu threshold of its brain), since a change over a sulcus or a
ventricle's edge that held tissue only at follow-up is CSF that moved between the sessions. And a
change must not lie mostly in the brain's outer rim: a component of which more than
``MAX_RIM_FRACTION`` of the voxels are within ``RIM_MM`` of the brain mask's edge lies in the
cortex of the gyral crowns and the mask's boundary, where FLAIR shows cortical lesions poorly and
where the mask's edge, the pial CSF and its flow artefacts differ between two scans
(:func:`drop_rim_components`; with thick slices the rim reaches one FWHM of the coarser session
along its slice axis, :func:`rim_reach_mm`, since the slice blurs the edge that far in). And a
change must be focal: its normal-appearing voxels must have
brightened by at least ``MIN_FOCAL_RISE`` times the white-matter peak more than the normal-appearing
tissue around it (:func:`drop_diffuse_components`); two sessions that differ in contrast, bias or
partial volume brighten a region together with its surroundings, a new lesion does not take its
surroundings with it. This removes what a
network trained on generic change also flags: darkening (lesions that shrink, residual bias
fields) and changes in dark tissue (CSF partial volume, ventricles). Optionally (``extent_mm``, the
app's ``--extent-mm``) each change that is left then grows, by at most that far, into the adjacent
voxels that became a new hyperintensity and rose by ``MIN_FOCAL_RISE`` (:func:`grow_to_extent`): the
network's map above kappa covers only part of a large or an enlarging lesion. ``direction="any"``
is the paper's rule.
"""

from __future__ import annotations

import numpy as np

from bids_lesionchange.image.intensity import HYPERINTENSE_LEVEL, parenchyma_mask, white_matter_peak

VALID_CONNECTIVITY = (6, 18, 26)
#: Smallest share of a change's voxels that must have been normal-appearing (not hyperintense)
#: at baseline for the change to be a new or enlarging lesion.
MIN_NEW_FRACTION = 0.2
#: Thickness (mm) of the brain's outer rim: the cortex (2-3 mm thick; Fischl & Dale, PNAS 2000)
#: with the brain mask's edge.
RIM_MM = 3.0
#: Largest share of a change's voxels that may lie in the rim.
MAX_RIM_FRACTION = 0.5
#: Smallest focal rise of a change (:func:`focal_rise`), as a fraction of the baseline's
#: white-matter peak: half the faintest lesion contrast the detector is trained on (SuperMix's
#: lesion-like changes are at least ``supermix.lesion_contrast_min`` = 1.2 x the crop's tissue
#: level, a rise of 0.2 x it).
MIN_FOCAL_RISE = 0.1
#: The tissue around a change that :func:`focal_rise` compares it with: the voxels more than
#: ``FOCAL_RING_VOXELS[0]`` and at most ``FOCAL_RING_VOXELS[1]`` 6-connected steps from it (the first
#: voxel outside is skipped: a lesion's partial-volume edge, which a thresholded map does not cover).
FOCAL_RING_VOXELS = (1, 3)
#: How far (mm) a change may grow into the tissue around it that became a hyperintensity
#: (:func:`grow_to_extent`): the largest radius of the synthetic lesions the shipped detector
#: was trained on (``supermix.lesion_radius_max`` = 6 voxels of 1 mm).
GROW_MM = 6.0


def rule_digest() -> str:
    """A digest of the change rule's code (this module and ``image.intensity``, whose white-matter
    peak and parenchyma mask it uses): the components node hashes it with its inputs, so that a
    work directory reused after the rule changed (a new version of the app) runs the rule again
    instead of serving the old rule's changes from Nipype's cache."""
    import hashlib
    from pathlib import Path

    from bids_lesionchange.image import intensity

    digest = hashlib.sha256()
    for path in (Path(__file__), Path(intensity.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def check_same_grid(pred: np.ndarray, ref: np.ndarray) -> None:
    """Raise ValueError unless a predicted and a reference mask have one shape (one grid)."""
    if pred.shape != ref.shape:
        raise ValueError(
            f"the predicted mask {pred.shape} and the reference mask {ref.shape} are on different "
            "grids; resample the reference onto the prediction's grid first"
        )


def label_connected_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label the connected components of a binary mask (any non-zero voxel is foreground).

    Parameters
    ----------
    mask : ndarray
        3D array; voxels ``> 0`` (or ``True``) are foreground.
    connectivity : {6, 18, 26}
        Face (6), face+edge (18) or face+edge+corner (26) neighbourhood.

    Returns
    -------
    labels : ndarray of int32
        0 for background, 1..n in the scan order of cc3d.
    n : int
        Number of components.
    """
    import cc3d

    _check_connectivity(connectivity)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"connected components need a 3D array, got shape {mask.shape}")
    binary = np.ascontiguousarray(mask > 0)
    labels, n = cc3d.connected_components(binary, connectivity=connectivity, return_N=True)
    return labels.astype(np.int32, copy=False), int(n)


DIRECTIONS = ("increase", "any")


def brighter_on_followup(baseline: np.ndarray, followup: np.ndarray, sigma: float = 1.0, *,
                         noise_z: float = 0.0, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """Where the follow-up is brighter than the baseline: ``G_sigma * (followup - baseline) > m``.

    The difference is smoothed by a Gaussian of ``sigma`` voxels first so that noise does not
    punch holes in a lesion. With ``noise_z = 0`` there is no margin (``m = 0``), so the rule does
    not depend on the contrast or the intensity scale of the scans. With ``noise_z > 0`` the
    margin is that many robust standard deviations of the smoothed difference inside
    ``brain_mask`` (1.4826 x its median absolute deviation): a pair-adaptive significance level
    that follows each pair's own noise and residual misalignment, not a fixed intensity step.
    """
    from scipy import ndimage

    baseline = np.asarray(baseline, dtype=np.float32)
    followup = np.asarray(followup, dtype=np.float32)
    if baseline.shape != followup.shape:
        raise ValueError(f"baseline {baseline.shape} and follow-up {followup.shape} differ in shape")
    difference = np.nan_to_num(followup - baseline)
    if sigma > 0:
        difference = ndimage.gaussian_filter(difference, sigma=sigma)
    margin = 0.0
    if noise_z > 0:
        inside = difference[np.asarray(brain_mask) > 0] if brain_mask is not None else difference.ravel()
        if inside.size:
            margin = float(noise_z * 1.4826 * np.median(np.abs(inside - np.median(inside))))
    return difference > margin


def _component_sums(labels: np.ndarray, values, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts and sums of ``values`` per label 0..n (index = label; entry 0 is left at 0).

    Only the labelled voxels are counted: a change is a few hundred voxels of a volume of
    millions, and a bincount over the whole grid cost 0.2 s per call at 1 mm.
    """
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    ids = flat[inside]
    return (np.bincount(ids, minlength=n + 1),
            np.bincount(ids, weights=np.asarray(values).ravel()[inside], minlength=n + 1))


def _keep_components(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Labels whose entry in ``keep`` (index = label) is True, renumbered by size; 0 stays background."""
    keep = np.array(keep, dtype=bool)
    keep[0] = False
    return relabel_by_size(np.where(keep[labels], labels, 0), min_size=1)


def drop_dark_components(labels: np.ndarray, followup: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """Remove components that are not hyperintense at follow-up and renumber the rest by size.

    A component is kept when its mean follow-up intensity exceeds the median follow-up
    intensity of the brain (no parameter: a new or enlarging FLAIR lesion is brighter than the
    bulk of the brain, white and grey matter; CSF and ventricles are darker).
    """
    labels = np.asarray(labels)
    followup = np.asarray(followup, dtype=np.float64)
    brain = np.asarray(brain_mask) > 0
    n = int(labels.max(initial=0))
    if n == 0 or not brain.any():
        return labels.astype(np.int32, copy=False)
    median = float(np.median(followup[brain]))
    counts, sums = _component_sums(labels, followup, n)
    return _keep_components(labels, sums / np.maximum(counts, 1) > median)


def psf_reach(psf_fwhm_voxels) -> np.ndarray | None:
    """The structuring element "within half a point-spread function" of a pair, or None (1 voxel).

    An ellipsoid with semi-axes of half the pair's coarser FWHM along each grid axis, in voxels
    (at least half a voxel, so an axis sampled finer than 2 voxels is not widened): the reach of
    a lesion's partial volume in the coarser session. None when no axis reaches a neighbour.
    """
    if psf_fwhm_voxels is None:
        return None
    semi = np.maximum(np.asarray(psf_fwhm_voxels, dtype=float)[:3] / 2.0, 0.5)
    half = np.floor(semi).astype(int)
    if not half.any():
        return None
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    return sum((g / a) ** 2 for g, a in zip(grids, semi)) <= 1.0


def drop_preexisting_components(labels: np.ndarray, baseline: np.ndarray, brain_mask: np.ndarray, *,
                                level: float = HYPERINTENSE_LEVEL,
                                min_new_fraction: float = MIN_NEW_FRACTION,
                                psf_fwhm_voxels=None, normal: np.ndarray | None = None,
                                followup: np.ndarray | None = None, new: np.ndarray | None = None) -> np.ndarray:
    """Remove changes that did not turn enough normal-appearing tissue into hyperintense tissue.

    A new lesion appears in normal-appearing tissue and an enlarging one grows into it, so at
    least ``min_new_fraction`` of a real change's voxels were at or below ``level`` times the
    baseline's white-matter peak (:func:`bids_lesionchange.image.intensity.white_matter_peak`).
    A component above that level nearly everywhere at baseline is an existing lesion whose
    contrast differs between the sessions (another scanner, protocol or partial volume), which
    is neither new nor enlarging. Kept components are renumbered by size. When the baseline has
    no white-matter peak (a flat image) nothing is removed.

    ``psf_fwhm_voxels``: the FWHM of the pair's coarser acquisition along each grid axis, in grid
    voxels (the resolution-matching report). A thick slice spreads an existing lesion over its
    neighbours with a partial volume that depends on where the slices fell, which differs between
    two sessions: so a voxel within half that FWHM of a baseline hyperintensity
    (:func:`psf_reach`) does not count as normal-appearing. For a 1 mm 3D pair nothing widens.
    ``normal``: :func:`normal_appearing` already computed for these arguments (the app's rule
    shares it with :func:`drop_diffuse_components`).

    ``followup``: the other half of "new": a voxel then counts only if it is also hyperintense at
    follow-up, above ``level`` times the follow-up's own white-matter peak
    (:func:`newly_hyperintense`). A change that lies in normal-appearing tissue but stays at
    white-matter level (a thick slice's partial volume of a sulcus, a vessel or a dark structure
    that moved, tissue that brightened a little with its surroundings) is not a lesion. A flat
    follow-up (no white-matter peak) is judged on the baseline alone.

    Either way a voxel counts only if it was tissue at baseline, not CSF
    (:func:`bids_lesionchange.image.intensity.parenchyma_mask` of the baseline, the definition the
    rule applies to the follow-up): a lesion forms in white or grey matter, so a change over a
    sulcus or a ventricle's edge that was dark at baseline and holds tissue at follow-up is that
    CSF space moved between the sessions (residual misalignment, a thick slice's partial volume,
    atrophy), not a lesion.

    ``new``: those voxels (:func:`new_tissue`) already computed for these arguments (the app's
    rule shares them with :func:`grow_to_extent`); ``normal`` and ``followup`` are then not used.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if n == 0:
        return labels.astype(np.int32, copy=False)
    if not 0.0 <= min_new_fraction <= 1.0:
        raise ValueError(f"min_new_fraction must be in [0, 1], got {min_new_fraction}")
    baseline = np.asarray(baseline, dtype=np.float32)
    if baseline.shape != labels.shape:
        raise ValueError(f"baseline {baseline.shape} and labels {labels.shape} differ in shape")
    if new is None:
        if normal is None:
            normal = normal_appearing(baseline, brain_mask, psf_fwhm_voxels, level=level)
        if normal is None:
            return labels.astype(np.int32, copy=False)
        new = new_tissue(normal, baseline, brain_mask, followup, level=level)
    elif np.shape(new) != labels.shape:
        raise ValueError(f"new {np.shape(new)} and labels {labels.shape} differ in shape")
    counts, n_new = _component_sums(labels, new, n)
    return _keep_components(labels, n_new >= min_new_fraction * counts)


def new_tissue(normal: np.ndarray, baseline: np.ndarray, brain_mask: np.ndarray,
               followup: np.ndarray | None = None, *, level: float = HYPERINTENSE_LEVEL) -> np.ndarray:
    """The voxels that can be new lesion (:func:`drop_preexisting_components`): normal-appearing at
    baseline (``normal``, :func:`normal_appearing`), tissue at baseline (not CSF:
    :func:`bids_lesionchange.image.intensity.parenchyma_mask`) and, with ``followup``,
    hyperintense at follow-up (:func:`newly_hyperintense`)."""
    tissue = parenchyma_mask(np.asarray(baseline, dtype=np.float32), brain_mask)
    if tissue is not None:
        normal = normal & tissue
    if followup is not None:
        normal = newly_hyperintense(normal, followup, brain_mask, level=level)
    return np.asarray(normal, dtype=bool)


def grow_to_extent(labels: np.ndarray, baseline: np.ndarray, followup: np.ndarray, brain_mask: np.ndarray, *,
                   new: np.ndarray, peak: float, zooms=(1.0, 1.0, 1.0), reach_mm: float = GROW_MM,
                   min_rise: float = MIN_FOCAL_RISE) -> np.ndarray:
    """Grow each change into the new hyperintensity around it, up to ``reach_mm``: the network
    says where a change is, the images say how far it reaches.

    The detector's map above kappa covers part of a large or an enlarging lesion (on the held-out
    synthetic cohorts about 40 % of the changed voxels, where subtraction's covers 85 %), so its
    changes are too small for the voxel Dice and for scorers that ask how much of a lesion is
    covered (MSSEG-2's). A change takes, step by step (6-connected, one voxel per step, at most
    ``reach_mm`` / smallest voxel side steps), the voxels next to it that are ``new`` tissue
    (:func:`new_tissue`: normal-appearing and tissue at baseline, hyperintense at follow-up) and
    that brightened by at least ``min_rise`` times the baseline's white-matter peak ``peak``
    (the focal-rise level of :func:`drop_diffuse_components`). No change is made or removed; two
    changes that grow into each other become one (the new hyperintensity joins them: one lesion
    the map flagged in two pieces), so the changes are again the connected components of the
    mask (26-connected), renumbered by size.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    out = labels.astype(np.int32, copy=True)
    if int(out.max(initial=0)) == 0:
        return out
    steps = int(np.floor(reach_mm / float(np.min(np.asarray(zooms, dtype=float)[:3])) + 1e-9))
    rise = np.asarray(followup, dtype=np.float32) - np.asarray(baseline, dtype=np.float32)
    allowed = np.asarray(new, dtype=bool) & (np.asarray(brain_mask) > 0) & (rise >= min_rise * peak)
    allowed &= out == 0
    structure = ndimage.generate_binary_structure(3, 1)
    for _ in range(steps):
        reached = ndimage.grey_dilation(out, footprint=structure)
        add = allowed & (reached > 0)
        if not add.any():
            break
        out[add] = reached[add]
        allowed &= ~add
    grown, _ = label_connected_components(out > 0)
    return relabel_by_size(grown)


def newly_hyperintense(normal: np.ndarray, followup: np.ndarray, brain_mask: np.ndarray, *,
                       level: float = HYPERINTENSE_LEVEL) -> np.ndarray:
    """Voxels normal-appearing at baseline (``normal``, :func:`normal_appearing`) that are
    hyperintense at follow-up: above ``level`` times the follow-up's white-matter peak
    (:func:`bids_lesionchange.image.intensity.white_matter_peak`, each session on its own scale).
    ``normal`` unchanged when the follow-up has no white-matter peak (a flat image)."""
    followup = np.asarray(followup, dtype=np.float32)
    if followup.shape != np.shape(normal):
        raise ValueError(f"follow-up {followup.shape} and baseline {np.shape(normal)} differ in shape")
    try:
        peak = white_matter_peak(followup, np.asarray(brain_mask) > 0)
    except ValueError:
        return np.asarray(normal, dtype=bool)
    return np.asarray(normal, dtype=bool) & (followup > level * peak)


def _baseline_peak(baseline: np.ndarray, brain_mask: np.ndarray) -> float | None:
    """The baseline's white-matter peak in the brain, or None for a flat image (no peak to judge by)."""
    try:
        return white_matter_peak(np.asarray(baseline, dtype=np.float32), np.asarray(brain_mask) > 0)
    except ValueError:
        return None


def normal_appearing(baseline: np.ndarray, brain_mask: np.ndarray, psf_fwhm_voxels=None, *,
                     level: float = HYPERINTENSE_LEVEL, peak: float | None = None) -> np.ndarray | None:
    """Voxels normal-appearing at baseline (:func:`drop_preexisting_components` also requires
    them to be tissue, not CSF, at baseline).

    At or below ``level`` times the baseline's white-matter peak (``peak``, computed when not
    given) and, with thick slices (``psf_fwhm_voxels``), not within :func:`psf_reach` of a voxel
    above it. None when the baseline has no white-matter peak (a flat image).
    """
    baseline = np.asarray(baseline, dtype=np.float32)
    if peak is None:
        peak = _baseline_peak(baseline, brain_mask)
        if peak is None:
            return None
    normal = baseline <= level * peak
    reach = psf_reach(psf_fwhm_voxels)
    if reach is not None:
        from scipy import ndimage

        normal &= ~ndimage.binary_dilation(baseline > level * peak, reach)
    return normal


def focal_rise(labels: np.ndarray, baseline: np.ndarray, followup: np.ndarray, normal: np.ndarray,
               ring_voxels: tuple[int, int] = FOCAL_RING_VOXELS) -> np.ndarray:
    """How much more each change brightened than the tissue around it (index = label; 0 and
    changes that cannot be judged: NaN).

    Per change: the mean of follow-up - baseline over its ``normal`` voxels (normal-appearing at
    baseline in the brain, :func:`normal_appearing`: the part that can be new) minus the same mean
    over the ``normal`` voxels of a ring around it, more than ``ring_voxels[0]`` and at most
    ``ring_voxels[1]`` 6-connected steps away. A smooth difference between two sessions (gain,
    bias, contrast, partial volume over a region) raises both alike; a new or enlarging lesion
    raises its own voxels and not the tissue around it. NaN where the change or its ring has no
    normal voxel.
    """
    from scipy import ndimage

    gap, reach = (int(v) for v in ring_voxels)
    if not 0 <= gap < reach:
        raise ValueError(f"ring_voxels must be (gap, reach) with 0 <= gap < reach, got {ring_voxels}")
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    rise = np.full(n + 1, np.nan)
    normal = np.asarray(normal, dtype=bool)
    baseline, followup = np.asarray(baseline), np.asarray(followup)
    for label, box in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(b.start - reach, 0), b.stop + reach) for b in box)
        member = labels[grown] == label
        ring = ndimage.binary_dilation(member, iterations=reach)
        ring &= ~(ndimage.binary_dilation(member, iterations=gap) if gap else member)
        inside, around = member & normal[grown], ring & normal[grown]
        if inside.any() and around.any():
            difference = followup[grown].astype(np.float32) - baseline[grown].astype(np.float32)
            rise[label] = float(difference[inside].mean() - difference[around].mean())
    return rise


def drop_diffuse_components(labels: np.ndarray, baseline: np.ndarray, followup: np.ndarray,
                            brain_mask: np.ndarray, *, min_focal_rise: float = MIN_FOCAL_RISE,
                            psf_fwhm_voxels=None, normal: np.ndarray | None = None,
                            peak: float | None = None) -> np.ndarray:
    """Remove changes that did not brighten more than the tissue around them; renumber the rest.

    A change is kept when its :func:`focal_rise` is at least ``min_focal_rise`` times the
    baseline's white-matter peak (``peak``, computed when not given), or cannot be judged (no
    normal-appearing voxel in it or around it). On simulated rescans of real unchanged brains
    (the training sources of the shipped model), the network's remaining false changes were
    regions that brightened together with their surroundings: focal rise 0.02-0.15 x white
    matter, median 0.06; the true changes of bidsgate phantoms of five real scans and of the
    synthetic cohort rose by 0.11 x or more (one, on a phantom with lesions grown x 3: 0.09; docs/benchmarks.md,
    section 0). ``normal`` and ``psf_fwhm_voxels``: as in
    :func:`drop_preexisting_components`. When the baseline has no white-matter peak (a flat
    image) nothing is removed.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if n == 0:
        return labels.astype(np.int32, copy=False)
    if min_focal_rise < 0:
        raise ValueError(f"min_focal_rise must be >= 0, got {min_focal_rise}")
    baseline = np.asarray(baseline, dtype=np.float32)
    followup = np.asarray(followup, dtype=np.float32)
    if not baseline.shape == followup.shape == labels.shape:
        raise ValueError(f"baseline {baseline.shape}, follow-up {followup.shape} and labels {labels.shape} "
                         "differ in shape")
    if peak is None:
        peak = _baseline_peak(baseline, brain_mask)
        if peak is None:
            return labels.astype(np.int32, copy=False)
    if normal is None:
        normal = normal_appearing(baseline, brain_mask, psf_fwhm_voxels, peak=peak)
    rise = focal_rise(labels, baseline, followup, np.asarray(normal, dtype=bool) & (np.asarray(brain_mask) > 0))
    keep = np.isnan(rise) | (rise >= min_focal_rise * peak)
    return _keep_components(labels, keep)


def rim_reach_mm(psf_fwhm_mm=None, rim_mm: float = RIM_MM) -> np.ndarray:
    """How far (mm) the brain's outer rim reaches in along each grid axis.

    ``rim_mm`` along every axis, widened along an axis where the pair's coarser acquisition is
    blurred over more than that (``psf_fwhm_mm``, the FWHM in mm along each grid axis, see
    :func:`pair_psf_fwhm`): a thick slice mixes what lies beyond the mask's edge (pial CSF,
    dura, the skull's marrow on a head image) into the brain over its point-spread function,
    whose edge response is within 2 % of its plateau only about one FWHM (0.85 FWHM for a
    Gaussian) from the edge. A 1 mm 3D pair, or a 3 mm 2D one, keeps the 3 mm rim.
    """
    reach = np.full(3, float(rim_mm))
    if psf_fwhm_mm is not None:
        reach = np.maximum(reach, np.asarray(psf_fwhm_mm, dtype=float)[:3])
    return reach


def drop_rim_components(labels: np.ndarray, brain_mask: np.ndarray, zooms=(1.0, 1.0, 1.0), *,
                        rim_mm: float = RIM_MM, max_rim_fraction: float = MAX_RIM_FRACTION,
                        psf_fwhm_mm=None) -> np.ndarray:
    """Remove changes lying mostly in the brain's outer rim; renumber the rest by size.

    The rim is the brain mask's voxels within ``rim_mm`` (Euclidean, in mm with voxel size
    ``zooms``) of a voxel outside the mask (:func:`bids_lesionchange.image.plausibility.mask_depth_mm`);
    with ``psf_fwhm_mm`` (a thick-slice pair), within the ellipsoid of :func:`rim_reach_mm`,
    which reaches one FWHM of the coarser acquisition along its slice axis.
    A change is dropped when more than ``max_rim_fraction`` of its voxels lie in the rim: there
    are the cortex of the gyral crowns, which FLAIR shows poorly, and the mask's edge, where the
    skull stripping, the pial CSF and its flow artefacts differ between two scans. A new
    juxtacortical or subcortical lesion lies mostly in the white matter beneath and is kept.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if n == 0:
        return labels.astype(np.int32, copy=False)
    if not 0.0 <= max_rim_fraction <= 1.0:
        raise ValueError(f"max_rim_fraction must be in [0, 1], got {max_rim_fraction}")
    brain = np.asarray(brain_mask) > 0
    if brain.shape != labels.shape:
        raise ValueError(f"brain mask {brain.shape} and labels {labels.shape} differ in shape")
    zooms = np.asarray(zooms, dtype=float)[:3]
    reach_mm = rim_reach_mm(psf_fwhm_mm, rim_mm)
    # An ellipsoidal rim with semi-axes reach_mm is the sphere of radius rim_mm on a grid whose
    # axes are shrunk by rim_mm / reach_mm.
    sampling = zooms * (rim_mm / reach_mm) if rim_mm > 0 else zooms
    # Whether a voxel lies within the rim depends only on the voxels within its reach, so each
    # change's depth is measured on its own box grown by that reach (+1): the
    # same answer as a distance transform of the whole brain (the grid's border counts as
    # outside, hence the zero padding), for a few thousand voxels per change instead of millions.
    reach = np.ceil(reach_mm / zooms).astype(int) + 1
    padded = np.pad(brain, [(r, r) for r in reach])
    keep = np.zeros(n + 1, dtype=bool)
    for label, box in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if box is None:
            continue
        grown = tuple(slice(b.start, b.stop + 2 * r) for b, r in zip(box, reach))  # in padded coordinates
        inside = padded[grown]
        member = np.pad(labels[box] == label, [(r, r) for r in reach])
        if inside.all():
            in_rim = 0
        else:
            in_rim = int((ndimage.distance_transform_edt(inside, sampling=sampling)[member] <= rim_mm).sum())
        keep[label] = in_rim <= max_rim_fraction * int(member.sum())
    return _keep_components(labels, keep)


def change_labels(score: np.ndarray, brain_mask: np.ndarray, threshold: float = 0.1, min_size: int = 20, *,
                  direction: str = "any", baseline: np.ndarray | None = None,
                  followup: np.ndarray | None = None, noise_z: float = 0.0,
                  zooms=(1.0, 1.0, 1.0), psf_fwhm=None, steps: dict | None = None,
                  extent_mm: float = 0.0) -> np.ndarray:
    """The app's change rule on any score map (the model's probability, or a subtraction).

    ``score > threshold`` inside the brain, components of at least ``min_size`` voxels; with
    ``direction="increase"`` only where the follow-up is brighter (:func:`brighter_on_followup`)
    and in parenchyma (:func:`bids_lesionchange.image.intensity.parenchyma_mask`), only
    hyperintense components (:func:`drop_dark_components`), only components in tissue that
    was not already hyperintense at baseline (:func:`drop_preexisting_components`; ``psf_fwhm``,
    the FWHM in mm of the pair's coarser acquisition along each grid axis, see
    :func:`pair_psf_fwhm`, widens "already hyperintense" by the reach of a thick slice) and not
    mostly in the brain's outer rim (:func:`drop_rim_components`; ``zooms`` is the voxel size in
    mm, 1 mm on the app's common grid), only components that brightened more than the tissue
    around them (:func:`drop_diffuse_components`). Returns labels 1..n by size.

    With ``extent_mm`` > 0 (off by default; :data:`GROW_MM` is the largest lesion radius the
    shipped detector was trained on), each change kept then grows into the new hyperintensity
    around it, by up to ``extent_mm`` (:func:`grow_to_extent`): the steps above decide which
    changes there are, this one how far each reaches.

    ``steps``: a dict that receives, in the rule's order, the labels (whole grid) after each step
    of ``direction="increase"``: ``"threshold"`` (score above ``threshold`` where the follow-up is
    brighter and in parenchyma, components of ``min_size``), ``"dark"``, ``"preexisting"``,
    ``"diffuse"``, ``"rim"`` and, with ``extent_mm``, ``"extent"`` (the last is the result), so
    that a benchmark can say which step removed a change; steps that do not run (a flat baseline)
    are absent. Nothing is recorded for ``direction="any"``.
    """
    brain = np.asarray(brain_mask) > 0
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if extent_mm < 0:
        raise ValueError(f"extent_mm must be >= 0, got {extent_mm}")
    if direction == "any":
        return change_components(score, threshold=threshold, min_size=min_size, brain_mask=brain)
    if baseline is None or followup is None:
        raise ValueError("direction='increase' needs the preprocessed baseline and follow-up")
    score = np.asarray(score)
    baseline, followup = np.asarray(baseline), np.asarray(followup)
    if not (score.shape == brain.shape == baseline.shape == followup.shape):
        raise ValueError(f"score {score.shape}, brain mask {brain.shape}, baseline {baseline.shape} and "
                         f"follow-up {followup.shape} differ in shape; resample them onto one grid")
    labels = np.zeros(brain.shape, dtype=np.int32)
    if not brain.any():
        return labels
    # Every step looks at the brain and a few voxels around it (the 1-voxel Gaussian of
    # brighter_on_followup reaches 4, the brain's depth needs 1 outside): the rule runs on the
    # brain's bounding box with a margin, which gives the labels of the whole grid (same voxels,
    # same C order of first voxels for the size ties) at half the cost or less.
    psf_voxels = None if psf_fwhm is None else (np.asarray(psf_fwhm, dtype=float)[:3]
                                                / np.asarray(zooms, dtype=float)[:3])
    reach = psf_reach(psf_voxels)
    margin = max(6, 0 if reach is None else max(reach.shape) // 2 + 1)
    box = tuple(slice(max(int(idx.min()) - margin, 0), min(int(idx.max()) + margin + 1, side))
                for idx, side in zip(np.nonzero(brain), brain.shape))
    record = None if steps is None else {}
    labels[box] = _increase_labels(score[box], brain[box], threshold, min_size, baseline[box], followup[box],
                                   noise_z, zooms, psf_voxels, record, extent_mm)
    if steps is not None:
        for name, cropped in record.items():
            steps[name] = np.zeros(brain.shape, dtype=np.int32)
            steps[name][box] = cropped
    return labels


def pair_psf_fwhm(resolution_matching: dict | None) -> np.ndarray | None:
    """The FWHM (mm) of a pair's coarser session along each grid axis, from the preprocessing's
    resolution-matching report (``fwhm_mm`` of baseline and follow-up), or None without one."""
    try:
        fwhm = resolution_matching["fwhm_mm"]
        return np.maximum(np.asarray(fwhm["baseline"], dtype=float), np.asarray(fwhm["followup"], dtype=float))
    except (KeyError, TypeError, ValueError):
        return None


def _increase_labels(score, brain, threshold, min_size, baseline, followup, noise_z, zooms,
                     psf_voxels=None, record: dict | None = None, extent_mm: float = 0.0) -> np.ndarray:
    """:func:`change_labels` with ``direction="increase"`` on arrays already checked (and cropped);
    ``record`` (a dict) receives the labels after each step."""
    def step(name, labels):
        if record is not None:
            record[name] = labels
        return labels

    follow = np.asarray(followup, dtype=np.float32)
    parenchyma = parenchyma_mask(follow, brain)
    allowed = (brain if parenchyma is None else parenchyma) & brighter_on_followup(
        baseline, follow, noise_z=noise_z, brain_mask=brain)
    labels = step("threshold", change_components(score, threshold=threshold, min_size=min_size, brain_mask=allowed))
    labels = step("dark", drop_dark_components(labels, follow, brain))
    peak = _baseline_peak(baseline, brain)
    psf_mm = None if psf_voxels is None else np.asarray(psf_voxels, dtype=float) * np.asarray(zooms, dtype=float)[:3]
    if peak is None:  # a flat baseline: no normal-appearing tissue to judge by
        return step("rim", drop_rim_components(labels, brain, zooms, psf_fwhm_mm=psf_mm))
    normal = normal_appearing(baseline, brain, psf_voxels, peak=peak)
    new = new_tissue(normal, baseline, brain, follow)
    labels = step("preexisting", drop_preexisting_components(labels, baseline, brain, new=new))
    labels = step("diffuse", drop_diffuse_components(labels, baseline, follow, brain, normal=normal, peak=peak))
    labels = step("rim", drop_rim_components(labels, brain, zooms, psf_fwhm_mm=psf_mm))
    if extent_mm <= 0:
        return labels
    return step("extent", grow_to_extent(labels, baseline, follow, brain, new=new, peak=peak, zooms=zooms,
                                         reach_mm=extent_mm))


def relabel_by_size(labels: np.ndarray, min_size: int = 1) -> np.ndarray:
    """Drop components smaller than ``min_size`` voxels and renumber the rest by size.

    Label 1 is the largest component; ties are broken by the smaller original label (so by
    position in C order of the first voxel, as cc3d numbers in scan order). Deterministic.

    Parameters
    ----------
    labels : ndarray of int
        Label image, 0 for background.
    min_size : int
        Components with fewer voxels are removed (set to 0).

    Returns
    -------
    ndarray of int32
        Labels 1..n, n the number of components kept.
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    inside = np.flatnonzero(flat)  # only labelled voxels: a few of the grid's millions
    ids = flat[inside].astype(np.int64, copy=False)
    sizes = np.bincount(ids, minlength=1)
    sizes[0] = 0
    present = np.flatnonzero(sizes >= max(int(min_size), 1))
    # Sort by size descending, then by original label ascending (stable on the label order).
    order = present[np.lexsort((present, -sizes[present]))]
    lookup = np.zeros(sizes.size, dtype=np.int32)
    lookup[order] = np.arange(1, order.size + 1, dtype=np.int32)
    out = np.zeros(labels.shape, dtype=np.int32)
    out.ravel()[inside] = lookup[ids]
    return out


def change_components(
    probability: np.ndarray,
    threshold: float = 0.1,
    min_size: int = 20,
    connectivity: int = 26,
    brain_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Threshold a change probability map and label its connected components.

    A voxel is a change when ``probability > threshold`` (strictly, the paper's ``y~ > kappa``)
    and, if ``brain_mask`` is given, it lies inside the brain. Components with fewer than
    ``min_size`` voxels are dropped (the paper keeps blobs of size >= 20 or >= 100).

    Labels are renumbered 1..n **by size, largest first**; equal sizes are ordered by the
    position of their first voxel in C (i, j, k) order. So label 1 is always the largest
    change, and the same input always gives the same labels.

    Parameters
    ----------
    probability : ndarray
        3D change probability map (NaN counts as no change).
    threshold : float
        kappa; voxels strictly above it are foreground (default 0.1 as in the paper).
    min_size : int
        Minimum number of voxels of a kept component (default 20).
    connectivity : {6, 18, 26}
        Voxel neighbourhood of the connected components (default 26).
    brain_mask : ndarray, optional
        3D mask of the same shape; voxels outside (``<= 0``) are never changes.

    Returns
    -------
    ndarray of int32
        Label image, 0 for background and 1..n for the kept components.
    """
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim != 3:
        raise ValueError(f"the probability map must be 3D, got shape {probability.shape}")
    if not np.isfinite(threshold):
        raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    foreground = probability > threshold  # NaN > t is False
    if brain_mask is not None:
        brain_mask = np.asarray(brain_mask)
        if brain_mask.shape != probability.shape:
            raise ValueError(
                f"the brain mask shape {brain_mask.shape} differs from the probability map's "
                f"{probability.shape}; resample both onto the same grid"
            )
        foreground &= brain_mask > 0
    labels, _ = label_connected_components(foreground, connectivity=connectivity)
    return relabel_by_size(labels, min_size=min_size)


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in VALID_CONNECTIVITY:
        raise ValueError(f"connectivity must be one of {VALID_CONNECTIVITY}, got {connectivity!r}")
