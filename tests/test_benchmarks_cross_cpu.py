"""The cross-CPU comparison of two real_flair.py results: what it counts as the same answer."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def cross_cpu():
    return load_benchmark("cross_cpu")


def result(family: int, changes: dict, above: dict, f1: float | None = None) -> dict:
    def scores(pair):
        out = {m: {"n_changes": changes[pair][i], "fraction_above": above[pair][i]}
               for i, m in enumerate(("model", "subtraction d > 0.1"))}
        if f1 is not None and pair == "phantom1":
            out["model"]["lesion_F1"] = f1
        return out

    return {"command": "python benchmarks/real_flair.py --seed 780 --name x",
            "machine": {"cpu": {"model": "AMD EPYC", "family": family, "model_number": 1,
                                "extensions": ["avx2", "fma"]}},
            "results": {pair: {"kind": "nochange" if pair != "phantom1" else "phantom", "scores": scores(pair)}
                        for pair in changes}}


def test_pairs_with_the_same_count_and_the_largest_difference_in_share(cross_cpu):
    a = result(25, {"p1": (0, 3), "p2": (1, 4), "phantom1": (6, 6)},
               {"p1": (0.0010, 0.02), "p2": (0.0030, 0.03), "phantom1": (0.0030, 0.01)}, f1=0.75)
    b = result(26, {"p1": (0, 3), "p2": (2, 4), "phantom1": (6, 5), "only_b": (0, 0)},
               {"p1": (0.0012, 0.02), "p2": (0.0060, 0.03), "phantom1": (0.0030, 0.01), "only_b": (0, 0)}, f1=0.70)
    out = cross_cpu.compare(a, b)
    assert out["summary"]["model"] == {"pairs": 3, "same_number_of_changes": 2,
                                       "largest_difference_percent_above": pytest.approx(0.30)}
    assert out["summary"]["subtraction d > 0.1"]["same_number_of_changes"] == 2
    assert out["pairs_in_one_run_only"] == ["only_b"]
    phantom = next(r for r in out["rows"] if r["pair"] == "phantom1" and r["method"] == "model")
    assert phantom["lesion_F1"] == [0.75, 0.70] and phantom["changes"] == [6, 6]


def test_main_writes_both_files_and_refuses_a_missing_result(cross_cpu, tmp_path, monkeypatch):
    monkeypatch.setattr(cross_cpu, "RESULTS", tmp_path)
    monkeypatch.setattr(cross_cpu, "setup_logging", lambda: None)  # no root-logger handler left behind
    import _common  # the writer's own module constant

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    a = result(25, {"p1": (0, 1)}, {"p1": (0.001, 0.01)})
    (tmp_path / "ra.json").write_text(json.dumps(a))
    with pytest.raises(SystemExit, match="no results .*rb.json"):
        cross_cpu.main(["ra", "rb"])
    (tmp_path / "rb.json").write_text(json.dumps(a))
    assert cross_cpu.main(["ra", "rb", "--name", "cc"]) == 0
    written = json.loads((tmp_path / "cc.json").read_text())
    assert written["summary"]["model"]["same_number_of_changes"] == 1
    assert "family 25 model 1 (avx2)" in (tmp_path / "cc.md").read_text()
