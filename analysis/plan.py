"""The renter's question: which GPU, weight format, tensor-parallel size and batch serve a model cheapest
under a latency target.

    python -m analysis plan --model llama-3.1-70b --input-len 512 --output-len 128 --ttft-ms 1000 --tpot-ms 50 \
        --candidate l40s:fp8:0.72 --candidate a100-sxm4-80gb:bf16:1.64 \
        --candidate a100-sxm4-80gb:bf16:0.45:spot --candidate results/RUN.json:bf16:1.10 -o plan/

A candidate is `GPU[:FORMAT]:PRICE[:spot]`: a spec-database key or a run document (its measured roofline), a
weight format (left out: every format the GPU runs), the price per GPU-hour, on-demand unless `spot`. For every
candidate, format and TP size (1, 2, 4, 8) whose weights and one request's KV cache fit, the batch is swept
with the decode projection of the serving engine (analysis/decode.py, default vLLM) and, per batch B, under
continuous batching of requests of I prompt and O output tokens:

    step(B)      one decode step of B sequences at the mid-generation context (decode.decode_step)
    TPOT(B)      = step(B) + prefill(B) / O: the B new prompts that replace finished requests every O steps
                   are prefilled between the steps, so their time is spread over each user's tokens
    TTFT(B)      = step(B) + prefill(1): a new request waits for the running step, then its own prefill
                   (compute-bound GEMMs at the format's TFLOPS, causal attention, the all-reduces)
    tokens/s per user = 1 / TPOT;   output tokens/s per GPU = B / TPOT / TP
    $/M output   = price x TP x TPOT / B / 3600 x 1e6: every GPU-second of the workload per generated token
    $/M input    = price x TP x prefill(B) / (B x I) / 3600 x 1e6: the prefill's share per prompt token
                   (already inside $/M output; for comparing with APIs that price input apart)

The largest B that meets every target and fits the KV cache is the option's operating point (TPOT and TTFT
grow with B, so a bisection finds it); options are ranked by $/M output there. An option that meets no target
says why at batch 1, naming the part of the step that is too slow; a candidate that fits no TP size is listed
as such. Each figure carries the engine's band (the backtest's p10-p90 of published/projected for that engine
class and batch regime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import backtest, decode, engines, formats, hardware
from analysis.cli import BadInput
from analysis.models import ModelConfig

PLAN_FORMATS = ("bf16", "fp8", "int8", "int8-wo", "int4-wo", "mxfp8", "nvfp4")  # a format-less candidate's
TP_SIZES = (1, 2, 4, 8)
MAX_BATCH = 4096
MARKETS = ("on-demand", "spot")
ASSUMPTIONS = (
    "continuous batching: B requests in flight; the B prompts that replace finished ones every O steps are "
    "prefilled between steps, so TPOT = step + prefill(B) / O",
    "TTFT = one running decode step (a new request waits for it) + the prompt's own prefill",
    "$/M output counts every GPU-second of the workload per generated token; $/M input is the prefill's share "
    "per prompt token (inside $/M output, for comparison with input-priced APIs)",
    f"{int(decode.MEMORY_RESERVE * 100)} % of GPU memory is kept for activations and the runtime; the rest holds "
    "the weights and the KV cache of every request at I + O tokens",
    "quantized formats (fp8, int8, int8-wo, int4-wo, mxfp8, nvfp4) change the model's outputs; compare their "
    "quality apart",
)


class PlanError(BadInput):
    """A plan input that cannot be used (a target, a candidate, a model that fits nowhere): one line, exit 2."""


@dataclass(frozen=True)
class Candidate:
    text: str
    target: str
    hw: hardware.HardwareProfile
    formats: tuple[str, ...]  # asked for, or every format the GPU runs
    price: float
    market: str
    power_w: float | None = (
        None  # the GPU's draw: the sheet's TDP, or the highest average power a run measured
    )
    electricity: float = 0.0  # $ per GPU-hour of electricity on top of the rent (--electricity-usd-per-kwh)

    @property
    def hourly(self) -> float:
        """What one GPU-hour costs: the rent, plus the electricity where it is paid apart."""
        return self.price + self.electricity

    @property
    def label(self) -> str:
        name = Path(self.target).name if self.target.endswith(".json") else self.target
        power = f" + ${self.electricity:.3g}/h power" if self.electricity else ""
        return f"{name} ${self.price:g}/h{power}{' spot' if self.market == 'spot' else ''}"


@dataclass(frozen=True)
class Targets:
    ttft_s: float | None = None
    tpot_s: float | None = None  # the stricter of --tpot-ms and 1 / --tokens-per-s-per-user

    def describe(self) -> str:
        parts = [f"TTFT <= {self.ttft_s * 1e3:g} ms" if self.ttft_s else ""]
        parts.append(
            f"TPOT <= {self.tpot_s * 1e3:.4g} ms ({1 / self.tpot_s:.3g} tok/s per user)"
            if self.tpot_s
            else ""
        )
        return ", ".join(p for p in parts if p) or "no latency target: the largest batch that fits"


@dataclass
class Point:
    batch: int
    step_s: float
    tpot_s: float
    ttft_s: float
    prefill_s: float
    tp: int
    price: float
    input_len: int

    @property
    def per_user(self) -> float:
        return 1.0 / self.tpot_s

    @property
    def output_tps(self) -> float:
        return self.batch / self.tpot_s

    @property
    def per_gpu(self) -> float:
        return self.output_tps / self.tp

    @property
    def cost_out(self) -> float:
        return decode.cost_per_million_tokens(self.price, self.tp, self.output_tps)

    @property
    def cost_in(self) -> float:
        return self.price * self.tp * self.prefill_s / (self.batch * self.input_len) / 3600 * 1e6

    def meets(self, t: Targets) -> bool:
        return (t.tpot_s is None or self.tpot_s <= t.tpot_s) and (t.ttft_s is None or self.ttft_s <= t.ttft_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "step_ms": self.step_s * 1e3,
            "tpot_ms": self.tpot_s * 1e3,
            "ttft_ms": self.ttft_s * 1e3,
            "tokens_per_s_per_user": self.per_user,
            "output_tokens_per_s": self.output_tps,
            "output_tokens_per_s_per_gpu": self.per_gpu,
            "cost_per_million_output_tokens": self.cost_out,
            "cost_per_million_input_tokens": self.cost_in,
        }


@dataclass
class Option:
    """One candidate in one format at one TP size: its curve over batch, operating point, or why none."""

    candidate: Candidate
    fmt: str
    tp: int
    max_batch: int = 0  # the KV-cache limit (0: nothing fits)
    curve: list[Point] = field(default_factory=list)
    best: Point | None = None
    limit: str = ""  # what stops the batch at the operating point
    why_not: str | None = None
    band: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.candidate.label} {self.fmt} TP{self.tp}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.text,
            "gpu": self.candidate.hw.name,
            "format": self.fmt,
            "tp": self.tp,
            "price_per_gpu_hour": self.candidate.price,
            "electricity_per_gpu_hour": self.candidate.electricity,
            "power_w": self.candidate.power_w,
            "market": self.candidate.market,
            "max_batch_kv": self.max_batch,
            "meets_targets": self.best is not None,
            "operating_point": self.best.to_dict() if self.best else None,
            "limited_by": self.limit or None,
            "why_not": self.why_not,
            "band": self.band,
            "curve": [p.to_dict() for p in self.curve],
        }


# ---- the search ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    model: ModelConfig
    input_len: int
    output_len: int
    engine: engines.Engine
    kv_dtype: str | None = None


def query(w: Workload, fmt: str, tp: int, price: float) -> formats.Query:
    return formats.Query(w.model, fmt, w.kv_dtype, tp, w.input_len, w.output_len, price, engine=w.engine)


def point(hw: hardware.HardwareProfile, q: formats.Query, batch: int) -> Point:
    step = decode.decode_step(hw, q, batch, round(q.input_len + (q.output_len - 1) / 2))
    prefill_b = decode.prefill_s(hw, q, batch)
    return Point(
        batch=batch,
        step_s=step.seconds,
        tpot_s=step.seconds + prefill_b / q.output_len,
        ttft_s=step.seconds + decode.prefill_s(hw, q, 1),
        prefill_s=prefill_b,
        tp=q.tp,
        price=q.price_per_gpu_hour or 0.0,
        input_len=q.input_len,
    )


def fit_reason(hw: hardware.HardwareProfile, q: formats.Query) -> str | None:
    """Why TP `q.tp` cannot hold the model and one request (None: it can)."""
    cfg = q.model
    if cfg.heads % q.tp:
        return f"TP{q.tp} does not divide the {cfg.heads} attention heads"
    usable = hw.memory_bytes * (1 - decode.MEMORY_RESERVE)
    weights = decode.weights_bytes_per_gpu(q)
    kv = decode.kv_bytes_per_request_per_gpu(q)
    if weights + kv > usable:
        return (
            f"TP{q.tp}: {weights / 1e9:.1f} GB of weights + {kv / 1e9:.2f} GB of KV for one request per GPU "
            f"> {usable / 1e9:.1f} GB usable of {hw.memory_bytes / 1e9:.0f} GB"
        )
    return None


def evaluate(c: Candidate, fmt: str, tp: int, w: Workload, t: Targets) -> Option:
    """The option's curve over batch (powers of two up to the KV limit), its operating point, or why none."""
    q = query(w, fmt, tp, c.hourly)
    opt = Option(c, fmt, tp)
    why = fit_reason(c.hw, q)
    if why:
        opt.why_not = why
        return opt
    opt.max_batch = min(MAX_BATCH, decode.max_concurrency(c.hw, q))
    sizes = sorted({*(2**i for i in range(13) if 2**i <= opt.max_batch), opt.max_batch})
    opt.curve = [point(c.hw, q, b) for b in sizes]
    first = opt.curve[0]
    if not first.meets(t):
        opt.why_not = explain(c.hw, q, first, t)
        return opt
    lo, hi = 1, opt.max_batch  # meets(lo) holds; find the largest batch that still meets every target
    if point(c.hw, q, hi).meets(t):
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if point(c.hw, q, mid).meets(t) else (lo, mid)
    opt.best = point(c.hw, q, lo)
    if lo == opt.max_batch:
        opt.limit = (
            f"KV cache: {lo} requests of {w.input_len + w.output_len} tokens"
            if lo < MAX_BATCH
            else f"the sweep's end ({MAX_BATCH})"
        )
    else:
        nxt = point(c.hw, q, lo + 1)
        opt.limit = "TPOT target" if t.tpot_s is not None and nxt.tpot_s > t.tpot_s else "TTFT target"
    b = backtest.band(w.engine, lo)
    if b is not None:
        p10, p90 = b.range(opt.best.per_gpu)
        opt.band = {
            "output_tokens_per_s_per_gpu_p10": p10,
            "output_tokens_per_s_per_gpu_p90": p90,
            "scope": b.scope,
        }
    return opt


