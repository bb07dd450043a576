"""Planner commands built on the decode projection: claim audit, GPU crossover, fleet comparison.

    python -m analysis audit examples/claims.toml
    python -m analysis crossover --model llama-3.1-70b --a h100-sxm5-80gb:fp8:2:2.49 --b a100-sxm4-80gb:bf16:4:1.64
    python -m analysis fleet results/                      # or RUN.json RUN.json ...

Audit verdicts, per claimed tokens/s (what the claim counts: "output" = batch / decode step, "total" = the
serving-benchmark count): above the physical bound (100 % of the spec sheet) -> "impossible", with the
resource that makes it so; above 1.15 x our projection -> "optimistic"; below 0.70 x it -> "conservative";
else "plausible". Fleet: a node is flagged when a headline figure sits outside median +- max(3 x 1.4826 x MAD,
10 % of the median): robust to the bad node itself, and no alarm on a fleet that merely agrees closely.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import decode, engines, formats, hardware, specs
from analysis.cli import BadInput, read_text
from analysis.models import ModelConfigError, load_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTIMISTIC, CONSERVATIVE = 1.15, 0.70
MAD_K, MIN_BAND = 3.0, 0.10


class PlanningError(BadInput):
    """A claims file, profile spec or fleet input that cannot be used: one line naming the row or file."""


# ---- audit ----------------------------------------------------------------------------------------------

CLAIM_KEYS = {
    "name": str,
    "model": str,
    "gpu": str,
    "dtype": str,
    "tp": int,
    "batch": int,
    "input_len": int,
    "output_len": int,
    "claimed_tokens_per_s": (int, float),
    "counts": str,
}
# optional: the serving engine (NAME or NAME@VERSION, analysis/engines.py; default: engines.toml's, a
# graph-capturing serving engine, as published claims mostly come from vLLM, TensorRT-LLM, SGLang), and
# cuda_graphs = false for an engine run without graphs (eager PyTorch)
OPTIONAL_CLAIM_KEYS = {"engine": str, "cuda_graphs": bool, "kv_dtype": str, "group_size": int}


def load_claims(path: Path) -> list[dict[str, Any]]:
    try:
        raw = tomllib.loads(read_text(path, "claims file"))
    except BadInput as exc:
        raise PlanningError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanningError(f"{path}: TOML syntax error: {exc}") from None
    rows = raw.get("claim")
    if not isinstance(rows, list) or not rows:
        raise PlanningError(f"{path}: no [[claim]] rows")
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):  # `claim = [1, 2]` or `claim = ["..."]` instead of [[claim]] tables
            raise PlanningError(
                f"{path}: claim {i} is {type(row).__name__} {row!r}, not a table: write each claim as a [[claim]] table"
            )
        where = f"{path}: claim {i} ({row.get('name', '?')})"
        for key, tp in CLAIM_KEYS.items():
            if key not in row:
                raise PlanningError(f"{where}: missing {key!r}")
            if not isinstance(row[key], tp) or isinstance(row[key], bool):
                raise PlanningError(f"{where}: {key!r} has the wrong type ({row[key]!r})")
        for key, tp in OPTIONAL_CLAIM_KEYS.items():
            if key in row and (not isinstance(row[key], tp) or (tp is int and isinstance(row[key], bool))):
                raise PlanningError(f"{where}: {key!r} has the wrong type ({row[key]!r})")
        unknown = set(row) - set(CLAIM_KEYS) - set(OPTIONAL_CLAIM_KEYS)
        if unknown:
            raise PlanningError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        claimed = row["claimed_tokens_per_s"]
        if not math.isfinite(claimed) or claimed <= 0:
            raise PlanningError(f"{where}: claimed_tokens_per_s must be a positive number, got {claimed!r}")
        if row["counts"] not in ("output", "total"):
            raise PlanningError(f"{where}: counts must be 'output' or 'total', got {row['counts']!r}")
        if row["dtype"] not in formats.FORMATS:
            raise PlanningError(f"{where}: dtype must be one of {', '.join(formats.FORMATS)}")
        try:
            formats.check_query(_query(row))
        except (formats.ProjectionError, ModelConfigError, engines.EngineError) as exc:
            raise PlanningError(f"{where}: {exc}") from None
    return rows


def _query(c: dict[str, Any]) -> formats.Query:
    return formats.Query(
        load_model(c["model"]),
        c["dtype"],
        c.get("kv_dtype"),
        c["tp"],
        c["input_len"],
        c["output_len"],
        group_size=c.get("group_size", 128),
        engine=engines.resolve(c.get("engine")),
        launch=None if c.get("cuda_graphs", True) else "eager",
    )


def _metric(row: dict[str, Any], counts: str) -> float:
    return row["output_tokens_per_s"] if counts == "output" else row["total_tokens_per_s"]


def audit_claim(c: dict[str, Any]) -> dict[str, Any]:
    spec = specs.get(c["gpu"])
    q = _query(c)
    (ideal,) = decode.project(hardware.profile_from_spec(spec, ideal=True), q, [c["batch"]])
    (ours,) = decode.project(hardware.profile_from_spec(spec), q, [c["batch"]])
    bound, proj, claimed = _metric(ideal, c["counts"]), _metric(ours, c["counts"]), c["claimed_tokens_per_s"]
    out = {"name": c["name"], "claimed": claimed, "bound": bound, "projected": proj, "counts": c["counts"]}
    if not ideal.get("fits", True):  # the weights and this many requests' KV cache exceed the GPUs' memory
        out["verdict"] = "impossible"
        out["why"] = (
            f"batch {c['batch']} does not fit: memory holds the KV cache of {ideal['max_concurrency']} requests"
        )
    elif claimed > bound:
        out["verdict"] = "impossible"
        out["why"] = _why_impossible(spec, q, c, ideal, claimed / bound)
    elif claimed > OPTIMISTIC * proj:
        out["verdict"], out["why"] = (
            "optimistic",
            f"{claimed / proj:.2f}x our projection (spec x default efficiencies)",
        )
    elif claimed < CONSERVATIVE * proj:
        out["verdict"], out["why"] = "conservative", f"{claimed / proj:.2f}x our projection"
    else:
        out["verdict"], out["why"] = "plausible", f"{claimed / proj:.2f}x our projection"
    return out


def _why_impossible(
    spec: specs.GPUSpec, q: formats.Query, c: dict[str, Any], ideal: dict[str, Any], factor: float
) -> str:
    b = c["batch"]
    ctx = c["input_len"] + (c["output_len"] - 1) // 2
    step = decode.decode_step(hardware.profile_from_spec(spec, ideal=True), q, b, ctx)
    steps_per_s = c["claimed_tokens_per_s"] / b
    if step.bound == "memory":
        need = (step.weight_bytes + step.kv_bytes) * steps_per_s
        return f"{factor:.2f}x the physical bound: needs {need / 1e12:.1f} TB/s of memory bandwidth per GPU, the {spec.name} has {spec.memory_bandwidth_gb_s / 1e3:.2f}"
    if step.bound == "compute":
        return f"{factor:.1f}x the physical bound: needs {factor:.1f}x the {spec.name}'s dense tensor FLOP/s"
    return f"{factor:.1f}x the physical bound: the all-reduces alone exceed the step time the claim allows"


# ---- crossover --------------------------------------------------------------------------------------------


@dataclass
class Side:
    label: str
    hw: hardware.HardwareProfile
    dtype: str
    tp: int
    price: float | None


def parse_side(text: str) -> Side:
    """GPU_KEY_OR_RUN.json:DTYPE:TP[:PRICE_PER_GPU_HOUR]"""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise PlanningError(f"{text!r}: expected GPU:DTYPE:TP[:PRICE] (GPU a spec key or a run document)")
    target, dtype, tp = parts[0], parts[1], parts[2]
    if dtype not in formats.FORMATS:
        raise PlanningError(f"{text!r}: dtype must be one of {', '.join(formats.FORMATS)}")
    try:
        tp_n = int(tp)
        price = float(parts[3]) if len(parts) == 4 else None
    except ValueError:
        raise PlanningError(f"{text!r}: TP must be an integer and PRICE a number") from None
    if tp_n < 1:
        raise PlanningError(f"{text!r}: TP must be at least 1")
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise PlanningError(f"{text!r}: PRICE per GPU-hour must be a finite number, 0 or more")
    if target.endswith(".json"):
        from analysis.rundoc import RunDocumentError, load

        try:
            hw = hardware.profile_from_run(load(target), Path(target).name)
        except (RunDocumentError, formats.ProjectionError) as exc:
            raise PlanningError(str(exc)) from None
    else:
        try:
            hw = hardware.profile_from_spec(specs.get(target))
        except specs.UnknownGPU as exc:
            raise PlanningError(exc.args[0]) from None
    return Side(f"{target} {dtype} TP{tp_n}", hw, dtype, tp_n, price)


def curve(
    side: Side, model: str, batches: list[int], input_len: int, output_len: int
) -> list[dict[str, Any]]:
    q = formats.Query(load_model(model), side.dtype, None, side.tp, input_len, output_len, side.price)
    return decode.project(side.hw, q, batches)


def crossover(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int | None:
    """The smallest batch at which A's output tokens/s reaches B's (None if it never does)."""
    for ra, rb in zip(a, b, strict=True):
        if ra["output_tokens_per_s"] >= rb["output_tokens_per_s"]:
            return ra["batch"]
    return None


def plot_crossover(sides: list[Side], rows: list[list[dict[str, Any]]], model: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for side, rs in zip(sides, rows, strict=True):
        ax.plot(
            [r["batch"] for r in rs], [r["output_tokens_per_s"] for r in rs], marker="o", label=side.label
        )
        over = [r for r in rs if not r["fits"]]
        if over:
            ax.scatter(
                [r["batch"] for r in over],
                [r["output_tokens_per_s"] for r in over],
                marker="x",
                color="red",
                zorder=3,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (concurrent requests)")
    ax.set_ylabel("output tokens/s (all GPUs of the side)")
    ax.set_title(f"{model}: tokens/s vs batch (x: over KV capacity)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    from analysis.plots import save

    return save(fig, path)


# ---- fleet ------------------------------------------------------------------------------------------------


def load_fleet(inputs: list[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Run documents from files and folders; a broken file is reported and skipped, never fatal."""
    from analysis.rundoc import RunDocumentError, load

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.exists():
            files.append(p)
        else:
            raise PlanningError(f"{p}: no such file or folder")
    docs, problems = [], []
    for f in files:
        try:
            docs.append((f, load(f)))
        except RunDocumentError as exc:
            problems.append(f"skipped {exc}")
    return docs, problems


