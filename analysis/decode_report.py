"""Decode in the report: measured steps beside their projection, projection tables, the published backtest.

python -m analysis project --gpu h100-sxm5-80gb --model llama-3.1-8b     # print_projection
python -m analysis backtest                                              # print_backtest
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.units import fmt_bytes


def print_projection(hw: Any, q: Any, rows: list[dict[str, Any]], console: Console) -> None:
    """The projection table: every row names its engine, splits its step and carries its band."""
    from rich.markup import escape

    from analysis.backtest import with_band
    from analysis.engines import describe

    e = q.run_engine
    if rows and "band_note" not in rows[0]:
        rows = with_band(rows, e)
    t = Table(
        title=escape(
            f"{q.model.name} {q.weight_dtype} weights, {q.kv} KV, TP {q.tp}, in {q.input_len} / out "
            f"{q.output_len} on {hw.name} [{hw.source}], engine {e.label}"
        )
    )
    cols = (
        "batch",
        "engine",
        "out tok/s",
        "band p10-p90",
        "total tok/s",
        "step ms",
        "TTFT ms",
        "KV/request",
        "max conc.",
        "bound",
        "split % (w kv c o comm a2a host)",
        "$/M out",
    )
    for c in cols:
        t.add_column(c, justify="left" if c in ("bound", "engine") else "right")
    for r in rows:
        cost = r["cost_per_million_output_tokens"]
        band = r.get("band")
        t.add_row(
            f"{r['batch']}{'' if r['fits'] else ' (over KV capacity)'}",
            r["engine"],
            f"{r['output_tokens_per_s']:.1f}",
            "unknown"
            if band is None
            else f"{band['output_tokens_per_s_p10']:.0f}-{band['output_tokens_per_s_p90']:.0f}",
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
                    "all_to_all_seconds",
                    "host_seconds",
                )
            ),
            "-" if cost is None else f"{cost:.2f}",
        )
    console.print(t)
    console.print(
        f"weights per GPU: {rows[0]['weight_bytes_per_gpu'] / 1e9:.1f} GB; output tok/s = batch / step time; "
        "step split: weights, KV/attention, compute, small-kernel overhead, all-reduce, all-to-all (expert "
        "parallelism), engine host time",
        markup=False,
    )
    console.print(describe(e), markup=False, soft_wrap=True)
    console.print(f"  host time: {e.host_source}", markup=False, soft_wrap=True)
    for n in dict.fromkeys(r["band_note"] for r in rows):
        console.print(f"  band: {n}", markup=False, soft_wrap=True)


def decode_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured decode tokens/s beside the projection from the same run's roofline (and the spec sheet's)."""
    from analysis import decode, engines, formats, hardware, specs
    from analysis.models import load_model

    ms = [
        m
        for m in doc.get("measurements", [])
        if m["probe"] == "decode" and m["status"] == "ok" and m.get("unit") == "tokens_per_s"
    ]
    if not ms:
        return []
    try:
        measured_hw = hardware.profile_from_run(doc)
    except formats.ProjectionError:
        measured_hw = None
    name = (doc.get("devices") or [{}])[0].get("name", "")
    key = specs.lookup(name) if (doc.get("devices") or [{}])[0].get("kind") == "gpu" else None
    spec_hw = hardware.profile_from_spec(specs.get(key)) if key else None
    gemm_formats = {
        m["params"].get("dtype")
        for m in doc.get("measurements", [])
        if m["probe"] == "matmul" and m["status"] == "ok" and m["params"].get("kind") == "decode"
    }
    rows = []
    for m in ms:
        p = m["params"]
        kv = p.get("kv_dtype")
        q = formats.Query(
            load_model(p["model"]),
            p["dtype"],
            kv,
            1,
            p["context"],
            1,
            group_size=p.get("group_size") or 128,
            ops_per_layer=p.get("ops_per_layer"),
            ops_head=p.get("ops_head"),
            engine=engines.resolve("pytorch-eager"),  # what the probe ran: its own eager decoder
        )
        row = {
            "model": p["model"],
            "dtype": p["dtype"],
            "batch": p["batch"],
            "context": p["context"],
            "measured": m["value"],
            "note": p.get("note", ""),
        }
        if p["dtype"] not in gemm_formats:  # e.g. trimmed by the profile's time budget
            row["note"] = "; ".join(
                n
                for n in (
                    row["note"],
                    f"no {p['dtype']} decode GEMMs measured: projected from the roofline fit",
                )
                if n
            )
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
        ("a2a", step.a2a_s),
    )
    return " ".join(f"{k} {100 * v / step.seconds:.0f}" for k, v in parts if v > 0.005 * step.seconds)


