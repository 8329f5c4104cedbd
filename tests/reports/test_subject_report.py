"""Subject report: every part shown when given, "not available" when missing, never a crash."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from bids_lesionchange.reports.subject import SUBJECT_SECTIONS, build_subject_report


class _Collector(HTMLParser):
    """Collect tags, attributes and section ids of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def test_full_report_has_every_section_and_embedded_images(demo_inputs, tmp_path):
    out = build_subject_report(tmp_path / "sub-01.html", subject="01", pairs=[demo_inputs["pair"]],
                               provenance=demo_inputs["provenance"])
    html = out.read_text(encoding="utf-8")
    page = _parse(out)
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {anchor for anchor, _ in SUBJECT_SECTIONS} <= ids
    # Two PNG figures as data URIs that decode to PNG files, two inline SVG reportlets.
    sources = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(sources) == 2
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(1 for tag, _ in page.tags if tag == "svg") == 2
    # Self-contained: no script, no external reference, no XML prolog inside the page.
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<?xml" not in html
    # The summary counts the changes and their volume; the lesion table lists both types.
    rows = demo_inputs["rows"]
    total = sum(r["volume_mm3"] for r in rows)
    assert f"{total:.1f}" in html
    assert 'class="badge new"' in html and 'class="badge enlarging"' in html
    # Metrics and provenance are shown.
    assert "LTPR" in html and "0.667" in html  # 2 of 3 reference changes found
    assert "Siamese U-net change detector" in html
    assert "--mode infer" in html
    assert "No errors reported." in html
    assert "not available" not in html
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_missing_parts_are_reported_not_raised(tmp_path):
    pairs = [
        {"name": "ses-1 to ses-2", "baseline_session": "1", "followup_session": "2",
         "mask_svg": tmp_path / "absent.svg", "registration_svg": None,
         "figures": [tmp_path / "absent.png"], "lesion_rows": [], "metrics": None,
         "errors": ["step 'skullstrip' failed: corrupt FLAIR"]},
        {},  # nothing at all
    ]
    out = build_subject_report(tmp_path / "sub-02.html", subject="02", pairs=pairs, provenance=None)
    html = out.read_text(encoding="utf-8")
    assert html.count("not available") >= 8
    assert "absent.svg was not produced" in html
    assert "skullstrip" in html and "corrupt FLAIR" in html
    assert 'class="errors"' in html
    assert "<img" not in html and "<svg" not in html
    assert "pair 2" in html  # an unnamed pair still gets a heading


def test_no_change_is_not_the_same_as_not_available(tmp_path):
    pair = {"name": "a", "baseline_session": "1", "followup_session": "2", "lesion_rows": [],
            "errors": []}
    html = build_subject_report(tmp_path / "r.html", subject="03", pairs=[pair],
                                provenance={}).read_text()
    assert "no change detected" in html


def test_unembeddable_image_and_hostile_svg(tmp_path):
    svg = tmp_path / "x.svg"
    svg.write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
                   'xmlns:xlink="http://www.w3.org/1999/xlink" width="100pt" height="50pt" '
                   'viewBox="0 0 100 50" onload="alert(1)"><script>alert(2)</script>'
                   '<image xlink:href="http://example.org/x.png"/><rect id="r" width="10" '
                   'height="10"/><use xlink:href="#r"/></svg>')
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    pair = {"name": "a", "mask_svg": svg, "registration_svg": text, "figures": [], "errors": []}
    html = build_subject_report(tmp_path / "r.html", subject="04", pairs=[pair],
                                provenance={}).read_text()
    assert "alert" not in html
    assert "example.org" not in html
    assert 'xlink:href="#r"' in html  # internal references survive
    assert 'width="100pt"' not in html  # scaled by CSS through the viewBox
    assert "not an SVG, PNG, JPEG or GIF image" in html


def test_lesion_rows_read_back_from_tsv_render(demo_inputs, tmp_path):
    from bids_lesionchange.analysis.lesions import LESION_TABLE_COLUMNS, write_table_tsv
    from bids_lesionchange.analysis.tables import read_table_tsv

    tsv = write_table_tsv(demo_inputs["rows"], tmp_path / "t.tsv", LESION_TABLE_COLUMNS)
    pair = dict(demo_inputs["pair"], lesion_rows=read_table_tsv(tsv))
    pair["lesion_rows"][0]["prob_mean"] = float("nan")
    html = build_subject_report(tmp_path / "r.html", subject="01", pairs=[pair],
                                provenance={}).read_text()
    assert "n/a" in html
    assert html.count('class="badge ') == 2


