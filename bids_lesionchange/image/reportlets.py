"""SVG reportlets of preprocessing: the brain-mask outline and the registration before/after.

Drawn with matplotlib's object API (no pyplot, no display, no network). Arrays are on the
common grid (RAS), so axis 0 runs left to right, axis 1 posterior to anterior, axis 2
inferior to superior; slices are shown in radiological-neutral "RAS" view with superior
and anterior up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_lesionchange.atomic import atomic_save

VIEWS = ("axial", "coronal", "sagittal")
_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def _slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    # a view by basic indexing (np.take copies a non-contiguous volume whole for every slice)
    return volume[(slice(None),) * _AXIS[view] + (int(index),)].T  # rows: the later axis, drawn upwards


def _cuts(mask: np.ndarray, view: str, count: int) -> list[int]:
    axis = _AXIS[view]
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=other))
    if present.size == 0:
        present = np.arange(mask.shape[axis])
    return [int(i) for i in np.linspace(present[0], present[-1], count + 2)[1:-1].round()]


def _window(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    values = image[mask] if mask.any() else image.ravel()
    return float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))


def _save(fig, out_svg) -> Path:
    return atomic_save(lambda name: fig.savefig(name, format="svg", bbox_inches="tight", facecolor="black"),
                       out_svg)


def plot_mask_outline(image: np.ndarray, mask: np.ndarray, out_svg, *, cuts_per_view: int = 5,
                      title: str = "brain mask on the follow-up") -> Path:
    """Write an SVG of ``image`` with the outline of ``mask`` in red, in three views."""
    from matplotlib.figure import Figure

    mask = np.asarray(mask, dtype=bool)
    low, high = _window(image, mask)
    fig = Figure(figsize=(2.0 * cuts_per_view, 6.3), facecolor="black")
    axes = fig.subplots(3, cuts_per_view, squeeze=False)
    for row, view in enumerate(VIEWS):
        for col, index in enumerate(_cuts(mask, view, cuts_per_view)):
            ax = axes[row, col]
            ax.imshow(_slice(image, view, index), cmap="gray", vmin=low, vmax=high,
                      origin="lower", interpolation="nearest")
            outline = _slice(mask, view, index).astype(float)
            if outline.any() and not outline.all():
                ax.contour(outline, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_axis_off()
            ax.set_title(f"{view} {index}", color="white", fontsize=7)
    fig.suptitle(title, color="white", fontsize=9)
    return _save(fig, out_svg)


def plot_registration(fixed: np.ndarray, before: np.ndarray, after: np.ndarray, mask: np.ndarray,
                      out_svg, *, cuts_per_view: int = 3) -> Path:
    """Write an SVG of the follow-up with the baseline's edges, before and after registration.

    The baseline's edges are the contour of its Gaussian-smoothed intensity at the Otsu
    threshold inside the brain (cyan), drawn over the follow-up (grey). Before: the baseline
    placed by its scanner coordinates only; after: by the rigid transform.
    """
    from matplotlib.figure import Figure
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    mask = np.asarray(mask, dtype=bool)
    low, high = _window(fixed, mask)
    dilated = ndimage.binary_dilation(mask, iterations=2)
    fig = Figure(figsize=(2.0 * 3 * cuts_per_view, 4.6), facecolor="black")
    axes = fig.subplots(2, 3 * cuts_per_view, squeeze=False)
    for row, (label, moving) in enumerate((("before", before), ("after", after))):
        smooth = ndimage.gaussian_filter(np.asarray(moving, dtype=np.float32), 1.0)
        values = smooth[dilated]
        level = threshold_otsu(values) if values.size > 1 and values.min() < values.max() else None
        inside = np.where(dilated, smooth, 0.0)  # once per row, not once per cut
        col = 0
        for view in VIEWS:
            for index in _cuts(mask, view, cuts_per_view):
                ax = axes[row, col]
                ax.imshow(_slice(fixed, view, index), cmap="gray", vmin=low, vmax=high,
                          origin="lower", interpolation="nearest")
                edges = _slice(inside, view, index)
                if level is not None and edges.min() < level < edges.max():
                    ax.contour(edges, levels=[level], colors="cyan", linewidths=0.6)
                ax.set_axis_off()
                ax.set_title(f"{label}: {view} {index}", color="white", fontsize=7)
                col += 1
    fig.suptitle("baseline edges (cyan) on the follow-up, before and after rigid registration",
                 color="white", fontsize=9)
    return _save(fig, out_svg)


def mask_report_file(image_file, mask_file, out_svg) -> Path:
    """Write the brain-mask reportlet of two NIfTI files on the same grid."""
    import nibabel as nib

    image = np.asanyarray(nib.load(str(image_file)).dataobj, dtype=np.float32)
    mask = np.asanyarray(nib.load(str(mask_file)).dataobj) > 0
    return plot_mask_outline(image, mask, out_svg)


def registration_report_file(followup_file, baseline_before_file, baseline_common_file, mask_file,
                             out_svg) -> Path:
    """Write the registration reportlet of four images on the common grid.

    ``baseline_before_file`` is the baseline placed on the common grid by scanner coordinates only
    (the "before" view; :func:`.preprocess.register_baseline_file` writes it, having made it for its
    ``ncc_brain_before``); ``baseline_common_file`` is the registered one.
    """
    import nibabel as nib

    followup = nib.load(str(followup_file))
    before = np.asanyarray(nib.load(str(baseline_before_file)).dataobj, dtype=np.float32)
    after = np.asanyarray(nib.load(str(baseline_common_file)).dataobj, dtype=np.float32)
    mask = np.asanyarray(nib.load(str(mask_file)).dataobj) > 0
    fixed = np.asanyarray(followup.dataobj, dtype=np.float32)
    return plot_registration(fixed, before, after, mask, out_svg)
