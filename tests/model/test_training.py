"""train_change_detector end to end on two tiny synthetic pairs, and resuming from checkpoints."""

import csv
import json

import numpy as np
import pytest

from bids_lesionchange.model.inference import predict_change
from bids_lesionchange.model.io import load_detector, load_vae, sha256_of
from bids_lesionchange.model.training import split_pairs, train_change_detector


def test_training_writes_a_loadable_model_directory_and_resumes(nifti_pairs, micro_hyperparams, tmp_path, make_brain):
    out = train_change_detector(nifti_pairs, tmp_path / "model", micro_hyperparams, work_dir=tmp_path / "work",
                                progress=False, seed=0)
    spec = json.loads((out / "model.json").read_text())
    assert spec["format"] == "bids_lesionchange-model" and spec["weights"] == "detector.weights.h5"
    assert spec["sha256"]["detector.weights.h5"] == sha256_of(out / "detector.weights.h5")
    assert spec["sha256"]["vae.weights.h5"] == sha256_of(out / "vae.weights.h5")
    assert spec["hyperparams"]["training"]["iterations"] == 2
    assert sorted(spec["training"]["training_pairs"] + spec["training"]["validation_pairs"]) == ["sub-00", "sub-01"]
    assert set(spec["software"]) >= {"tensorflow", "keras", "numpy"}
    card = (out / "model_card.md").read_text()
    assert "sub-00" in card and spec["sha256"]["detector.weights.h5"] in card and "preset: `cpu`" in card
    assert len(list((out / "supermix_examples").glob("*.png"))) == 2
    assert list((tmp_path / "work" / "tensorboard").iterdir())
    with open(out / "training_log.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["stage"], r["iteration"]) for r in rows] == [("vae", "1"), ("vae", "2"), ("detector", "1"), ("detector", "2")]
    assert all(r["val_ftl"] != "" for r in rows if r["stage"] == "detector")

    model, loaded_spec = load_detector(out)
    load_vae(out)
    baseline, followup, mask = make_brain((40, 40, 40), 7)
    first = predict_change(model, loaded_spec, baseline, followup, mask)
    assert first.shape == mask.shape and np.all(first[~mask] == 0)

    # a second run with resume finds every iteration done and rewrites the same weights
    weights = (out / "detector.weights.h5").read_bytes()
    train_change_detector(nifti_pairs, out, micro_hyperparams, work_dir=tmp_path / "work", progress=False, seed=0)
    model, loaded_spec = load_detector(out)
    np.testing.assert_array_equal(first, predict_change(model, loaded_spec, baseline, followup, mask))
    with open(out / "training_log.tsv") as handle:
        assert len(list(csv.DictReader(handle, delimiter="\t"))) == 4
    assert len(weights) > 0


def test_validation_split_holds_out_at_least_one_pair():
    train, val = split_pairs(10, 0.2, np.random.default_rng(0))
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    train, val = split_pairs(2, 0.2, np.random.default_rng(0))
    assert len(val) == 1 and len(train) == 1


@pytest.mark.slow
def test_an_interrupted_run_resumes_at_the_next_iteration(nifti_pairs, micro_hyperparams, tmp_path):
    from dataclasses import replace

    short = replace(micro_hyperparams, training=replace(micro_hyperparams.training, iterations=1))
    train_change_detector(nifti_pairs, tmp_path / "m1", short, work_dir=tmp_path / "work", progress=False)
    with open(tmp_path / "work" / "training_log.tsv") as handle:
        vae_rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["stage"] == "vae"]
    train_change_detector(nifti_pairs, tmp_path / "m2", micro_hyperparams, work_dir=tmp_path / "work", progress=False)
    with open(tmp_path / "m2" / "training_log.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r for r in rows if r["stage"] == "vae"] == vae_rows  # the VAE was not trained again
    assert [r["iteration"] for r in rows if r["stage"] == "detector"] == ["1", "2"]
    assert json.loads((tmp_path / "work" / "detector" / "state.json").read_text())["iteration"] == 2


def test_weight_averaging_writes_the_moving_average(nifti_pairs, micro_hyperparams, tmp_path):
    """training.weight_averaging: the model written holds the EMA of the weights, tracked step by step."""
    from dataclasses import replace

    from bids_lesionchange.model.training import DetectorTrainer

    hp = replace(micro_hyperparams, training=replace(micro_hyperparams.training, weight_averaging=0.5))
    trainer = DetectorTrainer(hp, seed=0)
    start = [np.array(v.numpy()) for v in trainer.model.trainable_variables]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 16, 16, 16)).astype(np.float32)
    label = (rng.uniform(size=(2, 16, 16, 16)) > 0.9)
    trainer.train_step(x, x[::-1].copy(), label)
    after = [np.array(v.numpy()) for v in trainer.model.trainable_variables]
    for mean, a, b in zip(trainer.average, start, after):
        np.testing.assert_allclose(mean, 0.5 * a + 0.5 * b, rtol=1e-5, atol=1e-7)
    with trainer.averaged():
        inside = [np.array(v.numpy()) for v in trainer.model.trainable_variables]
    for a, b, c in zip(inside, trainer.average, trainer.model.trainable_variables):
        np.testing.assert_array_equal(a, b)
    for a, v in zip(after, trainer.model.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())  # the model's own weights are back

    out = train_change_detector(nifti_pairs, tmp_path / "model", hp, work_dir=tmp_path / "work", progress=False, seed=0)
    assert (tmp_path / "work" / "detector" / "average.npz").is_file()
    model, _ = load_detector(out)
    with np.load(tmp_path / "work" / "detector" / "average.npz") as saved:
        averaged = [saved[f"w{i}"] for i in range(len(saved.files))]
    written = [w for w in model.trainable_weights]
    assert len(written) == len(averaged)
    for w, a in zip(written, averaged):
        np.testing.assert_array_equal(np.asarray(w.numpy()), a)