def fleet(
    docs: list[tuple[Path, dict[str, Any]]],
) -> tuple[list[str], list[dict[str, Any]], dict[str, float]]:
    """(figures, one row per node with values and flags, fleet median per figure)."""
    figures: list[str] = []
    rows = []
    for path, doc in docs:
        dev = (doc.get("devices") or [{}])[0]
        uuid = (dev.get("nvml") or {}).get("uuid") if isinstance(dev.get("nvml"), dict) else None
        node = {
            "file": path.name,
            "host": doc["host"].get("hostname", "?"),
            "device": uuid or dev.get("uuid") or dev.get("name", "?"),
            "values": {},
            # a run that did not complete measured only part of what the others did: say so beside it
            "flags": [] if doc.get("status") == "completed" else [f"run {doc.get('status')}"],
        }
        for h in doc.get("health", []):  # the node's own health verdicts (probes.health)
            if h.get("verdict") in ("warn", "fail"):
                node["flags"].append(f"health {h['verdict']} {h['device']}: {'; '.join(h['reasons'])[:120]}")
        for s in doc.get("summary", []):
            key = f"{s['name']} [{s['device']}]"
            node["values"][key] = s["value"]
            if key not in figures:
                figures.append(key)
        rows.append(node)
    medians = {}
    for f in figures:
        vals = [r["values"][f] for r in rows if f in r["values"]]
        med = statistics.median(vals)
        mad = statistics.median(abs(v - med) for v in vals)
        band = max(MAD_K * 1.4826 * mad, MIN_BAND * abs(med))
        medians[f] = med
        for r in rows:
            v = r["values"].get(f)
            if v is not None and abs(v - med) > band and len(vals) >= 3:
                r["flags"].append(f"{f} {100 * (v / med - 1):+.0f}%")
    return figures, rows, medians


def model_check(model: str) -> None:
    try:
        load_model(model)
    except ModelConfigError as exc:
        raise PlanningError(str(exc)) from None
