"""A self-contained HTML page: a sticky navigation bar, sections with paragraphs, tables and PNG
figures (linked relative to the page), inline CSS, no scripts and nothing fetched from the web.

:func:`render_page` lays out the page every report shares (run reports of every command, the
demo); :func:`write_report` is the simple form (a title and sections) kept for callers that only
have sections.
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    table: "object | None" = None  # pandas DataFrame
    status: str = "ok"  # ok | skipped | failed
    anchor: str = ""  # the id the navigation bar links to (default: from the title)
    html: str = ""  # a fragment already escaped (built with the helpers below), after the text
    flag_rows: Sequence[int] = ()  # rows of ``table`` to highlight (QC outliers)
    max_rows: int = 200  # rows of ``table`` shown (the rest is counted)
    gallery: bool = False  # figures in a grid of two columns (per-subject figures)
    nav: str = ""  # shorter label in the navigation bar


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;line-height:1.45;background:#fff}
main{max-width:1100px;margin:0 auto;padding:0 1.2em 3em}
nav.top{position:sticky;top:0;z-index:10;background:#23395d;color:#fff;padding:.45em 1.2em;font-size:.92em;box-shadow:0 1px 4px rgba(0,0,0,.25);display:flex;flex-wrap:wrap;column-gap:1.1em;row-gap:.2em}
nav.top a{color:#fff;text-decoration:none;white-space:nowrap}
nav.top a:hover{text-decoration:underline}
nav.top .brand{font-weight:600;margin-right:.6em}
h1{font-size:1.6em;margin:.9em 0 .3em}
h2{font-size:1.25em;border-bottom:2px solid #23395d;padding-bottom:.2em;margin-top:1.8em;scroll-margin-top:4.5em}
h3{font-size:1.05em;margin-top:1.3em}
section{scroll-margin-top:4.5em}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}
.tw{overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:.22em .55em;text-align:right;vertical-align:top}
td.l,th.l{text-align:left}
th{background:#eef1f6;text-align:left}
tr.flag td{background:#fde2e2}
table.kv td:first-child{text-align:left;font-weight:600;background:#f6f7f9;white-space:nowrap}
table.kv td{text-align:left}
img{max-width:100%;border:1px solid #e3e3e3}
figure{margin:.6em 0}figcaption{font-size:.8em;color:#555}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:.8em}
.skipped{color:#888}.failed{color:#b00}
.badge{display:inline-block;padding:.05em .5em;border-radius:.6em;font-size:.85em;font-weight:600}
.badge.ok{background:#d8f0dc;color:#1c5e28}.badge.warn{background:#fff0c2;color:#7a5600}.badge.bad{background:#fde2e2;color:#9b1c1c}
pre.cmd{background:#f5f5f5;border:1px solid #e1e1e1;padding:.6em .8em;white-space:pre-wrap;word-break:break-all;font-size:.86em}
code{background:#f5f5f5;padding:0 .2em}
.note{color:#555;font-size:.9em}
details{margin:.5em 0}summary{cursor:pointer;color:#23395d}
ol.refs li{margin-bottom:.3em;font-size:.92em}
footer{color:#666;font-size:.82em;border-top:1px solid #ddd;margin-top:2.5em;padding-top:.6em}
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def anchor_of(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    try:
        import numpy as np

        if isinstance(v, np.bool_):
            return "yes" if bool(v) else "no"
        if isinstance(v, np.floating):
            return "" if np.isnan(v) else f"{float(v):.4g}"
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _numeric(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def table_html(frame, flag_rows: Iterable[int] = (), max_rows: int = 200, css: str = "") -> str:
    """A DataFrame as an HTML table: numbers right-aligned (4 significant digits), text left,
    ``flag_rows`` (positions) highlighted; rows beyond ``max_rows`` counted below it."""
    flags = set(flag_rows)
    cols = [str(c) for c in frame.columns]
    rows = frame.itertuples(index=False, name=None)
    out = [f"<div class='tw'><table class='{esc(css)}'><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr></thead><tbody>"]
    n = 0
    for i, row in enumerate(rows):
        if i >= max_rows:
            break
        n += 1
        cls = " class='flag'" if i in flags else ""
        cells = "".join(f"<td>{esc(_cell(v))}</td>" if _numeric(v) else f"<td class='l'>{esc(_cell(v))}</td>" for v in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table></div>")
    if len(frame) > n:
        out.append(f"<p class='note'>{len(frame) - n} more rows not shown.</p>")
    return "".join(out)


def kv_html(pairs: Sequence[tuple[str, Any]]) -> str:
    """Two-column table of labels and values (values already HTML when they are ``Markup``)."""
    out = ["<table class='kv'><tbody>"]
    for k, v in pairs:
        out.append(f"<tr><td>{esc(k)}</td><td>{v.html if isinstance(v, Markup) else esc(_cell(v))}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass(frozen=True)
class Markup:
    """A fragment already escaped."""

    html: str


def figure_html(path: Path, page_dir: Path, caption: str = "") -> str:
    try:
        rel = os.path.relpath(Path(path).absolute(), Path(page_dir).absolute())
    except ValueError:
        rel = str(Path(path).absolute())
    rel = rel.replace(os.sep, "/")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img loading='lazy' src='{esc(rel)}' alt='{esc(Path(path).name)}'>{cap}</figure>"


def section_html(sec: Section, page_dir: Path) -> str:
    anchor = sec.anchor or anchor_of(sec.title)
    parts = [f"<section id='{esc(anchor)}'><h2 class='{esc(sec.status)}'>{esc(sec.title)}</h2>"]
    if sec.text:
        for para in sec.text.strip().split("\n\n"):
            parts.append(f"<p class='{esc(sec.status)}'>{esc(para)}</p>")
    if sec.html:
        parts.append(sec.html)
    if sec.table is not None:
        parts.append(table_html(sec.table, sec.flag_rows, sec.max_rows))
    if sec.figures:
        figs = "".join(figure_html(f, page_dir, Path(f).name if sec.gallery else "") for f in sec.figures)
        parts.append(f"<div class='gallery'>{figs}</div>" if sec.gallery else figs)
    parts.append("</section>")
    return "\n".join(parts)


def nav_label(sec: Section) -> str:
    """The navigation bar's label of a section: ``nav``, else a short form of the title (the
    command in a trailing parenthesis, the part before a colon)."""
    if sec.nav:
        return sec.nav
    t = sec.title.split(":")[0] if ":" in sec.title else sec.title
    m = re.search(r"\(([^()]*)\)\s*$", t)
    if m:
        t = m.group(1).split(",")[0].strip()
    return t if len(t) <= 28 else t[:26] + "..."


def render_page(path: str | os.PathLike, title: str, sections: Sequence[Section], intro: str = "", footer: str = "", brand: str = "neurointerp") -> str:
    """The HTML of a page at ``path`` (figures are linked relative to its folder)."""
    page_dir = Path(path).parent
    seen: set[str] = set()
    for sec in sections:  # unique anchors: the navigation bar links to each section
        base = sec.anchor or anchor_of(sec.title)
        a, k = base, 2
        while a in seen:
            a, k = f"{base}-{k}", k + 1
        seen.add(a)
        sec.anchor = a
    links = " ".join(f"<a href='#{esc(s.anchor or anchor_of(s.title))}'>{esc(nav_label(s))}</a>" for s in sections)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<nav class='top' id='nav'><span class='brand'>{esc(brand)}</span>{links}</nav>",
        f"<main><h1>{esc(title)}</h1>",
    ]
    if intro:
        parts.append(intro)
    for sec in sections:
        parts.append(section_html(sec, page_dir))
    if footer:
        parts.append(f"<footer>{esc(footer)}</footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_report(path: str | os.PathLike, title: str, sections: Sequence[Section], footer: str = "") -> Path:
    """Write ``path`` (HTML, atomically); figure paths are linked relative to the report's folder."""
    from neurointerp.io.atomic import write_text

    path = Path(path)
    return write_text(path, render_page(path, title, sections, footer=footer), force=True)
