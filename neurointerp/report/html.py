"""A self-contained HTML summary: headings, paragraphs, tables and PNG figures (linked)."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    table: "object | None" = None  # pandas DataFrame
    status: str = "ok"  # ok | skipped | failed


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:960px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.skipped{color:#888}.failed{color:#b00}
code{background:#f5f5f5;padding:0 .2em}
"""


def write_report(path: str | os.PathLike, title: str, sections: Sequence[Section], footer: str = "") -> Path:
    """Write ``path`` (HTML); figure paths are linked relative to the report's folder."""
    from neurointerp.io.atomic import write_text

    path = Path(path)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(title)}</h1>")
    for sec in sections:
        parts.append(f"<h2 class='{sec.status}'>{html.escape(sec.title)}</h2>")
        if sec.text:
            for para in sec.text.strip().split("\n\n"):
                parts.append(f"<p class='{sec.status}'>{html.escape(para)}</p>")
        if sec.table is not None:
            parts.append(sec.table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
        for fig in sec.figures:
            rel = os.path.relpath(Path(fig).absolute(), path.parent.absolute())
            parts.append(f"<p><img src='{html.escape(rel)}' alt='{html.escape(Path(fig).name)}'></p>")
    if footer:
        parts.append(f"<hr><p><small>{html.escape(footer)}</small></p>")
    parts.append("</body></html>\n")
    return write_text(path, "\n".join(parts), force=True)
