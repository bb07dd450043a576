"""The decode projection judged against published decode measurements nobody here wrote, and the band it carries.

analysis/data/decode_published.csv holds one row per published figure (TensorRT-LLM, vLLM, SGLang, TGI,
llama.cpp, MLC, gpt-fast / torchao, Hugging Face transformers, ExLlamaV2 ... on NVIDIA and AMD GPUs), each with
its source address, a verbatim quote and the exact configuration: GPU, GPUs and TP, model, weight format (and
group size), KV dtype, batch, input and output lengths, the engine and its version, whether it ran CUDA graphs,
and what the number counts:

    per_seq_tok_s   one stream's decode speed               projected: B / step / B
    decode_tok_s    all streams, decode phase only          projected: B / step
    output_tok_s    generated tokens / whole benchmark      projected: B x out / (prefill + out x step)
    total_tok_s     (prompt + generated) / whole benchmark  projected: B x (in + out) / (prefill + out x step)
    tpot_ms         time per output token of a stream       projected: step time
    serving_tpot_ms the same under continuous load at a     projected: step + (B - 1) x one prompt's
                    concurrency of B (benchmark_serving)               prefill / out (the others' prefills)
    e2e_latency_s   one whole batch, prefill to last token  projected: prefill + out x step
(`value_per = gpu` rows publish per-GPU throughput: x TP). Each row is projected from the spec sheet
(`profile_from_spec`) with the row's engine at its version (analysis/engines.py); the ratio is projected speed /
published speed (for the two time metrics: published time / projected time), so > 1 is optimistic.

The rows split in two fixed halves by a hash of their id: `fit` and `holdout`. Engine parameters that no
published profile gives would be fitted on `fit` only and judged on `holdout`; every parameter today carries
its own source (engines.toml, gpus.toml [decode]), so both halves are out-of-sample, and the summaries print
each. The band printed beside a projection (`band`) is the p10-p90 of the holdout half's ratios for the same
engine class and batch regime: the range the published truth fell in, relative to our projection.

    python -m analysis backtest                 # the summaries by engine, vendor, format, batch regime
    python -m analysis backtest --rows          # and every row
    python -m analysis backtest --half holdout --csv my_rows.csv
"""

from __future__ import annotations

import csv
import functools
import io
import math
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import decode, engines, formats, hardware, specs
from analysis.cli import BadInput, read_text
from analysis.models import load_model

PUBLISHED = Path(__file__).resolve().parent / "data" / "decode_published.csv"
SPEED_METRICS = ("per_seq_tok_s", "decode_tok_s", "output_tok_s", "total_tok_s")
TIME_METRICS = ("tpot_ms", "serving_tpot_ms", "e2e_latency_s")
METRICS = SPEED_METRICS + TIME_METRICS
REQUIRED = ("id", "source", "gpu", "tp", "model", "weights", "batch", "metric", "value")
REGIMES = ((1, "batch 1"), (16, "batch 2-16"), (64, "batch 17-64"), (math.inf, "batch 65+"))
BAND_MIN_ROWS = 5
NO_ENGINE_CLASS = "engine not stated"


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
    engine: str | None  # an engines.toml key; None: the source does not say which engine
    engine_version: str | None
    cuda_graphs: str  # yes, no or unknown: "no" runs the engine without graphs

    @property
    def half(self) -> str:
        return "fit" if zlib.crc32(self.id.encode()) % 2 == 0 else "holdout"

    @property
    def launch(self) -> str:
        return self.query_engine().launch

    def query_engine(self) -> engines.Engine:
        """The engine the source ran, at its version, without graphs where the row says so."""
        e = engines.resolve(self.engine, self.engine_version) if self.engine else engines.resolve()
        if self.cuda_graphs == "no" and e.launch == "graph":
            return e.with_launch(
                "native" if e.engine_class.startswith("C++") or e.key == "llama.cpp" else "eager"
            )
        if self.cuda_graphs == "yes" and e.launch != "graph":
            return e.with_launch("graph")
        return e

    @property
    def engine_class(self) -> str:
        return engines.resolve(self.engine).engine_class if self.engine else NO_ENGINE_CLASS

    @property
    def regime(self) -> str:
        return regime(self.batch)

    @property
    def vendor(self) -> str:
        return "AMD" if specs.get(self.gpu).arch.startswith("cdna") else "NVIDIA"


