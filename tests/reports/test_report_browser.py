"""Open a subject report in real headless Chromium: it renders, shows its images, loads nothing.

Needs Debian's ``chromium`` package (``apt-get install -y --no-install-recommends chromium``);
skipped when it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bids_lesionchange.reports.subject import build_subject_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")


def chromium_command(user_data_dir: Path, *extra: str) -> list[str]:
    """The headless Chromium command line used by the tests (no network, no GPU, no sandbox)."""
    return [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--enable-logging=stderr", "--v=0", f"--user-data-dir={user_data_dir}", *extra,
    ]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.img_sources: list[str] = []
        self.svg_count = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.img_sources.append(dict(attrs).get("src", ""))
        elif tag == "svg":
            self.svg_count += 1


@pytest.fixture
def report(demo_inputs, tmp_path) -> Path:
    return build_subject_report(tmp_path / "sub-01.html", subject="01", pairs=[demo_inputs["pair"]],
                                provenance=demo_inputs["provenance"])


def test_report_renders_with_its_images_in_chromium(report, tmp_path):
    shot = tmp_path / "report.png"
    result = _run(chromium_command(tmp_path / "profile-shot", f"--screenshot={shot}",
                                   "--window-size=1200,4200", report.as_uri()))
    assert shot.is_file(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (4200, 1200)
    luminance = pixels.mean(axis=2)
    # Not blank: a white page with text, and the black image backgrounds of the figures.
    assert luminance.std() > 0.1
    assert np.count_nonzero(luminance < 0.05) > 100_000
    assert np.count_nonzero(luminance > 0.95) > 1_000_000
    # Nothing failed to load and no script error was logged.
    assert not re.search(r"Failed to load resource|Uncaught|ERR_FILE_NOT_FOUND", result.stderr)


def test_dumped_dom_holds_the_embedded_images(report, tmp_path):
    result = _run(chromium_command(tmp_path / "profile-dom", "--dump-dom", report.as_uri()))
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _Images()
    dom.feed(result.stdout)
    assert len(dom.img_sources) == 2
    assert all(src.startswith("data:image/png;base64,") for src in dom.img_sources)
    assert dom.svg_count == 2  # skull-strip and registration reportlets, inline
    assert "Lesion table" in result.stdout and "enlarging" in result.stdout
