"""A run as a report to share: GitHub-flavoured Markdown (PNGs beside it) or one self-contained HTML file.

Both are rendered from the same sections as the terminal report (headline figures with their verdicts,
matmul per dtype, collectives, decode measured vs projected, node health), plus the host and device facts;
the HTML inlines its CSS and embeds the PNGs (base64), so it can be attached to an issue or a chat as it is.
Every string from the run document is escaped (HTML) or has its pipes escaped (Markdown).

    python -m analysis report RUN.json --format md -o report.md
    python -m analysis report RUN.json --format html -o report.html
    python -m probes.all --report html          # written beside the run document at the end of a run
"""

from __future__ import annotations

import base64
import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.units import fmt_bytes


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _verdict_of(doc: dict[str, Any]) -> dict[tuple[str, str], Any]:
    from analysis.verdicts import validate

    return {(v.figure, v.device): v for v in validate(doc)}


def sections(doc: dict[str, Any]) -> list[Section]:
    """What the report says, as tables: the same rows the terminal report prints."""
    from analysis.decode_report import DECODE_COLUMNS, decode_cells, decode_rows
    from analysis.health import judge
    from analysis.report import collective_rows, energy_note, headline_rows, matmul_dtype_rows

    out = []
    verdicts = _verdict_of(doc)
    rows = []
    for r in headline_rows(doc):
        v = verdicts.get((r["figure"], r["device"]))
        words = "-" if v is None else v.verdict + (f" ({100 * v.ratio:.0f}% of the sheet)" if v.ratio else "")
        rows.append(
            [r["figure"], r["device"], f"{r['value']} {r['unit']}", r["range"], r["cv"], r["energy"], words]
        )
    notes = sorted({v.note for v in verdicts.values() if v.note})
    if note := energy_note(doc):
        notes.append(note)
    out.append(
        Section(
            "Headline figures and verdicts",
            ["figure", "device", "value", "range", "max CV", "energy", "verdict"],
            rows,
            notes,
        )
    )
    from analysis.trace_report import TRACE_COLUMNS, trace_notes, trace_rows

    tr = trace_rows(doc)
    if tr:
        out.append(Section("Traced step", list(TRACE_COLUMNS), tr, trace_notes(doc)))
    mm = matmul_dtype_rows(doc)
    if mm:
        out.append(
            Section(
                "Matmul per dtype",
                ["device", "dtype", "variant", "peak", "at", "note"],
                [[r[k] for k in ("device", "dtype", "variant", "peak", "at", "note")] for r in mm],
            )
        )
    co = collective_rows(doc)
    if co:
        cols = ["op", "dtype", "size", "time", "algbw", "busbw", "note"]
        out.append(Section("Collectives (nccl-tests semantics)", cols, [[r[k] for k in cols] for r in co]))
    dec = decode_rows(doc)
    if dec:
        title = "Decode: measured tokens/s vs the projection from this run's parts"
        out.append(Section(title, list(DECODE_COLUMNS), [decode_cells(r) for r in dec]))
    # the verdicts from the health measurements, else those the document recorded
    health = [asdict(h) for h in judge(doc)] or list(doc.get("health") or [])
    if health:
        rows = [
            [
                h["device"],
                h["verdict"],
                f"{h['sustained_flop_per_s'] / 1e12:.3g} TFLOPS" if h.get("sustained_flop_per_s") else "-",
                "; ".join(r.split(": ", 1)[-1] for r in h["reasons"]) or "no problem found",
            ]
            for h in health
        ]
        notes = [
            f"{h['device']}: not checked: {'; '.join(h['not_checked'])}"
            for h in health
            if h.get("not_checked")
        ]
        out.append(Section("Node health", ["device", "verdict", "sustained", "reasons"], rows, notes))
    errors = [
        f"{m['probe']} {m['case']} on {m['device']}: {m.get('error')}"
        for m in doc.get("measurements", [])
        if m.get("status") == "error"
    ] + list(doc.get("errors", []))
    if errors:
        out.append(Section("Errors", ["error"], [[e] for e in errors]))
    return out