def regime(batch: int) -> str:
    return next(name for top, name in REGIMES if batch <= top)


def load_rows(path: Path = PUBLISHED) -> list[Row]:
    """Every row of a published-data CSV, checked; BacktestError names the first bad one."""
    try:
        raw = list(csv.DictReader(io.StringIO(read_text(path, "CSV file"), newline="")))
    except BadInput as exc:
        raise BacktestError(str(exc)) from None
    except csv.Error as exc:
        raise BacktestError(f"{path}: not a CSV file: {exc}") from None
    rows, seen = [], set()
    for i, r in enumerate(raw, 2):
        where = f"{path}:{i} ({r.get('id') or '?'})"
        missing = [k for k in REQUIRED if not (r.get(k) or "").strip()]
        if missing:
            raise BacktestError(f"{where}: missing {', '.join(missing)}")
        if r["id"] in seen:
            raise BacktestError(f"{where}: id {r['id']!r} appears twice")
        seen.add(r["id"])
        try:
            tp, batch = int(r["tp"]), int(r["batch"])
            value = float(r["value"])
            group = int(r["group_size"]) if (r.get("group_size") or "").strip() else 128
            inp = round(float(r["input_len"])) if (r.get("input_len") or "").strip() else 0
            out = round(float(r["output_len"])) if (r.get("output_len") or "").strip() else 128
        except ValueError as exc:
            raise BacktestError(f"{where}: {exc}") from None
        if r["metric"] not in METRICS:
            raise BacktestError(f"{where}: metric {r['metric']!r}: expected one of {', '.join(METRICS)}")
        if not (value > 0 and math.isfinite(value)) or tp < 1 or batch < 1:
            raise BacktestError(f"{where}: value, tp and batch must be positive")
        if (r.get("value_per") or "total") == "gpu":
            value *= tp
        framework = (r.get("framework") or "").strip()
        version = (r.get("engine_version") or "").strip() or None
        try:
            engine = engines.resolve(framework, version).key
        except engines.EngineError:
            engine = None  # 'other' or an engine without a profile: projected with the default engine
            version = None
        rows.append(
            Row(
                id=r["id"],
                source=r["source"],
                framework=framework,
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
                engine=engine,
                engine_version=version,
                cuda_graphs=(r.get("cuda_graphs") or "unknown").strip(),
            )
        )
    if not rows:
        raise BacktestError(f"{path}: no rows (a header and at least one published measurement)")
    return rows


def project_row(row: Row, engine: engines.Engine | None = None) -> float:
    """The spec-only projection of a row, in the row's metric; `engine` replaces the row's own."""
    q = formats.Query(
        load_model(row.model),
        row.weights,
        row.kv_dtype,
        row.tp,
        row.input_len,
        row.output_len,
        group_size=row.group_size,
        engine=engine or row.query_engine(),
    )
    (p,) = decode.project(hardware.profile_from_spec(specs.get(row.gpu)), q, [row.batch])
    whole_s = row.batch * row.output_len / p["serving_output_tokens_per_s"]
    return {
        "per_seq_tok_s": p["output_tokens_per_s"] / row.batch,
        "decode_tok_s": p["output_tokens_per_s"],
        "output_tok_s": p["serving_output_tokens_per_s"],
        "total_tok_s": p["total_tokens_per_s"],
        "tpot_ms": p["step_seconds"] * 1e3,
        "serving_tpot_ms": (p["step_seconds"] + (row.batch - 1) * p["ttft_seconds"] / row.output_len) * 1e3,
        "e2e_latency_s": whole_s,
    }[row.metric]


def speed_ratio(row: Row, projected: float) -> float:
    """projected / published as speeds (> 1: the projection is optimistic), whatever the metric counts."""
    return row.value / projected if row.metric in TIME_METRICS else projected / row.value


