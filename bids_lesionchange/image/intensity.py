"""N4 bias-field correction inside the brain and normalisation of intensities to [0, 1]."""

from __future__ import annotations

import logging

import numpy as np

LOGGER = logging.getLogger("bids_lesionchange.image.intensity")


def n4_bias_correct(data: np.ndarray, mask: np.ndarray, zooms, *, shrink_factor: int = 4,
                    iterations=(50, 50, 50, 50), spline_distance_mm: float = 200.0,
                    nthreads: int = 1) -> np.ndarray:
    """Return ``data`` divided by its N4 bias field, estimated inside ``mask`` (Tustison 2010).

    The field is fitted on images shrunk by ``shrink_factor`` (full resolution with default
    settings takes over 9 minutes for a 1 mm head, shrink 4 about 13 s and removes most of the
    bias) and evaluated at full resolution. Values are clipped to a small positive floor first
    because N4 works on the logarithm; voxels at or below that floor are returned unchanged
    (zeros stay zero). The correction is applied to every voxel, so the image
    outside the mask is corrected by the extrapolated field.

    Parameters
    ----------
    data : ndarray (3D)
    mask : ndarray of bool (3D)
        Where the field is fitted (the brain).
    zooms : sequence of 3 float
        Voxel size in mm (N4's B-spline is placed in physical space).
    shrink_factor : int
        Subsampling of the fit.
    iterations : sequence of int
        Iterations per fitting level (one level per entry).
    spline_distance_mm : float
        Span of the initial B-spline mesh (ANTs ``-b [200]``, its default): each fitting
        level halves it, so four levels end at ~25 mm, smooth enough not to take anatomy
        (a 50 mm start, ending at ~6 mm, removed the phantom's grey/white texture).
    nthreads : int
        SimpleITK threads.

    Returns
    -------
    ndarray (float32)
    """
    import SimpleITK as sitk

    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    inside = data[mask]
    floor = max(float(np.percentile(inside, 99)) * 1e-3, 1e-6) if inside.size else 1e-6
    positive = np.maximum(data, floor)

    def to_sitk(array, pixel_type):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        image.SetSpacing([float(z) for z in zooms])
        return sitk.Cast(image, pixel_type)

    image = to_sitk(positive, sitk.sitkFloat32)
    mask_image = to_sitk(mask.astype(np.uint8), sitk.sitkUInt8)
    small = sitk.Shrink(image, [int(shrink_factor)] * 3)
    small_mask = sitk.Shrink(mask_image, [int(shrink_factor)] * 3)
    if not np.any(sitk.GetArrayViewFromImage(small_mask)):
        small, small_mask = image, mask_image
    extent = np.asarray(small.GetSize()) * np.asarray(small.GetSpacing())
    control_points = [max(4, int(np.ceil(e / spline_distance_mm)) + 3) for e in extent]

    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetNumberOfThreads(max(1, int(nthreads)))
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetNumberOfControlPoints(control_points)
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0))
    # Zero and negative voxels (background of a brain-extracted image) stay as they were.
    corrected = np.where(data > floor, positive / field, data)
    return corrected.astype(np.float32)


def normalise_intensity(data: np.ndarray, mask: np.ndarray, *, lower_percentile: float = 0.0,
                        upper_percentile: float = 99.0) -> np.ndarray:
    """Return intensities mapped to [0, 1] between two percentiles inside the brain.

    out = clip((x - p_lower) / (p_upper - p_lower), 0, 1) inside ``mask``, 0 outside (the
    paper: 0th and 99th percentiles). Raises ValueError when the brain has one value.
    """
    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    low, high = np.percentile(data[mask], [lower_percentile, upper_percentile])
    if not high > low:
        raise ValueError(f"the brain's intensities are constant ({low}); nothing to normalise")
    out = np.clip((data - low) / (high - low), 0.0, 1.0)
    out[~mask] = 0.0
    return out.astype(np.float32)


