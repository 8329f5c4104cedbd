"""Self-supervised adaptation: a copy of the model is fine-tuned, the base model is untouched."""

import json

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.model import adapt
from bids_lesionchange.model.adapt import adapt_detector, adapt_files, interpolate_weights, session_self_pairs
from bids_lesionchange.model.io import load_detector, read_model_spec, sha256_of
from bids_lesionchange.model.training import train_change_detector


@pytest.fixture
def micro_model(nifti_pairs, micro_hyperparams, tmp_path):
    return train_change_detector(nifti_pairs, tmp_path / "model", micro_hyperparams, work_dir=tmp_path / "work",
                                 progress=False, seed=0)


def _weights(model_dir):
    model, _ = load_detector(model_dir)
    return [np.asarray(w) for w in model.get_weights()]


def test_adaptation_writes_a_new_verified_model_and_leaves_the_base_untouched(micro_model, make_brain, tmp_path):
    base_digest = sha256_of(micro_model / "detector.weights.h5")
    baseline, followup, mask = make_brain((40, 40, 40), 3)
    out = adapt_detector(micro_model, [("ses-01", baseline, mask), ("ses-02", followup, mask)],
                         tmp_path / "adapted", steps=2, seed=1, description="test pair")
    assert sha256_of(micro_model / "detector.weights.h5") == base_digest
    spec = read_model_spec(out)  # verifies the new digests
    adaptation = spec["training"]["adaptation"]
    assert adaptation["base_detector_sha256"] == base_digest
    assert adaptation["sessions"] == ["ses-01", "ses-02"] and adaptation["steps"] == 2 and adaptation["seed"] == 1
    assert adaptation["learning_rate"] < spec["hyperparams"]["training"]["learning_rate"]
    assert adaptation["interpolation"] == adapt.INTERPOLATION
    assert spec["hyperparams"] == json.loads((micro_model / "model.json").read_text())["hyperparams"]
    # Adam moved at least one weight (two steps with a non-zero learning rate always do)
    before, after = _weights(micro_model), _weights(out)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_interpolate_weights():
    base = [np.zeros((2, 3), np.float32), np.full(4, 2.0, np.float32)]
    tuned = [np.ones((2, 3), np.float32), np.full(4, 4.0, np.float32)]
    half = interpolate_weights(base, tuned, 0.5)
    np.testing.assert_array_equal(half[0], np.full((2, 3), 0.5))
    np.testing.assert_array_equal(half[1], np.full(4, 3.0))
    assert half[0].dtype == np.float32
    for factor, expected in ((0.0, base), (1.0, tuned)):
        for got, want in zip(interpolate_weights(base, tuned, factor), expected):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        interpolate_weights(base, tuned, 1.5)
    with pytest.raises(ValueError, match="number or shape"):
        interpolate_weights(base, tuned[:1])


def test_the_saved_weights_are_the_interpolation(micro_model, make_brain, tmp_path, monkeypatch):
    """With the factor at 0 the fine-tuned steps are taken but the base weights are what is saved."""
    monkeypatch.setattr(adapt, "INTERPOLATION", 0.0)
    baseline, _, mask = make_brain((40, 40, 40), 3)
    out = adapt_detector(micro_model, [("ses-01", baseline, mask)], tmp_path / "zero", steps=2, seed=1)
    assert read_model_spec(out)["training"]["adaptation"]["interpolation"] == 0.0
    for a, b in zip(_weights(micro_model), _weights(out)):
        np.testing.assert_array_equal(a, b)


def test_zero_steps_copies_the_weights(micro_model, make_brain, tmp_path):
    baseline, _, mask = make_brain((40, 40, 40), 3)
    out = adapt_detector(micro_model, [("ses-01", baseline, mask)], tmp_path / "copy", steps=0)
    for a, b in zip(_weights(micro_model), _weights(out)):
        np.testing.assert_array_equal(a, b)


def test_self_pairs_are_one_session_against_itself_padded():
    image = np.random.default_rng(0).uniform(0, 1, (20, 30, 40)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[2:18, 2:28, 2:38] = True
    (pair,) = session_self_pairs([("s", image, mask)], (32, 32, 32))
    assert pair.baseline is pair.followup and pair.baseline.shape == (32, 32, 40)
    assert not pair.baseline[~pair.brain_mask].any()
    with pytest.raises(ValueError, match="empty"):
        session_self_pairs([("s", image, np.zeros_like(mask))], (32, 32, 32))


def test_adapt_files_names_an_unreadable_image(micro_model, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4)), str(mask))
    with pytest.raises(ValueError, match="broken.nii.gz"):
        adapt_files(micro_model, [str(bad)], [str(mask)], tmp_path / "out", steps=1)


def test_hard_negatives_are_the_brain_voxels_above_the_threshold(micro_model, make_brain):
    from bids_lesionchange.model.inference import predict_change
    from bids_lesionchange.synth.crops import brain_pair

    baseline, followup, mask = make_brain((40, 40, 40), 3)
    model, spec = load_detector(micro_model)
    pair = brain_pair("p", baseline, followup, mask, (16, 16, 16))
    probability = predict_change(model, spec, pair.baseline, pair.followup, pair.brain_mask)
    threshold = float(np.quantile(probability[pair.brain_mask], 0.9))  # a threshold some voxels pass
    found = adapt.hard_negatives(model, spec, pair, threshold)
    expected = np.flatnonzero((probability > threshold) & pair.brain_mask)
    assert found.size > 0
    np.testing.assert_array_equal(found, expected)
    assert pair.brain_mask.ravel()[found].all()
    assert adapt.hard_negatives(model, spec, pair, 1.0).size == 0


def test_fine_tuning_on_pairs_records_what_it_did(micro_model, make_brain, tmp_path):
    from bids_lesionchange.synth.crops import brain_pair

    baseline, followup, mask = make_brain((40, 40, 40), 3)
    pair = brain_pair("sub-01_pair", baseline, followup, mask, (16, 16, 16))
    pair.focus = np.flatnonzero(pair.brain_mask)[:10]
    out = adapt.fine_tune_detector(micro_model, [pair], tmp_path / "tuned", steps=2, seed=3, interpolation=1.0,
                                   learning_rate_factor=0.5, focus_fraction=0.5, swap_sessions=True,
                                   record={"hard_negative_voxels": {"sub-01_pair": 10}})
    spec = read_model_spec(out)
    tuning = spec["training"]["adaptation"]
    assert tuning["pairs"] == ["sub-01_pair"] and tuning["focus_fraction"] == 0.5
    assert tuning["interpolation"] == 1.0 and tuning["hard_negative_voxels"] == {"sub-01_pair": 10}
    assert tuning["learning_rate"] == pytest.approx(0.5 * spec["hyperparams"]["training"]["learning_rate"])
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(micro_model), _weights(out)))
    with pytest.raises(ValueError, match="focus_fraction"):
        adapt.fine_tune_detector(micro_model, [pair], tmp_path / "bad", steps=1, focus_fraction=1.5)
