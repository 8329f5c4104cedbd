"""Figures of the reports: change mosaics, slices through each change, curves and metric plots.

Matplotlib is used through its object API with the Agg canvas (no pyplot, no global state, no
display needed). Every function writes a PNG atomically and returns its path.

Slices are shown in the neurological convention (patient left on the left of the image) when the
arrays are in RAS+ orientation; pass ``affine`` to have them reoriented to RAS+ first.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bids_lesionchange.analysis.tables import read_table_tsv
from bids_lesionchange.atomic import atomic_write_bytes

PROBABILITY_DISPLAY_MIN = 0.05  # below this the probability overlay is transparent
MASK_COLOUR = "#00e5ff"
REFERENCE_COLOUR = "#39ff14"
DPI = 100


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, facecolor="black")
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure, out_path: str | Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor=figure.get_facecolor())
    return atomic_write_bytes(out_path, buffer.getvalue())


def _to_ras(volumes: Sequence[np.ndarray | None], affine: np.ndarray | None):
    """Reorient arrays to RAS+ (if ``affine`` is given); return them and the RAS voxel sizes."""
    if affine is None:
        return [None if v is None else np.asarray(v) for v in volumes], np.ones(3)
    import nibabel.orientations as nio

    affine = np.asarray(affine, dtype=float)
    ornt = nio.io_orientation(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ras_zooms = np.empty(3)
    ras_zooms[ornt[:, 0].astype(int)] = zooms
    out = [None if v is None else nio.apply_orientation(np.asarray(v), ornt) for v in volumes]
    return out, ras_zooms


def _display_range(image: np.ndarray) -> tuple[float, float]:
    values = image[np.isfinite(image) & (image != 0)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``volume`` and rotate it so that anterior/superior is up on screen."""
    # basic indexing: a view (np.take copied through the whole volume: 30 ms per slice at 1 mm)
    return np.rot90(volume[(slice(None),) * axis + (int(index),)])


def _aspect(zooms: np.ndarray, axis: int) -> float:
    # Rows of the rotated plane run along the second remaining axis, columns along the first.
    first, second = [a for a in range(3) if a != axis]
    return float(zooms[second] / zooms[first])


def _draw_plane(ax, image, window, *, probability=None, mask=None, reference=None, aspect=1.0):
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
              interpolation="nearest")
    if probability is not None:
        shown = np.ma.masked_less(probability, PROBABILITY_DISPLAY_MIN)
        ax.imshow(shown, cmap="hot", vmin=0.0, vmax=1.0, alpha=0.6, aspect=aspect,
                  interpolation="nearest")
    if reference is not None and reference.any():
        ax.contour(reference.astype(float), levels=[0.5], colors=REFERENCE_COLOUR,
                   linewidths=1.0, linestyles="dashed")
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=MASK_COLOUR, linewidths=1.0)
    ax.set_axis_off()


def _legend(figure, with_reference: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="#ff6a00", label=f"change probability (> {PROBABILITY_DISPLAY_MIN})"),
        Line2D([], [], color=MASK_COLOUR, label="change mask"),
    ]
    if with_reference:
        handles.append(Line2D([], [], color=REFERENCE_COLOUR, linestyle="dashed", label="reference"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                  labelcolor="white", fontsize=9)


def _mosaic_slices(followup: np.ndarray, n_slices: int) -> list[int]:
    nonzero_k = np.flatnonzero(np.any(followup != 0, axis=(0, 1)))
    first, last = (nonzero_k[0], nonzero_k[-1]) if nonzero_k.size else (0, followup.shape[2] - 1)
    # Skip the thin caps of the brain, where there is little to see.
    margin = int(round(0.08 * (last - first)))
    positions = np.linspace(first + margin, last - margin, n_slices)
    return sorted(set(int(round(p)) for p in positions))


def plot_change_mosaic(
    followup: np.ndarray,
    probability: np.ndarray,
    mask: np.ndarray,
    out_path: str | Path,
    reference: np.ndarray | None = None,
    *,
    affine: np.ndarray | None = None,
    n_slices: int = 12,
    columns: int = 4,
) -> Path:
    """Draw evenly spaced axial slices of the follow-up with the change probability and mask.

    Parameters
    ----------
    followup : ndarray
        3D follow-up FLAIR.
    probability : ndarray
        3D change probability on the same grid (hot colour map above 0.05).
    mask : ndarray
        3D change mask (cyan outline).
    out_path : str or Path
        PNG to write.
    reference : ndarray, optional
        3D reference change mask (green dashed outline).
    affine : ndarray, optional
        Voxel-to-scanner transform; when given, the arrays are shown in RAS+ orientation with
        the true voxel aspect ratio.
    n_slices, columns : int
        Number of axial slices and of mosaic columns.

    Returns
    -------
    Path
        ``out_path``.
    """
    (followup, probability, mask, reference), zooms = _to_ras(
        [followup, probability, mask, reference], affine
    )
    _check_shapes(followup=followup, probability=probability, mask=mask, reference=reference)
    mask = mask > 0
    reference = None if reference is None else reference > 0
    window = _display_range(followup)
    slices = _mosaic_slices(followup, n_slices)
    rows = math.ceil(len(slices) / columns)
    aspect = _aspect(zooms, 2)
    plane_shape = _plane(followup, 2, 0).shape
    panel_w = 2.2
    panel_h = panel_w * plane_shape[0] * aspect / plane_shape[1]
    figure = _new_figure(panel_w * columns, panel_h * rows + 0.5)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.5 / (panel_h * rows + 0.5),
                           wspace=0.02, hspace=0.02)
    for n, k in enumerate(slices):
        ax = figure.add_subplot(rows, columns, n + 1)
        _draw_plane(
            ax, _plane(followup, 2, k), window,
            probability=_plane(probability, 2, k), mask=_plane(mask, 2, k),
            reference=None if reference is None else _plane(reference, 2, k), aspect=aspect,
        )
        ax.text(0.02, 0.98, f"z={k}", color="white", fontsize=8, va="top", transform=ax.transAxes)
    _legend(figure, reference is not None)
    return _save_png(figure, out_path)


