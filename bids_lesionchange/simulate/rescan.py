"""Simulated rescans of a real (or synthetic) FLAIR: NoChange pairs that carry real-world nuisance.

Two real scans of an unchanged brain differ everywhere: each has its own noise realisation,
voxel grid, slice plane and partial volume, bias field, gain and contrast (scanner or software
drift), Gibbs ringing, motion ghosts and flow artefacts in the CSF, and the app's registration
leaves a little misalignment. A detector trained only on pairs that differ by noise and a smooth
gain learns "any difference is change" and fires over most of a real brain.

:func:`simulate_rescan` draws, independently for each call, an acquisition of the same head
(domain randomisation in the spirit of SynthSeg/SynthStrip, applied to a real image):

1. **Contrast**: a random monotone transfer curve on intensities relative to the white-matter
   peak (FLAIR ordering kept: CSF < WM < GM < lesions), varying CSF suppression, grey/white and
   lesion/white contrast, then a gamma.
2. **Flow artefacts**: with some probability, bright patches of incompletely suppressed CSF deep
   inside the head (ventricles, cisterns).
3. **Grid and pose**: a 3D acquisition (0.8-1.2 mm) or a 2D one (in-plane 0.5-1.2 mm, slices
   2-6 mm thick with gaps, axial, coronal or sagittal, tilted), a new head pose (rigid motion),
   partial volume over each voxel (in-plane Gaussian, box slice profile).
4. **Scanner**: a smooth bias field, Gibbs ringing (k-space truncation), motion ghosts (phase
   errors on random phase-encoding lines) and Rician noise at a level of its own.

The source's own noise is removed first (a light Gaussian, when the estimated noise is
noticeable), so two rescans of one scan do not share one noise realisation: each gets its own.
:func:`self_pair` returns a NoChange pair: the original scan and a rescan (``mode="original"``),
or two rescans (``mode="both"``).

Pure numpy/scipy; no Nipype, no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_lesionchange.image.plausibility import MAX_VOXEL_MM
from bids_lesionchange.simulate.acquisition import random_motion, rigid_matrix, rotation_matrix

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class RescanParams:
    """Ranges of the randomised acquisition (each draw is uniform in its range).

    Attributes
    ----------
    p_2d : float
        Probability of a 2D (thick-slice) acquisition.
    iso_mm : (float, float)
        Voxel size of a 3D acquisition.
    inplane_mm, slice_mm : (float, float)
        In-plane voxel size and slice thickness of a 2D acquisition.
    gap_fraction : (float, float)
        Slice gap relative to the thickness (2D).
    p_non_axial : float
        Probability that a 2D acquisition is coronal or sagittal rather than axial.
    max_tilt_deg : float
        Largest tilt of the slice plane.
    max_rotation_deg, max_translation_mm : float
        Largest head motion relative to the source.
    noise_range : (float, float)
        Rician noise standard deviation relative to the white-matter peak.
    max_bias : float
        Largest log-amplitude of the bias field.
    gamma_range : (float, float)
        Gamma applied after the transfer curve.
    contrast_jitter : float
        Relative jitter of the transfer curve's slopes (CSF, grey/white, lesion contrast).
    p_gibbs, p_ghosts, p_flow : float
        Probabilities of Gibbs ringing, motion ghosts and CSF flow artefacts.
    """

    p_2d: float = 0.5
    iso_mm: tuple[float, float] = (0.8, 1.2)
    inplane_mm: tuple[float, float] = (0.5, 1.2)
    slice_mm: tuple[float, float] = (2.0, 6.0)
    gap_fraction: tuple[float, float] = (0.0, 0.3)
    p_non_axial: float = 0.2
    max_tilt_deg: float = 15.0
    max_rotation_deg: float = 8.0
    max_translation_mm: float = 8.0
    noise_range: tuple[float, float] = (0.01, 0.06)
    max_bias: float = 0.3
    gamma_range: tuple[float, float] = (0.8, 1.25)
    contrast_jitter: float = 0.3
    p_gibbs: float = 0.5
    p_ghosts: float = 0.3
    p_flow: float = 0.5


# ------------------------------------------------------------------------------ measurements
def foreground_mask(data: np.ndarray) -> np.ndarray:
    """The head (or brain) of an image: above the Otsu threshold of its positive voxels, holes filled."""
    from skimage.filters import threshold_otsu

    data = np.asarray(data, dtype=np.float32)
    positive = data[data > 0]
    if positive.size < 2 or positive.min() == positive.max():
        return data > 0
    # Otsu on the positive voxels separates head from background; half of it keeps the dark CSF.
    mask = data > 0.5 * threshold_otsu(positive)
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def white_matter_peak(data: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The white-matter intensity of a FLAIR head (:func:`bids_lesionchange.image.intensity.white_matter_peak`
    over the positive voxels of ``mask``, by default the head)."""
    from bids_lesionchange.image.intensity import white_matter_peak as peak

    data = np.asarray(data, dtype=np.float32)
    mask = foreground_mask(data) if mask is None else np.asarray(mask, dtype=bool)
    return peak(data, mask & (data > 0))