def test_the_compiled_training_step_is_traced_once(micro_hyperparams):
    """Adam's moments are built with the trainer, so the first tf.function call does not trace twice."""
    from dataclasses import replace

    from bids_lesionchange.model.training import DetectorTrainer

    params = replace(micro_hyperparams, training=replace(micro_hyperparams.training, graph_mode=True))
    trainer = DetectorTrainer(params, seed=0)
    assert trainer.optimizer.built and len(trainer.optimizer.variables) > 1
    rng = np.random.default_rng(0)
    shape = (2, *params.training.crop_shape)
    for _ in range(2):
        trainer.train_step(rng.uniform(size=shape).astype(np.float32), rng.uniform(size=shape).astype(np.float32),
                           (rng.uniform(size=shape) > 0.9).astype(np.float32))
    assert trainer._step.experimental_get_tracing_count() == 1


def test_prefetched_yields_what_sequential_calls_make_in_order():
    import numpy as np

    from bids_lesionchange.model.training import prefetched

    def maker(seed):
        rng = np.random.default_rng(seed)
        return lambda: rng.standard_normal(3)

    expected = [item for item in prefetched(maker(4), 7, enabled=False)]
    got = list(prefetched(maker(4), 7))
    assert len(got) == 7 and all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert list(prefetched(maker(4), 0)) == []


def test_prefetched_raises_the_error_of_make_where_its_item_was_due():
    import pytest

    from bids_lesionchange.model.training import prefetched

    calls = []

    def make():
        calls.append(len(calls))
        if len(calls) == 3:
            raise ValueError("third batch")
        return len(calls)

    stream = prefetched(make, 5)
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(ValueError, match="third batch"):
        next(stream)
    assert calls == [0, 1, 2]  # nothing made after the failure


def test_prefetch_trains_on_the_same_batches_in_the_same_order(nifti_pairs, micro_hyperparams, tmp_path, monkeypatch):
    import shutil

    from bids_lesionchange.model import training

    seen = {}
    for prefetch in (False, True):
        batches = seen.setdefault(prefetch, [])

        def record(self, mixed, reference, label, batches=batches):
            batches.append((mixed.copy(), reference.copy(), label.copy()))
            return {"loss": 0.0, "final_loss": 0.0}

        monkeypatch.setattr(training.DetectorTrainer, "train_step", record)
        # one work directory: the second run reuses the first one's VAE, trains the detector anew
        shutil.rmtree(tmp_path / "work" / "detector", ignore_errors=True)
        train_change_detector(nifti_pairs, tmp_path / f"model-{prefetch}", micro_hyperparams,
                              work_dir=tmp_path / "work", progress=False, seed=3, prefetch=prefetch)
    assert len(seen[True]) == len(seen[False]) >= 2
    for one, other in zip(seen[False], seen[True]):
        for a, b in zip(one, other):
            np.testing.assert_array_equal(a, b)
