"""Profile a real workload: every op of a step on this node's measured roofline, and the time the device idles.

`python -m probes.profile --trace MODULE:FUNCTION` calls the factory with the device; the callable it returns
(a model step, a `generate` call) is warmed up, then run under torch.profiler (CPU and CUDA activities, input
shapes recorded) for a few iterations, each inside a `gpuprobe.step` range. Every top-level aten op (one with
no aten op above it: `aten::linear`, not the `aten::addmm` inside it) is one row, grouped by name, shapes and
dtypes; its time is the device time of the kernels it launched (on a CPU, its own time: the CPU is the
device), its FLOPs and bytes come from analysis/opcost.py's table, and it is placed on the roofline of this
node (a run document's, or a quick bandwidth + matmul measured now): arithmetic intensity, achieved TFLOPS and
GB/s, the attainable rate there and the fraction reached. Kernels launched outside any aten op (a Triton
kernel) are rows of their own, named by the kernel, without a formula. An op the table does not know is listed
as "no formula", never guessed.

The step's wall time beside the device's busy time gives the idle share: the part of the step the GPU waited
for the host (Python, dispatch, launches) - what CUDA graphs or a compiled engine would remove. On a CPU the
device time is the time the CPU spent inside torch ops (each op's self time, at any depth), so the idle share
is the Python and dispatch between them, and the top-level ops' times must add up to it (nothing lost to an
op with no aten parent, nothing counted twice).

    python -m probes.profile --trace mymodel:make_step --device cuda -o traces/
    python -m analysis report traces/RUN.json --format html -o trace.html
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.opcost import op_cost
from probes.timing import synchronize

STEP = "gpuprobe.step"
FAMILY = {"float": "fp32", "c10::BFloat16": "bf16", "c10::Half": "fp16", "c10::Float8_e4m3fn": "fp8"}


@dataclass
class OpRow:
    """One op (name, shapes, dtypes) of the traced step: calls and seconds per step, its work and roofline."""

    name: str
    shapes: str
    dtypes: list[str]
    kind: str = "no formula"
    calls: float = 0.0
    seconds: float = 0.0
    flops: float | None = None
    bytes: float | None = None
    placed: dict[str, Any] = field(default_factory=dict)

    def to_params(self) -> dict[str, Any]:
        return {
            "op": self.name,
            "shapes": self.shapes,
            "dtypes": self.dtypes,
            "kind": self.kind,
            "calls_per_step": self.calls,
            "seconds_per_step": self.seconds,
            "flops_per_step": self.flops,
            "bytes_per_step": self.bytes,
            **self.placed,
        }


@dataclass
class Trace:
    rows: list[OpRow]
    wall_s: float  # one step, host clock, mean over the iterations
    device_s: float  # one step's busy device time (a CPU: its top-level ops' time)
    iterations: int
    chrome_trace: Path | None = None

    @property
    def ops_s(self) -> float:
        """The rows' time per step: against device_s it says how much of the step the ops account for."""
        return sum(r.seconds for r in self.rows)

    @property
    def idle_share(self) -> float:
        return max(0.0, 1.0 - self.device_s / self.wall_s) if self.wall_s > 0 else 0.0


def _top_level(e: Any) -> bool:
    p = e.cpu_parent
    while p is not None:
        if p.name.startswith("aten::"):
            return False
        p = p.cpu_parent
    return True


def run_traced(fn: Callable[[], Any], device: torch.device, iterations: int = 5, warmup: int = 3) -> Any:
    """The profiler of `iterations` calls of `fn` after `warmup` untraced ones."""
    from torch.profiler import ProfilerActivity, profile, record_function

    for _ in range(warmup):
        fn()
        synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(iterations):
            with record_function(STEP):
                fn()
                synchronize(device)
    return prof


