"""Put images and values into a self-contained HTML page (inline SVG, base64 PNG, no scripts)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from markupsafe import Markup

RASTER_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_XML_PROLOG = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*(\[[^\]]*\])?\s*>|<!--.*?-->", re.S | re.I)
_SCRIPT = re.compile(r"<script\b.*?(</script\s*>|/>)", re.S | re.I)
_EVENT_ATTRIBUTE = re.compile(r"\son[a-z]+\s*=\s*(\"[^\"]*\"|'[^']*')", re.I)
_EXTERNAL_HREF = re.compile(r"\s(xlink:)?href\s*=\s*(\"(?!data:|#)[^\"]*\"|'(?!data:|#)[^']*')", re.I)
_SVG_OPEN = re.compile(r"<svg\b[^>]*>", re.S | re.I)
_SIZE_ATTRIBUTE = re.compile(r"\s(width|height)\s*=\s*(\"[^\"]*\"|'[^']*')", re.I)


class ImageNotShown(Exception):
    """An image that exists but cannot be embedded (unknown type, not an SVG, unreadable)."""


def inline_svg(text: str) -> Markup:
    """Make an SVG document safe and scalable to inline in HTML.

    Removes the XML prolog, DOCTYPE, comments, scripts, event-handler attributes and links to
    external resources (only ``data:`` and ``#id`` references are kept), and, when the SVG has
    a ``viewBox``, its fixed width/height so that CSS can scale it to the page width.
    """
    text = _XML_PROLOG.sub("", text)
    text = _SCRIPT.sub("", text)
    text = _EVENT_ATTRIBUTE.sub("", text)
    text = _EXTERNAL_HREF.sub("", text)
    opening = _SVG_OPEN.search(text)
    if opening is None:
        raise ImageNotShown("the file holds no <svg> element")
    tag = opening.group(0)
    if re.search(r"viewBox\s*=", tag, re.I):
        new_tag = _SIZE_ATTRIBUTE.sub("", tag)
        text = text[: opening.start()] + new_tag + text[opening.end():]
    return Markup(text[opening.start():].strip())


def embed_image(path: str | Path, alt: str = "") -> Markup:
    """Return HTML showing the image at ``path``: inline SVG, or an ``<img>`` with a data URI.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ImageNotShown
        The file type is not an image the page can show, or the SVG has no ``<svg>`` element.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(str(path))
    suffix = path.suffix.lower()
    if suffix == ".svg":
        return Markup('<div class="svg-figure">') + inline_svg(
            path.read_text(encoding="utf-8", errors="replace")
        ) + Markup("</div>")
    if suffix in RASTER_TYPES:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return Markup(
            f'<img class="figure" alt="{html.escape(alt or path.name)}" '
            f'src="data:{RASTER_TYPES[suffix]};base64,{data}">'
        )
    raise ImageNotShown(f"{path.name}: not an SVG, PNG, JPEG or GIF image")


def try_embed(path: str | Path | None, alt: str = "") -> dict[str, Any]:
    """Embed an optional image; never raise. Returns ``{"html": Markup|None, "note": str}``."""
    if path is None or str(path) == "":
        return {"html": None, "note": "not available"}
    try:
        return {"html": embed_image(path, alt), "note": ""}
    except FileNotFoundError:
        return {"html": None, "note": f"not available ({Path(path).name} was not produced)"}
    except (ImageNotShown, OSError, UnicodeError) as err:
        return {"html": None, "note": f"not available ({err})"}


def format_value(value: Any) -> str:
    """Format a table cell: ``n/a`` for None/NaN, compact floats, JSON for containers."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        if magnitude >= 0.01:
            return f"{value:.3f}"
        return f"{value:.3g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return format_value(value.item())
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    text = str(value)
    return text if text else "n/a"


def is_long(value: Any) -> bool:
    """Whether a value needs a preformatted block rather than a table cell."""
    if isinstance(value, (dict, list, tuple)):
        return True
    return isinstance(value, str) and ("\n" in value or len(value) > 160)


def as_block(value: Any) -> str:
    """Text of a long value for a ``<pre>`` block (JSON for containers)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str)
