"""The run report: headline figures with their spread, then what failed and what was skipped, and why.

`python -m probes.all` prints it at the end of a run; `python -m analysis report RUN.json` prints it again
from the saved document.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from rich.console import Console
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
            }
        )
    return rows


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
    _print_matmul(doc, console)
    _print_collectives(doc, console)
    _print_decode(doc, console)
    for (probe, _kind), (n, reason, same) in sorted(skip_reasons(doc).items()):
        console.print(f"  skipped {n} {probe} case(s): {reason}{'' if same else ' (first of them)'}")
    for m in doc.get("measurements", []):
        if m["status"] == "error":
            console.print(f"  [red]error[/red] {m['probe']} {m['case']} on {m['device']}: {m.get('error')}")
    for e in doc.get("errors", []):
        console.print(f"  [red]error[/red] {e}")


def _print_matmul(doc: dict[str, Any], console: Console) -> None:
    rows = matmul_dtype_rows(doc)
    if not rows:
        return
    t = Table(title="Matmul peak per dtype (best square or searched shape)")
    for col in ("device", "dtype", "variant", "peak", "at M x N x K", "note"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["device"], r["dtype"], r["variant"], r["peak"], r["at"], r["note"])
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
            t.add_row(r["op"], r["dtype"], r["size"], r["time"], r["algbw"], r["busbw"], r["note"])
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
            t.add_row(f"{p['src']} -> {p['dst']}", p["direction"], bw, p.get("link", ""))
        console.print(t)


def print_verdicts(doc: dict[str, Any], console: Console) -> None:
    from analysis.verdicts import validate

    vs = validate(doc)
    if not vs:
        return
    if all(v.verdict == "no verdict" for v in vs) and len({v.note for v in vs}) == 1:
        console.print(f"verdicts: none ({vs[0].note})")
        return
    t = Table(title="Verdicts (pass >= 90 % of what good nodes of the SKU achieve, warn >= 75 %)")
    for col in ("figure", "device", "measured", "spec", "ratio", "good nodes", "verdict", "note"):
        t.add_column(col, justify="right" if col in ("measured", "spec", "ratio", "good nodes") else "left")
    style = {"pass": "green", "warn": "yellow", "fail": "red"}
    for v in vs:
        t.add_row(
            v.figure,
            v.device,
            " ".join(display(v.measured, v.unit)),
            " ".join(display(v.spec, v.unit)) if v.spec else "-",
            f"{100 * v.ratio:.0f}%" if v.ratio else "-",
            " ".join(display(v.good, v.unit)) if v.good else "-",
            f"[{style[v.verdict]}]{v.verdict}[/{style[v.verdict]}]" if v.verdict in style else v.verdict,
            v.note,
        )
    console.print(t)


def print_projection(hw: Any, q: Any, rows: list[dict[str, Any]], console: Console) -> None:
    t = Table(
        title=f"{q.model.name} {q.weight_dtype} weights, {q.kv} KV, TP {q.tp}, in {q.input_len} / out {q.output_len} "
        f"on {hw.name} [{hw.source}]"
    )
    cols = (
        "batch",
        "out tok/s",
        "total tok/s",
        "step ms",
        "TTFT ms",
        "KV/request",
        "max conc.",
        "bound",
        "split % (w kv c o comm)",
        "$/M out",
    )
    for c in cols:
        t.add_column(c, justify="right" if c != "bound" else "left")
    for r in rows:
        cost = r["cost_per_million_output_tokens"]
        t.add_row(
            f"{r['batch']}{'' if r['fits'] else ' (over KV capacity)'}",
            f"{r['output_tokens_per_s']:.1f}",
            f"{r['total_tokens_per_s']:.1f}",
            f"{r['step_seconds'] * 1e3:.2f}",
            f"{r['ttft_seconds'] * 1e3:.1f}",
            fmt_bytes(r["kv_bytes_per_request"]),
            str(r["max_concurrency"]),
            r["bound"],
            " ".join(
                f"{100 * r[k] / r['step_seconds']:.0f}"
                for k in (
                    "weights_seconds",
                    "kv_seconds",
                    "compute_seconds",
                    "overhead_seconds",
                    "communication_seconds",
                )
            ),
            "-" if cost is None else f"{cost:.2f}",
        )
    console.print(t)
    mode = "CUDA graphs (fused kernels)" if q.cuda_graphs else "eager launches"
    console.print(
        f"weights per GPU: {rows[0]['weight_bytes_per_gpu'] / 1e9:.1f} GB; output tok/s = batch / step time; "
        f"step split: weights, KV/attention, compute, overhead ({mode}), communication"
    )


def print_run_analysis(
    doc: dict[str, Any], path: Any, models: list[str], dtype: str, console: Console
) -> None:
    """The end of a run's report: verdicts, the roofline PNG, and a short decode projection per model."""
    from analysis import decode, roofline, specs
    from analysis.models import ModelConfigError, load_model

    print_verdicts(doc, console)
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
        console.print(f"roofline plot: {png}")
    try:
        hw = decode.profile_from_run(doc, path.name)
    except decode.ProjectionError as exc:
        console.print(f"no decode projection: {exc}")
        return
    for model in models:
        try:
            q = decode.Query(load_model(model), dtype, None, 1, 1024, 256)
            print_projection(hw, q, decode.project(hw, q, [1, 8, 32]), console)
        except (ModelConfigError, decode.ProjectionError) as exc:
            console.print(f"no decode projection for {model}: {exc}")


