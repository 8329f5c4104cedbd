"""A tiny synthetic subject (two sessions with a new and an enlarging lesion) for report tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

SHAPE = (48, 56, 40)
ZOOMS = (1.0, 1.0, 1.2)


def synthetic_pair(seed: int = 0) -> dict[str, np.ndarray]:
    """Return baseline, follow-up, brain mask and a change probability of a toy head."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij"))
    radius = np.sqrt(((grid / (np.array(SHAPE)[:, None, None, None] * 0.42)) ** 2).sum(axis=0))
    brain = radius < 1.0
    baseline = np.where(brain, 1.0, 0.0)
    baseline[radius < 0.25] = 0.4  # dark "ventricles"
    baseline += brain * 0.04 * rng.standard_normal(SHAPE)
    baseline[30:34, 20:24, 18:22] = 1.8  # lesion present at baseline
    followup = baseline.copy()
    followup[34:37, 20:24, 18:22] = 1.8  # it grows: enlarging change
    followup[14:18, 36:40, 24:28] = 1.8  # a new lesion
    followup += brain * 0.03 * rng.standard_normal(SHAPE)
    probability = np.zeros(SHAPE)
    for centre in ((35, 22, 20), (16, 38, 26)):
        d2 = sum((grid[a] + (SHAPE[a] - 1) / 2 - centre[a]) ** 2 for a in range(3))
        probability = np.maximum(probability, 0.95 * np.exp(-d2 / (2 * 1.2 ** 2)))
    probability[5:8, 5:8, 5:7] = 0.2  # a small blob, removed by the minimum size
    return {"baseline": baseline.astype(np.float32), "followup": followup.astype(np.float32),
            "brain": brain, "probability": probability.astype(np.float32)}


def write_outline_svg(path: Path, image: np.ndarray, mask: np.ndarray) -> Path:
    """Write an SVG reportlet (matplotlib) with a mask outline over three axial slices."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 2.2))
    FigureCanvasAgg(figure)
    for n, k in enumerate((12, 20, 28)):
        ax = figure.add_subplot(1, 3, n + 1)
        ax.imshow(np.rot90(image[:, :, k]), cmap="gray")
        ax.contour(np.rot90(mask[:, :, k]).astype(float), levels=[0.5], colors="red")
        ax.set_axis_off()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue())
    return path


def build_demo_inputs(folder: Path, with_reference: bool = True) -> dict:
    """Make every input of a subject report for one pair; return the pair dict and provenance."""
    from bids_lesionchange.analysis.components import change_components
    from bids_lesionchange.analysis.lesions import baseline_hyperintensities, lesion_table
    from bids_lesionchange.analysis.metrics import lesion_metrics
    from bids_lesionchange.reports.figures import plot_change_mosaic, plot_lesion_slices

    data = synthetic_pair()
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = [-24.0, -28.0, -24.0]
    labels = change_components(data["probability"], threshold=0.1, min_size=20,
                               brain_mask=data["brain"])
    rows = lesion_table(labels, data["probability"], data["baseline"], data["followup"], affine,
                        ZOOMS, baseline_hyperintensities(data["baseline"], data["brain"]))
    reference = np.zeros(SHAPE, bool)
    reference[34:37, 20:24, 18:22] = True
    reference[14:18, 36:40, 24:28] = True
    reference[40:43, 28:31, 10:13] = True  # a change the model missed
    figures = folder / "figures"
    mosaic = plot_change_mosaic(data["followup"], data["probability"], labels > 0,
                                figures / "sub-01_ses-1to2_desc-changemosaic_FLAIR.png",
                                reference=reference if with_reference else None)
    slices = plot_lesion_slices(data["followup"], labels, rows,
                                figures / "sub-01_ses-1to2_desc-changeslices_FLAIR.png",
                                probability=data["probability"], baseline=data["baseline"])
    mask_svg = write_outline_svg(figures / "sub-01_ses-2_desc-brain_mask.svg", data["followup"],
                                 data["brain"])
    registration_svg = write_outline_svg(figures / "sub-01_ses-1to2_desc-registration_FLAIR.svg",
                                         data["baseline"], data["followup"] > 0.7)
    pair = {
        "name": "ses-1 to ses-2",
        "baseline_session": "1",
        "followup_session": "2",
        "qc": {"brain_volume_ml": 812.4, "registration_ncc": 0.9731},
        "mask_svg": mask_svg,
        "registration_svg": registration_svg,
        "figures": [mosaic, slices],
        "lesion_rows": rows,
        "metrics": {"pair": "ses-1 to ses-2", **lesion_metrics(labels, reference, zooms=(1, 1, 1))} if with_reference else None,
        "errors": [],
    }
    provenance = {
        "version": "0.1.0",
        "command line": "bids_lesionchange /data/bids /data/out participant --mode infer",
        "model": "/opt/models/default",
        "model card": "# Siamese U-net change detector\n\nTrained with SuperMix on synthetic pairs.\n",
        "settings": {"threshold": 0.1, "min_blob_size": 20, "match": "iou"},
    }
    return {"pair": pair, "provenance": provenance, "labels": labels, "rows": rows, "data": data,
            "reference": reference}


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory) -> dict:
    """Built once per test module; tests must not modify it."""
    return build_demo_inputs(tmp_path_factory.mktemp("derivatives"))
