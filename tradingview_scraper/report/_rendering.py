"""Rendering a list of blocks as Markdown or as one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping

from ._document import Heading, Image, Para, Table


def to_markdown(blocks: list) -> str:
    """Markdown of ``blocks``; images link to ``report_assets/<name>.png``."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [f"**{b.text}**" if b.tone in ("fail", "warn") else b.text, ""]
        elif isinstance(b, Table):
            cells = [[c.replace("|", "\\|") for c in row] for row in (b.header, *b.rows)]
            out.append("| " + " | ".join(cells[0]) + " |")
            out.append("|" + "|".join("---:" if al == "r" else "---" for al in b.align) + "|")
            out += ["| " + " | ".join(row) + " |" for row in cells[1:]]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.title}](report_assets/{b.name}.png)", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
max-width:1100px;margin:2em auto;padding:0 1.2em;background:#fff}
h1{font-size:1.7em;border-bottom:2px solid #2b5797;padding-bottom:.2em}
h2{font-size:1.35em;margin-top:1.8em;border-bottom:1px solid #d6dbe4;padding-bottom:.15em}
h3{font-size:1.1em;margin-top:1.3em;color:#2b5797}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #d6dbe4;padding:3px 9px}th{background:#eef1f6;text-align:left}
tr:nth-child(even) td{background:#f8f9fb}td.r{text-align:right;font-variant-numeric:tabular-nums}
tr.pass td{background:#e8f5e9}tr.fail td{background:#fdecea}tr.warn td{background:#fff4e5}
p.pass{color:#1b5e20;font-weight:600}p.fail{color:#b71c1c;font-weight:600}
p.warn{background:#fff4e5;border-left:4px solid #f57c00;padding:.4em .7em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e3e6ec}figcaption{color:#555;font-size:.9em}
nav{font-size:.9em;margin:.5em 0 1em}nav a{margin-right:1em}
"""


def to_html(blocks: list, title: str, images: Mapping[str, bytes] | None = None) -> str:
    """A self-contained HTML page of ``blocks``: inline CSS, images as base64 PNG data URIs.

    Parameters
    ----------
    blocks : list of Heading, Para, Table, Image
    title : str
    images : mapping of figure name -> PNG bytes
        Every :class:`Image` block's name must be a key.

    Raises
    ------
    KeyError
        If an image block has no PNG in ``images``.
    """
    esc = html.escape
    images = images or {}
    body, nav, seen = [], [], set()
    for b in blocks:
        if isinstance(b, Heading):
            anchor = base = "s-" + "".join(ch if ch.isalnum() else "-" for ch in b.text.lower())
            while anchor in seen:  # per-profile subsections repeat their titles
                anchor = f"{base}-{len(seen)}"
            seen.add(anchor)
            if b.level == 2:
                nav.append(f'<a href="#{anchor}">{esc(b.text)}</a>')
            body.append(f'<h{b.level} id="{anchor}">{esc(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            cls = f' class="{b.tone}"' if b.tone else ""
            body.append(f"<p{cls}>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(c)}</th>" for c in b.header)
            rows = []
            for i, row in enumerate(b.rows):
                tone = b.tones[i] if i < len(b.tones) and b.tones[i] else ""
                cls = f' class="{tone}"' if tone else ""
                tds = "".join(f'<td class="{al}">{esc(c)}</td>' for c, al in zip(row, b.align, strict=True))
                rows.append(f"<tr{cls}>{tds}</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(b, Image):
            uri = "data:image/png;base64," + base64.b64encode(images[b.name]).decode("ascii")
            body.append(f'<figure><img src="{uri}" alt="{esc(b.title)}"><figcaption>{esc(b.title)}</figcaption></figure>')
    if len(nav) > 2:
        first_h2 = next(i for i, x in enumerate(body) if x.startswith("<h2"))
        body.insert(first_h2, "<nav>" + "".join(nav) + "</nav>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