def _nearest_slice_with(label_mask: np.ndarray, axis: int, centre: float) -> int:
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(label_mask.any(axis=other))
    if present.size == 0:
        return int(np.clip(round(centre), 0, label_mask.shape[axis] - 1))
    return int(present[np.argmin(np.abs(present - centre))])


def _crop_window(centre: int, length: int, half_width: int) -> slice:
    start = max(0, min(centre - half_width, length - 2 * half_width))
    return slice(start, min(length, start + 2 * half_width))


def _centroid(row: Mapping[str, Any], label_mask: np.ndarray) -> np.ndarray:
    try:
        centre = np.array([float(row["centroid_i"]), float(row["centroid_j"]), float(row["centroid_k"])])
        if np.all(np.isfinite(centre)):
            return centre
    except (KeyError, TypeError, ValueError):
        pass
    return np.argwhere(label_mask).mean(axis=0)


def plot_lesion_slices(
    followup: np.ndarray,
    labels: np.ndarray,
    rows: Iterable[Mapping[str, Any]],
    out_path: str | Path,
    *,
    probability: np.ndarray | None = None,
    baseline: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    max_lesions: int = 12,
    half_width: int = 24,
) -> Path:
    """Draw, for each change, axial, coronal and sagittal views through it (zoomed around it).

    One figure row per change (the ``max_lesions`` largest by voxel count): optionally the
    baseline (axial), then the follow-up in three planes, each through the slice containing the
    change nearest its centroid, with the change outlined (cyan), other changes dimmer, and the
    probability overlaid when given.

    Parameters
    ----------
    followup : ndarray
        3D follow-up FLAIR.
    labels : ndarray of int
        3D change labels (as the ``label`` column of ``rows``).
    rows : iterable of mapping
        Lesion table rows (``label``, ``voxels``, ``volume_mm3``, ``type``, ``centroid_i/j/k``...).
    out_path : str or Path
        PNG to write.
    probability, baseline : ndarray, optional
        Change probability overlay and baseline FLAIR (extra first column).
    affine : ndarray, optional
        Voxel-to-scanner transform; when given, images are reoriented to RAS+. The centroids of
        ``rows`` are then not used (they are in the original voxel order): each change is
        located from ``labels``.
    max_lesions : int
        At most this many changes are drawn (the largest).
    half_width : int
        Half the side of the zoomed window, in voxels (widened for large changes).

    Returns
    -------
    Path
        ``out_path``.
    """
    reoriented = affine is not None
    (followup, labels, probability, baseline), zooms = _to_ras(
        [followup, labels, probability, baseline], affine
    )
    _check_shapes(followup=followup, labels=labels, probability=probability, baseline=baseline)
    labels = np.asarray(labels).astype(np.int64)
    rows = [row for row in rows if _as_int(row.get("label")) is not None]
    rows = [row for row in rows if np.any(labels == _as_int(row["label"]))]
    rows.sort(key=lambda row: -(_as_int(row.get("voxels")) or 0))
    shown = rows[:max_lesions]
    window = _display_range(followup)
    n_cols = 4 if baseline is not None else 3
    panel = 1.9
    if not shown:
        figure = _new_figure(panel * n_cols, 1.2)
        figure.text(0.5, 0.5, "No change detected", color="white", ha="center", va="center",
                    fontsize=14)
        return _save_png(figure, out_path)

    # Manual layout in inches: per change a text line, the view titles, then the panels.
    label_h, title_h, gap, pad = 0.26, 0.17, 0.04, 0.06
    row_h = label_h + title_h + panel + gap
    width, height = panel * n_cols + 2 * pad, row_h * len(shown) + 2 * pad
    figure = _new_figure(width, height)
    truncated = len(rows) > len(shown)
    any_change = labels > 0
    for r, row in enumerate(shown):
        label = _as_int(row["label"])
        this = labels == label
        centre = np.argwhere(this).mean(axis=0) if reoriented else _centroid(row, this)
        extent = np.ptp(np.argwhere(this), axis=0).max() + 1
        half = int(max(half_width, extent))
        panels = []
        if baseline is not None:
            panels.append(("baseline, axial", baseline, 2, False))
        panels += [("follow-up, axial", followup, 2, True), ("follow-up, coronal", followup, 1, True),
                   ("follow-up, sagittal", followup, 0, True)]
        for c, (name, image, axis, overlay) in enumerate(panels):
            index = _nearest_slice_with(this, axis, centre[axis])
            in_plane = [a for a in range(3) if a != axis]
            crop = [slice(None)] * 3
            for a in in_plane:
                crop[a] = _crop_window(int(round(centre[a])), image.shape[a], half)
            crop = tuple(crop)

            def plane(volume, crop=crop, axis=axis, index=index):
                return _plane(volume[crop], axis, index)

            bottom = height - pad - r * row_h - label_h - title_h - panel
            ax = figure.add_axes([(pad + c * panel + 0.02) / width, bottom / height,
                                  (panel - 0.04) / width, panel / height])
            others = any_change & ~this
            _draw_plane(
                ax, plane(image), window,
                probability=plane(probability) if (overlay and probability is not None) else None,
                mask=plane(this), aspect=_aspect(zooms, axis),
            )
            if others.any():
                other_plane = plane(others)
                if other_plane.any():
                    ax.contour(other_plane.astype(float), levels=[0.5], colors=MASK_COLOUR,
                               linewidths=0.6, alpha=0.45)
            ax.set_title(name, color="#bbbbbb", fontsize=7, pad=2)
        volume = row.get("volume_mm3")
        text = f"change {label}: {row.get('type', '')}"
        if volume is not None and _finite(volume):
            text += f", {float(volume):.1f} mm³"
        if _finite(row.get("prob_max")):
            text += f", max p {float(row['prob_max']):.2f}"
        if truncated and r == 0:
            text += f"   ({len(shown)} largest of {len(rows)} changes shown)"
        figure.text((pad + 0.04) / width, (height - pad - r * row_h - 0.02) / height, text,
                    color="white", fontsize=8.5, va="top", ha="left", fontweight="bold")
    return _save_png(figure, out_path)


