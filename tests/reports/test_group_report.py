"""Group report: training curves, SuperMix examples, validation, metrics across subjects."""

from __future__ import annotations

from bids_lesionchange.analysis.metrics import aggregate_metrics, lesion_metrics
from bids_lesionchange.reports.embed import format_value
from bids_lesionchange.reports.group import GROUP_SECTIONS, build_group_report

def _metric_rows(demo_inputs):
    labels, reference = demo_inputs["labels"], demo_inputs["reference"]
    first = {"subject": "01", "pair": "ses-1to2", **lesion_metrics(labels, reference, zooms=(1, 1, 1))}
    second = {"subject": "02", "pair": "ses-1to2", **lesion_metrics(labels, labels > 0, zooms=(1, 1, 1))}
    return [first, second]

def test_group_report_with_every_part(demo_inputs, tmp_path):
    log = tmp_path / "training_log.tsv"
    log.write_text("iteration\tloss\tval_loss\n1\t0.9\t0.95\n2\t0.6\t0.7\n3\t0.4\t0.55\n")
    example = demo_inputs["pair"]["figures"][0]
    rows = _metric_rows(demo_inputs)
    mean, pooled = aggregate_metrics(rows)
    out = build_group_report(
        tmp_path / "group.html", training_log_tsv=log, supermix_examples=[example],
        validation={"val_dice": 0.61, "figures": [example], "per_case": {"a": 1}},
        metrics_rows=rows + [{"pair": "mean", **mean}],  # an aggregate row is recomputed, not shown twice
        provenance={"version": "0.1.0"},
    )
    html = out.read_text(encoding="utf-8")
    for anchor, _ in GROUP_SECTIONS:
        assert f'id="{anchor}"' in html
    # Curves, one SuperMix example, one validation figure, the metrics plot: four PNGs.
    assert html.count('src="data:image/png;base64,') == 4
    assert "0.55" in html  # last val_loss listed
    assert "val_dice" in html and "per_case" in html
    assert html.count('>01</td>') == 1 and html.count('>02</td>') == 1
    assert format_value(pooled["LTPR"]) in html and format_value(mean["LTPR"]) in html
    assert format_value(mean["LTPR"]) != format_value(pooled["LTPR"])  # 0.833 vs 0.800
    assert html.count(">mean</td>") == 1 and html.count(">pooled</td>") == 1
    assert "not available" not in html and "n/a" not in html
    assert "<script" not in html

def test_empty_group_report(tmp_path):
    html = build_group_report(tmp_path / "g.html", training_log_tsv=tmp_path / "missing.tsv",
                              provenance=None).read_text()
    assert "missing.tsv was not found" in html
    assert html.count("not available") >= 4
    assert "<img" not in html
