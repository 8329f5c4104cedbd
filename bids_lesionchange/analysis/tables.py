"""Write and read BIDS-style TSV tables (written atomically: no half-written file is left)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bids_lesionchange.atomic import atomic_write_text

MISSING = "n/a"


def format_cell(value: Any) -> str:
    """Format one TSV cell: ``n/a`` for None/NaN, ``.8g`` for floats, lower-case booleans."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return format(value, ".8g")
    text = str(value)
    if text == "":
        return MISSING
    # A tab or newline would break the table: keep the cell on one line.
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_table_tsv(
    rows: Iterable[Mapping[str, Any]],
    path: str | Path,
    columns: Sequence[str] | None = None,
) -> Path:
    """Write rows as a tab-separated table with a header line, atomically.

    Parameters
    ----------
    rows : iterable of mapping
        One mapping per row; a key missing from a row is written as ``n/a``, as are None and NaN.
    path : str or Path
        Output ``.tsv`` file.
    columns : sequence of str, optional
        Column order. By default, the keys of all rows in order of first appearance. Keys of a row
        that are not in ``columns`` are not written.

    Returns
    -------
    Path
        The written path. An empty ``rows`` gives a header-only table.
    """
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
    columns = list(columns)
    if not columns:
        raise ValueError("write_table_tsv needs columns when there are no rows")
    lines = ["\t".join(columns)]
    lines.extend("\t".join(format_cell(row.get(col)) for col in columns) for row in rows)
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_table_tsv(path: str | Path) -> list[dict[str, Any]]:
    """Read a TSV written by :func:`write_table_tsv`: numbers become float/int, ``n/a`` NaN.

    Returns
    -------
    list of dict
        One dict per row, keyed by the header.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [
        {col: parse_cell(cell) for col, cell in zip(header, line.split("\t"))}
        for line in lines[1:]
        if line.strip()
    ]


def parse_cell(cell: str) -> Any:
    """Parse one TSV cell: int, float, NaN for ``n/a``, else the string itself."""
    if cell == MISSING:
        return math.nan
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return cell