def plot_training_curves(training_log_tsv: str | Path, out_path: str | Path) -> Path:
    """Plot the loss curves (every column with 'loss' in its name) and other logged values.

    Parameters
    ----------
    training_log_tsv : str or Path
        TSV with an ``iteration`` column (else the row number is used) and numeric columns such
        as ``loss`` and ``val_loss``; ``n/a`` cells are skipped.
    out_path : str or Path
        PNG to write.

    Returns
    -------
    Path
        ``out_path``.
    """
    rows = read_table_tsv(training_log_tsv)
    if not rows:
        raise ValueError(f"the training log {training_log_tsv} has no rows")
    columns = [c for c in rows[0] if _numeric_column(rows, c)]
    x_name = "iteration" if "iteration" in columns else None
    x = (np.array([float(r["iteration"]) for r in rows]) if x_name
         else np.arange(1, len(rows) + 1, dtype=float))
    skip = {"iteration", "epoch", "time", "seconds", "wall_time"}
    losses = [c for c in columns if "loss" in c.lower() and c not in skip]
    others = [c for c in columns if c not in losses and c not in skip]
    n_panels = 2 if others else 1
    figure = _new_figure(6.5 * n_panels, 3.6)
    figure.set_facecolor("white")
    for p, names in enumerate([losses, others][:n_panels]):
        ax = figure.add_subplot(1, n_panels, p + 1)
        positive = True
        for name in names:
            y = np.array([_float_or_nan(r.get(name)) for r in rows])
            ok = np.isfinite(y)
            positive &= bool(np.all(y[ok] > 0))
            ax.plot(x[ok], y[ok], marker="o" if ok.sum() < 30 else None, markersize=3, label=name)
        if p == 0 and names and positive:
            ax.set_yscale("log")
        ax.set_xlabel(x_name or "logged step")
        ax.set_title("losses" if p == 0 else "other logged values", fontsize=10)
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=8)
    figure.tight_layout()
    return _save_png(figure, out_path)