def explain(hw: hardware.HardwareProfile, q: formats.Query, p: Point, t: Targets) -> str:
    """Why batch 1 already misses a target, in words: the figure, the target and the part that costs most."""
    out = []
    if t.tpot_s is not None and p.tpot_s > t.tpot_s:
        step = decode.decode_step(hw, q, 1, round(q.input_len + (q.output_len - 1) / 2))
        parts = {
            f"weights alone need {step.weights_s * 1e3:.0f} ms per step at {hw.bandwidth_bytes_per_s / 1e12:.2f} TB/s": step.weights_s,
            f"the all-reduces take {step.comm_s * 1e3:.0f} ms per step over {hw.link_kind}": step.comm_s,
            f"small-kernel overhead is {step.overhead_s * 1e3:.0f} ms per step": step.overhead_s,
            f"the engine's host time is {step.host_s * 1e3:.0f} ms per step": step.host_s,
            f"attention reads {step.kv_s * 1e3:.0f} ms of KV cache per step": step.kv_s,
            f"the GEMMs' FLOPs take {step.compute_s * 1e3:.0f} ms per step": step.compute_s,
        }
        why = max(parts, key=lambda k: parts[k])
        out.append(f"TPOT {p.tpot_s * 1e3:.0f} ms at batch 1 > {t.tpot_s * 1e3:.4g} ms: {why}")
    if t.ttft_s is not None and p.ttft_s > t.ttft_s:
        fam = q.compute_dtype
        out.append(
            f"TTFT {p.ttft_s * 1e3:.0f} ms at batch 1 > {t.ttft_s * 1e3:g} ms: the {q.input_len}-token prompt "
            f"needs {decode.prefill_s(hw, q, 1) * 1e3:.0f} ms of prefill at {hw.compute(fam) / 1e12:.0f} "
            f"TFLOPS ({fam})"
        )
    return "; ".join(out)


