"""The out-of-domain guard's interface runs on tiny images and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.interfaces.change import ChangePlausibility

SHAPE = (12, 12, 12)


def _files(tmp_path, fraction_above: float):
    prob = np.zeros(SHAPE, np.float32)
    prob.ravel()[:round(fraction_above * prob.size)] = 0.8
    nib.save(nib.Nifti1Image(prob, np.eye(4)), str(tmp_path / "p.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4)), str(tmp_path / "m.nii.gz"))
    return str(tmp_path / "p.nii.gz"), str(tmp_path / "m.nii.gz")


def test_change_plausibility_flags_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prob, mask = _files(tmp_path, 0.5)
    result = ChangePlausibility(probability=prob, brain_mask=mask, n_changes=30, threshold=0.1).run()
    assert result.outputs.out_of_domain is True
    qc = json.loads(Path(result.outputs.qc_json).read_text())
    assert qc["fraction_above_threshold"] == 0.5 and qc["n_changes"] == 30
    assert qc["max_plausible_fraction"] == MAX_PLAUSIBLE_FRACTION and qc["threshold"] == 0.1
    assert qc["message"].startswith("the model does not fit these scans (50.0 % of the brain")


def test_change_plausibility_limit_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prob, mask = _files(tmp_path, 0.5)
    result = ChangePlausibility(probability=prob, brain_mask=mask, n_changes=30,
                                max_fraction=1.0).run()
    assert result.outputs.out_of_domain is False
    assert json.loads(Path(result.outputs.qc_json).read_text())["message"] == ""


def test_the_components_nodes_hash_follows_the_change_rules_code(tmp_path, monkeypatch):
    """A work directory kept from an earlier version must not serve the old rule's changes: the
    digest of the rule's code is a hashed input of the components node, and it follows the code."""
    from bids_lesionchange.analysis import components
    from bids_lesionchange.interfaces.change import ChangeComponents

    prob, mask = _files(tmp_path, 0.1)
    node = ChangeComponents(probability=prob, brain_mask=mask)
    assert node.inputs.rule_digest == components.rule_digest()
    before = node.inputs.get_hashval()[1]
    node.inputs.rule_digest = "another rule"
    assert node.inputs.get_hashval()[1] != before
    # the digest is the code's: a changed line of the rule's module changes it
    source = tmp_path / "components.py"
    source.write_bytes(Path(components.__file__).read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(components, "__file__", str(source))
    assert components.rule_digest() != node.__class__().inputs.rule_digest
