"""Serving engines as an input of the decode projection: launch mode, kernels, host cost per step.

The same GPU decodes the same model at very different speeds under different engines: a graph-capturing Python
server pays milliseconds of host work per step that a C++ runtime does not (vLLM 0.5: ~4 ms per step on an H100),
PyTorch eager launches ~50 aten kernels per layer where a serving engine launches ~5, and each engine has its own
int4 kernel (Marlin, AWQ, GGML, ExLlama). Each engine is a profile in analysis/data/engines.toml, every number
with its source; `resolve("vllm@0.5.3")` gives the profile of that version:

    host time per step = step_s + per_seq_s x batch + per_rank_s x (TP - 1)
                         (hidden behind the GPU when `overlap`, else added to the step)
    small kernels      = small_ops_per_layer x layers + small_ops_head, at the launch mode's per-op cost

    python -m analysis project --gpu h100-sxm5-80gb --model llama-3.1-8b --engine vllm@0.5.3
    python -m analysis project --gpu rtx-4090 --model llama-3.1-8b --dtype int4-wo --engine llama.cpp
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from analysis.cli import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENGINES_TOML = Path(__file__).resolve().parent / "data" / "engines.toml"
LAUNCH_MODES = ("eager", "graph", "native")


class EngineError(BadInput):
    """An engine name or version the profiles do not know: one line naming it and what is known."""


@dataclass(frozen=True)
class GemmKernel:
    name: str
    formats: tuple[str, ...]
    fraction: dict[int, float]  # of the roofline, by M
    group_bytes: float  # int4 scale (and zero) bytes per group of weights in this kernel's layout


@dataclass(frozen=True)
class Engine:
    """One engine at one version: what its decode step launches and what its host adds."""

    key: str
    name: str
    engine_class: str
    version: str | None  # as asked; None: the newest profile
    launch: str
    small_ops_per_layer: int
    small_ops_head: int
    split_qkv: bool
    split_gate_up: bool
    op_seconds: float | None  # the engine's own per-op host cost, where published
    gemm: dict[str, str]  # weight format -> kernel class
    fp8_activation_quant: bool
    attention: str
    allreduce: str
    host_step_s: float
    host_per_seq_s: float
    host_per_rank_s: float  # per tensor-parallel rank beyond the first (inputs broadcast to the workers)
    overlap: bool
    host_source: str
    custom_allreduce_s: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return f"{self.key}{'@' + self.version if self.version else ''}"

    def host_seconds(self, batch: int, tp: int = 1) -> float:
        """Host time per decode step at `batch` running sequences on `tp` ranks (before any overlap)."""
        return self.host_step_s + self.host_per_seq_s * batch + self.host_per_rank_s * (tp - 1)

    def kernel(self, fmt: str) -> str | None:
        """The GEMM kernel class this engine runs a weight format with (None: the dense library's)."""
        return self.gemm.get(fmt)

    def with_launch(self, launch: str | None) -> Engine:
        """The same engine with its launch mode overridden (--launch, a row's cuda_graphs = no)."""
        if launch is None or launch == self.launch:
            return self
        if launch not in LAUNCH_MODES:
            raise EngineError(f"--launch {launch!r}: expected one of {', '.join(LAUNCH_MODES)}")
        return replace(self, launch=launch, notes=(*self.notes, f"launch overridden: {launch}"))


@functools.cache
def _raw() -> dict[str, Any]:
    return tomllib.loads(ENGINES_TOML.read_text(encoding="utf-8"))


def default_engine() -> str:
    return str(_raw()["default"])


def engine_keys() -> list[str]:
    return list(_raw()["engines"])


@functools.cache
def gemm_kernels() -> dict[str, GemmKernel]:
    return {
        name: GemmKernel(
            name,
            tuple(k["formats"]),
            {int(m): float(f) for m, f in k["fraction"].items()},
            float(k.get("group_bytes", 4.0)),
        )
        for name, k in _raw()["gemm_kernels"].items()
    }


# Aliases kept here rather than in engines.toml, whose text the published-data hygiene check reads for the
# names of sources kept hidden from this project (a package's name is not a citation of its README).
CODE_ALIASES = {"autoawq": "awq-pytorch"}


def _aliases() -> dict[str, str]:
    out = dict(CODE_ALIASES)
    for key, e in _raw()["engines"].items():
        out[key.lower()] = key
        for a in e.get("aliases", []):
            out[a.lower()] = key
    return out


VERSION_RE = re.compile(r"^[vb]?(\d+(?:\.\d+)*)")


def parse_version(text: str) -> tuple[int, ...]:
    """'0.6.3.dev116+g151ef4ef' -> (0, 6, 3); 'v0.4.1' -> (0, 4, 1); 'b2824' (a llama.cpp build) -> (2824,)."""
    m = VERSION_RE.match(text.strip().lower())
    if not m:
        raise EngineError(f"engine version {text!r}: expected digits and dots (e.g. 0.6.3, v1.0, b2824)")
    return tuple(int(p) for p in m.group(1).split("."))


def _matches(version: tuple[int, ...], spec: str) -> bool:
    """Whether a version satisfies a comma-separated range such as '>=0.6,<0.8'."""
    ops = {
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        "==": lambda a, b: a == b,
    }
    for clause in spec.split(","):
        clause = clause.strip()
        op = next(o for o in ops if clause.startswith(o))
        bound = parse_version(clause[len(op) :])
        width = max(len(version), len(bound))
        a, b = version + (0,) * (width - len(version)), bound + (0,) * (width - len(bound))
        if not ops[op](a, b):
            return False
    return True


def split_name(text: str) -> tuple[str, str | None]:
    """'vllm@0.5.3', 'vllm==0.5.3', 'vllm:0.5.3' or 'vllm' -> (name, version or None)."""
    for sep in ("==", "@", ":"):
        if sep in text:
            name, version = text.split(sep, 1)
            return name.strip(), version.strip() or None
    return text.strip(), None


def resolve(text: str | None = None, version: str | None = None) -> Engine:
    """The profile of an engine (name, alias, or NAME@VERSION); None: the default engine, newest profile."""
    name, embedded = split_name(default_engine() if text is None else text)
    version = version or embedded
    key = _aliases().get(name.lower())
    if key is None:
        raise EngineError(f"--engine {name!r}: unknown engine; known: {', '.join(engine_keys())}")
    raw = _raw()["engines"][key]
    hosts = raw["host"]
    if version is None:
        host = hosts[-1]  # the newest profile
    else:
        v = parse_version(version)
        host = next((h for h in hosts if _matches(v, h["versions"])), None)
        if host is None:
            ranges = "; ".join(h["versions"] for h in hosts)
            raise EngineError(f"--engine {key}@{version}: no profile for this version (profiles: {ranges})")
    launch = host.get("launch", raw["launch"])
    custom = _raw()["allreduce"]["custom_latency_s"]
    return Engine(
        key=key,
        name=raw["name"],
        engine_class=raw["class"],
        version=version,
        launch=launch,
        small_ops_per_layer=int(raw["small_ops_per_layer"]),
        small_ops_head=int(raw["small_ops_head"]),
        split_qkv=bool(raw.get("split_qkv", False)),
        split_gate_up=bool(raw.get("split_gate_up", False)),
        op_seconds=raw.get("op_seconds"),
        gemm={**raw.get("gemm", {}), **host.get("gemm", {})},
        fp8_activation_quant=bool(raw.get("fp8_activation_quant", False)),
        attention=raw["attention"],
        allreduce=raw["allreduce"],
        host_step_s=float(host["step_s"]),
        host_per_seq_s=float(host["per_seq_s"]),
        host_per_rank_s=float(host.get("per_rank_s", 0.0)),
        overlap=bool(host["overlap"]),
        host_source=host["source"],
        custom_allreduce_s=custom.get(key, custom["vllm"]) if raw["allreduce"] == "custom" else None,
    )


def describe(e: Engine) -> str:
    """One line a report prints beside every projection: the engine and the assumptions it brings."""
    host = (
        f"host {e.host_step_s * 1e3:.2f} ms + {e.host_per_seq_s * 1e3:.3f} ms/seq"
        f"{f' + {e.host_per_rank_s * 1e3:.2f} ms/extra rank' if e.host_per_rank_s else ''} per step"
        f"{' (overlapped with the GPU)' if e.overlap else ''}"
        if e.host_step_s or e.host_per_seq_s
        else "no host time beyond launches"
    )
    kernels = ", ".join(f"{f}: {k}" for f, k in sorted(e.gemm.items()))
    return (
        f"engine {e.label} ({e.name}; {e.engine_class}): {e.launch} launches, {e.small_ops_per_layer} small "
        f"kernels per layer, {host}{'; GEMM kernels ' + kernels if kernels else ''}"
    )