def backtest(rows: list[Row], with_engine: bool = True) -> list[dict[str, Any]]:
    """Each row with its projection and ratio; rows that cannot be projected say why.

    `with_engine=False` asks as a user who names no engine would: the default engine, newest profile."""
    out = []
    default = engines.resolve()
    for r in rows:
        res: dict[str, Any] = {"row": r}
        try:
            proj = project_row(r, None if with_engine else default)
        except (formats.ProjectionError, specs.UnknownGPU, ValueError) as exc:
            res["error"] = str(exc)
        else:
            res["projected"], res["ratio"] = proj, speed_ratio(r, proj)
        out.append(res)
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median |error|, geometric-mean ratio, share within 25 %, worst ratio either way, p10/p90 of the ratio."""
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
        "p10_ratio": _quantile(ratios, 0.10),
        "p90_ratio": _quantile(ratios, 0.90),
    }


def _quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)


GROUPINGS = {
    "engine": lambda r: r.engine or NO_ENGINE_CLASS,
    "engine class": lambda r: r.engine_class,
    "GPU vendor": lambda r: r.vendor,
    "weight format": lambda r: r.weights,
    "batch regime": lambda r: r.regime,
}


def breakdown(results: list[dict[str, Any]], by: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(group, summary of its fit half, summary of its holdout half) for one of GROUPINGS."""
    key = GROUPINGS[by]
    groups: dict[str, list[dict[str, Any]]] = {}
    for res in results:
        groups.setdefault(key(res["row"]), []).append(res)
    return [
        (
            name,
            summary([x for x in part if x["row"].half == "fit"]),
            summary([x for x in part if x["row"].half == "holdout"]),
        )
        for name, part in sorted(groups.items())
    ]


@dataclass(frozen=True)
class Band:
    """Where published figures fell relative to our projection, for one engine class and batch regime."""

    low_ratio: float  # p10 of projected / published
    high_ratio: float  # p90
    rows: int
    scope: str  # which rows: "<class>, <regime>" or "<class>, every batch"

    def range(self, projected: float) -> tuple[float, float]:
        """The published values this band expects for a projected speed: projected / p90 .. projected / p10."""
        return projected / self.high_ratio, projected / self.low_ratio


@functools.cache
def _holdout_results() -> tuple[dict[str, Any], ...]:
    return tuple(x for x in backtest([r for r in load_rows() if r.half == "holdout"]) if "ratio" in x)


def band(engine: engines.Engine, batch: int) -> Band | None:
    """The p10-p90 of the holdout half's ratios for this engine class at this batch regime (at least
    BAND_MIN_ROWS rows; else the class at every batch; else None: no published rows to judge it by)."""
    results = _holdout_results()
    same_class = [x for x in results if x["row"].engine_class == engine.engine_class]
    for scope, part in (
        (
            f"{engine.engine_class}, {regime(batch)}",
            [x for x in same_class if x["row"].regime == regime(batch)],
        ),
        (f"{engine.engine_class}, every batch", same_class),
    ):
        if len(part) >= BAND_MIN_ROWS:
            s = summary(list(part))
            return Band(s["p10_ratio"], s["p90_ratio"], s["rows"], scope)
    return None


def with_band(rows: list[dict[str, Any]], engine: engines.Engine) -> list[dict[str, Any]]:
    """Projection rows with the band beside them: the published range it implies, or why there is none."""
    out = []
    for r in rows:
        b = band(engine, r["batch"])
        if b is None:
            extra: dict[str, Any] = {
                "band": None,
                "band_note": f"no published rows for this engine class ({engine.engine_class}): the band is unknown",
            }
        else:
            lo, hi = b.range(r["output_tokens_per_s"])
            extra = {
                "band": {"output_tokens_per_s_p10": lo, "output_tokens_per_s_p90": hi, "rows": b.rows},
                "band_note": f"p10-p90 of {b.rows} held-out published rows ({b.scope})",
            }
        out.append({**r, **extra})
    return out
