"""The decode projection judged against published decode measurements nobody here wrote.

analysis/data/decode_published.csv holds one row per published figure (gpt-fast, torchao, vLLM, TensorRT-LLM,
NIM, MLC, llama.cpp, an MI300X report), each with its source address, a verbatim quote and the exact
configuration: GPU, GPUs and TP, model, weight format (and group size), KV dtype, batch, input and output
lengths, whether the engine runs CUDA graphs, and what the number counts:

    per_seq_tok_s   one stream's decode speed               projected: B / step (B = 1: 1 / step)   / B
    decode_tok_s    all streams, decode phase only          projected: B / step
    output_tok_s    generated tokens / whole benchmark      projected: B x out / (prefill + out x step)
(`value_per = gpu` rows publish per-GPU throughput: x TP). Each row is projected from the spec sheet
(`profile_from_spec`) and its error is projected / published - 1.

The rows split in two fixed halves by a hash of their id: `fit` and `holdout`. Nothing in the projection is
fitted to these rows today (every default is a published microbenchmark figure, analysis/data/gpus.toml
[decode]); were a parameter ever fitted, it would be fitted on `fit` and reported on `holdout` only.

    python -m analysis backtest                 # every row, then the summary per half
    python -m analysis backtest --half holdout --csv my_rows.csv
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import decode, formats, hardware, specs
from analysis.cli import BadInput, read_text
from analysis.models import load_model

PUBLISHED = Path(__file__).resolve().parent / "data" / "decode_published.csv"
METRICS = ("per_seq_tok_s", "decode_tok_s", "output_tok_s")
REQUIRED = ("id", "source", "gpu", "tp", "model", "weights", "batch", "metric", "value")
# how an engine launches kernels when it does not capture CUDA graphs: C++ engines launch fused kernels one by
# one (native); Python engines run PyTorch eager. "unknown" counts as graphs, except for engines that have none.
NATIVE_ENGINES = ("llama.cpp", "other", "mlc")
ENGINES_WITHOUT_GRAPHS = ("llama.cpp",)


class BacktestError(BadInput):
    """A published-data file that cannot be read or a row that names something unknown."""


@dataclass(frozen=True)
class Row:
    id: str
    source: str
    framework: str
    gpu: str
    tp: int
    model: str
    weights: str
    group_size: int
    kv_dtype: str | None
    batch: int
    input_len: int
    output_len: int
    metric: str
    value: float  # as the metric counts it (per-GPU figures already x TP)
    launch: str  # eager, graph or native (analysis.decode.Query.launch)

    @property
    def half(self) -> str:
        return "fit" if zlib.crc32(self.id.encode()) % 2 == 0 else "holdout"


def load_rows(path: Path = PUBLISHED) -> list[Row]:
    """Every row of a published-data CSV, checked; BacktestError names the first bad one."""
    try:
        raw = list(csv.DictReader(io.StringIO(read_text(path, "CSV file"), newline="")))
    except BadInput as exc:
        raise BacktestError(str(exc)) from None
    except csv.Error as exc:
        raise BacktestError(f"{path}: not a CSV file: {exc}") from None
    rows = []
    for i, r in enumerate(raw, 2):
        where = f"{path}:{i} ({r.get('id') or '?'})"
        missing = [k for k in REQUIRED if not (r.get(k) or "").strip()]
        if missing:
            raise BacktestError(f"{where}: missing {', '.join(missing)}")
        try:
            tp, batch = int(r["tp"]), int(r["batch"])
            value = float(r["value"])
            group = int(r["group_size"]) if (r.get("group_size") or "").strip() else 128
            inp = int(r["input_len"]) if (r.get("input_len") or "").strip() else 0
            out = int(r["output_len"]) if (r.get("output_len") or "").strip() else 128
        except ValueError as exc:
            raise BacktestError(f"{where}: {exc}") from None
        if r["metric"] not in METRICS:
            raise BacktestError(f"{where}: metric {r['metric']!r}: expected one of {', '.join(METRICS)}")
        if not (value > 0 and math.isfinite(value)) or tp < 1 or batch < 1:
            raise BacktestError(f"{where}: value, tp and batch must be positive")
        if (r.get("value_per") or "total") == "gpu":
            value *= tp
        graphs = (r.get("cuda_graphs") or "unknown").strip()
        rows.append(
            Row(
                id=r["id"],
                source=r["source"],
                framework=r.get("framework", ""),
                gpu=r["gpu"],
                tp=tp,
                model=r["model"],
                weights=r["weights"],
                group_size=group if group in formats.GROUP_SIZES else 128,
                kv_dtype=(r.get("kv_dtype") or "").strip() or None,
                batch=batch,
                input_len=max(inp, 1),
                output_len=max(out, 1),
                metric=r["metric"],
                value=value,
                launch=_launch(graphs, r.get("framework", "")),
            )
        )
    if not rows:
        raise BacktestError(f"{path}: no rows (a header and at least one published measurement)")
    return rows


def _launch(cuda_graphs: str, framework: str) -> str:
    if cuda_graphs == "yes" or (cuda_graphs == "unknown" and framework not in ENGINES_WITHOUT_GRAPHS):
        return "graph"
    return "native" if framework in NATIVE_ENGINES else "eager"


def project_row(row: Row) -> float:
    """The spec-only projection of a row, in the row's metric."""
    q = formats.Query(
        load_model(row.model),
        row.weights,
        row.kv_dtype,
        row.tp,
        row.input_len,
        row.output_len,
        group_size=row.group_size,
        launch=row.launch,
    )
    (p,) = decode.project(hardware.profile_from_spec(specs.get(row.gpu)), q, [row.batch])
    if row.metric == "per_seq_tok_s":
        return p["output_tokens_per_s"] / row.batch
    if row.metric == "decode_tok_s":
        return p["output_tokens_per_s"]
    return p["serving_output_tokens_per_s"]


def backtest(rows: list[Row]) -> list[dict[str, Any]]:
    """Each row with its projection and ratio (projected / published); rows that cannot be projected say why."""
    out = []
    for r in rows:
        res: dict[str, Any] = {"row": r}
        try:
            proj = project_row(r)
        except (formats.ProjectionError, specs.UnknownGPU, ValueError) as exc:
            res["error"] = str(exc)
        else:
            res["projected"], res["ratio"] = proj, proj / r.value
        out.append(res)
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median |error|, geometric-mean ratio, share within 25 %, worst ratio either way."""
    ratios = [x["ratio"] for x in results if "ratio" in x]
    if not ratios:
        return {"rows": 0}
    errors = [abs(r - 1) for r in ratios]
    return {
        "rows": len(ratios),
        "median_abs_error": statistics.median(errors),
        "geomean_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)),
        "within_25pct": sum(e <= 0.25 for e in errors) / len(ratios),
        "worst_ratio": max(ratios, key=lambda r: abs(math.log(r))),
        "beyond_2x": sum(r > 2 or r < 0.5 for r in ratios),
    }