#: Marker of each tracking state in the volume-over-sessions plot.
STATE_MARKERS = {"new": "o", "stable": ".", "enlarging": "^", "shrinking": "v", "merged": "D",
                 "split": "x", "resolved": "s"}


def plot_tracked_volumes(rows: Sequence[Mapping[str, Any]], out_path: str | Path) -> Path:
    """Plot each tracked change's volume over sessions (one line per track, marker = state).

    Parameters
    ----------
    rows : sequence of mapping
        Rows of the longitudinal table (``track_id``, ``session``, ``state``, ``volume_mm3``).
    out_path : str or Path
        PNG to write.

    Returns
    -------
    Path
        ``out_path``.
    """
    sessions = sorted({str(r["session"]) for r in rows}, key=lambda s: (len(s), s))
    figure = _new_figure(6.5, 3.8)
    figure.set_facecolor("white")
    ax = figure.add_subplot(1, 1, 1)
    for track in sorted({int(r["track_id"]) for r in rows}):
        points = sorted(((sessions.index(str(r["session"])), _float_or_nan(r["volume_mm3"]), str(r["state"]))
                         for r in rows if int(r["track_id"]) == track))
        line = ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1, label=f"change {track}")
        for x, y, state in points:
            ax.plot([x], [y], marker=STATE_MARKERS.get(state, "o"), color=line[0].get_color(), markersize=6)
    for state, marker in STATE_MARKERS.items():
        ax.plot([], [], marker=marker, linestyle="none", color="grey", label=state)
    ax.set_xticks(range(len(sessions)), [f"ses-{s}" for s in sessions])
    ax.set_ylabel("detected change volume (mm³)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _save_png(figure, out_path)


def plot_metric_distribution(
    rows: Iterable[Mapping[str, Any]],
    out_path: str | Path,
    columns: Sequence[str] = ("LTPR", "LFPR", "PPV", "lesion_F1", "dice"),
) -> Path:
    """Draw a box plot with every pair's value as a point, one box per metric (NaN skipped).

    Parameters
    ----------
    rows : iterable of mapping
        Per-pair metric rows (as from :func:`bids_lesionchange.analysis.metrics.lesion_metrics`).
    out_path : str or Path
        PNG to write.
    columns : sequence of str
        Metrics to show (all in [0, 1]).

    Returns
    -------
    Path
        ``out_path``.
    """
    rows = list(rows)
    data = [np.array([_float_or_nan(r.get(c)) for r in rows]) for c in columns]
    data = [d[np.isfinite(d)] for d in data]
    figure = _new_figure(1.3 * len(columns) + 1.2, 3.4)
    figure.set_facecolor("white")
    ax = figure.add_subplot(1, 1, 1)
    positions = np.arange(1, len(columns) + 1)
    ax.boxplot([d if d.size else [np.nan] for d in data], positions=positions, widths=0.5,
               showfliers=False)
    jitter = np.random.default_rng(0)
    for pos, values in zip(positions, data):
        ax.scatter(pos + jitter.uniform(-0.12, 0.12, values.size), values, s=14, alpha=0.75,
                   color="#1f77b4", zorder=3)
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{c}\n(n={d.size})" for c, d in zip(columns, data)], fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Metrics across pairs", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save_png(figure, out_path)


def _check_shapes(**arrays: np.ndarray | None) -> None:
    shapes = {k: np.shape(v) for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"the images to plot are on different grids: {shapes}")
    if any(len(s) != 3 for s in shapes.values()):
        raise ValueError(f"the images to plot must be 3D: {shapes}")


def _as_int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(value: Any) -> bool:
    return math.isfinite(_float_or_nan(value))


def _numeric_column(rows: list[Mapping[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows]
    return all(isinstance(v, (int, float)) for v in values) and any(
        isinstance(v, (int, float)) and math.isfinite(v) for v in values
    )