def estimate_noise(data: np.ndarray, mask: np.ndarray, wm_peak: float) -> float:
    """Noise standard deviation relative to the white-matter peak, from the in-plane Laplacian.

    The robust spread (median absolute deviation) of a discrete Laplacian inside tissue near
    the white-matter peak measures the voxel-to-voxel noise; anatomy is smooth at this scale in
    white matter. Works on 2D and 3D acquisitions (the Laplacian is taken in the first two axes,
    in-plane for axial 2D scans).
    """
    data = np.asarray(data, dtype=np.float32)
    kernel = np.zeros((3, 3, 1), dtype=np.float32)
    kernel[1, 1, 0] = 4.0
    kernel[0, 1, 0] = kernel[2, 1, 0] = kernel[1, 0, 0] = kernel[1, 2, 0] = -1.0
    lap = ndimage.convolve(data, kernel, mode="nearest")
    white = mask & (np.abs(data - wm_peak) < 0.15 * wm_peak)
    white = ndimage.binary_erosion(white, iterations=1)
    if white.sum() < 100:
        return 0.0
    values = lap[white]
    mad = float(np.median(np.abs(values - np.median(values))))
    # Laplacian of white noise: std = sqrt(20) sigma; MAD = 0.6745 std for a normal variable.
    return mad / 0.6745 / math.sqrt(20.0) / wm_peak


