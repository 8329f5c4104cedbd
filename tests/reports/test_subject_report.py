"""Subject report: every part shown when given, "not available" when missing, never a crash."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

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