def _guarded_pair(demo_inputs, change_qc):
    return dict(demo_inputs["pair"], change_qc=change_qc)


def test_out_of_domain_pair_gets_a_warning_box(demo_inputs, tmp_path):
    from bids_lesionchange.analysis.plausibility import change_plausibility

    prob = np.full((10, 10, 10), 0.9, np.float32)
    prob[0] = 0.0  # 90 % of the brain above kappa
    qc = {**change_plausibility(prob, np.ones(prob.shape, bool), 0.1, 96), "threshold": 0.1}
    html = build_subject_report(tmp_path / "r.html", subject="01",
                                pairs=[_guarded_pair(demo_inputs, qc)], provenance={}).read_text()
    boxes = re.findall(r'<div class="warning-box" role="alert">(.*?)</div>', html, re.S)
    assert len(boxes) == 2  # at the top of the page and in the pair's change-detection section
    assert all("the model does not fit these scans (90.0 % of the brain" in b for b in boxes)
    assert "ses-1 to ses-2" in boxes[0]  # the top box names the pair
    text = " ".join(html.split())
    assert "90.0 % of the brain above κ = 0.1 (plausible up to 2 %); 96 change(s) found" in text
    assert '<td class="error">90.0 %</td>' in html  # the summary table marks it too


def test_plausible_pair_shows_its_measures_without_a_warning(demo_inputs, tmp_path):
    qc = {"fraction_above_threshold": 0.0012, "n_changes": 2, "max_plausible_fraction": 0.02,
          "out_of_domain": False, "message": "", "threshold": 0.1}
    html = build_subject_report(tmp_path / "r.html", subject="01",
                                pairs=[_guarded_pair(demo_inputs, qc)], provenance={}).read_text()
    assert 'class="warning-box"' not in html
    text = " ".join(html.split())
    assert "0.1 % of the brain above κ = 0.1 (plausible up to 2 %); 2 change(s) found" in text
    # A pair without the measures (preprocess only, or an older run) has no warning either.
    html = build_subject_report(tmp_path / "r2.html", subject="01", pairs=[demo_inputs["pair"]],
                                provenance={}).read_text()
    assert 'class="warning-box"' not in html and "of the brain above κ" not in html


def test_the_report_says_what_computed_the_map(demo_inputs, tmp_path):
    qc = {"fraction_above_threshold": 0.0012, "n_changes": 2, "max_plausible_fraction": 0.02,
          "out_of_domain": False, "message": "", "threshold": 0.1,
          "compute": {"cpu": "AMD EPYC", "vector_extensions": ["avx2", "avx512f"], "onednn_max_cpu_isa": "AVX2",
                      "graph": "polyphase", "precision": "float32", "threads": 2, "tensorflow": "2.21.0"}}
    html = build_subject_report(tmp_path / "r.html", subject="01",
                                pairs=[_guarded_pair(demo_inputs, qc)], provenance={}).read_text()
    text = " ".join(html.split())
    assert ("computed on AMD EPYC (avx2, avx512f), with oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA): polyphase "
            "graph in float32 on 2 thread(s), TensorFlow 2.21.0") in text
    del qc["compute"]  # a QC JSON from before the record: no sentence
    html = build_subject_report(tmp_path / "r2.html", subject="01",
                                pairs=[_guarded_pair(demo_inputs, qc)], provenance={}).read_text()
    assert "computed on" not in html


def test_input_plausibility_flags_get_a_warning_box(demo_inputs, tmp_path):
    """Issue 16 item 1: a pair whose preprocessing QC flags its inputs is shown with the sentence."""
    flag = "f_FLAIR.nii.gz does not look like a FLAIR: its white matter is brighter"
    pair = dict(demo_inputs["pair"], qc={"plausibility": {"flags": [flag]}})
    html = build_subject_report(tmp_path / "r.html", subject="01", pairs=[pair], provenance={}).read_text()
    boxes = re.findall(r'<div class="warning-box" role="alert">(.*?)</div>', html, re.S)
    assert len(boxes) == 1 and "<strong>Implausible input, " in boxes[0] and flag in boxes[0]
    pair["qc"] = {"plausibility": {"flags": []}}
    html = build_subject_report(tmp_path / "r2.html", subject="01", pairs=[pair], provenance={}).read_text()
    assert 'class="warning-box"' not in html