# --------------------------------------------------------------------------------- contrast
def transfer_curve(rng: np.random.Generator, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """A random monotone transfer curve on intensities relative to white matter.

    Knots at 0 (background), 0.35 (CSF), 0.8, 1.0 (white matter), 1.15 (grey matter), 1.5
    (lesion) and 3.0; each segment's slope is scaled by ``exp(U(-jitter, jitter))`` (CSF, grey,
    lesion contrast) and the curve is rescaled so that white matter stays at 1. Slopes stay
    positive, so intensity order (FLAIR: CSF < WM < GM < lesions) is kept.
    """
    knots = np.array([0.0, 0.35, 0.8, 1.0, 1.15, 1.5, 3.0])
    slopes = np.diff(knots) * np.exp(rng.uniform(-jitter, jitter, size=knots.size - 1))
    values = np.concatenate([[0.0], np.cumsum(slopes)])
    values /= values[3]
    return knots, values


def apply_contrast(relative: np.ndarray, rng: np.random.Generator, params: RescanParams) -> np.ndarray:
    """Map intensities relative to white matter through a random transfer curve and a gamma."""
    knots, values = transfer_curve(rng, params.contrast_jitter)
    top_slope = (values[-1] - values[-2]) / (knots[-1] - knots[-2])
    out = np.interp(relative, knots, values)
    beyond = relative > knots[-1]
    out[beyond] = values[-1] + (relative[beyond] - knots[-1]) * top_slope
    gamma = rng.uniform(*params.gamma_range)
    return np.power(np.clip(out, 0.0, None), gamma).astype(np.float32)


def flow_artefacts(relative: np.ndarray, head: np.ndarray, zooms, rng: np.random.Generator) -> np.ndarray:
    """Add bright patches of incompletely suppressed CSF deep in the head (ventricles, cisterns)."""
    depth = ndimage.distance_transform_edt(head, sampling=zooms)
    csf = (relative < 0.5) & (relative > 0.02) & (depth > 25.0)
    if csf.sum() < 50:
        return relative
    field = ndimage.gaussian_filter(rng.standard_normal(relative.shape).astype(np.float32),
                                    sigma=[2.0 / z for z in zooms])
    cut = np.percentile(field[csf], 100 - rng.uniform(3.0, 15.0))
    patches = csf & (field > cut)
    patches = ndimage.gaussian_filter(patches.astype(np.float32), sigma=[0.7 / z for z in zooms])
    return relative + rng.uniform(0.3, 0.9) * patches * csf


# ------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class RescanGrid:
    """The drawn acquisition: voxel-to-world matrix, shape, voxel sizes, slice axis and profile."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    zooms: tuple[float, float, float]
    acquisition: str
    slice_thickness: float
    phase_axis: int


def draw_grid(source_affine: np.ndarray, head_box_world: np.ndarray, rng: np.random.Generator,
              params: RescanParams) -> RescanGrid:
    """Draw a 3D or 2D acquisition grid covering ``head_box_world`` (8 corners, world mm)."""
    two_d = rng.uniform() < params.p_2d
    if two_d:
        inplane = rng.uniform(*params.inplane_mm)
        thickness = rng.uniform(*params.slice_mm)
        # Slices + gap never beyond what the app accepts (image.plausibility.MAX_VOXEL_MM): a
        # rescan is training material only if preprocessing takes it.
        spacing = min(thickness * (1.0 + rng.uniform(*params.gap_fraction)), MAX_VOXEL_MM)
        zooms = (inplane, inplane, spacing)
    else:
        side = rng.uniform(*params.iso_mm)
        thickness = side
        zooms = (side, side, side)
    # Orientation: the grid's third axis is the slice direction (axial by default).
    base = np.eye(3)
    if two_d and rng.uniform() < params.p_non_axial:
        base = (np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]) if rng.uniform() < 0.5   # coronal
                else np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]]))                 # sagittal
    tilt = rng.uniform(-params.max_tilt_deg, params.max_tilt_deg, size=3) * (1.0 if two_d else 0.3)
    tilt[2] = 0.0
    axes = rotation_matrix(tilt) @ base.astype(float)
    # Corners of the head in the grid frame, then a grid covering them with a 5 mm margin.
    frame = head_box_world @ axes  # coordinates along the grid axes
    low, high = frame.min(axis=0) - 5.0, frame.max(axis=0) + 5.0
    shape = tuple(int(math.ceil((h - lo) / z)) + 1 for lo, h, z in zip(low, high, zooms))
    affine = np.eye(4)
    affine[:3, :3] = axes * np.asarray(zooms)
    affine[:3, 3] = axes @ low
    return RescanGrid(affine=affine, shape=shape, zooms=tuple(float(z) for z in zooms),
                      acquisition="2D" if two_d else "3D", slice_thickness=float(thickness),
                      phase_axis=int(rng.integers(2)))


def _box_corners(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    low, high = idx.min(axis=0), idx.max(axis=0)
    corners = np.array([[x, y, z, 1.0] for x in (low[0], high[0]) for y in (low[1], high[1])
                        for z in (low[2], high[2])])
    return (affine @ corners.T).T[:, :3]


def sample_on_grid(source: np.ndarray, source_affine: np.ndarray, grid: RescanGrid,
                   pose: np.ndarray) -> np.ndarray:
    """Acquire ``source`` on ``grid`` after moving the head by ``pose`` (world to world).

    Partial volume: the source is smoothed in-plane by a Gaussian of FWHM the in-plane voxel
    size (beyond its own), and each voxel averages points spread over the slice thickness (box
    slice profile) along the slice axis. Trilinear interpolation, once.
    """
    src_zooms = np.linalg.norm(source_affine[:3, :3], axis=0)
    inplane = grid.zooms[0]
    sigma = np.sqrt(np.maximum(inplane ** 2 - src_zooms ** 2, 0.0)) * FWHM_TO_SIGMA / src_zooms
    smooth = ndimage.gaussian_filter(source, sigma) if np.any(sigma > 0.1) else source
    to_source = np.linalg.inv(source_affine) @ np.linalg.inv(pose) @ grid.affine
    n_sub = max(1, int(round(grid.slice_thickness / min(0.7, float(src_zooms.min())))))
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * grid.slice_thickness / grid.zooms[2]
    shape = grid.shape
    ii, jj = np.meshgrid(np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32),
                         indexing="ij")
    out = np.zeros(shape, dtype=np.float32)
    for k in range(shape[2]):
        acc = np.zeros(shape[:2], dtype=np.float32)
        for off in offsets:
            kk = np.full_like(ii, k + off)
            coords = np.tensordot(to_source[:3, :3], np.stack([ii, jj, kk]), axes=1) + \
                to_source[:3, 3][:, None, None]
            acc += ndimage.map_coordinates(smooth, coords, order=1, mode="constant", cval=0.0)
        out[..., k] = acc / len(offsets)
    return out


# ---------------------------------------------------------------------------- scanner effects
def smooth_bias(shape: tuple[int, ...], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp(amplitude * f), f a smooth field in [-1, 1] (a 4x4x4 grid, cubic upsampling)."""
    from bids_lesionchange.simulate.sampling import separable_upsample

    coarse = rng.standard_normal((4, 4, 4))
    field = separable_upsample(coarse, shape, order=3)
    field /= max(float(np.abs(field).max()), 1e-12)
    return np.exp(amplitude * field).astype(np.float32)


def gibbs_ringing(image: np.ndarray, axis: int, keep: float) -> np.ndarray:
    """Truncate k-space along ``axis`` to the central ``keep`` fraction (ringing at sharp edges)."""
    spectrum = np.fft.fftshift(np.fft.fft(image, axis=axis), axes=axis)
    n = image.shape[axis]
    half = max(int(round(0.5 * keep * n)), 1)
    window = np.zeros(n, dtype=np.float32)
    window[max(n // 2 - half, 0):n // 2 + half] = 1.0
    shape = [1] * image.ndim
    shape[axis] = n
    spectrum *= window.reshape(shape)
    return np.abs(np.fft.ifft(np.fft.ifftshift(spectrum, axes=axis), axis=axis)).astype(np.float32)


def motion_ghosts(image: np.ndarray, axis: int, fraction: float, shift_vox: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Ghosts along the phase-encoding ``axis``: a fraction of k-space lines acquired after a shift."""
    spectrum = np.fft.fft(image, axis=axis)
    n = image.shape[axis]
    freqs = np.fft.fftfreq(n)
    moved = rng.uniform(size=n) < fraction
    phase = np.where(moved, np.exp(-2j * np.pi * freqs * shift_vox), 1.0)
    shape = [1] * image.ndim
    shape[axis] = n
    spectrum *= phase.reshape(shape)
    return np.abs(np.fft.ifft(spectrum, axis=axis)).astype(np.float32)


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


# ----------------------------------------------------------------------------------- rescans
@dataclass
class PreparedSource:
    """A source scan ready to be rescanned: denoised, relative to white matter, with its head mask."""

    relative: np.ndarray
    affine: np.ndarray
    head: np.ndarray
    noise: float
    wm_peak: float


def prepare_source(data: np.ndarray, affine: np.ndarray) -> PreparedSource:
    """Measure the white-matter peak and the noise of a scan and remove most of that noise."""
    data = np.nan_to_num(np.asarray(data, dtype=np.float32))
    data = np.clip(data, 0.0, None)
    head = foreground_mask(data)
    peak = white_matter_peak(data, head)
    noise = estimate_noise(data, head, peak)
    zooms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    if noise > 0.01:
        # A light denoise (FWHM about one voxel in-plane): rescans must not share this noise.
        data = ndimage.gaussian_filter(data, sigma=[0.6 if z < 2.0 else 0.0 for z in zooms])
    return PreparedSource(relative=data / peak, affine=np.asarray(affine, dtype=np.float64), head=head,
                          noise=float(noise), wm_peak=float(peak))


def simulate_rescan(source: PreparedSource, rng: np.random.Generator,
                    params: RescanParams | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate one new acquisition of the head in ``source``.

    Returns
    -------
    data : ndarray of int16
        The rescan, in scanner units (white matter at a random level of several hundred).
    affine : ndarray (4, 4)
        Its voxel-to-world matrix.
    info : dict
        What was drawn (grid, motion, noise, effects), JSON-serialisable.
    """
    params = params or RescanParams()
    zooms = np.linalg.norm(source.affine[:3, :3], axis=0)
    relative = apply_contrast(source.relative, rng, params)
    info: dict = {}
    if rng.uniform() < params.p_flow:
        relative = flow_artefacts(relative, source.head, zooms, rng)
        info["flow_artefacts"] = True
    grid = draw_grid(source.affine, _box_corners(source.head, source.affine), rng, params)
    centre = _box_corners(source.head, source.affine).mean(axis=0)
    motion = random_motion(rng, params.max_rotation_deg, params.max_translation_mm)
    # Rotate about the head's centre, not the world origin.
    pose = rigid_matrix(np.eye(3), centre) @ motion @ rigid_matrix(np.eye(3), -centre)
    image = sample_on_grid(relative, source.affine, grid, pose)
    bias = float(rng.uniform(0.3, 1.0) * params.max_bias)
    image *= smooth_bias(grid.shape, bias, rng)
    if rng.uniform() < params.p_gibbs:
        keep = float(rng.uniform(0.55, 0.9))
        image = gibbs_ringing(image, grid.phase_axis, keep)
        info["gibbs_keep"] = keep
    if rng.uniform() < params.p_ghosts:
        fraction, shift = float(rng.uniform(0.02, 0.1)), float(rng.uniform(0.5, 3.0))
        image = motion_ghosts(image, grid.phase_axis, fraction, shift, rng)
        info["ghost_fraction"], info["ghost_shift_vox"] = fraction, shift
    noise = float(max(rng.uniform(*params.noise_range), source.noise))
    image = rician(image, noise, rng)
    scale = float(rng.uniform(200.0, 1500.0))
    data = np.clip(np.round(image * scale), 0, 32767).astype(np.int16)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(motion[:3, :3]) - 1) / 2, -1, 1))))
    info.update({"acquisition": grid.acquisition, "zooms_mm": [round(z, 3) for z in grid.zooms],
                 "slice_thickness_mm": round(grid.slice_thickness, 3), "shape": list(grid.shape),
                 "motion_rotation_deg": round(angle, 3),
                 "motion_translation_mm": round(float(np.linalg.norm(motion[:3, 3])), 3),
                 "bias_amplitude": round(bias, 3), "noise_relative_to_wm": round(noise, 4),
                 "source_noise_relative_to_wm": round(source.noise, 4)})
    return data, grid.affine, info


def self_pair(data: np.ndarray, affine: np.ndarray, rng: np.random.Generator, *, mode: str = "original",
              params: RescanParams | None = None, source: PreparedSource | None = None):
    """Return a NoChange pair ``[(data, affine, info), (data, affine, info)]`` from one scan.

    ``mode="original"``: the scan as it is, then a simulated rescan of it; ``mode="both"``: two
    independent rescans. Pass ``source`` (from :func:`prepare_source`) to reuse its measurements.
    """
    if mode not in ("original", "both"):
        raise ValueError(f"mode must be 'original' or 'both', got {mode!r}")
    source = source or prepare_source(data, affine)
    second = simulate_rescan(source, rng, params)
    if mode == "original":
        first = (np.asarray(data), np.asarray(affine, dtype=np.float64), {"acquisition": "original"})
    else:
        first = simulate_rescan(source, rng, params)
    return [first, second]
