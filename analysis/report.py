"""The run report: headline figures with their spread, then what failed and what was skipped, and why.

`python -m probes.all` prints it at the end of a run; `python -m analysis report RUN.json` prints it again
from the saved document.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from analysis.units import display, fmt_bytes


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
                "energy": energy_cell(s.get("energy")),
            }
        )
    return rows


def energy_cell(e: dict[str, Any] | None) -> str:
    """'0.42 J/GB' (joules per unit of the headline's work, NVML), or '-' where it was not measured."""
    if not e or not isinstance(e.get("joules_per"), (int, float)):
        return "-"
    return f"{e['joules_per']:.3g} J/{e['per']}"


def energy_note(doc: dict[str, Any]) -> str | None:
    """Why no headline has an energy figure (None when at least one has)."""
    es = [s.get("energy") or {} for s in doc.get("summary", [])]
    if not es or any(isinstance(e.get("joules_per"), (int, float)) for e in es):
        return None
    return "energy: " + next(
        (e["why"] for e in es if e.get("why")), "not measured (no telemetry in this run)"
    )


def status_counts(doc: dict[str, Any]) -> Counter:
    return Counter(m["status"] for m in doc.get("measurements", []))


def skip_reasons(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[int, str, bool]]:
    """(probe, reason with its numbers blanked) -> (cases, first full reason, all reasons identical)."""
    out: dict[tuple[str, str], tuple[int, str, bool]] = {}
    for m in doc.get("measurements", []):
        if m["status"] == "skipped":
            reason = m.get("error") or ""
            key = (m["probe"], re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", reason))
            n, first, same = out.get(key, (0, reason, True))
            out[key] = (n + 1, first, same and reason == first)
    return out


def matmul_dtype_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Per device, dtype and variant: the peak over square (and search) shapes, or why it did not run."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for m in doc.get("measurements", []):
        if m["probe"] == "matmul" and m["params"].get("kind") in ("square", "search"):
            groups.setdefault((m["device"], m["params"]["dtype"], m["params"]["variant"]), []).append(m)
    rows = []
    for (device, dtype, variant), ms in groups.items():
        ok = [m for m in ms if m["status"] == "ok"]
        if ok:
            best = max(ok, key=lambda m: m["value"])
            p = best["params"]
            value, unit = display(best["value"], best["unit"])
            shape = f"{p['m']}x{p['n']}x{p['k']}"
            rows.append(
                {
                    "device": device,
                    "dtype": dtype,
                    "variant": variant,
                    "peak": f"{value} {unit}",
                    "at": shape,
                    "note": f"{len(ok)} of {len(ms)} shapes ran",
                }
            )
        else:
            why = next((m.get("error") or m["status"] for m in ms), "")
            rows.append(
                {"device": device, "dtype": dtype, "variant": variant, "peak": "-", "at": "-", "note": why}
            )
    return rows


def matmul_decode_rows(doc: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
    """The decode-shaped sweep as a table: one row per (device, model, op, dtype), TFLOPS per batch M."""
    ms_all: set[int] = set()
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for m in doc.get("measurements", []):
        p = m["params"]
        if m["probe"] != "matmul" or p.get("kind") != "decode":
            continue
        ms_all.add(p["m"])
        row = rows.setdefault(
            (m["device"], p["model"], p["op"], p["dtype"]), {"shape": f"{p['n']}x{p['k']}", "by_m": {}}
        )
        row["by_m"][p["m"]] = (
            display(m["value"], m["unit"])[0]
            if m["status"] == "ok"
            else ("skip" if m["status"] == "skipped" else "err")
        )
    out = [{"device": d, "model": mo, "op": op, "dtype": dt, **r} for (d, mo, op, dt), r in rows.items()]
    return sorted(ms_all), out


def print_report(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    devices = ", ".join(
        f"{d.get('name', '?')} ({d.get('torch_device', '?')})" for d in doc.get("devices", [])
    )
    head = f" {doc['tool'].get('version', '?')}  profile {doc['config'].get('profile', '?')}  on {devices}"
    console.print("[bold]gpuprobe[/bold]" + escape(head))
    if doc.get("status") != "completed":
        stopped = [
            f"{n} ({p.get('status')})"
            for n, p in doc.get("probes", {}).items()
            if p.get("status") != "completed"
        ]
        console.print(
            f"[yellow]This run is {doc.get('status')}[/yellow]"
            + escape(f": {', '.join(stopped) or 'no probe finished'}")
        )
    if any(d.get("kind") == "cpu" for d in doc.get("devices", [])):
        console.print("[yellow]These are CPU figures (torch CPU kernels), not GPU figures.[/yellow]")
    for note in doc.get("notes", []):
        console.print(f"note: {note}", markup=False)
    table = Table(title="Headline figures (median over the cases that make each figure)")
    for col, justify in (
        ("figure", "left"),
        ("device", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("range", "right"),
        ("max CV", "right"),
        ("cases", "right"),
        ("energy", "right"),
    ):
        table.add_column(col, justify=justify)
    for r in headline_rows(doc):
        table.add_row(
            *(
                escape(str(r[k]))
                for k in ("figure", "device", "value", "unit", "range", "cv", "cases", "energy")
            )
        )
    console.print(table)
    if note := energy_note(doc):
        console.print(note, markup=False)
    from analysis.trace_report import print_trace

    print_trace(doc, console)
    counts = status_counts(doc)
    console.print(
        f"cases: {counts.get('ok', 0)} ok, {counts.get('error', 0)} errors, {counts.get('skipped', 0)} skipped"
    )
    _print_matmul(doc, console)
    _print_collectives(doc, console)
    from analysis.decode_report import print_decode

    print_decode(doc, console)
    from analysis.health import print_health

    print_health(doc, console)
    for (probe, _kind), (n, reason, same) in sorted(skip_reasons(doc).items()):
        console.print(
            f"  skipped {n} {probe} case(s): {reason}{'' if same else ' (first of them)'}", markup=False
        )
    for m in doc.get("measurements", []):
        if m["status"] == "error":
            console.print(
                "  [red]error[/red] " + escape(f"{m['probe']} {m['case']} on {m['device']}: {m.get('error')}")
            )
    for e in doc.get("errors", []):
        console.print("  [red]error[/red] " + escape(str(e)))


def _print_matmul(doc: dict[str, Any], console: Console) -> None:
    rows = matmul_dtype_rows(doc)
    if not rows:
        return
    t = Table(title="Matmul peak per dtype (best square or searched shape)")
    for col in ("device", "dtype", "variant", "peak", "at M x N x K", "note"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(escape(str(r[k])) for k in ("device", "dtype", "variant", "peak", "at", "note")))
    console.print(t)
    ms, drows = matmul_decode_rows(doc)
    if drows:
        d = Table(title="Decode-shaped GEMMs: TFLOPS by batch M (weights W[N, K], y = x W^T)")
        for col in ("device", "model", "op", "dtype", "N x K", *(f"M={m}" for m in ms)):
            d.add_column(col, justify="right" if col.startswith("M=") else "left")
        for r in drows:
            d.add_row(
                r["device"], r["model"], r["op"], r["dtype"], r["shape"], *(r["by_m"].get(m, "") for m in ms)
            )
        console.print(d)


def collective_rows(doc: dict[str, Any]) -> list[dict[str, str]]:
    """One row per collective case: size, slowest rank's time, algbw, busbw, link, status."""
    rows = []
    for m in doc.get("measurements", []):
        p = m["params"]
        if m["probe"] != "collectives" or m["case"].startswith("p2p/"):
            continue
        ok = m["status"] == "ok"
        rows.append(
            {
                "op": p["op"],
                "dtype": p["dtype"],
                "size": fmt_bytes(p["size_bytes"]),
                "time": f"{p['time_s'] * 1e6:.1f} us" if ok else "-",
                "algbw": " ".join(display(p["algbw_bytes_per_s"], "bytes_per_s")) if ok else "-",
                "busbw": " ".join(display(p["busbw_bytes_per_s"], "bytes_per_s")) if ok else "-",
                "note": (p.get("link") or "") if ok else f"{m['status']}: {m.get('error')}",
            }
        )
    return rows


def _print_collectives(doc: dict[str, Any], console: Console) -> None:
    from analysis.collectives import curves

    rows = collective_rows(doc)
    if rows:
        t = Table(title="Collectives (nccl-tests semantics; time = slowest rank's median)")
        for col in ("op", "dtype", "size", "time", "algbw", "busbw", "link / note"):
            t.add_column(col, justify="right" if col in ("size", "time", "algbw", "busbw") else "left")
        for r in rows:
            t.add_row(*(escape(str(r[k])) for k in ("op", "dtype", "size", "time", "algbw", "busbw", "note")))
        console.print(t)
    for c in curves(doc):
        floor = c.latency_floor_s()
        console.print(
            f"  {c.op} {c.dtype} x{c.world_size}: latency floor {floor * 1e6:.1f} us, "
            f"plateau algbw {' '.join(display(c.plateau_algbw(), 'bytes_per_s'))}"
        )
    p2p = [
        m for m in doc.get("measurements", []) if m["probe"] == "collectives" and m["case"].startswith("p2p/")
    ]
    if p2p:
        t = Table(title="GPU peer-to-peer copies")
        for col in ("pair", "direction", "bandwidth", "link"):
            t.add_column(col)
        for m in p2p:
            p = m["params"]
            bw = " ".join(display(m["value"], m["unit"])) if m["status"] == "ok" else m["status"]
            t.add_row(
                *map(escape, (f"{p['src']} -> {p['dst']}", str(p["direction"]), bw, str(p.get("link", ""))))
            )
        console.print(t)
        if note := slowest_pair(p2p):
            console.print(note, markup=False)


def slowest_pair(p2p: list[dict[str, Any]]) -> str | None:
    """The slowest one-way GPU pair against the median: a ring collective (NCCL, RCCL) runs at its slowest
    link, so one degraded NVLink or XGMI link caps the whole node's all-reduce."""
    one_way = [m for m in p2p if m["status"] == "ok" and m["params"].get("direction") != "bidir"]
    if len(one_way) < 2:
        return None
    slow = min(one_way, key=lambda m: m["value"])
    med = statistics.median(m["value"] for m in one_way)
    p = slow["params"]
    return (
        f"slowest pair {p['src']} -> {p['dst']} ({p.get('link', '?')}): "
        f"{' '.join(display(slow['value'], slow['unit']))}, {100 * slow['value'] / med:.0f} % of the median pair; "
        "a ring collective runs at its slowest link"
    )


def print_verdicts(doc: dict[str, Any], console: Console) -> None:
    from analysis.verdicts import validate

    vs = validate(doc)
    if not vs:
        console.print("verdicts: none (no headline figure in this run)")
        return
    if all(v.verdict == "no verdict" for v in vs) and len({v.note for v in vs}) == 1:
        console.print(f"verdicts: none ({vs[0].note})", markup=False)
        return
    t = Table(title="Verdicts (pass >= 90 % of what good nodes of the SKU achieve, warn >= 75 %)")
    for col in ("figure", "device", "measured", "spec", "ratio", "good nodes", "verdict", "note"):
        t.add_column(col, justify="right" if col in ("measured", "spec", "ratio", "good nodes") else "left")
    style = {"pass": "green", "warn": "yellow", "fail": "red"}
    for v in vs:
        t.add_row(
            escape(v.figure),
            escape(v.device),
            " ".join(display(v.measured, v.unit)),
            " ".join(display(v.spec, v.unit)) if v.spec else "-",
            f"{100 * v.ratio:.0f}%" if v.ratio else "-",
            " ".join(display(v.good, v.unit)) if v.good else "-",
            f"[{style[v.verdict]}]{v.verdict}[/{style[v.verdict]}]"
            if v.verdict in style
            else escape(v.verdict),
            escape(v.note),
        )
    console.print(t)


def print_run_analysis(
    doc: dict[str, Any], path: Any, models: list[str], dtype: str, console: Console
) -> None:
    """The end of a run's report: verdicts, the roofline PNG, and a short decode projection per model."""
    from analysis import decode, decode_report, engines, formats, hardware, roofline, specs
    from analysis.models import ModelConfigError, load_model

    print_verdicts(doc, console)
    # what a device of this kind serves with: the default serving engine on GPUs, eager PyTorch on a CPU
    on_cpu = any(d.get("kind") == "cpu" for d in doc.get("devices", []))
    engine = engines.resolve("pytorch-eager" if on_cpu else None)
    roof = roofline.from_run(doc)
    if roof is not None:
        name = (doc.get("devices") or [{}])[0].get("name", "")
        key = specs.lookup(name)
        png = roofline.plot(
            roof,
            path.with_name(path.stem + "_roofline.png"),
            f"Roofline: {name}",
            specs.get(key) if key else None,
        )
        console.print(f"roofline plot: {png}", markup=False)
    try:
        hw = hardware.profile_from_run(doc, path.name)
    except formats.ProjectionError as exc:
        console.print(f"no decode projection: {exc}", markup=False)
        return
    for model in models:
        try:
            q = formats.Query(load_model(model), dtype, None, 1, 1024, 256, engine=engine)
            decode_report.print_projection(hw, q, decode.project(hw, q, [1, 8, 32]), console)
        except (ModelConfigError, formats.ProjectionError) as exc:
            console.print(f"no decode projection for {model}: {exc}", markup=False)
