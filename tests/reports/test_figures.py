"""Report figures: files are written, PNGs are valid, overlays land where the changes are."""

from __future__ import annotations

import numpy as np
import pytest

from bids_lesionchange.reports.figures import (
    plot_change_mosaic,
    plot_lesion_slices,
    plot_metric_distribution,
    plot_training_curves,
)


def _read_png(path):
    from matplotlib.image import imread

    return imread(str(path))


def test_mosaic_shows_the_probability_overlay(demo_inputs, tmp_path):
    data = demo_inputs["data"]
    with_overlay = plot_change_mosaic(data["followup"], data["probability"],
                                      demo_inputs["labels"] > 0, tmp_path / "a.png")
    without = plot_change_mosaic(data["followup"], np.zeros_like(data["probability"]),
                                 np.zeros(data["followup"].shape, bool), tmp_path / "b.png")
    a, b = _read_png(with_overlay), _read_png(without)
    assert a.shape == b.shape
    # Hot colours (red >> blue) appear only with the overlay.
    def hot(img):  # the legend (bottom 0.5 inch) has an orange patch: leave it out
        img = img[: img.shape[0] - 60]
        return np.count_nonzero(img[..., 0] - img[..., 2] > 0.2)
    assert hot(a) > 50 and hot(b) == 0


def test_mosaic_with_affine_and_reference(demo_inputs, tmp_path):
    data = demo_inputs["data"]
    affine = np.diag([-1.0, 1.0, 1.2, 1.0])  # LAS: flipped to RAS for display
    path = plot_change_mosaic(data["followup"], data["probability"], demo_inputs["labels"] > 0,
                              tmp_path / "m.png", reference=demo_inputs["reference"], affine=affine)
    assert _read_png(path).std() > 0.05
    with pytest.raises(ValueError, match="different grids"):
        plot_change_mosaic(data["followup"], data["probability"][:10], data["brain"], tmp_path / "x.png")


def test_lesion_slices_one_row_per_change(demo_inputs, tmp_path):
    data = demo_inputs["data"]
    rows = demo_inputs["rows"]
    two = _read_png(plot_lesion_slices(data["followup"], demo_inputs["labels"], rows,
                                       tmp_path / "two.png"))
    one = _read_png(plot_lesion_slices(data["followup"], demo_inputs["labels"], rows[:1],
                                       tmp_path / "one.png"))
    capped = _read_png(plot_lesion_slices(data["followup"], demo_inputs["labels"], rows,
                                          tmp_path / "capped.png", max_lesions=1))
    assert two.shape[0] > 1.8 * one.shape[0]
    assert capped.shape == one.shape
    with_baseline = _read_png(plot_lesion_slices(
        data["followup"], demo_inputs["labels"], rows, tmp_path / "b.png",
        probability=data["probability"], baseline=data["baseline"], affine=np.diag([1, 1, 1.2, 1])))
    assert with_baseline.shape[1] > two.shape[1]  # an extra baseline column


def test_lesion_slices_without_changes(tmp_path):
    image = np.ones((16, 16, 16))
    path = plot_lesion_slices(image, np.zeros((16, 16, 16), int), [], tmp_path / "none.png")
    assert path.is_file() and _read_png(path).max() > 0.5  # the "No change detected" text


def test_training_curves_and_metric_plot(tmp_path):
    log = tmp_path / "training_log.tsv"
    log.write_text("iteration\tloss\tval_loss\tlearning_rate\n"
                   + "".join(f"{i}\t{1 / (i + 1):.4f}\t{1.2 / (i + 1):.4f}\t0.001\n" for i in range(20))
                   + "20\t0.04\tn/a\t0.001\n")
    assert _read_png(plot_training_curves(log, tmp_path / "curves.png")).shape[1] > 1000
    rows = [{"LTPR": 0.5, "LFPR": 0.9, "PPV": 0.1, "lesion_F1": 0.17, "dice": "n/a"},
            {"LTPR": 1.0, "LFPR": 0.5, "PPV": 0.5, "lesion_F1": 0.67, "dice": 0.4}]
    assert plot_metric_distribution(rows, tmp_path / "metrics.png").is_file()
    empty = tmp_path / "empty.tsv"
    empty.write_text("iteration\tloss\n")
    with pytest.raises(ValueError, match="no rows"):
        plot_training_curves(empty, tmp_path / "x.png")