def test_an_implausible_reference_gets_a_warning_box(demo_inputs, tmp_path):
    """Issue 16 item 8f: the evaluation's reference_flag is shown in the report, 'none' is not."""
    flag = "ref_mask.nii.gz covers 48 % of the brain: check that it is a change mask of this pair"
    metrics = dict(demo_inputs["pair"]["metrics"] or {}, reference_flag=flag)
    pair = dict(demo_inputs["pair"], metrics=metrics)
    html = build_subject_report(tmp_path / "r.html", subject="01", pairs=[pair], provenance={}).read_text()
    boxes = re.findall(r'<div class="warning-box" role="alert">(.*?)</div>', html, re.S)
    assert len(boxes) == 1 and "<strong>Implausible reference, " in boxes[0] and flag in boxes[0]
    pair["metrics"] = dict(metrics, reference_flag="none")
    html = build_subject_report(tmp_path / "r2.html", subject="01", pairs=[pair], provenance={}).read_text()
    assert 'class="warning-box"' not in html


def test_the_choice_of_one_flair_of_several_gets_a_warning_box(demo_inputs, tmp_path):
    """Issue 16 item 8d: the note of discovery.choice_note is in the report, not only in the log."""
    from bids_lesionchange.discovery import choice_note

    note = choice_note("01", "2", Path("/bids/sub-01/ses-2/anat/sub-01_ses-2_run-1_FLAIR.nii.gz"),
                       ["sub-01_ses-2_run-2_FLAIR.nii.gz"])
    pair = dict(demo_inputs["pair"], notes=[note])
    html = build_subject_report(tmp_path / "r.html", subject="01", pairs=[pair], provenance={}).read_text()
    boxes = re.findall(r'<div class="warning-box" role="alert">(.*?)</div>', html, re.S)
    assert len(boxes) == 1 and "<strong>Input choice, " in boxes[0]
    assert "using sub-01_ses-2_run-1_FLAIR.nii.gz" in boxes[0] and "sub-01_ses-2_run-2_FLAIR.nii.gz" in boxes[0]
    html = build_subject_report(tmp_path / "r2.html", subject="01", pairs=[dict(pair, notes=[])],
                                provenance={}).read_text()
    assert 'class="warning-box"' not in html


def test_collect_reads_the_change_qc_derivative(tmp_path):
    import json
    from types import SimpleNamespace

    from bids_lesionchange.cli.levels import PairOutcome
    from bids_lesionchange.derivatives import pair_outputs
    from bids_lesionchange.discovery import SessionPair
    from bids_lesionchange.reports.collect import _pair_entry

    pair = SessionPair("01", "1", "2", tmp_path / "b.nii.gz", tmp_path / "f.nii.gz")
    qc = {"fraction_above_threshold": 0.5, "n_changes": 40, "out_of_domain": True, "message": "m"}
    path = tmp_path / pair_outputs(sub="01", baseline="1", followup="2").change_qc
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(qc))
    entry = _pair_entry(SimpleNamespace(output_dir=tmp_path), PairOutcome(pair))
    assert entry["change_qc"] == qc and entry["notes"] == []
    other = SessionPair("02", "1", "2", tmp_path / "b.nii.gz", tmp_path / "f.nii.gz")
    assert _pair_entry(SimpleNamespace(output_dir=tmp_path), PairOutcome(other))["change_qc"] is None
    noted = SessionPair("03", "1", "2", tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", ("one of two FLAIRs",))
    assert _pair_entry(SimpleNamespace(output_dir=tmp_path), PairOutcome(noted))["notes"] == ["one of two FLAIRs"]


def test_a_brain_mask_cut_to_the_baseline_s_gets_a_warning_box(demo_inputs, tmp_path):
    """A follow-up mask too large for a brain, cut to what the baseline's HD-BET mask calls brain."""
    repair = {"followup_mask_ml": 2227.0, "baseline_mask_ml": 1476.0, "intersection_ml": 1475.0, "max_ml": 2000.0,
              "used": True}
    pair = dict(demo_inputs["pair"], qc={"plausibility": {"flags": [], "brain_mask": {"repair": repair}}})
    html = build_subject_report(tmp_path / "r.html", subject="01", pairs=[pair], provenance={}).read_text()
    boxes = re.findall(r'<div class="warning-box" role="alert">(.*?)</div>', html, re.S)
    assert len(boxes) == 1 and "<strong>Brain mask, " in boxes[0]
    assert "held 2227 ml" in boxes[0] and "1476 ml" in boxes[0] and "the 1475 ml that both call brain" in boxes[0]
    pair["qc"] = {"plausibility": {"flags": [], "brain_mask": {"repair": dict(repair, used=False)}}}
    html = build_subject_report(tmp_path / "r2.html", subject="01", pairs=[pair], provenance={}).read_text()
    assert 'class="warning-box"' not in html  # not used: the mask is unchanged and its flag (if any) says so