def facts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Host and device facts, as (name, value) pairs."""
    host = doc.get("host", {})
    out = [
        ("run", f"{doc.get('started_utc')} .. {doc.get('finished_utc') or '-'} ({doc.get('status')})"),
        ("profile", str(doc.get("config", {}).get("profile", "?"))),
        (
            "tool",
            f"gpuprobe {doc.get('tool', {}).get('version', '?')} {doc.get('tool', {}).get('git_commit', '')[:12]}",
        ),
    ]
    for key in ("hostname", "os", "cpu", "python", "torch", "cuda", "driver"):
        if host.get(key) not in (None, ""):
            out.append((key, str(host[key])))
    for i, d in enumerate(doc.get("devices", [])):
        mem = d.get("memory_total_bytes")
        size = f", {fmt_bytes(int(mem))}" if isinstance(mem, (int, float)) else ""
        out.append((f"device {i}", f"{d.get('name', '?')} ({d.get('torch_device', '?')}{size})"))
    return out


def images(doc_path: Path) -> list[Path]:
    """The PNGs written beside the run document (bandwidth, roofline, health timeline)."""
    return [
        p
        for s in ("bandwidth", "roofline", "health", "trace")
        if (p := doc_path.with_name(f"{doc_path.stem}_{s}.png")).is_file()
    ]


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict[str, Any], doc_path: Path, out_path: Path) -> str:
    title = f"gpuprobe: {doc.get('host', {}).get('hostname', '?')}"
    return render_markdown(title, facts(doc), sections(doc), images(doc_path), out_path)


def render_markdown(
    title: str, facts_: list[tuple[str, str]], secs: list[Section], pngs: list[Path], out_path: Path
) -> str:
    """A fact table, the sections as GitHub tables with their notes, the PNGs linked beside `out_path`."""
    lines = [f"# {_md(title)}", ""]
    lines += ["| fact | value |", "| --- | --- |"] + [f"| {_md(k)} | {_md(v)} |" for k, v in facts_] + [""]
    for s in secs:
        lines += [f"## {s.title}", "", "| " + " | ".join(s.columns) + " |", "|" + " --- |" * len(s.columns)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in s.rows]
        lines += [""] + [f"- {_md(n)}" for n in s.notes] + ([""] if s.notes else [])
    for png in pngs:
        folder = out_path.resolve().parent
        rel = png.resolve().relative_to(folder) if png.resolve().is_relative_to(folder) else png
        lines += [f"![{png.stem}]({rel})", ""]
    return "\n".join(lines)


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1b1f24}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa}.pass{color:#1a7f37;font-weight:600}.warn{color:#9a6700;font-weight:600}
.fail{color:#cf222e;font-weight:600}img{max-width:100%;border:1px solid #d0d7de;margin:.5em 0}
ul{margin:.3em 0}"""


def _cell(text: str) -> str:
    word = text.split(" ", 1)[0]
    cls = f' class="{word}"' if word in ("pass", "warn", "fail") else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def to_html(doc: dict[str, Any], doc_path: Path) -> str:
    title = f"gpuprobe: {doc.get('host', {}).get('hostname', '?')}"
    return render_html(title, facts(doc), sections(doc), images(doc_path))


def render_html(title: str, facts_: list[tuple[str, str]], secs: list[Section], pngs: list[Path]) -> str:
    """One self-contained page: inline CSS, every string escaped, the PNGs embedded as base64."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", "<table>"]
    body += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts_] + ["</table>"]
    for s in secs:
        body += [
            f"<h2>{e(s.title)}</h2>",
            "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr>",
        ]
        body += ["<tr>" + "".join(_cell(str(c)) for c in row) + "</tr>" for row in s.rows] + ["</table>"]
        if s.notes:
            body += ["<ul>"] + [f"<li>{e(n)}</li>" for n in s.notes] + ["</ul>"]
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        body.append(
            f'<h2>{e(png.stem.rsplit("_", 1)[-1])}</h2><img alt="{e(png.stem)}" src="data:image/png;base64,{data}">'
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write(doc: dict[str, Any], doc_path: Path, fmt: str, out_path: Path) -> Path:
    """The report in `fmt` ("md" or "html") at out_path."""
    text = markdown(doc, doc_path, out_path) if fmt == "md" else to_html(doc, doc_path)
    out_path.write_text(text, encoding="utf-8")
    return out_path