INTENSITY_NORMALISATIONS = ("wm-peak", "percentile")
#: White matter lands here with ``wm-peak``: lesions (1.3-2x white matter on FLAIR) stay below 1.
WM_PEAK_TARGET = 0.5
#: Intensity, as a multiple of a FLAIR's white-matter peak (:func:`white_matter_peak`), above
#: which tissue counts as hyperintense: above the grey matter (1.05-1.15 x white matter on
#: FLAIR), where lesions start (1.3-2 x).
HYPERINTENSE_LEVEL = 1.15


def white_matter_peak(data: np.ndarray, mask: np.ndarray) -> float:
    """The white-matter intensity of a FLAIR brain: the histogram mode above the Otsu threshold.

    Inside the brain, FLAIR's dark CSF lies below the Otsu threshold; above it, white matter is
    the largest class (grey matter is close, lesions are few), so the mode of the smoothed
    histogram of those voxels is the white-matter peak. Unlike a high percentile it does not
    move with the lesion load or with a bright tail (new lesions, flow artefacts, fat).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    values = np.asarray(data, dtype=np.float32)[np.asarray(mask, dtype=bool)]
    values = values[np.isfinite(values)]
    if values.size < 16 or values.min() == values.max():
        raise ValueError("the brain has too few distinct intensities to find its white-matter peak")
    tissue = values[values > threshold_otsu(values)]
    low, high = float(tissue.min()), float(np.percentile(tissue, 99.5))
    if not high > low:
        return high
    hist, edges = np.histogram(tissue, bins=256, range=(low, high))
    hist = ndimage.gaussian_filter1d(hist.astype(np.float64), 3.0)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return float(centres[int(np.argmax(hist))])


def normalise_wm_peak(data: np.ndarray, mask: np.ndarray, *, target: float = WM_PEAK_TARGET) -> np.ndarray:
    """Return intensities scaled so that the white-matter peak lands at ``target``, clipped to [0, 1].

    ``out = clip(x * target / wm_peak, 0, 1)`` inside ``mask``, 0 outside. One scale factor per
    image (FLAIR's zero is the scanner's zero), set by a landmark that two scanners share, so
    lesions (1.3-2x white matter) are not clipped at 1 as with the 99th percentile, and the
    scale does not depend on how many lesions the scan holds. Raises ValueError when the brain
    has no usable intensities.
    """
    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    peak = white_matter_peak(data, mask)
    if not peak > 0:
        raise ValueError(f"the white-matter peak is {peak}; the image has no positive brain intensities")
    out = np.clip(data * (target / peak), 0.0, 1.0)
    out[~mask] = 0.0
    return out.astype(np.float32)


def normalise(data: np.ndarray, mask: np.ndarray, method: str = "percentile") -> np.ndarray:
    """Normalise a brain to [0, 1] with ``method``: ``wm-peak`` or ``percentile`` (the paper's 0-99)."""
    if method == "wm-peak":
        return normalise_wm_peak(data, mask)
    if method == "percentile":
        return normalise_intensity(data, mask)
    raise ValueError(f"unknown intensity normalisation {method!r}; choose one of {INTENSITY_NORMALISATIONS}")


def parenchyma_mask(data: np.ndarray, brain_mask: np.ndarray) -> np.ndarray | None:
    """Brain voxels above the Otsu threshold of the brain's intensities (FLAIR: parenchyma, not CSF).

    In FLAIR the CSF (ventricles, sulci) is dark and separates from white and grey matter (and
    lesions) at the Otsu threshold. Returns ``None`` when no threshold exists: fewer than two
    brain voxels, or a single intensity in the brain.
    """
    from skimage.filters import threshold_otsu

    data = np.asarray(data)
    brain = np.asarray(brain_mask) > 0
    values = data[brain]
    if values.size < 2 or values.min() == values.max():
        return None
    return brain & (data > threshold_otsu(values))
