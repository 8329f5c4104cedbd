"""benchmarks/end_to_end.py: where the predict step's time goes, read from the app's log."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def end_to_end():
    return load_benchmark("end_to_end")


def test_the_predict_parts_are_read_from_the_line_predict_files_logs(end_to_end, caplog, tmp_path, monkeypatch):
    """The parser reads the line the package writes (not a copy of it), summed over the pairs of a run."""
    import numpy as np

    from bids_lesionchange.model import files

    # predict_files' own log line, with the model and TensorFlow replaced: only the line matters here
    monkeypatch.setattr(files, "load_predictor", lambda model_dir: (None, {}))
    monkeypatch.setattr("bids_lesionchange.model.inference.predict_change",
                        lambda model, spec, b, f, m, window=None: np.zeros(b.shape, np.float32))
    import nibabel as nib

    paths = []
    for name in ("b", "f", "m"):
        paths.append(str(tmp_path / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), paths[-1])
    with caplog.at_level(logging.INFO, logger=files.LOGGER.name):
        for k in range(2):
            files.predict_files("model", *paths, str(tmp_path / f"p{k}.nii.gz"))
    log = "\n".join(f"261202-19:03:24 [INFO] {r.name}: {r.getMessage()}" for r in caplog.records)
    parts = end_to_end.predict_parts(log)
    assert set(parts) == {"tensorflow_import", "load", "compute", "write"}
    assert all(value >= 0 for value in parts.values())
    line = "predict: TensorFlow imported in 4.9 s, model and images loaded in 0.6 s, map computed in 3.3 s " \
           "(graph traced and run), written in 0.2 s"
    assert end_to_end.predict_parts(f"{line}\nother\n{line}") == {"tensorflow_import": 9.8, "load": 1.2,
                                                                  "compute": 6.6, "write": 0.4}
    assert end_to_end.predict_parts("no such line") is None
