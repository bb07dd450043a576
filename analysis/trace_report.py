"""A traced step (python -m probes.profile --trace) in the report: where the step's time goes, op by op, how far
each op sits below this node's roofline, and how much of the step the device idled.

    python -m analysis report traces/RUN.json --format html -o trace.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRACE_COLUMNS = (
    "op",
    "shapes",
    "calls",
    "ms/step",
    "% of step",
    "GFLOP",
    "MB",
    "FLOP/B",
    "TFLOPS",
    "GB/s",
    "of roofline",
)


def trace_ops(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in doc.get("measurements", []) if m.get("probe") == "trace" and m.get("status") == "ok"]


def _num(v: Any, scale: float, fmt: str) -> str:
    return format(v / scale, fmt) if isinstance(v, (int, float)) else "-"


def trace_rows(doc: dict[str, Any], top: int = 25) -> list[list[str]]:
    step = (doc.get("trace") or {}).get("device_s") or 0.0
    rows = []
    for m in trace_ops(doc)[:top]:
        p = m["params"]
        frac = p.get("fraction")
        rows.append(
            [
                p["op"],
                p.get("shapes", "")[:60],
                _num(p.get("calls_per_step"), 1, ".3g"),
                _num(p.get("seconds_per_step"), 1e-3, ".3f"),
                f"{100 * p['seconds_per_step'] / step:.1f}" if step else "-",
                _num(p.get("flops_per_step"), 1e9, ".3g"),
                _num(p.get("bytes_per_step"), 1e6, ".3g"),
                _num(p.get("intensity_flop_per_byte"), 1, ".3g"),
                _num(p.get("achieved_flop_per_s"), 1e12, ".3g"),
                _num(p.get("achieved_bytes_per_s"), 1e9, ".3g"),
                f"{100 * frac:.0f} %"
                if isinstance(frac, (int, float))
                else (p.get("kind") if p.get("kind") else "-"),
            ]
        )
    return rows


def trace_notes(doc: dict[str, Any]) -> list[str]:
    notes = [
        n for n in doc.get("notes", []) if n.startswith(("traced step", "Chrome trace", "roofline from"))
    ]
    unknown = sorted(
        {m["params"]["op"] for m in trace_ops(doc) if "no formula" in m["params"].get("kind", "")}
    )
    if unknown:
        notes.append("timed, no FLOP/byte formula (not placed): " + ", ".join(unknown))
    return notes


def print_trace(doc: dict[str, Any], console: Any = None) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=180))
    if not trace_ops(doc):
        return
    t = Table(*TRACE_COLUMNS, title="Traced step: the ops by device time, on this node's roofline")
    for row in trace_rows(doc):
        t.add_row(*row)
    console.print(t)
    for n in trace_notes(doc):
        console.print(n, markup=False)


def plot_trace(doc: dict[str, Any], path: Path) -> Path | None:
    """The roofline of the run with every placed op as a point, its area the op's share of the step."""
    ops = [m for m in trace_ops(doc) if isinstance(m["params"].get("intensity_flop_per_byte"), (int, float))]
    ops = [m for m in ops if m["params"].get("flops_per_step")]
    if not ops:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import save
    from analysis.roofline import from_run

    fig, ax = plt.subplots(figsize=(9, 5.5))
    roof = from_run(doc)
    xs = [m["params"]["intensity_flop_per_byte"] for m in ops]
    lo, hi = min(xs) / 4, max(xs) * 4
    if roof is not None:
        import numpy as np

        grid = np.logspace(np.log10(lo), np.log10(hi), 200)
        for fam, peak in roof.compute_flop_per_s.items():
            ax.plot(
                grid, np.minimum(peak, grid * roof.bandwidth_bytes_per_s), linewidth=1, label=f"roof {fam}"
            )
    step = sum(m["params"]["seconds_per_step"] for m in trace_ops(doc)) or 1.0
    for m in ops:
        p = m["params"]
        size = 20 + 2000 * p["seconds_per_step"] / step
        ax.scatter([p["intensity_flop_per_byte"]], [p["achieved_flop_per_s"]], s=size, alpha=0.6)
        ax.annotate(
            p["op"].removeprefix("aten::"),
            (p["intensity_flop_per_byte"], p["achieved_flop_per_s"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(f"traced step of {doc.get('config', {}).get('target', '?')}: ops on this node's roofline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(
        fig,
        path,
        "point area: the op's share of the step's time; roofs: the run's DRAM plateau and matmul peaks",
    )
