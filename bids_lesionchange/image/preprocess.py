"""The preprocessing steps of a session pair, file in and file out (each called by one interface).

Order, and why:

1. :func:`check_pair` loads both FLAIRs and refuses bad inputs before any work is done.
2. :func:`followup_to_common` resamples the follow-up (once) onto the common grid: RAS,
   ``resolution`` mm isotropic, covering its field of view; its transform is the identity.
3. :func:`skullstrip_followup` masks the brain of the follow-up on that grid. One mask is
   used for both sessions (two masks differ at the edge of the brain, which reads as change);
   stripping only the follow-up also runs HD-BET once per pair instead of twice.
4. :func:`n4_correct_file` removes the follow-up's bias field inside the mask.
5. :func:`coarse_register_file` aligns the raw baseline to the follow-up at the two coarse
   pyramid levels (alongside step 4: a coarse fit does not need the bias removed); :func:`mask_to_native_file` carries the brain mask onto the
   baseline's own grid, where :func:`n4_correct_file` corrects the baseline before any
   interpolation. Bias fields that differ between sessions otherwise bias the mutual
   information (on the phantom: 0.8 degrees of error with ~15 % bias, 0.05 without).
6. :func:`register_baseline_file` refines the rigid transform between the corrected images,
   resamples the corrected baseline onto the common grid once (cubic spline, composing the
   canonical resampling with the rigid transform), checks the alignment (normalised
   cross-correlation in the brain) and restricts the mask to voxels the baseline covers.
7. :func:`match_resolution_file` smooths the sharper session to the resolution of the coarser one
   (a 3D baseline against a thick-slice 2D follow-up, say; see
   :mod:`bids_lesionchange.image.resolution`); a same-protocol pair is left untouched.
8. :func:`normalise_file` maps each session to [0, 1] (the paper's 0th-99th percentiles by
   default, or the white-matter peak at 0.5: the model's choice); :func:`quality_file` writes the QC measures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_lesionchange.atomic import atomic_write_json
from bids_lesionchange.errors import InputError
from bids_lesionchange.image import plausibility
from bids_lesionchange.image import register as reg
from bids_lesionchange.image.grid import common_grid, resample_to_grid
from bids_lesionchange.image.intensity import n4_bias_correct, normalise, parenchyma_mask
from bids_lesionchange.image.io import load_flair, qform_sform_note, save_image
from bids_lesionchange.image.skullstrip import (BRAIN_EXTRACTED_ML, brain_extracted_support, check_brain_mask,
                                                foreground_mask, nonzero_brain_mask, resolve_skull_strip_method,
                                                run_hdbet, threshold_brain_mask)
from bids_lesionchange.image.transforms import read_xfm, to_native, write_xfm

LOGGER = logging.getLogger("bids_lesionchange.image.preprocess")

N4_SHRINK_MM = 4.0


def _zooms(img) -> np.ndarray:
    return np.asarray(img.header.get_zooms()[:3], dtype=float)


def _load_mask(path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj) > 0


def check_pair(baseline, followup, *, threads: int = 1) -> dict:
    """Load both FLAIRs and raise InputError for the first bad one; return their coverage.

    Step ``load``: a file that is not a readable 3D image (:func:`.io.load_flair`); step
    ``check_inputs``: slices thicker than :data:`.plausibility.MAX_VOXEL_MM`, standardised
    (e.g. z-scored) intensities (:func:`.plausibility.check_standardised`), or a field of view
    that does not hold the whole head (:func:`.plausibility.check_coverage`), or the same file
    twice, or two files with the same voxels on the same grid (a copy: two scans of a head never
    are, their noise differs, and a copy would give a plausible "no change"). With ``threads`` > 1
    the two sessions are checked at the same time (scipy's morphology releases the GIL); the
    baseline's error is still the one raised when both are bad.

    Returns
    -------
    dict
        ``{"baseline": ..., "followup": ...}``: each session's field-of-view measures and the
        volume of its foreground (head, or brain if brain-extracted), ``foreground_ml``.
    """
    def one(path):
        img = load_flair(path, step="load")
        zooms = _zooms(img)
        plausibility.check_voxel_size(zooms, path)
        data = np.asanyarray(img.dataobj)
        plausibility.check_standardised(data, path)
        head = foreground_mask(data, zooms)
        measures = plausibility.check_coverage(head, zooms, path)
        measures["foreground_ml"] = round(float(head.sum()) * float(np.prod(zooms)) / 1000.0, 1)
        return measures, (data, img.affine)

    sessions = (("baseline", baseline), ("followup", followup))
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(one, path) for _, path in sessions]
        checked = [future.result() for future in futures]  # the baseline's exception first
    else:
        checked = [one(path) for _, path in sessions]
    coverage = {key: measures for (key, _), (measures, _) in zip(sessions, checked)}
    grids = {key: grid for (key, _), (_, grid) in zip(sessions, checked)}
    if Path(baseline).resolve() == Path(followup).resolve():
        raise InputError(baseline, "load", "the baseline and follow-up are the same file; "
                         "give the FLAIRs of two different sessions")
    (b_data, b_affine), (f_data, f_affine) = grids["baseline"], grids["followup"]
    if (b_data.shape == f_data.shape and np.allclose(b_affine, f_affine, atol=1e-4)
            and np.array_equal(b_data, f_data)):
        raise InputError(followup, "check_inputs", f"it holds the same voxels as the baseline {Path(baseline).name} "
                         "(one file is a copy of the other: two scans never are identical); "
                         "put each session's own FLAIR in its folder")
    return coverage


def followup_to_common(in_file, out_file, out_xfm, *, resolution: float = 1.0, threads: int = 1):
    """Resample the follow-up onto the common grid (cubic, once; on ``threads`` threads) and write its identity xfm.

    Returns
    -------
    tuple of Path
        ``(out_file, out_xfm)``.
    """
    img = load_flair(in_file, step="common_grid")
    shape, affine = common_grid(img.shape, img.affine, resolution)
    data = resample_to_grid(np.asanyarray(img.dataobj), img.affine, shape, affine, order=3, threads=threads)
    return save_image(data, affine, out_file), write_xfm(np.eye(4), out_xfm, source="follow-up")


def could_be_brain_extracted(foreground_ml: float | None) -> bool:
    """False when a foreground volume (ml, or None: unknown) is far outside a brain's.

    With a 25 % margin around :data:`.skullstrip.BRAIN_EXTRACTED_ML`: the volume is measured on
    the native grid, the brain-extracted test on the common one.
    """
    if foreground_ml is None:
        return True
    low, high = BRAIN_EXTRACTED_ML
    return 0.75 * low <= float(foreground_ml) <= 1.25 * high


def skullstrip_followup(in_file, out_mask, *, method: str = "auto", hdbet_mode: str = "fast",
                        device: str = "cpu", nthreads: int = 1, source_file=None,
                        return_method: bool = False, hdbet_precision: str = "auto",
                        foreground_ml: float | None = None, hdbet_crop: bool = True):
    """Write the brain mask (uint8) of the common-grid follow-up with ``method``.

    ``source_file`` (the user's follow-up) is named in errors. See
    :mod:`bids_lesionchange.image.skullstrip` for the methods; with ``auto`` an input that is
    already brain-extracted keeps its own support (:func:`.skullstrip.brain_extracted_support`).
    ``hdbet_precision`` and ``hdbet_crop`` are HD-BET's (:func:`.skullstrip.run_hdbet`). ``foreground_ml``, the
    follow-up's foreground volume from :func:`check_pair`, skips that test when it is far outside
    a brain's volume (a skull-on head: the test's foreground mask cost 1-2 s at 1 mm).
    Returns the mask's path, or
    ``(path, method that ran)`` with ``return_method`` (HD-BET: ``hdbet (float32)`` or
    ``hdbet (bfloat16)``).
    """
    source_file = source_file or in_file
    requested = method
    try:
        method = resolve_skull_strip_method(method, hdbet_mode)
    except ValueError as err:
        raise InputError(source_file, "skullstrip", str(err)) from None
    img = nib.load(str(in_file))
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    support = None
    if requested == "auto" and could_be_brain_extracted(foreground_ml):
        support = brain_extracted_support(data, _zooms(img))
    if support is not None:
        # Already brain-extracted (how public MS data are distributed): its own support is the
        # mask; HD-BET on such images can miss most of the brain.
        LOGGER.info("skull stripping: %s is already brain-extracted; its support is the brain mask "
                    "(--skull-strip hdbet forces HD-BET)", Path(source_file).name)
        mask, method = support, "none (input already brain-extracted)"
    elif method == "hdbet":
        _, precision = run_hdbet(in_file, out_mask, mode=hdbet_mode, device=device, nthreads=nthreads,
                                 precision=hdbet_precision, return_precision=True, crop=hdbet_crop)
        method = f"hdbet ({precision})"
        mask = _load_mask(out_mask)
    elif method == "threshold":
        mask = threshold_brain_mask(data, _zooms(img))
    else:
        mask = nonzero_brain_mask(data, _zooms(img))
    mask = check_brain_mask(mask, _zooms(img), source_file, step="skullstrip")
    LOGGER.info("skull stripping (%s): %.0f ml", method, mask.sum() * np.prod(_zooms(img)) / 1e3)
    path = save_image(mask, img.affine, out_mask, dtype=np.uint8)
    return (path, method) if return_method else path


def n4_correct_file(in_file, mask_file, out_file, *, shrink_factor: int | None = None,
                    nthreads: int = 1, source_file=None) -> Path:
    """Write ``in_file`` corrected for its bias field, fitted inside ``mask_file`` (same grid).

    ``shrink_factor=None`` shrinks to ~4 mm voxels (4 at 1 mm, as the issue measured: ~13 s).
    """
    img = load_flair(in_file, step="n4_correct")
    mask = _load_mask(mask_file)
    if not mask.any():
        raise InputError(source_file or in_file, "n4_correct", "the brain mask on this image's "
                         "grid is empty (the registration put the brain outside the image); "
                         "check that both sessions show the same head")
    zooms = _zooms(img)
    if shrink_factor is None:
        shrink_factor = max(1, int(round(N4_SHRINK_MM / float(zooms.min()))))
    corrected = n4_bias_correct(np.asanyarray(img.dataobj, dtype=np.float32), mask, zooms,
                                shrink_factor=shrink_factor, nthreads=nthreads)
    return save_image(corrected, img.affine, out_file)


def coarse_register_file(fixed_file, mask_file, moving_file, out_xfm, *, nthreads: int = 1) -> Path:
    """Write a coarse native-to-common transform of ``moving_file`` (pyramid levels 4 and 2).

    ``fixed_file`` may be the follow-up before N4: a coarse fit needs no bias correction, and
    the workflow then runs this step alongside the follow-up's N4.
    """
    fixed = nib.load(str(fixed_file))
    moving = load_flair(moving_file, step="rigid_reg")
    pull = reg.rigid_register(np.asanyarray(fixed.dataobj), fixed.affine,
                              np.asanyarray(moving.dataobj), moving.affine, _load_mask(mask_file),
                              level_iters=(200, 100), sigmas=(3.0, 1.0), factors=(4, 2),
                              n_samples=50_000, nthreads=nthreads)
    return write_xfm(np.linalg.inv(pull), out_xfm, source="baseline")


def mask_to_native_file(mask_file, native_file, xfm_file, out_file, *, dilate_mm: float = 3.0) -> Path:
    """Write the common-space mask on a session's native grid, dilated by ``dilate_mm``.

    The dilation absorbs the error of a coarse transform; it is only used to fit a bias field.
    """
    native = nib.load(str(native_file))
    mask = np.asanyarray(to_native(mask_file, native, xfm_file, order=0).dataobj) > 0
    zooms = _zooms(native)
    radius = np.maximum(np.round(dilate_mm / zooms).astype(int), 0)
    if radius.max() > 0 and mask.any():
        grids = np.meshgrid(*[np.arange(-r, r + 1) * z for r, z in zip(radius, zooms)], indexing="ij")
        ball = sum(g ** 2 for g in grids) <= dilate_mm ** 2 + 1e-6
        mask = ndimage.binary_dilation(mask, ball)
    return save_image(mask, native.affine, out_file, dtype=np.uint8)


def register_baseline_file(fixed_file, mask_file, moving_file, init_xfm, out_file, out_xfm,
                           out_mask, out_json, *, source_file=None, min_ncc: float = reg.MIN_BRAIN_NCC,
                           nthreads: int = 1, hdbet: dict | None = None, followup_source=None,
                           out_before=None):
    """Refine the rigid alignment, resample the baseline once and check the result.

    Parameters
    ----------
    fixed_file, mask_file
        The bias-corrected follow-up on the common grid and its brain mask.
    moving_file
        The bias-corrected baseline on its native grid.
    init_xfm
        The coarse native-to-common transform to start from.
    out_file, out_xfm, out_mask, out_json
        The baseline on the common grid, its native-to-common transform, the brain mask
        restricted to the voxels the baseline covers (inside its field of view and nonzero),
        and the registration measures (JSON).
    source_file
        The user's baseline FLAIR, named in errors.
    min_ncc : float
        Below this brain NCC after alignment, registration has failed (InputError).
    hdbet : dict or None
        When the follow-up's mask came from HD-BET, its settings (``mode``, ``precision``,
        ``device``): a mask too large for a brain is then checked against the baseline's own
        HD-BET mask (:func:`second_opinion_mask`). ``followup_source`` (the user's follow-up) is
        named in the warning.
    out_before
        Where to write the baseline placed on the common grid by its scanner coordinates only
        (linear; the "before" of the registration reportlet), or None. The resamplings run on
        ``nthreads`` threads.

    Returns
    -------
    dict
        The registration measures (also written to ``out_json``), with ``mask_repair`` when the
        mask was checked against the baseline's.
    """
    source_file = source_file or moving_file
    fixed = nib.load(str(fixed_file))
    moving = nib.load(str(moving_file))
    fixed_data = np.asanyarray(fixed.dataobj, dtype=np.float32)
    moving_data = np.asanyarray(moving.dataobj, dtype=np.float32)
    mask = _load_mask(mask_file)
    pull = reg.rigid_register(fixed_data, fixed.affine, moving_data, moving.affine, mask,
                              level_iters=(100, 50), sigmas=(1.0, 0.0), factors=(2, 1),
                              n_samples=50_000, starting_affine=np.linalg.inv(read_xfm(init_xfm)),
                              nthreads=nthreads)
    moved = resample_to_grid(moving_data, moving.affine, fixed.shape, fixed.affine, pull, order=3,
                             threads=nthreads)
    covered = resample_to_grid((np.abs(moving_data) > 0).astype(np.uint8), moving.affine,
                               fixed.shape, fixed.affine, pull, order=0, threads=nthreads) > 0
    ncc = reg.normalised_cross_correlation(moved, fixed_data, mask)
    mi, nmi = reg.mutual_information(moved, fixed_data, mask)
    before = resample_to_grid(moving_data, moving.affine, fixed.shape, fixed.affine, None, order=1,
                              threads=nthreads)
    if out_before is not None:
        save_image(before, fixed.affine, out_before)
    xfm = np.linalg.inv(pull)
    angle, shift = reg.rigid_error(xfm, np.eye(4), centre=_centroid(mask, fixed.affine))
    measures = {
        "ncc_brain": ncc, "ncc_brain_before": reg.normalised_cross_correlation(before, fixed_data, mask),
        "mutual_information_bits": mi, "normalised_mutual_information": nmi,
        "motion_rotation_deg": angle, "motion_translation_mm": shift, "min_ncc": min_ncc,
        "registration_failed": reg.registration_failed(ncc, min_ncc),
        "baseline_coverage": float(covered[mask].mean()) if mask.any() else 0.0,
    }
    atomic_write_json(out_json, measures)
    if measures["registration_failed"]:
        raise InputError(source_file, "rigid_reg", f"the baseline could not be aligned to the "
                         f"follow-up (brain correlation {ncc:.2f} < {min_ncc}): check that both "
                         "files are FLAIRs (not T1w or T2w) of the same subject's head and cover the whole brain")
    final_mask = mask & covered
    if final_mask.sum() < 0.5 * mask.sum():
        raise InputError(source_file, "rigid_reg", f"the baseline covers only "
                         f"{100 * final_mask.sum() / mask.sum():.0f} % of the follow-up's brain; "
                         "give scans that both cover the whole brain")
    affine = fixed.affine
    save_image(moved, affine, out_file)
    if hdbet is not None:
        scratch = Path(out_mask).with_name("baseline_hdbet_mask.nii.gz")
        final_mask, repair = second_opinion_mask(final_mask, out_file, scratch, _zooms(fixed), hdbet=hdbet,
                                                 nthreads=nthreads, followup_source=followup_source or fixed_file)
        if repair is not None:
            measures["mask_repair"] = repair
            atomic_write_json(out_json, measures)
    save_image(final_mask, affine, out_mask, dtype=np.uint8)
    write_xfm(xfm, out_xfm, source="baseline")
    return measures


def second_opinion_mask(mask: np.ndarray, baseline_file, scratch_mask, zooms, *, hdbet: dict, nthreads: int = 1,
                        followup_source=None) -> tuple[np.ndarray, dict | None]:
    """Check a brain mask too large for a brain against the baseline's own HD-BET mask.

    One mask, made on the follow-up, serves both sessions. When it holds more than
    :data:`.plausibility.CHECK_BRAIN_MASK_ML` (larger than all but the largest adult brains: HD-BET
    may have taken in face or neck, where two scans differ and a "change" is not a lesion), HD-BET runs on the
    registered baseline (``baseline_file``, the same grid) and the pair keeps the voxels that both
    masks call brain. Skull stripping failed on one session's image more often than on both (on
    simulated thick-slice rescans); where both took in the same tissue, the intersection keeps it
    and the plausibility flag stays. The intersection is refused (the mask kept as it was) when the
    baseline's mask is not a brain (:func:`.skullstrip.check_brain_mask`) or when it would keep
    less than half of the follow-up's mask.

    Returns ``(mask, repair)``: ``repair`` is None when the mask was plausible (HD-BET not run),
    else the volumes (ml) and whether the intersection was used.
    """
    voxel_ml = float(np.prod(zooms)) / 1000.0
    volume = float(mask.sum()) * voxel_ml
    if volume <= plausibility.CHECK_BRAIN_MASK_ML:
        return mask, None
    name = Path(followup_source).name if followup_source else "the follow-up"
    LOGGER.info("the brain mask of %s holds %.0f ml (checked above %.0f ml): skull-stripping the registered "
                "baseline to check it", name, volume, plausibility.CHECK_BRAIN_MASK_ML)
    try:
        run_hdbet(baseline_file, scratch_mask, mode=hdbet.get("mode", "fast"), device=hdbet.get("device", "cpu"),
                  nthreads=nthreads, precision=hdbet.get("precision", "auto"), crop=hdbet.get("crop", True))
    except InputError as err:  # a check, not a step the pair needs: its failure keeps the mask as it was
        LOGGER.warning("the brain mask of %s holds %.0f ml, and HD-BET failed on the baseline (%s): the mask is "
                       "kept as it is", name, volume, err)
        return mask, {"followup_mask_ml": round(volume, 1), "check_ml": plausibility.CHECK_BRAIN_MASK_ML,
                      "max_ml": plausibility.MAX_BRAIN_MASK_ML, "used": False, "error": str(err)}
    other = _load_mask(scratch_mask)
    repair = {"followup_mask_ml": round(volume, 1), "baseline_mask_ml": round(float(other.sum()) * voxel_ml, 1),
              "check_ml": plausibility.CHECK_BRAIN_MASK_ML, "max_ml": plausibility.MAX_BRAIN_MASK_ML}
    both = mask & other
    repair["intersection_ml"] = round(float(both.sum()) * voxel_ml, 1)
    try:
        check_brain_mask(other, zooms, baseline_file, step="rigid_reg")
        usable = both.sum() >= 0.5 * mask.sum()
    except InputError:
        usable = False
    repair["used"] = bool(usable)
    if not usable:
        LOGGER.warning("the brain mask of %s holds %.0f ml, but the baseline's own mask (%.0f ml) would keep "
                       "only %.0f ml of it: the mask is kept as it is", name, volume, repair["baseline_mask_ml"],
                       repair["intersection_ml"])
        return mask, repair
    LOGGER.warning("the brain mask of %s held %.0f ml, more than all but the largest adult brains (checked above "
                   "%.0f ml): the skull strip may have taken in tissue outside the brain. The baseline, "
                   "skull-stripped on the same grid, gave %.0f ml; the pair uses the %.0f ml that both masks call "
                   "brain (check the brain mask figure in the report)", name, volume,
                   plausibility.CHECK_BRAIN_MASK_ML, repair["baseline_mask_ml"], repair["intersection_ml"])
    return both, repair


def _centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.zeros(3)
    centre = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ centre + affine[:3, 3]


def match_resolution_file(baseline_file, followup_file, baseline_native, followup_native, baseline_xfm,
                          followup_xfm, out_baseline, out_followup, out_json) -> dict:
    """Smooth the sharper session to the coarser one's resolution; write both and a JSON report.

    ``baseline_file`` and ``followup_file`` are on the common grid; the native FLAIRs and their
    native-to-common transforms give each session's acquisition resolution. Returns the report:
    each session's FWHM along the grid axes and the Gaussian sigma (grid voxels) it received.
    """
    from bids_lesionchange.image.resolution import effective_fwhm, matching_sigmas, smooth

    base_img = nib.load(str(baseline_file))
    follow_img = nib.load(str(followup_file))
    grid = follow_img.affine
    fwhm_b = effective_fwhm(nib.load(str(baseline_native)).affine, read_xfm(baseline_xfm), grid)
    fwhm_f = effective_fwhm(nib.load(str(followup_native)).affine, read_xfm(followup_xfm), grid)
    sigma_b, sigma_f = matching_sigmas(fwhm_b, fwhm_f, _zooms(follow_img))
    save_image(smooth(np.asanyarray(base_img.dataobj), sigma_b), base_img.affine, out_baseline)
    save_image(smooth(np.asanyarray(follow_img.dataobj), sigma_f), follow_img.affine, out_followup)
    report = {
        "fwhm_mm": {"baseline": [round(float(v), 3) for v in fwhm_b],
                    "followup": [round(float(v), 3) for v in fwhm_f]},
        "smoothing_sigma_voxels": {"baseline": [round(float(v), 3) for v in sigma_b],
                                   "followup": [round(float(v), 3) for v in sigma_f]},
        "smoothed": [name for name, s in (("baseline", sigma_b), ("followup", sigma_f)) if np.any(s > 0)],
    }
    if report["smoothed"]:
        LOGGER.info("resolution matching: smoothed the %s (sigma %s voxels)", " and ".join(report["smoothed"]),
                    report["smoothing_sigma_voxels"])
    atomic_write_json(out_json, report)
    return report


def normalise_file(in_file, mask_file, out_file, *, method: str = "percentile", source_file=None) -> Path:
    """Write ``in_file`` normalised to [0, 1] in the brain, 0 outside.

    ``method``: ``wm-peak`` (white-matter peak at 0.5, see :func:`.intensity.normalise_wm_peak`)
    or ``percentile`` (the paper's 0th-99th percentiles). A model is trained on one of them and
    records it; inference uses the model's.
    """
    img = nib.load(str(in_file))
    try:
        data = normalise(np.asanyarray(img.dataobj, dtype=np.float32), _load_mask(mask_file), method)
    except ValueError as err:
        raise InputError(source_file or in_file, "normalise", f"{err}; check the image") from None
    return save_image(data, img.affine, out_file)


def parenchyma_volume_ml(data: np.ndarray, mask: np.ndarray, zooms) -> float:
    """Return the volume (ml) of brain tissue: mask voxels above the Otsu threshold of the mask.

    In FLAIR the CSF (ventricles, sulci) is dark, so this is the parenchyma inside the shared
    mask (:func:`.intensity.parenchyma_mask`); it differs between sessions (atrophy,
    misregistration) while the mask does not. 0 when the mask holds no threshold.
    """
    parenchyma = parenchyma_mask(data, mask)
    return 0.0 if parenchyma is None else float(parenchyma.sum() * np.prod(zooms) / 1000.0)


def quality_file(baseline_file, followup_file, mask_file, registration_json, out_json,
                 *, skull_strip: str = "", resolution_json=None, baseline_source=None,
                 followup_source=None, unnormalised=(None, None), unmatched=(None, None)) -> dict:
    """Write the QC measures of a preprocessed pair as JSON and return them.

    Keys: ``brain_mask_volume_ml``, ``brain_volume_ml`` ({baseline, followup}: parenchyma,
    see :func:`parenchyma_volume_ml`), ``ncc_brain`` and ``mutual_information_bits`` of the
    normalised images inside the brain, the registration measures (``registration`` block,
    on bias-corrected images), ``registration_failed`` and the rule that sets it, and the
    resolution matching (``resolution_matching`` block) when ``resolution_json`` is given, and
    the ``plausibility`` block (:mod:`bids_lesionchange.image.plausibility`): each session's
    FLAIR-likeness (at its own resolution, on the images before resolution matching when
    ``unmatched`` gives them: the pair's registered, bias-corrected sessions on the common grid;
    else on the matched images at the coarser session's resolution), the same-person measures,
    the persistence of the baseline's lesions (:func:`.plausibility.lesion_persistence`, on the images before normalisation when
    ``unnormalised`` gives them: the 99th-percentile normalisation clips lesions) and ``flags``, one sentence per failed check naming
    ``baseline_source`` or ``followup_source`` (the user's files; default: the files given), and
    one per source whose qform and sform disagree (:func:`.io.qform_sform_note`).
    """
    baseline = nib.load(str(baseline_file))
    followup = nib.load(str(followup_file))
    mask = _load_mask(mask_file)
    zooms = _zooms(followup)
    b = np.asanyarray(baseline.dataobj, dtype=np.float32)
    f = np.asanyarray(followup.dataobj, dtype=np.float32)
    registration = json.loads(Path(registration_json).read_text())
    mi, nmi = reg.mutual_information(b, f, mask)
    volumes = {"baseline": parenchyma_volume_ml(b, mask, zooms), "followup": parenchyma_volume_ml(f, mask, zooms)}
    matching = json.loads(Path(resolution_json).read_text()) if resolution_json else {}
    depth = plausibility.mask_depth_mm(mask, zooms)  # one mask for both sessions
    if None in unmatched:
        # after resolution matching both sessions have the coarser one's resolution along each axis
        fwhm = np.max([matching.get("fwhm_mm", {}).get(key, zooms) for key in ("baseline", "followup")], axis=0)
        judged = {"baseline": (b, fwhm), "followup": (f, fwhm)}
    else:
        # Each session at its own resolution, before matching: a 1 mm FLAIR smoothed to its
        # partner's 4-5 mm slices merges cortex and CSF and scored like a T1w (+0.11, flagged).
        judged = {key: (np.asanyarray(nib.load(str(path)).dataobj, dtype=np.float32),
                        matching.get("fwhm_mm", {}).get(key, zooms))
                  for key, path in zip(("baseline", "followup"), unmatched)}
    contrast = {key: plausibility.contrast_profile(image, mask, zooms, resolution_mm=fwhm, depth_mm=depth)
                for key, (image, fwhm) in judged.items()}
    same_person = plausibility.same_person_measures(registration["ncc_brain"], volumes["baseline"],
                                                    volumes["followup"])
    raw = [b, f] if None in unnormalised else [np.asanyarray(nib.load(str(path)).dataobj, dtype=np.float32)
                                               for path in unnormalised]
    persistence = plausibility.lesion_persistence(*raw, mask, zooms)
    # before normalisation, which clips at zero (the resampling before it never goes below the source's minimum)
    zero = ({key: plausibility.intensity_zero(image, mask) for key, image in zip(("baseline", "followup"), raw)}
            if None not in unnormalised else None)
    mask_ml = float(mask.sum() * np.prod(zooms) / 1000.0)
    brain_mask = plausibility.brain_mask_measures(mask_ml)
    if registration.get("mask_repair"):  # the follow-up's mask was too large and checked against the baseline's
        brain_mask["repair"] = registration["mask_repair"]
    flags = plausibility.input_flags(contrast["baseline"], contrast["followup"], same_person,
                                     baseline_file=baseline_source or baseline_file,
                                     followup_file=followup_source or followup_file, persistence=persistence,
                                     brain_mask=brain_mask, zero=zero)
    for flag in flags:
        LOGGER.warning("%s", flag)
    # header flags: already logged when the input was first checked (check_inputs)
    flags += [note for note in map(qform_sform_note, (baseline_source or baseline_file,
                                                      followup_source or followup_file)) if note]
    measures = {
        "skull_strip": skull_strip,
        "resolution_mm": float(zooms[0]),
        "brain_mask_volume_ml": mask_ml,
        "brain_volume_ml": volumes,
        "ncc_brain": reg.normalised_cross_correlation(b, f, mask),
        "mutual_information_bits": mi,
        "normalised_mutual_information": nmi,
        "registration": registration,
        "registration_failed": bool(registration["registration_failed"]),
        "registration_failed_rule": f"brain NCC after alignment (bias-corrected images) < "
                                    f"{registration['min_ncc']}",
        "plausibility": {"baseline_contrast": contrast["baseline"], "followup_contrast": contrast["followup"],
                         "same_person": same_person, "lesion_persistence": persistence, "brain_mask": brain_mask,
                         "intensity_zero": zero, "flags": flags},
    }
    if resolution_json:
        measures["resolution_matching"] = matching
    atomic_write_json(out_json, measures)
    return measures