def decode_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured decode tokens/s beside the projection from the same run's roofline (and the spec sheet's)."""
    from analysis import decode, specs
    from analysis.models import load_model

    ms = [
        m
        for m in doc.get("measurements", [])
        if m["probe"] == "decode" and m["status"] == "ok" and m.get("unit") == "tokens_per_s"
    ]
    if not ms:
        return []
    try:
        measured_hw = decode.profile_from_run(doc)
    except decode.ProjectionError:
        measured_hw = None
    name = (doc.get("devices") or [{}])[0].get("name", "")
    key = specs.lookup(name) if (doc.get("devices") or [{}])[0].get("kind") == "gpu" else None
    spec_hw = decode.profile_from_spec(specs.get(key)) if key else None
    rows = []
    for m in ms:
        p = m["params"]
        kv = decode.TORCH_KV_NAMES.get(p.get("kv_dtype", ""))
        q = decode.Query(
            load_model(p["model"]),
            p["dtype"],
            kv,
            1,
            p["context"],
            1,
            group_size=p.get("group_size") or 128,
            ops_per_layer=p.get("ops_per_layer"),
            ops_head=p.get("ops_head"),
        )
        row = {
            "model": p["model"],
            "dtype": p["dtype"],
            "batch": p["batch"],
            "context": p["context"],
            "measured": m["value"],
            "note": p.get("note", ""),
        }
        for label, hw in (("projected", measured_hw), ("spec", spec_hw)):
            if hw is not None:
                step = decode.decode_step(hw, q, p["batch"], p["context"] + 1)
                row[label] = p["batch"] / step.seconds
                row[f"{label}_error"] = row[label] / m["value"] - 1
                if label == "projected":
                    row["split"] = _split(step)
        rows.append(row)
    return rows


def _split(step: Any) -> str:
    """Where a projected step goes, in % of it: weights, KV, compute, overhead, communication."""
    parts = (
        ("w", step.weights_s),
        ("kv", step.kv_s),
        ("c", step.compute_s),
        ("o", step.overhead_s),
        ("comm", step.comm_s),
    )
    return " ".join(f"{k} {100 * v / step.seconds:.0f}" for k, v in parts if v > 0.005 * step.seconds)


def _print_decode(doc: dict[str, Any], console: Console) -> None:
    rows = decode_rows(doc)
    if not rows:
        return
    t = Table(title="Decode: measured tokens/s vs the projection from this run's parts")
    for col in (
        "model",
        "dtype",
        "batch",
        "context",
        "measured tok/s",
        "projected",
        "error",
        "spec-only",
        "error ",
        "projected split %",
    ):
        t.add_column(col, justify="left" if col in ("model", "dtype") else "right")
    for r in rows:
        t.add_row(
            r["model"],
            r["dtype"],
            str(r["batch"]),
            str(r["context"]),
            f"{r['measured']:.1f}",
            f"{r['projected']:.1f}" if "projected" in r else "-",
            f"{100 * r['projected_error']:+.0f}%" if "projected" in r else "-",
            f"{r['spec']:.1f}" if "spec" in r else "-",
            f"{100 * r['spec_error']:+.0f}%" if "spec" in r else "-",
            r.get("split", "-"),
        )
    console.print(t)
    notes = {r["note"] for r in rows if r["note"]}
    for n in notes:
        console.print(f"  decode: {n}")


def print_backtest(results: list[dict[str, Any]], console: Console) -> None:
    """Each published row beside the spec-only projection, then the summary of each half and of all."""
    from analysis.backtest import summary

    t = Table(title="Decode projection (spec sheet only) vs published measurements")
    for col in (
        "id",
        "engine",
        "gpu",
        "TP",
        "weights",
        "batch",
        "in/out",
        "metric",
        "published",
        "projected",
        "ratio",
    ):
        t.add_column(
            col, justify="right" if col in ("TP", "batch", "published", "projected", "ratio") else "left"
        )
    for r in results:
        row = r["row"]
        t.add_row(
            row.id,
            f"{row.framework} ({row.launch})",
            row.gpu,
            str(row.tp),
            row.weights + (f" g{row.group_size}" if row.weights == "int4-wo" else ""),
            str(row.batch),
            f"{row.input_len}/{row.output_len}",
            row.metric,
            f"{row.value:.1f}",
            f"{r['projected']:.1f}" if "projected" in r else "-",
            f"{r['ratio']:.2f}" if "ratio" in r else r.get("error", "-"),
        )
    console.print(t)
    for name in ("fit", "holdout", "all"):
        part = [r for r in results if name == "all" or r["row"].half == name]
        s = summary(part)
        if not s["rows"]:
            continue
        console.print(
            f"{name:8} {s['rows']:3d} rows: median |error| {100 * s['median_abs_error']:.0f} %, geometric-mean "
            f"ratio {s['geomean_ratio']:.2f}, within 25 % {100 * s['within_25pct']:.0f} %, worst "
            f"{s['worst_ratio']:.2f}x, beyond 2x {s['beyond_2x']}"
        )
    console.print("ratio = projected / published; sources and quotes: analysis/data/decode_published.csv")
