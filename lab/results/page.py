"""report.html: a run's page for a person, beside its report.json.

It is made from report.json alone (and the files of the cells' folders it names), so `lab report
html` draws it again for any report, a merged one included. It is self-contained: its style is
inline, it runs no script and loads nothing from the network, and every link is relative, so the
page opens from a CI artefact and from a kept folder alike.
"""

from __future__ import annotations

import json
import os
import re
from html import escape
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.results.report import COLUMNS, NUMERIC, ROW_FIELDS, Row, cell_text, rows_of

PAGE = "report.html"
# A cell's files, in the order a person looks for them; each host's own folder has the same names.
ARTEFACTS = ("result.json", "timeline.png")
HOST_ARTEFACTS = ("qemu.log", "console.log", "qmp.jsonl", "generator.json", "stream.pcap", "tap.pcap")
ROLES = ("primary", "secondary")
MATCH_CLASS = {True: "ok", False: "mismatch", None: "unjudged"}

STYLE = """
body { font: 14px/1.4 sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #bbb; padding: .25em .5em; text-align: left; vertical-align: top; }
td.cell.ok { background: #d4f4d4; } td.cell.mismatch { background: #f8c8c8; } td.cell.unjudged { background: #f8f0c0; }
td.cell a { font-weight: bold; color: inherit; }
td.cell.continuous a { color: #075; } td.cell.gap a { color: #a30; } td.cell.error a { color: #a00; }
section.cell { border-top: 2px solid #ccc; margin-top: 1.5em; }
img.timeline { max-width: 100%; border: 1px solid #ddd; }
code { font-size: 90%; }
"""


def write(report_path: Path) -> Path:
    """report.html beside ``report_path``, from what it says."""
    try:
        report = json.loads(report_path.read_text())
    except OSError as exc:
        raise LabError(f"cannot read {report_path}: {exc.strerror}; give a report.json a run wrote") from exc
    except ValueError as exc:
        raise LabError(f"{report_path} is not JSON ({exc}); give a report.json a run wrote") from exc
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise LabError(f"{report_path} has no results list: not a report.json of `lab run`")
    try:
        page = render(report, report_path.parent)
    except ValueError as exc:
        raise LabError(f"{report_path}: {exc}; give a report.json a run wrote") from None
    out = report_path.parent / PAGE
    out.write_text(page)
    return out


def render(report: dict[str, Any], folder: Path) -> str:
    """The page; links are relative to ``folder``, where it is written."""
    lab = report.get("lab", {})
    rows = rows_of(report)
    title = f"netfilter continuity: run {lab.get('run', '?')} ({lab.get('accel', '?')})"
    body = [f"<h1>{escape(title)}</h1>", _run(lab), "<h2>Verdicts</h2>", _matrix(rows),
            "<h2>Cells</h2>", *(_cell(row, folder) for row in rows), "<h2>Builds</h2>", _builds(lab.get("builds", {}))]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def cell_id(row: Row) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{row.builds}-{row.scenario}")


def _run(lab: dict[str, Any]) -> str:
    engines = ", ".join(f"{name} ({e.get('address', '?')}, {'shares' if e.get('sees_files', True) else 'copies'} "
                        f"run folders)" for name, e in lab.get("engines", {}).items())
    facts = [("accelerator", f"{lab.get('accel', '?')}: {lab.get('accel_reason', '')}"), ("engines", engines or "-"),
             ("host", lab.get("host", "?")), ("started", lab.get("started", "?")),
             ("duration", f"{lab.get('duration_s', '?')} s"), ("configuration", lab.get("config", "?"))]
    return _table([], [[escape(k), escape(str(v))] for k, v in facts])


