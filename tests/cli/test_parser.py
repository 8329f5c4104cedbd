"""Command line: usage errors exit 2 with one sentence; --help/--version stay light."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bids_lesionchange.cli.parser import parse_args


def _fake_model(path: Path) -> Path:
    """A model directory that passes the parse-time checks (its weights are not a network)."""
    from bids_lesionchange.model.io import sha256_of
    from bids_lesionchange.params import HyperParams

    path.mkdir(parents=True)
    (path / "detector.weights.h5").write_bytes(b"x")
    (path / "model.json").write_text(json.dumps({
        "format": "bids_lesionchange-model", "format_version": 1, "weights": "detector.weights.h5",
        "hyperparams": HyperParams().to_dict(),
        "sha256": {"detector.weights.h5": sha256_of(path / "detector.weights.h5")}}))
    return path


def _error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        parse_args([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_bids_dir(tmp_path, capsys):
    err = _error(capsys, [tmp_path / "nope", tmp_path / "out", "participant"])
    assert "does not exist" in err and "root of a BIDS dataset" in err


def test_not_bids(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    err = _error(capsys, [tmp_path / "raw", tmp_path / "out", "participant"])
    assert "dataset_description.json" in err


def test_output_inside_raw_tree(tiny_bids, capsys):
    err = _error(capsys, [tiny_bids, tiny_bids / "out", "participant"])
    assert "inside the raw BIDS tree" in err
    err = _error(capsys, [tiny_bids, tiny_bids, "participant"])
    assert "inside the raw BIDS tree" in err


def test_output_under_derivatives_is_allowed(tiny_bids, tmp_path):
    model = _fake_model(tmp_path / "m")
    s = parse_args([str(tiny_bids), str(tiny_bids / "derivatives" / "lc"), "participant",
                    "--model", str(model)])
    assert s.output_dir == (tiny_bids / "derivatives" / "lc").resolve()


def test_unknown_participant(tiny_bids, tmp_path, capsys):
    err = _error(capsys, [tiny_bids, tmp_path / "out", "participant", "--participant-label", "99"])
    assert "participant label '99' not found" in err


@pytest.mark.parametrize("label", ["../x", "a/b", "sub-0_1"])
def test_bad_label(tiny_bids, tmp_path, capsys, label):
    err = _error(capsys, [tiny_bids, tmp_path / "out", "participant", "--participant-label", label])
    assert "is not a BIDS label" in err


def test_model_dir_without_model(tiny_bids, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", tmp_path / "empty"])
    assert "holds no model" in err and "--model" in err


def test_mode_level_mismatch(tiny_bids, tmp_path, capsys):
    err = _error(capsys, [tiny_bids, tmp_path / "out", "group", "--mode", "infer"])
    assert "does not go with the group level" in err


def test_bad_config(tiny_bids, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detector:\n  nonsense: 3\n")
    err = _error(capsys, [tiny_bids, tmp_path / "out", "group", "--config", cfg])
    assert "unknown hyper-parameter 'detector.nonsense'" in err


def test_config_overrides(tiny_bids, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[detector]\nloss = 'bce'\narchitecture = 'unet'\n")
    s = parse_args([str(tiny_bids), str(tmp_path / "out"), "group", "--config", str(cfg)])
    assert s.hyperparams.detector.loss == "bce" and s.hyperparams.detector.architecture == "unet"
    assert s.mode == "train"


def test_tmp_workdir_refused_with_cluster_plugin(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "m")
    err = _error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model,
                          "--plugin", "SLURM", "-w", "/tmp/wd"])
    assert "shared file system" in err


def test_settings_written(tiny_bids, tmp_path):
    model = _fake_model(tmp_path / "m")
    s = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model)])
    path = s.write(tmp_path / "out" / "logs", "abc")
    data = json.loads(path.read_text())
    assert data["threshold"] == 0.1 and data["min_blob_size"] == 20
    assert data["change_direction"] == "increase"
    assert data["hyperparams"]["supermix"]["tau"] == 0.98
    with pytest.raises(Exception):
        s.threshold = 0.5  # frozen


def test_change_direction_reaches_the_components_node(tiny_bids, tmp_path):
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf

    model = _fake_model(tmp_path / "m")
    s = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model),
                    "--change-direction", "any", "--skip-bids-validation"])
    assert s.change_direction == "any"
    pairs, _ = find_pairs(s.bids_dir)
    workflow = init_bids_lesionchange_wf(settings=s, pairs=pairs[:1])
    node = next(workflow.get_node(name) for name in workflow.list_node_names() if name.endswith(".components"))
    assert node.inputs.direction == "any"


def test_match_msseg2_is_accepted_and_reaches_the_evaluate_node(tiny_bids, tmp_path, capsys):
    from bids_lesionchange.analysis.metrics import MATCH_MODES
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf

    model = _fake_model(tmp_path / "m")
    argv = [str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model),
            "--skip-bids-validation"]
    assert parse_args(argv).match == "iou"  # the paper's rule stays the default
    s = parse_args(argv + ["--match", "msseg2"])
    assert s.match == "msseg2"
    pairs, _ = find_pairs(s.bids_dir)
    reference = tmp_path / "reference_mask.nii.gz"
    reference.write_bytes(b"")  # only its existence is checked while the graph is built
    workflow = init_bids_lesionchange_wf(settings=s, pairs=pairs[:1], references={pairs[0].name: reference})
    node = next(workflow.get_node(name) for name in workflow.list_node_names() if name.endswith(".evaluate"))
    assert node.inputs.match == "msseg2"
    for mode in MATCH_MODES:  # the parser (stdlib only) offers every rule the scorer has
        assert parse_args(argv + ["--match", mode]).match == mode
    err = _error(capsys, argv + ["--match", "anima"])
    assert "--match" in err and "msseg2" in err


def test_the_change_labels_lookup_table_is_sunk_beside_the_labels(tiny_bids, tmp_path):
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf

    model = _fake_model(tmp_path / "m")
    s = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model),
                    "--skip-bids-validation"])
    pairs, _ = find_pairs(s.bids_dir)
    workflow = init_bids_lesionchange_wf(settings=s, pairs=pairs[:1])
    nodes = {name.rsplit(".", 1)[-1]: workflow.get_node(name) for name in workflow.list_node_names()}
    labels, lookup = nodes["ds_labels"].inputs.out_path, nodes["ds_labels_lookup"].inputs.out_path
    assert labels.endswith("_desc-change_dseg.nii.gz")
    assert lookup == labels[: -len(".nii.gz")] + ".tsv"  # same entities, BIDS per-file lookup
    assert not nodes["ds_labels_lookup"].inputs.meta_dict  # no JSON: the NIfTI's sidecar is shared


def test_help_and_version_do_not_import_tf_or_nipype():
    code = (
        "import sys\n"
        "from bids_lesionchange.cli.run import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorflow', 'nipype', 'keras', 'torch', 'bids') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "bids_lesionchange 0." in out


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "lots"])
def test_max_change_fraction_must_lie_in_zero_one(tiny_bids, tmp_path, capsys, value):
    err = _error(capsys, [tiny_bids, tmp_path / "out", "participant", "--max-change-fraction", value])
    assert "--max-change-fraction" in err
    assert "(0, 1]" in err or "not a number" in err


def test_max_change_fraction_reaches_the_plausibility_node(tiny_bids, tmp_path):
    from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf

    model = _fake_model(tmp_path / "m")
    argv = [str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model)]
    assert parse_args(argv).max_change_fraction == MAX_PLAUSIBLE_FRACTION
    assert parse_args(argv + ["--max-change-fraction", "1"]).max_change_fraction == 1.0
    s = parse_args(argv + ["--max-change-fraction", "0.3", "--threshold", "0.2"])
    pairs, _ = find_pairs(s.bids_dir)
    workflow = init_bids_lesionchange_wf(settings=s, pairs=pairs[:1])
    names = workflow.list_node_names()
    node = next(workflow.get_node(n) for n in names if n.endswith(".plausibility"))
    assert node.inputs.max_fraction == 0.3 and node.inputs.threshold == 0.2
    sink = next(workflow.get_node(n) for n in names if n.endswith(".ds_change_qc"))
    assert sink.inputs.out_path == "sub-01/ses-02/anat/sub-01_ses-02_space-ses02_desc-change_qc.json"


@pytest.mark.parametrize("verbosity, library_level, handler_level", [(0, "WARNING", "INFO"), (1, "INFO", "INFO"),
                                                                    (2, "DEBUG", "DEBUG")])
def test_verbosity_changes_what_is_logged(tmp_path, verbosity, library_level, handler_level):
    import logging
    from types import SimpleNamespace

    from bids_lesionchange.cli.run import _setup_logging

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        _setup_logging(SimpleNamespace(verbosity=verbosity), tmp_path, "test")
        added = [h for h in root.handlers if h not in before]
        assert {logging.getLevelName(h.level) for h in added} == {handler_level}
        assert logging.getLevelName(logging.getLogger("nipype.interface").level) == library_level
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
        logging.getLogger("nipype.interface").setLevel(logging.WARNING)


@pytest.mark.parametrize("inside", ["", "work"])
def test_work_dir_inside_the_output_dir_is_refused(tmp_path, capsys, inside):
    from bids_lesionchange.cli.parser import parse_args

    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        parse_args([str(bids), str(out), "group", "--mode", "evaluate", "-w", str(out / inside)])
    assert exit_info.value.code == 2
    assert "inside the output directory" in capsys.readouterr().err
