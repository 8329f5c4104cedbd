"""Write docs/usage.md from the argparse parser (run: python docs/gen_usage.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HEADER = """# Usage

This page is generated from the command-line parser by `python docs/gen_usage.py`;
a test fails when it is out of date.

```text
"""


def render() -> str:
    """Return the Markdown of the usage page."""
    os.environ["COLUMNS"] = "100"
    from bids_lesionchange.cli.parser import build_parser

    parser = build_parser()
    parser.prog = "bids_lesionchange"
    return HEADER + parser.format_help() + "```\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("usage.md")
    out.write_text(render())
    sys.stdout.write(f"wrote {out}\n")
