"""The run report: headline figures with their spread, then what failed and what was skipped, and why.

`python -m probes.all` prints it at the end of a run; `python -m analysis report RUN.json` prints it again
from the saved document.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.units import display


def headline_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Display rows of the summary: figure, device, value and unit, spread across cases, cases counted."""
    rows = []
    for s in doc.get("summary", []):
        value, unit = display(s["value"], s["unit"])
        lo, _ = display(s["min"], s["unit"])
        hi, _ = display(s["max"], s["unit"])
        cv = s.get("max_cv")
        rows.append(
            {
                "figure": s["name"],
                "device": s["device"],
                "value": value,
                "unit": unit,
                "range": f"{lo} .. {hi}",
                "cv": f"{100 * cv:.1f}%" if isinstance(cv, (int, float)) else "-",
                "cases": str(s["n_cases"]),
            }
        )
    return rows


def status_counts(doc: dict[str, Any]) -> Counter:
    return Counter(m["status"] for m in doc.get("measurements", []))


def skip_reasons(doc: dict[str, Any]) -> Counter:
    """How many cases were skipped for each (probe, reason)."""
    return Counter(
        (m["probe"], m.get("error") or "") for m in doc.get("measurements", []) if m["status"] == "skipped"
    )


def print_report(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    devices = ", ".join(
        f"{d.get('name', '?')} ({d.get('torch_device', '?')})" for d in doc.get("devices", [])
    )
    console.print(
        f"[bold]gpuprobe[/bold] {doc['tool'].get('version', '?')}  profile {doc['config'].get('profile', '?')}  on {devices}"
    )
    if any(d.get("kind") == "cpu" for d in doc.get("devices", [])):
        console.print("[yellow]These are CPU figures (torch CPU kernels), not GPU figures.[/yellow]")
    for note in doc.get("notes", []):
        console.print(f"note: {note}")
    table = Table(title="Headline figures (median over the cases that make each figure)")
    for col, justify in (
        ("figure", "left"),
        ("device", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("range", "right"),
        ("max CV", "right"),
        ("cases", "right"),
    ):
        table.add_column(col, justify=justify)
    for r in headline_rows(doc):
        table.add_row(r["figure"], r["device"], r["value"], r["unit"], r["range"], r["cv"], r["cases"])
    console.print(table)
    counts = status_counts(doc)
    console.print(
        f"cases: {counts.get('ok', 0)} ok, {counts.get('error', 0)} errors, {counts.get('skipped', 0)} skipped"
    )
    for (probe, reason), n in sorted(skip_reasons(doc).items()):
        console.print(f"  skipped {n} {probe} case(s): {reason}")
    for m in doc.get("measurements", []):
        if m["status"] == "error":
            console.print(f"  [red]error[/red] {m['probe']} {m['case']} on {m['device']}: {m.get('error')}")
    for e in doc.get("errors", []):
        console.print(f"  [red]error[/red] {e}")
