"""report.html: one self-contained page (CSS inline, pictures as PNG data URIs, no script, no
font or anything else from the network; a Content-Security-Policy forbids it too), rendered
from the typed :class:`~audit.report.model.Report` through jinja2 templates with autoescape on:
every user-controlled string (suite name, ids, class names, file names, parameters, reasons)
reaches the page as text.
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup, escape

from audit.report.markdown import verdict_threshold, verdict_value
from audit.report.model import Report

TEMPLATES = Path(__file__).parent / "templates"
# ColorBrewer YlOrBr (sequential, colour-blind safe, lightness falls monotonically so it reads in
# greyscale): light = good, dark = bad.
RAMP = ["#ffffe5", "#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#993404", "#662506"]


def heat_colour(badness: float | None) -> str:
    """``background`` and ``color`` CSS for a cell of ``badness`` in [0, 1] (None: none)."""
    if badness is None:
        return ""
    index = min(len(RAMP) - 1, max(0, round(badness * (len(RAMP) - 1))))
    text = "#ffffff" if index >= 6 else "#1a1a1a"
    return f"background:{RAMP[index]};color:{text}"


def _inline(text: object) -> Markup:
    """Escape, then turn the report's own ``**bold**`` into <strong> (only after escaping)."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["heat"] = heat_colour
    env.filters["inline"] = _inline
    env.filters["data_uri"] = _data_uri
    env.filters["json"] = lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False)
    env.filters["verdict_value"] = verdict_value
    env.filters["verdict_threshold"] = verdict_threshold
    return env


def render_html(report: Report) -> str:
    return _environment().get_template("report.html.j2").render(report=report, ramp=RAMP)