@dataclass
class Plan:
    workload: Workload
    targets: Targets
    options: list[Option]
    unfit: list[tuple[Candidate, str, str]]  # (candidate, format, why no TP fits)

    @property
    def ranked(self) -> list[Option]:
        """Per candidate and format its cheapest TP that meets the targets, cheapest first."""
        best: dict[tuple[str, str], Option] = {}
        for o in self.options:
            if o.best is None:
                continue
            key = (o.candidate.text, o.fmt)
            if key not in best or o.best.cost_out < best[key].best.cost_out:  # type: ignore[union-attr]
                best[key] = o
        return sorted(best.values(), key=lambda o: o.best.cost_out)  # type: ignore[union-attr]

    @property
    def rejected(self) -> list[Option]:
        """Per candidate and format that meets nothing: its smallest TP that fits, with why it misses."""
        met = {(o.candidate.text, o.fmt) for o in self.ranked}
        out: dict[tuple[str, str], Option] = {}
        for o in self.options:
            key = (o.candidate.text, o.fmt)
            if key not in met and key not in out and o.max_batch > 0:
                out[key] = o
        return list(out.values())

    def to_dict(self) -> dict[str, Any]:
        w = self.workload
        return {
            "model": w.model.name,
            "input_len": w.input_len,
            "output_len": w.output_len,
            "engine": w.engine.label,
            "targets": {
                "ttft_ms": self.targets.ttft_s * 1e3 if self.targets.ttft_s else None,
                "tpot_ms": self.targets.tpot_s * 1e3 if self.targets.tpot_s else None,
            },
            "assumptions": list(ASSUMPTIONS),
            "ranked": [o.to_dict() for o in self.ranked],
            "rejected": [o.to_dict() for o in self.rejected],
            "fits_no_tp": [{"candidate": c.text, "format": f, "why": why} for c, f, why in self.unfit],
            "options": [o.to_dict() for o in self.options],
        }


