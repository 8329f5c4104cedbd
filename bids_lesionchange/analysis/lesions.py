"""Describe each detected change: size, position, probability, intensities, new or enlarging.

One row per connected component of the change mask (see :mod:`.components`), written as a
BIDS TSV with a JSON sidecar that describes every column.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from bids_lesionchange.analysis.components import label_connected_components, relabel_by_size
from bids_lesionchange.analysis.tables import read_table_tsv, write_table_tsv  # noqa: F401 (re-export)

#: Columns of the lesion table, in the order they are written.
LESION_TABLE_COLUMNS = (
    "label",
    "type",
    "voxels",
    "volume_mm3",
    "centroid_i",
    "centroid_j",
    "centroid_k",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "prob_max",
    "prob_mean",
    "baseline_mean",
    "followup_mean",
)

#: Multiplier making the median absolute deviation a consistent estimate of a normal's SD.
MAD_TO_SD = 1.4826

#: Columns of the BIDS segmentation lookup table (``*_dseg.tsv``) of the change labels.
DSEG_LOOKUP_COLUMNS = ("index", "name", "abbreviation", "color", "mapping")
#: How each change ``type`` of the lesion table appears in the lookup table: abbreviation, colour.
CHANGE_TYPE_LOOKUP = {"new": ("NEW", "#e41a1c"), "enlarging": ("ENL", "#ff7f00")}
#: BIDS common image-derived label every change maps to: 7, "Lesion".
BIDS_LESION_INDEX = 7


def baseline_hyperintensities(
    baseline: np.ndarray,
    brain_mask: np.ndarray | None = None,
    k: float = 3.0,
    min_size: int = 5,
    connectivity: int = 26,
) -> np.ndarray:
    """Find the hyperintensities already present in the baseline FLAIR (robust outlier rule).

    Rule: a brain voxel is hyperintense when

        intensity > median + k * 1.4826 * MAD

    where median and MAD (median absolute deviation) are taken over the brain voxels, so that
    1.4826 * MAD estimates the standard deviation of normal tissue without being pulled up by the
    lesions themselves. If the MAD is 0 (flat images), the standard deviation is used instead;
    if that is 0 too, nothing is hyperintense. Connected components (``connectivity``) of fewer
    than ``min_size`` voxels are dropped as noise.

    Parameters
    ----------
    baseline : ndarray
        3D baseline FLAIR (any intensity scale; normalisation does not change the rule).
    brain_mask : ndarray, optional
        3D brain mask; by default the non-zero voxels of ``baseline`` (a skull-stripped image).
    k : float
        Number of robust standard deviations above the median (default 3).
    min_size : int
        Minimum size in voxels of a kept hyperintensity (default 5).
    connectivity : {6, 18, 26}
        Neighbourhood of the connected components.

    Returns
    -------
    ndarray of bool
        The baseline hyperintensity mask.
    """
    baseline = np.asarray(baseline, dtype=np.float32)
    if baseline.ndim != 3:
        raise ValueError(f"the baseline image must be 3D, got shape {baseline.shape}")
    if brain_mask is None:
        brain = baseline != 0
    else:
        brain = np.asarray(brain_mask) > 0
        _check_same_shape(baseline=baseline, brain_mask=brain)
    brain &= np.isfinite(baseline)
    values = baseline[brain]
    if values.size == 0:
        return np.zeros(baseline.shape, dtype=bool)
    median = float(np.median(values))
    spread = MAD_TO_SD * float(np.median(np.abs(values - median)))
    if spread == 0.0:
        spread = float(values.std())
    if spread == 0.0:
        return np.zeros(baseline.shape, dtype=bool)
    hyper = brain & (baseline > median + k * spread)
    labels, _ = label_connected_components(hyper, connectivity=connectivity)
    return relabel_by_size(labels, min_size=min_size) > 0


def lesion_table(
    labels: np.ndarray,
    probability: np.ndarray,
    baseline: np.ndarray,
    followup: np.ndarray,
    affine: np.ndarray,
    zooms: Sequence[float],
    baseline_hyperintensity: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Make one row per labelled change with its size, position, probability and type.

    Columns (see :func:`lesion_table_sidecar` for units): ``label``, ``type``, ``voxels``,
    ``volume_mm3`` (voxels x product of ``zooms``), ``centroid_i/j/k`` (mean voxel index),
    ``centroid_x/y/z`` (``affine @ [i, j, k, 1]``, scanner mm), ``prob_max``, ``prob_mean``,
    ``baseline_mean`` and ``followup_mean`` (mean normalised FLAIR inside the change).

    ``type`` is ``"enlarging"`` when the change overlaps, or touches (the hyperintensity mask is
    dilated by one voxel in the 26-neighbourhood), a hyperintensity already present at baseline,
    else ``"new"``.

    Parameters
    ----------
    labels : ndarray of int
        3D label image (0 background), e.g. from :func:`.components.change_components`.
    probability, baseline, followup : ndarray
        3D change probability and the two normalised FLAIR images on the same grid as ``labels``.
    affine : ndarray, shape (4, 4)
        Voxel-to-scanner (mm) transform of the grid.
    zooms : sequence of 3 float
        Voxel size in mm.
    baseline_hyperintensity : ndarray of bool, optional
        Hyperintensities present at baseline; by default
        ``baseline_hyperintensities(baseline)`` (non-zero voxels as the brain).

    Returns
    -------
    list of dict
        One dict per label present, in increasing label order (keys = ``LESION_TABLE_COLUMNS``).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"the label image must be 3D, got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("the label image has negative labels")
    probability = np.asarray(probability, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    followup = np.asarray(followup, dtype=np.float64)
    _check_same_shape(labels=labels, probability=probability, baseline=baseline, followup=followup)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"the affine must be 4x4, got shape {affine.shape}")
    zooms = np.asarray(zooms, dtype=np.float64)
    if zooms.shape != (3,) or not np.all(zooms > 0):
        raise ValueError(f"zooms must be three positive voxel sizes in mm, got {zooms.tolist()}")
    voxel_volume = float(np.prod(zooms))

    if baseline_hyperintensity is None:
        baseline_hyperintensity = baseline_hyperintensities(baseline)
    baseline_hyperintensity = np.asarray(baseline_hyperintensity) > 0
    _check_same_shape(labels=labels, baseline_hyperintensity=baseline_hyperintensity)

    index = np.unique(labels[labels > 0])
    if index.size == 0:
        return []
    foreground = np.flatnonzero(labels)
    fg_labels = labels.ravel()[foreground].astype(np.int64)
    n_bins = int(index.max()) + 1
    counts = np.bincount(fg_labels, minlength=n_bins)
    ijk = np.unravel_index(foreground, labels.shape)
    sums = [np.bincount(fg_labels, weights=axis.astype(np.float64), minlength=n_bins) for axis in ijk]
    centroids_ijk = np.stack([s[index] / counts[index] for s in sums], axis=1)
    centroids_xyz = (affine[:3, :3] @ centroids_ijk.T).T + affine[:3, 3]

    # Per-label statistics from the foreground voxels only (ndimage.maximum is slow on big grids).
    def label_mean(image: np.ndarray) -> np.ndarray:
        total = np.bincount(fg_labels, weights=image.ravel()[foreground], minlength=n_bins)
        return total[index] / counts[index]

    prob_max = np.full(n_bins, -np.inf)
    np.maximum.at(prob_max, fg_labels, probability.ravel()[foreground])
    prob_max = prob_max[index]
    prob_mean = label_mean(probability)
    baseline_mean = label_mean(baseline)
    followup_mean = label_mean(followup)

    # Dilate the baseline hyperintensities only around the changes (1 voxel of margin is exact).
    low = np.maximum(np.min(ijk, axis=1) - 1, 0)
    high = np.minimum(np.max(ijk, axis=1) + 2, labels.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    touching = ndimage.binary_dilation(
        baseline_hyperintensity[box], structure=ndimage.generate_binary_structure(3, 3)
    )
    in_box = tuple(axis - lo for axis, lo in zip(ijk, low))
    touched = np.bincount(fg_labels[touching[in_box]], minlength=n_bins) > 0

    rows = []
    for n, label in enumerate(index):
        rows.append(
            {
                "label": int(label),
                "type": "enlarging" if touched[label] else "new",
                "voxels": int(counts[label]),
                "volume_mm3": float(counts[label] * voxel_volume),
                "centroid_i": float(centroids_ijk[n, 0]),
                "centroid_j": float(centroids_ijk[n, 1]),
                "centroid_k": float(centroids_ijk[n, 2]),
                "centroid_x": float(centroids_xyz[n, 0]),
                "centroid_y": float(centroids_xyz[n, 1]),
                "centroid_z": float(centroids_xyz[n, 2]),
                "prob_max": float(prob_max[n]),
                "prob_mean": float(prob_mean[n]),
                "baseline_mean": float(baseline_mean[n]),
                "followup_mean": float(followup_mean[n]),
            }
        )
    return rows


def change_dseg_lookup(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Build the BIDS ``dseg.tsv`` rows of a change label image from its lesion table rows.

    The change label image holds one label per change (1..n, the lesion table's ``label``), so
    the lookup table has one row per change: ``index`` = label, ``name`` = "<type> change
    <label>", ``abbreviation`` and ``color`` of its type (:data:`CHANGE_TYPE_LOOKUP`: new and
    enlarging changes get one colour each in a viewer), ``mapping`` = 7, the BIDS common label
    "Lesion".

    Parameters
    ----------
    rows : sequence of dict
        Lesion table rows (:func:`lesion_table`), with at least ``label`` and ``type``.

    Returns
    -------
    list of dict
        Keys of :data:`DSEG_LOOKUP_COLUMNS`, in label order; empty when there is no change.
    """
    lookup = []
    for row in sorted(rows, key=lambda r: int(r["label"])):
        if row["type"] not in CHANGE_TYPE_LOOKUP:
            raise ValueError(f"change {row['label']} has type {row['type']!r}; the lookup table "
                             f"knows {sorted(CHANGE_TYPE_LOOKUP)}")
        abbreviation, color = CHANGE_TYPE_LOOKUP[row["type"]]
        lookup.append({"index": int(row["label"]), "name": f"{row['type']} change {int(row['label'])}",
                       "abbreviation": abbreviation, "color": color, "mapping": BIDS_LESION_INDEX})
    return lookup


