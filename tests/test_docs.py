"""The docs: usage generated from the parser is current, and the site builds without warnings."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_usage_page_is_generated_from_parser():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_usage
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "usage.md").read_text() == gen_usage.render(), (
        "docs/usage.md is out of date: run python docs/gen_usage.py"
    )


def test_mkdocs_strict_build(tmp_path):
    exe = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(exe).exists():
        pytest.skip("mkdocs is not installed")
    proc = subprocess.run([exe, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