def attribute(prof: Any, device: torch.device, iterations: int) -> Trace:
    """Group the profiler's events into rows of one step: top-level aten ops and stray kernels."""
    events = list(prof.events())
    by_id = {e.id: e for e in events if not _is_device(e)}
    steps = [e for e in events if e.name == STEP]
    # the mean, as the ops' per-step time is: the two then add up whatever one slow iteration did
    wall = statistics.fmean(e.cpu_time_total for e in steps) * 1e-6 if steps else 0.0
    gpu = device.type == "cuda"
    rows: dict[tuple[str, str, str], OpRow] = {}
    for e in events:
        if not e.name.startswith("aten::") or not _top_level(e):
            continue
        shapes = [list(s) if isinstance(s, (list, tuple)) else s for s in (e.input_shapes or [])]
        dtypes = [str(d) for d in (getattr(e, "input_dtypes", None) or [])]
        key = (e.name, str(shapes), str(dtypes))
        row = rows.setdefault(key, OpRow(e.name, str(shapes), dtypes))
        row.calls += 1
        row.seconds += (e.device_time_total if gpu else e.cpu_time_total) * 1e-6
        cost = op_cost(e.name, shapes, dtypes, list(getattr(e, "concrete_inputs", None) or []))
        if cost is not None:
            row.kind = cost.kind
            row.flops = (row.flops or 0.0) + cost.flops
            row.bytes = (row.bytes or 0.0) + cost.bytes
    if gpu:  # kernels no aten op launched (a Triton kernel called directly): rows of their own, no formula
        for e in events:
            if _is_device(e) and not _launched_by_aten(e, by_id):
                row = rows.setdefault((e.name, "", ""), OpRow(e.name, "", [], kind="kernel (no formula)"))
                row.calls += 1
                row.seconds += e.time_range.elapsed_us() * 1e-6
    out = [r for r in rows.values() if r.kind != "view"]
    for r in out:
        r.calls /= iterations
        r.seconds /= iterations
        r.flops = None if r.flops is None else r.flops / iterations
        r.bytes = None if r.bytes is None else r.bytes / iterations
    if gpu:
        busy = sum(e.time_range.elapsed_us() for e in events if _is_device(e)) * 1e-6
        device_s = busy / iterations
    else:  # the CPU is the device: the time it spent inside torch ops at any depth (each op's self time);
        # the rest of the wall time is Python and dispatch between ops, the CPU's "idle share"
        device_s = (
            sum(e.self_cpu_time_total for e in events if e.name.startswith("aten::")) * 1e-6 / iterations
        )
    return Trace(sorted(out, key=lambda r: -r.seconds), wall, device_s, iterations)


def _is_device(e: Any) -> bool:
    return getattr(e.device_type, "name", "") in ("CUDA", "PrivateUse1")


def _launched_by_aten(kernel: Any, by_id: dict[int, Any]) -> bool:
    """Whether an aten op is above the runtime call that launched this kernel: the profiler links a kernel to
    its launch (cudaLaunchKernel, cuLaunchKernel) by correlation id, the launch to its op by nesting."""
    src = by_id.get(getattr(kernel, "linked_correlation_id", 0))
    while src is not None:
        if src.name.startswith("aten::"):
            return True
        src = src.cpu_parent
    return False


def place(trace: Trace, doc: dict[str, Any]) -> None:
    """Each row's intensity, achieved rates, the attainable rate on the run's roofline and the fraction."""
    from analysis.roofline import from_run

    roof = from_run(doc)
    for r in trace.rows:
        if r.seconds <= 0 or r.flops is None or r.bytes is None:
            continue
        fam = next((FAMILY[d] for d in r.dtypes if d in FAMILY), "fp32")
        placed: dict[str, Any] = {
            "achieved_flop_per_s": r.flops / r.seconds,
            "achieved_bytes_per_s": r.bytes / r.seconds,
            "intensity_flop_per_byte": r.flops / r.bytes if r.bytes else None,
        }
        if roof is not None and r.bytes:
            peak = roof.compute_flop_per_s.get(fam) or max(roof.compute_flop_per_s.values(), default=0.0)
            if r.flops:
                attainable = min(peak, placed["intensity_flop_per_byte"] * roof.bandwidth_bytes_per_s)
                placed.update(
                    attainable_flop_per_s=attainable, fraction=placed["achieved_flop_per_s"] / attainable
                )
            else:  # moves bytes only: against the memory roof
                placed.update(
                    attainable_bytes_per_s=roof.bandwidth_bytes_per_s,
                    fraction=placed["achieved_bytes_per_s"] / roof.bandwidth_bytes_per_s,
                )
            placed["compute_family"] = fam
        r.placed = placed


def idle_share(fn: Callable[[], Any], device: torch.device, iterations: int = 3) -> float | None:
    """The share of a step the GPU waits for the host (None on a CPU, where the host is the device)."""
    if device.type != "cuda":
        return None
    prof = run_traced(fn, device, iterations, warmup=1)
    return attribute(prof, device, iterations).idle_share