def lesion_table_sidecar() -> dict[str, dict[str, Any]]:
    """Return the BIDS JSON sidecar of the lesion table: a Description (and Units) per column.

    Units are given in CMIXF for every physical quantity; dimensionless columns (probability,
    normalised intensity, labels, voxel indices) say so in their Description instead.
    """
    return {
        "label": {
            "Description": "Label of the change in the change mask (1 = largest change; labels are "
            "ordered by decreasing size).",
        },
        "type": {
            "Description": "Whether the change touches a hyperintensity already present at baseline.",
            "Levels": {
                "enlarging": "The change overlaps or touches (1-voxel dilation, 26-neighbourhood) a "
                "baseline hyperintensity (brain voxels brighter than median + 3 x 1.4826 x MAD, "
                "components of at least 5 voxels).",
                "new": "The change does not touch any baseline hyperintensity.",
            },
        },
        "voxels": {
            "Description": "Number of voxels of the change on the grid of the change mask.",
            "Units": "voxel",
        },
        "volume_mm3": {
            "Description": "Volume of the change: number of voxels times the voxel volume.",
            "Units": "mm^3",
        },
        "centroid_i": {
            "Description": "Centroid of the change: mean voxel index along the first array axis "
            "(zero-based) of the change mask.",
            "Units": "voxel",
        },
        "centroid_j": {
            "Description": "Centroid of the change: mean voxel index along the second array axis "
            "(zero-based) of the change mask.",
            "Units": "voxel",
        },
        "centroid_k": {
            "Description": "Centroid of the change: mean voxel index along the third array axis "
            "(zero-based) of the change mask.",
            "Units": "voxel",
        },
        "centroid_x": {
            "Description": "Centroid of the change in scanner coordinates (x), through the affine "
            "of the change mask.",
            "Units": "mm",
        },
        "centroid_y": {
            "Description": "Centroid of the change in scanner coordinates (y), through the affine "
            "of the change mask.",
            "Units": "mm",
        },
        "centroid_z": {
            "Description": "Centroid of the change in scanner coordinates (z), through the affine "
            "of the change mask.",
            "Units": "mm",
        },
        "prob_max": {
            "Description": "Maximum change probability inside the change (dimensionless, 0 to 1).",
        },
        "prob_mean": {
            "Description": "Mean change probability inside the change (dimensionless, 0 to 1).",
        },
        "baseline_mean": {
            "Description": "Mean intensity of the normalised baseline FLAIR inside the change "
            "(dimensionless, in the pipeline's intensity normalisation).",
        },
        "followup_mean": {
            "Description": "Mean intensity of the normalised follow-up FLAIR inside the change "
            "(dimensionless, in the pipeline's intensity normalisation).",
        },
    }


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(array) for name, array in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"the images must share one grid, got shapes: {listed}")
