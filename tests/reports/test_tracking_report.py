"""The subject report's "Changes over sessions" section: the volume plot and the longitudinal table."""

from __future__ import annotations

from bids_lesionchange.analysis.tables import write_table_tsv
from bids_lesionchange.analysis.tracking import TRACKING_COLUMNS
from bids_lesionchange.derivatives import subject_outputs
from bids_lesionchange.reports.collect import _tracking_entry
from bids_lesionchange.reports.subject import build_subject_report

ROWS = [{"track_id": 1, "session": "02", "first_session": "02", "state": "new", "volume_mm3": 30.0},
        {"track_id": 1, "session": "03", "first_session": "02", "state": "enlarging", "volume_mm3": 60.0},
        {"track_id": 2, "session": "03", "first_session": "03", "state": "new", "volume_mm3": 12.0}]


def test_the_tracking_table_and_its_plot_reach_the_report(tmp_path):
    out = tmp_path / "out"
    write_table_tsv(ROWS, out / subject_outputs(sub="01").tracking, columns=TRACKING_COLUMNS)
    entry = _tracking_entry(out, "01")
    figure = out / subject_outputs(sub="01").tracking_figure
    assert entry["figure"] == figure and figure.read_bytes().startswith(b"\x89PNG")
    html = build_subject_report(tmp_path / "sub-01.html", subject="01", pairs=[], provenance={},
                                tracking=entry).read_text()
    section = html[html.index('id="tracking"'):html.index('id="metrics"')]
    assert "data:image/png;base64," in section
    assert section.count("<tr>") == 1 + len(ROWS) and "enlarging" in section


def test_without_a_table_the_section_says_why(tmp_path):
    assert _tracking_entry(tmp_path, "01") is None
    html = build_subject_report(tmp_path / "sub-01.html", subject="01", pairs=[{"name": "p"}],
                                provenance={}).read_text()
    section = html[html.index('id="tracking"'):html.index('id="metrics"')]
    assert "needs two consecutive pairs or more" in section
