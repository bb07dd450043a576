"""Matmul throughput per dtype: what the tensor cores really deliver, FP8 beside BF16.

Three sweeps, each case verified before its time counts:
- square M = N = K over `square_sizes`: the peak per dtype is the best of them (the headline);
- in the `full` profile, a MAMF-style search around the best square (M, N, K each moved in steps of 256),
  bounded by time, because a GPU's best shape is rarely a power of two (wave quantization over the SMs);
- decode-shaped GEMMs: for each model in bench.toml, the real N x K of its layers (QKV, O, gate/up, down,
  LM head) at M = 1 .. 512, the batch. Small M is memory-bound (the weights are read once per step), large M
  compute-bound: this is the curve analysis fits the roofline to.

FLOPs = 2*M*N*K; bytes = A, B and C once each; intensity = FLOPs / bytes. Dtypes: fp32 (TF32 off), tf32,
fp16, bf16 (torch.matmul), fp8 e4m3 x e4m3 through torch._scaled_mm with per-tensor and with row-wise scales
(row-wise costs more; reported separately), fp8 e5m2 (A) x e4m3 (B) since cuBLAS has no e5m2 x e5m2, int8
through torch._int_mm (int32 out). FP8 outputs are bf16. A dtype the device cannot run is listed as skipped
with the reason. Weights are W[N, K] as in a linear layer, multiplied as W^T (the layout frameworks use,
and the column-major B that _scaled_mm needs). Inputs are uniform in [-1, 1], never zeros; the L2 is
flushed between repetitions, as the weights of the other layers would have flushed it during decode; a
decode-shaped GEMM runs in turn over copies of its weight (256 MiB of them, at most 64 copies) after each
flush, the time divided among them, as a step streams a different cold weight into every GEMM.

How each dtype is run and checked (and which devices can run it) is probes.gemm.

On the CPU every case is bounded by its time budget, not by a fixed size: sizes whose predicted time per
multiply exceeds case_budget_s / min_reps are skipped with the prediction (bf16 runs at under 1 GFLOPS on
CPUs without native support).

    python -m probes.matmul --device cpu        # or cuda; --profile full adds the shape search
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from analysis.formulas import arithmetic_intensity, gemm_bytes, gemm_flops
from analysis.headline import Headline
from analysis.rundoc import Measurement, error_line
from probes.context import Context, measure_case
from probes.device import device_context, free_memory_bytes, triton_unavailable_reason
from probes.gemm import (
    DtypeSpec,
    Operands,
    device_reason,
    in_turn,
    make_checker,
    make_operands,
    matmul_op,
    operand_bytes,
    platform_of,
    shape_reason,
    spec_for,
    tf32_mode,
    weight_rotation,
)
from probes.matmul_cases import (
    Case,
    _head_dtype,
    _variants,
    decode_cases,
    search_shapes,
    square_cases,
)
from probes.verify import poison

NAME = "matmul"
NOTE = (
    "matmul: FLOPs = 2*M*N*K (int8: integer ops); bytes = A, B and C once each; fp8 via torch._scaled_mm "
    "(per-tensor or row-wise scales as named, bf16 out), int8 via torch._int_mm (int32 out)"
)

# ---- time bounding --------------------------------------------------------------------------------------


class RatePredictor:
    """Predicts a case's time from the best FLOP rate seen so far for the same (device, variant, dtype).

    Optimistic on purpose: under-predicting costs one slow multiply, over-predicting would skip a case that
    fits (a memory-bound GEMV at M = 1 runs far below the FLOP rate, but also far below its FLOP count).
    No prediction before the first case of a kind: the smallest case runs first.
    """

    def __init__(self) -> None:
        self.flop_rate: dict[tuple[str, str, str], float] = {}

    def observe(self, key: tuple[str, str, str], m: Measurement) -> None:
        if m.status == "ok" and m.value:
            self.flop_rate[key] = max(self.flop_rate.get(key, 0.0), m.value)

    def predict(self, key: tuple[str, str, str], flops: int) -> float | None:
        rate = self.flop_rate.get(key)
        return None if rate is None else flops / rate


# ---- the probe ------------------------------------------------------------------------------------------


def n_cases(ctx: Context) -> int:
    mm = ctx.cfg.matmul
    decode_devices = 1 if mm.decode_devices == "first" else len(ctx.devices)
    return len(ctx.devices) * len(square_cases(mm)) + decode_devices * len(decode_cases(mm))


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    first = int(ctx.options.get("device_index", 0))  # a per-GPU worker's place among the node's GPUs
    for i, device in enumerate(ctx.devices, start=first):
        prober = DeviceRun(ctx, device)
        out.extend(prober.squares_and_search())
        if i == 0 or ctx.cfg.matmul.decode_devices == "all":
            out.extend(prober.decode())
    return out


class DeviceRun:
    """All matmul cases of one device, sharing its dtype support, time predictions and memory limits."""

    def __init__(self, ctx: Context, device: torch.device) -> None:
        self.ctx, self.device = ctx, device
        self.mm = ctx.cfg.matmul
        self.first_timing = dataclasses.replace(
            ctx.cfg.timing, warmup_s=max(ctx.cfg.timing.warmup_s, self.mm.first_warmup_s)
        )
        self.warmed_up = False
        self.max_single_s = ctx.cfg.timing.case_budget_s / ctx.cfg.timing.min_reps
        self.predictor = RatePredictor()
        self.support: dict[str, str | None] = {}
        self.oom_at: dict[tuple[str, str], int] = {}

    def reason(self, dtype: str, variant: str) -> str | None:
        """Why (dtype, variant) cannot run here: capability rules, then a tiny trial multiply."""
        key = f"{dtype}/{variant}"
        if key not in self.support:
            self.support[key] = self._reason(dtype, variant)
        return self.support[key]

    def _reason(self, dtype: str, variant: str) -> str | None:
        if variant == "triton":
            why = triton_unavailable_reason(self.device)
            if why:
                return why
        why = device_reason(dtype, self.device)
        if why:
            return why
        spec = spec_for(dtype, self.device)
        try:
            # the trial runs on its own device: Triton launches on the current one (triton-lang/triton#2441)
            with device_context(self.device), tf32_mode(dtype == "tf32"):
                # int4 packing needs K % 128 == 0; block-scaled scales tile 128 rows x 4 blocks
                m, n = (128, 256) if spec.scaling == "block" else (32, 256 if spec.weight_only else 32)
                ops = make_operands(spec, m, n, n, self.device, self.mm.group_size)
                matmul_op(spec, variant, ops, self.mm.fp8_accumulation)()
        except Exception as exc:  # e.g. a torch build without row-wise FP8 scaling on this architecture
            return f"torch cannot run {dtype} ({variant}) on this device: {error_line(exc)}"
        return None

    def measure(
        self, case: Case, ops: Operands | None = None, rotation: Sequence[Operands] = ()
    ) -> Measurement:
        """One case; `rotation`: further operand sets with weights of their own, run in turn after each
        flush (decode shapes: see gemm.rotation_size)."""
        spec = spec_for(case.dtype, self.device)
        params: dict[str, Any] = {
            "kind": case.kind,
            "dtype": case.dtype,
            "variant": case.variant,
            "m": case.m,
            "n": case.n,
            "k": case.k,
            "a_dtype": str(spec.a).removeprefix("torch."),
            "b_dtype": str(spec.b).removeprefix("torch."),
            "out_dtype": str(spec.out).removeprefix("torch."),
            "scaling": spec.scaling,
        }
        if case.dtype.startswith("fp8"):
            params["fp8_accumulation"] = self.mm.fp8_accumulation
        if case.kind == "decode":
            params.update(model=case.model, op=case.op, tp=self.mm.decode_tp)
        if spec.weight_only:
            params["group_size"] = self.mm.group_size if case.dtype == "int4-wo" else None
        sizes = [torch.empty((), dtype=d).element_size() for d in (spec.a, spec.b, spec.out)]
        sizes[1] = spec.bytes_per_weight(self.mm.group_size)
        flops = gemm_flops(case.m, case.n, case.k)
        nbytes = gemm_bytes(case.m, case.n, case.k, *sizes)
        params["arithmetic_intensity"] = arithmetic_intensity(flops, nbytes)
        why = self.reason(case.dtype, case.variant) or shape_reason(
            case.dtype, case.m, case.n, case.k, platform_of(self.device)[0], self.mm.group_size
        )
        if why is None:
            why = self._bounds(case, spec, flops, allocated=ops is not None)
        if why is not None:
            self.ctx.progress(f"{NAME}: {case.name}")
            return self.ctx.skip(NAME, case.name, self.device, params, why)
        key = (str(self.device), case.variant, case.dtype)
        predicted = self.predictor.predict(key, flops)
        if predicted is not None and rotation:  # compute-bound shapes gain nothing from copies: keep it short
            rotation = rotation[: max(0, int(self.max_single_s / max(predicted, 1e-12)) - 1)]
        try:
            if ops is None:
                ops = make_operands(spec, case.m, case.n, case.k, self.device, self.mm.group_size)
            fns = [matmul_op(spec, case.variant, o, self.mm.fp8_accumulation) for o in [ops, *rotation]]
            fn, check = in_turn(fns), make_checker(spec, ops, rotation)
        except torch.OutOfMemoryError as exc:
            volume = case.m * case.n * case.k
            self.oom_at[(case.dtype, case.variant)] = min(
                volume, self.oom_at.get((case.dtype, case.variant), volume)
            )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.ctx.progress(f"{NAME}: {case.name}")
            return self.ctx.skip(
                NAME,
                case.name,
                self.device,
                params,
                f"out of memory: {str(exc).splitlines()[0]}",
                status="error",
            )
        with tf32_mode(case.dtype == "tf32"):
            m = measure_case(
                self.ctx,
                probe=NAME,
                case=case.name,
                device=self.device,
                params=params,
                fn=fn,
                check=check,
                poison=lambda: [poison(o.c) for o in [ops, *rotation]],
                bytes_moved=nbytes,
                flops=flops,
                flush_cache=True,
                timing=None if self.warmed_up else self.first_timing,
                ops_per_call=len(fns),
            )
            self.warmed_up = self.warmed_up or m.status == "ok"
        self.predictor.observe(key, m)
        return m

    def _bounds(self, case: Case, spec: DtypeSpec, flops: int, allocated: bool) -> str | None:
        volume = case.m * case.n * case.k
        oom = self.oom_at.get(
            (case.dtype, case.variant)
        )  # the smallest volume that ran out of memory, if any
        if oom is not None and volume > oom:
            return "not tried: a smaller shape of this dtype already ran out of memory"
        if not allocated:
            need = operand_bytes(spec, case.m, case.n, case.k)
            free = int(self.mm.max_memory_fraction * free_memory_bytes(self.device))
            if need > free:
                return f"needs {need / 1e9:.2f} GB, more than {self.mm.max_memory_fraction:g} of the free memory ({free / 1e9:.2f} GB)"
        predicted = self.predictor.predict((str(self.device), case.variant, case.dtype), flops)
        if predicted is not None and predicted > self.max_single_s:
            return (
                f"time-bounded: one multiply predicted at {predicted:.2g} s on this device, over "
                f"case_budget_s / min_reps = {self.max_single_s:.2g} s"
            )
        return None

    def squares_and_search(self) -> list[Measurement]:
        out = [self.measure(c) for c in square_cases(self.mm)]
        if self.mm.search_budget_s > 0:
            out.extend(self._search(out))
        _tag_peaks(out)
        return out

    def _search(self, squares: list[Measurement]) -> list[Measurement]:
        out = []
        for dtype in self.mm.search_dtypes:
            for variant in _variants(self.mm, dtype):
                done = [
                    m
                    for m in squares
                    if m.status == "ok" and m.params["dtype"] == dtype and m.params["variant"] == variant
                ]
                if not done:
                    continue
                best = max(done, key=lambda m: m.value or 0.0).params["m"]
                t0 = time.perf_counter()
                for m, n, k in search_shapes(best, self.mm.search_step, self.mm.search_radius_steps):
                    if time.perf_counter() - t0 > self.mm.search_budget_s:
                        break
                    out.append(self.measure(Case("search", dtype, variant, m, n, k)))
        return out

    def decode(self) -> list[Measurement]:
        out: list[Measurement] = []
        cases = decode_cases(self.mm)
        # One allocation per (model, op, dtype) at the largest M; smaller batches use its first rows.
        groups: dict[tuple[str, str, str], list[Case]] = {}
        for c in cases:
            groups.setdefault((c.model, c.op, c.dtype), []).append(c)
        # Format by format, the first decode format's GEMMs (layers and head) first: they back the run's own
        # decode projection and are never trimmed; past this probe's deadline under a time budget
        # (probes.schedule) the later formats' are.
        for rank, group in sorted(
            ((self._format_rank(g[0]), g) for g in groups.values()), key=lambda rg: rg[0]
        ):
            if rank > 0 and self.ctx.trimmed():
                out.extend(self._trimmed(c) for c in group)
                continue
            big = max(group, key=lambda c: c.m)
            spec = spec_for(big.dtype, self.device)
            ops = None
            # one allocation per group, its first rows per batch; block-scaled operands carry tiled scales, so
            # each of their cases makes its own
            if self.reason(big.dtype, "torch") is None and spec.scaling != "block":
                need = operand_bytes(spec, big.m, big.n, big.k)
                if need <= self.mm.max_memory_fraction * free_memory_bytes(self.device):
                    try:
                        ops = make_operands(spec, big.m, big.n, big.k, self.device, self.mm.group_size)
                    except torch.OutOfMemoryError:
                        ops = None
            free = self.mm.max_memory_fraction * free_memory_bytes(self.device)
            rotation = weight_rotation(spec, ops, free) if ops is not None else []
            for c in group:
                if rank > 0 and self.ctx.trimmed():
                    out.append(self._trimmed(c))
                elif ops is None:
                    out.append(self.measure(c))
                else:
                    out.append(self.measure(c, ops.rows(c.m), [o.rows(c.m) for o in rotation]))
            del ops, rotation
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return out

    def _format_rank(self, case: Case) -> int:
        """The place in `decode_dtypes` of the first format this GEMM serves (the LM head: in its head dtype)."""
        fmts = self.mm.decode_dtypes
        if case.op == "lm_head":
            return next((i for i, d in enumerate(fmts) if _head_dtype(d) == case.dtype), len(fmts))
        return fmts.index(case.dtype) if case.dtype in fmts else len(fmts)

    def _trimmed(self, case: Case) -> Measurement:
        self.ctx.progress(f"{NAME}: {case.name}")
        params = {"kind": case.kind, "dtype": case.dtype, "variant": case.variant, "m": case.m, "n": case.n}
        params.update(k=case.k, model=case.model, op=case.op, tp=self.mm.decode_tp)
        return self.ctx.skip(NAME, case.name, self.device, params, self.ctx.trimmed() or "trimmed")


def _tag_peaks(ms: list[Measurement]) -> None:
    """Mark the best square/search case per (device, dtype, variant) as that dtype's peak headline."""
    best: dict[tuple[str, str, str], Measurement] = {}
    for m in ms:
        if m.status != "ok":
            continue
        key = (m.device, m.params["dtype"], m.params["variant"])
        if key not in best or (m.value or 0) > (best[key].value or 0):
            best[key] = m
    for (_dev, dtype, variant), m in best.items():
        m.headline = str(Headline.matmul_peak(dtype, variant))


if __name__ == "__main__":  # python -m probes.NAME: the whole run, this probe only
    from probes.all import probe_main

    sys.exit(probe_main(NAME))