DECODE_COLUMNS = (
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
)


def decode_cells(r: dict[str, Any]) -> list[str]:
    """One row of `decode_rows` as the cells of DECODE_COLUMNS (the terminal and the shareable report)."""
    return [
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
    ]


def print_decode(doc: dict[str, Any], console: Console) -> None:
    rows = decode_rows(doc)
    if not rows:
        return
    t = Table(title="Decode: measured tokens/s vs the projection from this run's parts")
    for col in DECODE_COLUMNS:
        t.add_column(col, justify="left" if col in ("model", "dtype") else "right")
    for r in rows:
        t.add_row(*decode_cells(r))
    console.print(t)
    notes = {r["note"] for r in rows if r["note"]}
    for n in notes:
        console.print(f"  decode: {n}", markup=False)


def print_backtest(
    results: list[dict[str, Any]], console: Console, no_engine: list[dict[str, Any]], rows: bool = False
) -> None:
    """Each published row beside the spec-only projection (with --rows), then the summaries: all rows, each
    half, and the tables by engine, engine class, GPU vendor, weight format and batch regime (fit | holdout)."""
    from analysis.backtest import GROUPINGS, breakdown, summary

    if rows:
        t = Table(title="Decode projection (spec sheet, the source's engine) vs published measurements")
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
                f"{row.query_engine().label} ({row.launch})",
                row.gpu,
                str(row.tp),
                row.weights + (f" g{row.group_size}" if row.weights == "int4-wo" else ""),
                str(row.batch),
                f"{row.input_len}/{row.output_len}",
                row.metric,
                f"{row.value:.4g}",
                f"{r['projected']:.4g}" if "projected" in r else "-",
                f"{r['ratio']:.2f}" if "ratio" in r else r.get("error", "-"),
            )
        console.print(t)
    for label, res in (
        ("with the source's engine", results),
        ("with no engine named (the default)", no_engine),
    ):
        for name in ("fit", "holdout", "all"):
            s = summary([r for r in res if name == "all" or r["row"].half == name])
            if s["rows"]:
                console.print(f"{label:36} {name:8} {_summary_cells(s)}")
    for by in GROUPINGS:
        t = Table(title=f"By {by} (ratio = projected / published speed; the source's engine)")
        t.add_column(by)
        for half in ("fit", "holdout"):
            t.add_column(f"{half}: rows", justify="right")
            t.add_column("median |err|", justify="right")
            t.add_column("geo-mean", justify="right")
            t.add_column("p10-p90", justify="right")
        for name, fit, hold in breakdown(results, by):
            cells = [name]
            for s in (fit, hold):
                cells += (
                    [
                        str(s["rows"]),
                        f"{100 * s['median_abs_error']:.0f} %",
                        f"{s['geomean_ratio']:.2f}",
                        f"{s['p10_ratio']:.2f}-{s['p90_ratio']:.2f}",
                    ]
                    if s["rows"]
                    else ["0", "-", "-", "-"]
                )
            t.add_row(*cells)
        console.print(t)
    console.print(
        "ratio = projected / published (speeds; for TPOT and latency published / projected); halves by a hash "
        "of the row id; sources and quotes: analysis/data/decode_published.csv"
    )


def _summary_cells(s: dict[str, Any]) -> str:
    return (
        f"{s['rows']:3d} rows: median |error| {100 * s['median_abs_error']:.0f} %, geometric-mean ratio "
        f"{s['geomean_ratio']:.2f}, within 25 % {100 * s['within_25pct']:.0f} %, worst {s['worst_ratio']:.2f}x, "
        f"beyond 2x {s['beyond_2x']}"
    )


def backtest_command(csv: Path | None, half: str, as_json: bool, rows: bool = False) -> int:
    """`python -m analysis backtest`: the spec projection against published rows, as tables or JSON."""
    import json
    import sys

    from rich.console import Console

    from analysis import backtest as bt

    data = [r for r in (bt.load_rows(csv) if csv else bt.load_rows()) if half in ("all", r.half)]
    results = bt.backtest(data)
    no_engine = bt.backtest(data, with_engine=False)
    if as_json:
        out = [
            {
                **r["row"].__dict__,
                "half": r["row"].half,
                "engine_class": r["row"].engine_class,
                **{k: v for k, v in r.items() if k != "row"},
                "ratio_without_engine": n.get("ratio"),
            }
            for r, n in zip(results, no_engine, strict=True)
        ]
        print(json.dumps(out, indent=1))
        return 0
    print_backtest(results, Console() if sys.stdout.isatty() else Console(width=160), no_engine, rows)
    return 0
