"""Render the packaged Jinja2 templates into self-contained HTML files, written atomically."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from bids_lesionchange import __version__
from bids_lesionchange.atomic import atomic_write_text
from bids_lesionchange.reports.embed import as_block, format_value, is_long

TEMPLATE_PACKAGE_DIR = ("data", "templates")


def template_environment():
    """Return the Jinja2 environment of the packaged templates (HTML autoescaping on)."""
    import jinja2

    folder = resources.files("bids_lesionchange").joinpath(*TEMPLATE_PACKAGE_DIR)
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_to_file(template_name: str, out_html: str | Path, context: Mapping[str, Any]) -> Path:
    """Render ``template_name`` with ``context`` (plus ``version``) and write it atomically."""
    template = template_environment().get_template(template_name)
    text = template.render(version=__version__, **context)
    return atomic_write_text(out_html, text)


def provenance_context(provenance: Mapping[str, Any] | None) -> dict[str, list[tuple[str, str]]]:
    """Split provenance into short values (a table) and long ones (collapsible blocks).

    Any key is accepted; values may be strings, numbers, lists or dicts (shown as JSON).
    """
    short, long = [], []
    for key, value in (provenance or {}).items():
        label = str(key).replace("_", " ")
        if is_long(value):
            long.append((label, as_block(value)))
        else:
            short.append((label, format_value(value)))
    return {"short": short, "long": long}


def key_values(mapping: Mapping[str, Any] | None, keys: Iterable[str] | None = None) -> list:
    """Return ``(key, formatted value)`` pairs of a mapping, optionally in the order of ``keys``."""
    if not mapping:
        return []
    if keys is None:
        keys = list(mapping)
    else:
        keys = [k for k in keys if k in mapping] + [k for k in mapping if k not in keys]
    return [(str(k), format_value(mapping[k])) for k in keys]


def cell(value: Any, *, badge: bool = False) -> dict[str, Any]:
    """A table cell: formatted text, right-aligned when numeric."""
    import numpy as np

    numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    return {"text": format_value(value), "cls": "num" if numeric else "", "badge": badge}