def _matrix(rows: list[Row]) -> str:
    """Builds x scenarios, one cell per row of report.json, each a link to its section: its background
    says whether the verdict matched, its colour which verdict it is."""
    builds = list(dict.fromkeys(r.builds for r in rows))
    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    by_pair = {(r.builds, r.scenario): r for r in rows}
    lines = []
    for b in builds:
        cells = []
        for s in scenarios:
            r = by_pair.get((b, s))
            if r is None:
                cells.append("<td></td>")
                continue
            counts = f" {r.figures.received_of_sent}" if r.frames_sent is not None else ""
            cells.append(f'<td class="cell {MATCH_CLASS[r.match]} {escape(r.verdict)}">'
                         f'<a href="#{cell_id(r)}">{escape(r.verdict)}</a>'
                         f"<br><small>{escape(r.mark)}{escape(counts)} ({escape(r.view)})</small></td>")
        lines.append(f"<tr><th>{escape(b)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{escape(s)}</th>" for s in ["profile", *scenarios])
    return f'<table class="matrix"><tr>{head}</tr>\n' + "\n".join(lines) + "\n</table>"


def _cell(row: Row, folder: Path) -> str:
    shown = [(heading, cell_text(row, name)) for heading, name in COLUMNS if heading in NUMERIC]
    # Every field of the row, as report.json names it (the other view's figures among them), folded.
    rest = [f for f in ROW_FIELDS if f not in ("profile", "scenario", "reasons", "artefacts")]
    shown_rows = [[escape(f"{heading} ({row.view})"), escape(value)] for heading, value in shown]
    shown_rows += [[escape(f"{name} s"), escape(str(seconds))] for name, seconds in row.timings.items()]
    every = [[f"<code>{escape(f)}</code>", escape(_value(getattr(row, f)))] for f in rest]
    parts = [f'<section class="cell" id="{cell_id(row)}"><h3>{escape(row.builds)} x {escape(row.scenario)}</h3>',
             f"<p><b>{escape(row.verdict)}</b> ({escape(row.mark)}), judged on the {escape(row.view)}; "
             f"filter {escape(row.filter)}</p>"]
    if row.reasons:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in row.reasons) + "</ul>")
    files = _artefacts(row, folder)
    if "timeline.png" in files:
        parts.append(f'<p><img class="timeline" src="{escape(files["timeline.png"])}" '
                     f'alt="timeline of {escape(row.builds)} x {escape(row.scenario)}"></p>')
    if files:
        parts.append("<p>files: " + ", ".join(f'<a href="{escape(href)}">{escape(name)}</a>'
                                              for name, href in files.items()) + "</p>")
    parts.append(_table(["figure", "value"], shown_rows))
    parts.append(f"<details><summary>every field of its row</summary>{_table(['field', 'value'], every)}</details>")
    return "\n".join(parts) + "</section>"


def _artefacts(row: Row, folder: Path) -> dict[str, str]:
    """The cell's files that exist, by name (``primary/qemu.log``), each as a link relative to ``folder``."""
    if not row.artefacts:
        return {}
    cell = Path(row.artefacts)
    names = [*ARTEFACTS, *(f"{role}/{name}" for role in ROLES for name in HOST_ARTEFACTS)]
    return {name: Path(os.path.relpath(cell / name, folder)).as_posix() for name in names if (cell / name).is_file()}


def _builds(builds: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, b in builds.items():
        facts = [("runtime image", b.get("runtime_image")), ("QEMU", b.get("qemu_source")),
                 ("builder", b.get("qemu_image")), ("tree", _value(b.get("tree")))]
        parts.append(f"<h3>{escape(name)}</h3>" + _table([], [[escape(k), escape(str(v))] for k, v in facts if v]))
        series = b.get("series")
        if series:
            parts.append(f"<p>series {escape(str(series.get('name', '')))} v{escape(str(series.get('version', '')))}"
                         f" ({escape(str(series.get('patchwork_id') or series.get('origin', '')))}):</p>")
            parts.append("<ol>" + "".join(f"<li>{escape(p.get('n', ''))} {escape(p.get('subject', ''))}</li>"
                                          for p in series.get("patches", [])) + "</ol>")
        props = b.get("filter_properties") or {}
        if props:
            parts.append(_table(["filter", "properties"], [[escape(f), escape(", ".join(p))]
                                                           for f, p in props.items()]))
    return "\n".join(parts) or "<p>-</p>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """A table of cells already escaped."""
    top = "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{top}{body}</table>"


def _value(value: object) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)
