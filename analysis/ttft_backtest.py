"""The prefill / TTFT projection against published time-to-first-token figures (one request at a time).

`analysis/data/ttft_published.csv` holds published TTFT measurements with their configuration (GPU, TP, model,
weight format, engine and version, prompt length), each with its source, the page and a verbatim quote; only
rows measured one request at a time, so TTFT is the prompt's prefill and not queueing. The projection is
`decode.prefill_s` on the spec sheet (compute-bound GEMMs at the format's TFLOPS x the database's large-M
efficiency, causal attention, x gpus.toml's `prefill_factor` for the rest of a prompt-sized step, the
all-reduces): the same function the plan's TTFT uses. The one parameter, `prefill_factor`, was fitted on the
`fit` half only (a hash of the id, as the decode backtest; its dense-model NVIDIA rows) and is judged on the
`holdout` half. Same rules and same excluded sources as the decode set (analysis/backtest.py). Known misses,
kept in the data: TensorRT-LLM 0.9's MoE prefill at 2048 tokens (2.8x our projection: its expert GEMMs, not
the hardware) and vLLM 0.6.3 on ROCm with long prompts (5-9x: that build's prefill, as its source says).

    python -m analysis backtest --ttft            # every row, then the summary per half, engine and GPU
"""

from __future__ import annotations

import csv
import math
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import decode, engines, formats, hardware, specs
from analysis.models import load_model

DATA = Path(__file__).with_name("data") / "ttft_published.csv"


@dataclass(frozen=True)
class TtftRow:
    id: str
    source: str
    gpu: str
    tp: int
    model: str
    weights: str
    engine: str
    engine_version: str
    input_len: int
    ttft_ms: float

    @property
    def half(self) -> str:
        return "fit" if zlib.crc32(self.id.encode()) % 2 == 0 else "holdout"


def load_rows(path: Path = DATA) -> list[TtftRow]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [
            TtftRow(
                r["id"],
                r["source"],
                r["gpu"],
                int(r["tp"]),
                r["model"],
                r["weights"],
                r["engine"],
                r["engine_version"],
                int(r["input_len"]),
                float(r["ttft_ms"]),
            )
            for r in csv.DictReader(fh)
        ]


def project_ttft_ms(r: TtftRow) -> float:
    engine = engines.resolve(r.engine, r.engine_version or None)
    q = formats.Query(load_model(r.model), r.weights, None, r.tp, r.input_len, 1, engine=engine)
    hw = hardware.profile_from_spec(specs.get(r.gpu))
    return decode.prefill_s(hw, q, 1) * 1e3


def backtest(rows: list[TtftRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        proj = project_ttft_ms(r)
        out.append({"row": r, "projected_ms": proj, "ratio": r.ttft_ms / proj})
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    if not results:
        return {"rows": 0}
    errs = [abs(x["projected_ms"] / x["row"].ttft_ms - 1) for x in results]
    ratios = [x["ratio"] for x in results]
    return {
        "rows": len(results),
        "median_abs_error": statistics.median(errs),
        "geo_mean_ratio": math.exp(statistics.fmean(math.log(q) for q in ratios)),
        "beyond_2x": sum(q > 2 or q < 0.5 for q in ratios),
    }


def print_ttft_backtest(results: list[dict[str, Any]], console: Any, rows: bool = True) -> None:
    from rich.table import Table

    if rows:
        t = Table("id", "half", "published ms", "projected ms", "published / projected", title="TTFT rows")
        for x in results:
            r = x["row"]
            t.add_row(r.id, r.half, f"{r.ttft_ms:.1f}", f"{x['projected_ms']:.1f}", f"{x['ratio']:.2f}")
        console.print(t)
    t = Table(
        "group",
        "half",
        "rows",
        "median |error|",
        "geo-mean published/projected",
        "beyond 2x",
        title="TTFT backtest (one request at a time; prefill_factor fitted on the fit half)",
    )
    groups: dict[str, list[dict[str, Any]]] = {"all": results}
    for x in results:
        groups.setdefault(f"engine {x['row'].engine}", []).append(x)
        groups.setdefault(f"gpu {x['row'].gpu}", []).append(x)
    for name, part in groups.items():
        for half in ("fit", "holdout"):
            s = summary([x for x in part if x["row"].half == half])
            if s["rows"]:
                t.add_row(
                    name,
                    half,
                    str(s["rows"]),
                    f"{s['median_abs_error']:.0%}",
                    f"{s['geo_mean_ratio']:.2f}",
                    str(s["beyond_2x"]),
                )
    console.print(t)


def ttft_command(csv_path: Path | None, half: str, as_json: bool, rows: bool) -> int:
    """`python -m analysis backtest --ttft [--csv F] [--half fit|holdout] [--json] [--rows]`."""
    import json
    import sys

    from rich.console import Console

    results = backtest([r for r in load_rows(csv_path or DATA) if half == "all" or r.half == half])
    if as_json:
        out = [
            {**vars(x["row"]), "half": x["row"].half, "projected_ms": x["projected_ms"], "ratio": x["ratio"]}
            for x in results
        ]
        print(json.dumps(out, indent=1))
        return 0
    print_ttft_backtest(results, Console() if sys.stdout.isatty() else Console(width=140), rows)
    return 0