def at_batch(o: Option, w: Workload, batch: int) -> dict[str, Any]:
    """The option at a fixed batch (a published table's row, to set beside it): its figures and why, i.e.
    how the decode step splits and what bounds it, and whether the KV cache holds that many requests."""
    q = query(w, o.fmt, o.tp, o.candidate.hourly)
    p = point(o.candidate.hw, q, batch)
    step = decode.decode_step(o.candidate.hw, q, batch, round(w.input_len + (w.output_len - 1) / 2))
    parts = {
        "weights": step.weights_s,
        "kv": step.kv_s,
        "compute": step.compute_s,
        "overhead": step.overhead_s,
        "communication": step.comm_s,
        "all-to-all": step.a2a_s,
        "host": step.host_s,
    }
    return {
        "option": o.name,
        "batch": batch,
        "fits_kv": batch <= o.max_batch,
        **p.to_dict(),
        "bound": step.bound,
        "split": {k: v / step.seconds for k, v in parts.items()},
    }


def plan(candidates: list[Candidate], w: Workload, t: Targets, tps: tuple[int, ...] = TP_SIZES) -> Plan:
    options, unfit = [], []
    for c in candidates:
        for fmt in c.formats:
            opts = [evaluate(c, fmt, tp, w, t) for tp in tps]
            if all(o.max_batch == 0 for o in opts):
                unfit.append((c, fmt, f"fits no TP size up to {max(tps)}: {opts[-1].why_not}"))
            options.extend(o for o in opts if o.max_batch > 0)
    if not options:
        raise PlanError(
            f"{w.model.name} fits no candidate at TP up to {max(tps)} with {w.input_len} + {w.output_len} "
            f"tokens per request: " + "; ".join(f"{c.label} {f}: {why}" for c, f, why in unfit[:3])
        )
    return Plan(w, t, options, unfit)
