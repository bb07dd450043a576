"""`python -m analysis plan`: its inputs checked at the door, the ranked table, and the files it writes.

    python -m analysis plan --model llama-3.1-70b --input-len 512 --output-len 128 --ttft-ms 1000 --tpot-ms 50 \
        --candidate l40s:fp8:0.72 --candidate a100-sxm4-80gb:bf16:1.64 --candidate a100-sxm4-80gb:0.45:spot -o plan/

What it computes is analysis/plan.py; what it draws and writes is analysis/plan_report.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from analysis import engines, formats, hardware, specs
from analysis.cli import check_output_dir, int_list, nonneg_float, positive_int
from analysis.headline import BLOCK_SCALED, WEIGHT_ONLY, compute_family
from analysis.models import load_model
from analysis.plan import (
    ASSUMPTIONS,
    MARKETS,
    PLAN_FORMATS,
    TP_SIZES,
    Candidate,
    Plan,
    PlanError,
    Targets,
    Workload,
    at_batch,
    plan,
)

PLAN_TP = ",".join(map(str, TP_SIZES))


def runs_format(hw: hardware.HardwareProfile, spec: specs.GPUSpec | None, fmt: str) -> str | None:
    """Why the GPU cannot run `fmt` (None: it can). W8A8 needs the format's tensor-core rate; weight-only
    formats run on any GPU (their GEMMs are 16-bit on dequantized weights)."""
    if fmt in WEIGHT_ONLY or fmt == "fp32":
        return None
    if (
        fmt in BLOCK_SCALED
    ):  # block-scaled tensor cores come with FP4 (Blackwell, CDNA4): the sheet's FP4 rate
        has = spec.flop_per_s("fp4") if spec is not None else hw.flop_per_s.get("fp4")
        if not has:
            name = spec.name if spec is not None else hw.name
            return f"{name} has no block-scaled tensor cores ({fmt} needs Blackwell: no FP4 rate on its sheet or run)"
        return None
    family = compute_family(fmt)  # W8A8 and 16-bit at their own rate
    if spec is not None:
        if spec.flop_per_s(family) is None:
            extra = {"fp8": " (FP8 needs sm_89+ or CDNA3)", "fp4": " (FP4 needs Blackwell)"}.get(family, "")
            return f"{spec.name} has no {family.upper()} tensor-core rate on its spec sheet{extra}"
        return None
    if family not in hw.flop_per_s:
        return (
            f"the run document measured no {family} matmul on {hw.name}: it cannot show this GPU runs {fmt}"
        )
    return None


def parse_candidate(text: str, only: tuple[str, ...] | None = None) -> Candidate:
    """GPU_OR_RUN.json[:FORMAT]:PRICE[:spot|on-demand]"""
    parts = text.split(":")
    target, rest = parts[0], parts[1:]
    fmt = rest.pop(0) if rest and rest[0] in formats.FORMATS else None
    if not target or not rest or len(rest) > 2:
        raise PlanError(
            f"--candidate {text!r}: expected GPU[:FORMAT]:PRICE[:spot] (GPU a spec key or a run document)"
        )
    if rest and rest[0] and not _is_number(rest[0]) and fmt is None and len(rest) == 2:
        raise PlanError(
            f"--candidate {text!r}: format {rest[0]!r}: expected one of {', '.join(formats.FORMATS)}"
        )
    try:
        price = float(rest[0])
    except ValueError:
        raise PlanError(f"--candidate {text!r}: price {rest[0]!r} per GPU-hour is not a number") from None
    if not math.isfinite(price) or price < 0:
        raise PlanError(f"--candidate {text!r}: price per GPU-hour must be a finite number, 0 or more")
    market = rest[1] if len(rest) == 2 else "on-demand"
    if market not in MARKETS:
        raise PlanError(f"--candidate {text!r}: market {market!r}: expected spot or on-demand")
    spec, power = None, None
    if target.endswith(".json"):
        from analysis.rundoc import RunDocumentError, load

        try:
            doc = load(target)
            hw = hardware.profile_from_run(doc, Path(target).name)
        except (RunDocumentError, formats.ProjectionError) as exc:
            raise PlanError(f"--candidate {text!r}: {exc}") from None
        watts = [(r.get("energy") or {}).get("avg_power_w") for r in doc.get("summary", [])]
        power = max((w for w in watts if isinstance(w, (int, float))), default=None)
    else:
        try:
            spec = specs.get(target)
        except specs.UnknownGPU as exc:
            raise PlanError(f"--candidate {text!r}: {exc.args[0]}") from None
        hw = hardware.profile_from_spec(spec)
        power = spec.tdp_w
    if fmt is not None:
        why = runs_format(hw, spec, fmt)
        if why:
            raise PlanError(f"--candidate {text!r}: {why}")
        fmts: tuple[str, ...] = (fmt,)
    else:
        fmts = tuple(f for f in (only or PLAN_FORMATS) if runs_format(hw, spec, f) is None)
    return Candidate(text, target, hw, fmts, price, market, power)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def targets_from(ttft_ms: float | None, tpot_ms: float | None, per_user: float | None) -> Targets:
    for flag, v in (("--ttft-ms", ttft_ms), ("--tpot-ms", tpot_ms), ("--tokens-per-s-per-user", per_user)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise PlanError(f"{flag} {v:g}: a latency target must be a finite number above 0")
    tpots = [x for x in (tpot_ms / 1e3 if tpot_ms else None, 1 / per_user if per_user else None) if x]
    return Targets(ttft_ms / 1e3 if ttft_ms else None, min(tpots) if tpots else None)


def from_args(args: argparse.Namespace) -> Plan:
    if args.engine_version is not None and args.engine is None:
        raise engines.EngineError("--engine-version needs --engine (the version of which engine?)")
    only = tuple(args.formats) if args.formats else None
    for f in only or ():
        if f not in formats.FORMATS:
            raise PlanError(f"--formats {f!r}: expected one of {', '.join(formats.FORMATS)}")
    t = targets_from(args.ttft_ms, args.tpot_ms, args.tokens_per_s_per_user)
    cands = [parse_candidate(text, only) for text in args.candidate]
    if args.electricity_usd_per_kwh is not None:
        cands = [with_electricity(c, args.electricity_usd_per_kwh) for c in cands]
    for c in cands:
        if not c.formats:
            raise PlanError(
                f"--candidate {c.text!r}: the GPU runs none of the formats {', '.join(only or ())}"
            )
    w = Workload(
        load_model(args.model),
        args.input_len,
        args.output_len,
        engines.resolve(args.engine, args.engine_version),
    )
    return plan(cands, w, t, tuple(args.tp))


def with_electricity(c: Candidate, usd_per_kwh: float) -> Candidate:
    """The candidate with its electricity per GPU-hour: its power (the sheet's TDP, an upper bound; or the
    highest average power its run measured) x the price per kWh."""
    import dataclasses

    if c.power_w is None:
        raise PlanError(
            f"--candidate {c.text!r}: no power to price: the spec sheet has no TDP and the run measured none"
        )
    return dataclasses.replace(c, electricity=c.power_w / 1000 * usd_per_kwh)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="the cheapest GPU, format, TP and batch that meet TTFT / TPOT targets for a model"
    )
    p.add_argument("--model", required=True, help="bundled model name or a config.json path")
    p.add_argument("--input-len", type=positive_int, required=True, help="prompt tokens per request")
    p.add_argument("--output-len", type=positive_int, required=True, help="generated tokens per request")
    p.add_argument("--ttft-ms", type=float, default=None, help="time to first token target (ms)")
    p.add_argument("--tpot-ms", type=float, default=None, help="time per output token target (ms)")
    p.add_argument(
        "--tokens-per-s-per-user", type=float, default=None, help="interactivity target: 1 / TPOT (tok/s)"
    )
    p.add_argument(
        "--candidate",
        action="append",
        required=True,
        help="GPU[:FORMAT]:PRICE[:spot]: a spec key or a run document, a weight format (left out: every "
        f"format the GPU runs of {', '.join(PLAN_FORMATS)}), the price per GPU-hour; repeatable",
    )
    p.add_argument("--formats", type=_word_list, default=None, help="formats a format-less candidate tries")
    p.add_argument(
        "--electricity-usd-per-kwh",
        type=nonneg_float,
        default=None,
        help="add electricity to each GPU-hour: its power (sheet TDP, or the run's measured) x this price",
    )
    p.add_argument("--tp", type=int_list, default=PLAN_TP, help=f"TP sizes to try (default {PLAN_TP})")
    p.add_argument("--engine", default=None, help="serving engine, optionally NAME@VERSION (default: vllm)")
    p.add_argument("--engine-version", default=None, help="the engine's version (or NAME@VERSION)")
    p.add_argument(
        "--batch",
        type=int_list,
        default=None,
        help="also every option at these batches (a published table's rows), with how the step splits",
    )
    p.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    p.add_argument(
        "-o",
        "--out",
        dest="plan_dir",
        type=Path,
        default=None,
        help="folder for plan.json/.md/.html and the PNG",
    )


def _word_list(text: str) -> list[str]:
    return [w for w in (x.strip() for x in text.split(",")) if w]


def run(args: argparse.Namespace) -> int:
    if args.plan_dir is not None:
        check_output_dir(args.plan_dir, "-o")
    p = from_args(args)
    rows = [at_batch(o, p.workload, b) for o in p.options for b in args.batch or ()]
    if args.json:
        print(json.dumps({**p.to_dict(), "at_batches": rows}, indent=1))
    else:
        from rich.console import Console

        console = Console() if sys.stdout.isatty() else Console(width=160)
        print_plan(p, console)
        if rows:
            print_at_batches(rows, console)
    if args.plan_dir is not None:
        from analysis.plan_report import write_all

        for path in write_all(p, args.plan_dir):
            print(path, file=sys.stderr if args.json else sys.stdout)
    return 0


def print_plan(p: Plan, out: Any) -> None:
    from rich.table import Table

    from analysis.plan_report import RANKED_COLUMNS, ranked_rows

    w = p.workload
    out.print(
        f"plan: {w.model.name}, {w.input_len} in / {w.output_len} out per request, {p.targets.describe()}, "
        f"engine {w.engine.label}",
        markup=False,
    )
    table = Table(
        *RANKED_COLUMNS,
        title="cheapest first ($/M output tokens at the largest batch that meets the targets)",
    )
    for row in ranked_rows(p):
        table.add_row(*row)
    if p.ranked:
        out.print(table)
    else:
        out.print("no candidate meets the targets (why, per candidate, below)", markup=False)
    for o in p.rejected:
        out.print(f"  misses: {o.name}: {o.why_not}", markup=False)
    for c, fmt, why in p.unfit:
        out.print(f"  does not fit: {c.label} {fmt}: {why}", markup=False)
    for a in ASSUMPTIONS:
        out.print(f"  assumption: {a}", markup=False)


def print_at_batches(rows: list[dict[str, Any]], out: Any) -> None:
    from rich.table import Table

    t = Table(
        "option",
        "batch",
        "out tok/s",
        "tok/s/GPU",
        "TPOT ms",
        "TTFT ms",
        "$/M out",
        "bound",
        "split % (w kv c o comm a2a host)",
        title="every option at the asked batches (to set beside a published table)",
    )
    for r in rows:
        split = " ".join(f"{100 * v:.0f}" for v in r["split"].values())
        t.add_row(
            r["option"],
            f"{r['batch']}{'' if r['fits_kv'] else ' (over KV)'}",
            f"{r['output_tokens_per_s']:.0f}",
            f"{r['output_tokens_per_s_per_gpu']:.0f}",
            f"{r['tpot_ms']:.1f}",
            f"{r['ttft_ms']:.0f}",
            f"{r['cost_per_million_output_tokens']:.3f}",
            r["bound"],
            split,
        )
    out.print(t)
