"""Real decode steps of a model-shaped network, and what one step is made of: the measurement the decode
projection is judged against, and the parts it is built from.

The network is probes.decoder: a Llama-style decoder from a Hugging Face config.json with random weights in
each weight format of `[decode] dtypes`. One decode step embeds B tokens, runs every layer (writing each
layer's new K and V at position S and attending over S + 1 positions) and computes B x vocab logits; output
tokens/s = B / step.

Beside each step the probe measures the parts the projection (analysis.decode) sums:
- per-op overhead: a tiny op back to back (eager dispatch and launch; on CUDA also per kernel inside a CUDA
  graph): the `op_overhead_eager_torch` / `op_overhead_graph_torch` headlines, seconds per op;
- the ops of a layer and of the head, counted at the aten level while one step runs (GEMMs and attention
  apart: their time is measured on their own);
- attention: scaled_dot_product_attention over the cache of one layer at each batch, the achieved bandwidth
  of reading K and V (the KV dtype is the activation dtype).
The GEMMs themselves come from the matmul probe's decode sweep of the same shapes and format.

The cache is flushed before every repetition: every weight is read from memory, as in any model larger than
the last-level cache (a model that fits in a CPU's L3 would run faster unflushed, a speed no real model
gets). When the whole model fits (in memory, and within `max_layers` when that is set) the measured step is
the real thing: whole steps, no scaling. Otherwise the probe runs as many layers as fit (at most
`max_layers`), says it scaled, and times the layers and the head (embedding, final norm, LM head) apart;
step = t(layers) x L / layers run + t(head). The flush has a fixed cost of its own on the first
~millisecond of work after it (about 1 ms on a 2-core VM: 2 flushed int4 layers of qwen2.5-0.5b scaled x12
read +37 % over the whole model's layers), so the fewer layers run, the more pessimistic a scaled figure.

    python -m probes.decode --device cpu
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import replace
from typing import Any

import torch

from analysis.formats import activation_dtype
from analysis.headline import Headline
from analysis.models import ModelConfig, load_model
from analysis.rundoc import Measurement
from probes import quant
from probes.context import Context, measure_case
from probes.decoder import Decoder, attention, build, count_ops, sdpa_backend, step, torch_activation
from probes.device import free_memory_bytes
from probes.gemm import capability_reason
from probes.timing import Split

NAME = "decode"
NOTE = (
    "decode: measured tokens/s = batch / step time of a model-shaped decoder with random weights, with its "
    "parts (per-op overhead, ops per layer, attention bandwidth); the projection from the run's parts beside it"
)
GRAPH_OPS = 64  # tiny kernels per CUDA graph replay when timing the in-graph overhead
# a step's repetitions spread less than this on a quiet box (cv 0.01-0.07 seen on a 2-core VM); wider, it was
# disturbed and is timed again (probes.context.measure_case)
STEADY_CV = 0.15


def n_cases(ctx: Context) -> int:
    dc = ctx.cfg.decode
    return (2 if ctx.devices[0].type == "cuda" else 1) + len(dc.dtypes) * len(dc.batches) * 3  # at most


def bytes_needed(cfg: ModelConfig, fmt: str, n_layers: int, batch: int, context: int) -> float:
    """Device memory of the decoder: layers in `fmt`, embedding and head in the activation dtype, caches."""
    act = torch.empty((), dtype=torch_activation(fmt)).element_size()
    per_weight = quant.bytes_per_weight(fmt) if fmt in quant.WEIGHT_ONLY else act
    layer = (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim * cfg.hidden + cfg.heads * cfg.head_dim * cfg.hidden
    layer += 3 * cfg.hidden * cfg.intermediate
    head = cfg.vocab * cfg.hidden * (1 if cfg.tied_embeddings else 2)
    kv = 2 * batch * cfg.kv_heads * (context + 1) * cfg.head_dim * act
    # the largest weight's int8 codes and int32 copy exist while it is packed
    packing = 5 * 2 * cfg.intermediate * cfg.hidden if fmt in quant.WEIGHT_ONLY else 0
    # a step's live activations: logits, the MLP's gate/up, attention scores, a few hidden-sized tensors
    live = batch * (cfg.vocab + 2 * cfg.intermediate + cfg.heads * (context + 1) + 8 * cfg.hidden) * 4
    return n_layers * (layer * per_weight + kv) + head * act + packing + live


def run(ctx: Context) -> list[Measurement]:
    dc = ctx.cfg.decode
    device = ctx.devices[0]
    out = measure_overhead(ctx, device)
    for i, fmt in enumerate(dc.dtypes):
        # the first format's steps are what a CPU run's projection is judged by; under a time budget the
        # later formats are the ones trimmed (probes.schedule)
        out.extend(run_format(ctx, device, fmt, optional=i > 0))
        if device.type == "cuda":  # the model and its caches are gone: give the blocks back (the health
            torch.cuda.empty_cache()  # probe's memory test, after this one, tests the free memory)
    return out


def measure_overhead(ctx: Context, device: torch.device) -> list[Measurement]:
    """Seconds per tiny op back to back, eager (and per kernel inside a CUDA graph on CUDA devices)."""
    x = torch.zeros(1, device=device)
    out = []
    m = measure_case(
        ctx,
        probe=NAME,
        case="overhead/eager",
        device=device,
        params={"kind": "overhead", "mode": "eager", "op": "add_ on one element"},
        fn=lambda: x.add_(1.0),
        check=None,
        headline=str(Headline.op_overhead("eager")),
    )
    out.append(m)
    if device.type == "cuda":
        out.append(_graph_overhead(ctx, device, x))
    return out


def _graph_overhead(ctx: Context, device: torch.device, x: torch.Tensor) -> Measurement:
    params: dict[str, Any] = {
        "kind": "overhead",
        "mode": "graph",
        "op": "add_ on one element",
        "ops": GRAPH_OPS,
    }
    try:
        with torch.cuda.device(device):
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm up outside the capture, as the CUDA graph docs ask
                x.add_(1.0)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(GRAPH_OPS):
                    x.add_(1.0)
    except Exception as exc:  # a build or driver without graph capture: recorded, never a number
        return ctx.skip(NAME, "overhead/graph", device, params, f"CUDA graph capture failed: {exc}", "error")
    m = measure_case(
        ctx,
        probe=NAME,
        case="overhead/graph",
        device=device,
        params=params,
        fn=graph.replay,
        check=None,
        headline=str(Headline.op_overhead("graph")),
    )
    if m.status == "ok" and m.value is not None:
        m.value = m.value / GRAPH_OPS  # seconds per kernel
    return m


def run_format(ctx: Context, device: torch.device, fmt: str, optional: bool = False) -> list[Measurement]:
    dc = ctx.cfg.decode
    model_cfg = load_model(dc.model)
    group_size = ctx.cfg.matmul.group_size
    max_b = max(dc.batches)
    base: dict[str, Any] = {
        "model": dc.model,
        "dtype": fmt,
        "kv_dtype": activation_dtype(fmt),
        "context": dc.context,
        "layers": model_cfg.layers,
    }
    if fmt == "int4-wo":
        base["group_size"] = group_size
    limit = min(model_cfg.layers, dc.max_layers) if dc.max_layers else model_cfg.layers
    budget = 0.8 * free_memory_bytes(device)
    n_layers = limit
    while n_layers > 1 and bytes_needed(model_cfg, fmt, n_layers, max_b, dc.context) > budget:
        n_layers -= 1
    need = bytes_needed(model_cfg, fmt, n_layers, max_b, dc.context)
    why = None
    if fmt in quant.WEIGHT_ONLY:
        shapes = [(model_cfg.intermediate * 2, model_cfg.hidden), (model_cfg.hidden, model_cfg.intermediate)]
        platform = "cpu" if device.type == "cpu" else "rocm" if torch.version.hip else "cuda"
        cc = torch.cuda.get_device_capability(device) if platform == "cuda" else None
        # the matmul probe's rules for the same kernels: the op exists, the device runs it, it is worth timing
        why = capability_reason(fmt, platform, cc=cc) or next(
            (r for n, k in shapes if (r := quant.shape_reason(fmt, n, k, group_size, platform))), None
        )
    if why is None and need > budget:
        why = f"needs {need / 1e9:.1f} GB with one layer, over 0.8 of the free memory"
    if why is None and optional:
        why = ctx.trimmed()
    base["layers_run"] = n_layers
    if why is not None:
        return [
            ctx.skip(NAME, f"{dc.model}/{fmt}/B={b}", device, {**base, "batch": b, "kind": "step"}, why)
            for b in dc.batches
        ]
    try:
        model = build(model_cfg, n_layers, max_b, dc.context + 1, fmt, device, group_size=group_size)
        probe_tokens = torch.randint(0, model_cfg.vocab, (1,), device=device)
        counts = count_ops(model.batch(1), probe_tokens, dc.context)
    except Exception as exc:  # e.g. a kernel this device lacks: recorded for every batch
        return [
            ctx.skip(
                NAME,
                f"{dc.model}/{fmt}/B={b}",
                device,
                {**base, "batch": b, "kind": "step"},
                str(exc).splitlines()[0],
                "error",
            )
            for b in dc.batches
        ]
    base.update(counts)
    # a step is the figure the projection is judged by: at least 7 repetitions, so one slow one cannot move it
    step_timing = replace(ctx.cfg.timing, min_reps=max(ctx.cfg.timing.min_reps, 7))
    out = []
    for b in sorted(dc.batches):
        params = {**base, "batch": b}
        if optional and (trimmed := ctx.trimmed()):
            out.append(ctx.skip(NAME, f"{dc.model}/{fmt}/B={b}", device, {**params, "kind": "step"}, trimmed))
            continue
        sub = model.batch(b)
        tokens = torch.randint(0, model_cfg.vocab, (b,), device=device)
        out.append(_attention_case(ctx, device, sub, dc.context, params))
        scaled = n_layers != model_cfg.layers
        head = None
        if scaled:
            # Layers and head are timed apart (in a real step the other layers' weights and the head evict
            # the cache): step = layers x L / run + head. Timing the layers directly, not as
            # (layers + head) - head, keeps the head's noise out of the scaled part.
            head = measure_case(
                ctx,
                probe=NAME,
                case=f"{dc.model}/{fmt}/head/B={b}",
                device=device,
                params={**params, "kind": "head"},
                fn=lambda sub=sub, tokens=tokens: step(sub, tokens, dc.context, with_layers=False),
                check=None,
                flush_cache=True,
            )
            out.append(head)
        split = Split()
        m = measure_case(
            ctx,
            probe=NAME,
            case=f"{dc.model}/{fmt}/B={b}",
            device=device,
            params={**params, "kind": "step"},
            fn=lambda sub=sub, tokens=tokens, whole=not scaled, split=split: step(
                sub, tokens, dc.context, with_head=whole, parts=split
            ),
            check=_finite_check(sub, tokens, dc.context),
            flush_cache=True,
            timing=step_timing,
            split=split,
            steady_cv=STEADY_CV,
        )
        if m.status == "ok" and head is None:
            t_step = m.timing["stats"]["median_s"]
            m.params.update(step_seconds=t_step, scaled=False)
            m.value, m.unit = b / t_step, "tokens_per_s"
        elif m.status == "ok" and head is not None and head.status == "ok":
            t_layers, t_head = m.timing["stats"]["median_s"], head.timing["stats"]["median_s"]
            t_step = t_layers * model_cfg.layers / n_layers + t_head
            m.params.update(step_seconds=t_step, head_seconds=t_head, layers_seconds=t_layers, scaled=True)
            m.params["note"] = f"ran {n_layers} of {model_cfg.layers} layers and scaled by layer count"
            m.value, m.unit = b / t_step, "tokens_per_s"
        if m.status == "ok" and device.type == "cuda":
            # the same machinery as `probes.profile --trace`: the share of the step the GPU idles for the host
            from probes.trace import idle_share

            try:
                m.params["trace_idle_share"] = idle_share(
                    lambda sub=sub, tokens=tokens, whole=not scaled: step(
                        sub, tokens, dc.context, with_head=whole
                    ),
                    device,
                )
            except Exception as exc:  # a profiler that cannot start here: said, the step's figure stays
                m.params["trace_idle_share_error"] = (
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                )
        energy = (m.telemetry or {}).get("energy") or {}
        if m.status == "ok" and energy.get("measured") and m.params.get("step_seconds"):
            energy.update(joules_per=energy["avg_power_w"] * m.params["step_seconds"] / b, per="token")
        if m.status == "ok" and split.host_s:
            m.params.update(
                host_time(
                    split, device, n_layers * base["ops_per_layer"] + (0 if scaled else base["ops_head"])
                )
            )
        out.append(m)
    return out


def _attention_case(
    ctx: Context, device: torch.device, model: Decoder, context: int, params: dict[str, Any]
) -> Measurement:
    """scaled_dot_product_attention of one layer over S + 1 cached positions: KV bytes / time.

    Each repetition attends over every layer's cache in turn after one flush (as a step does), the time
    divided among the layers: one layer's cache alone would mostly time the flush's after-effects."""
    cfg = model.cfg
    b = model.k_cache[0].shape[0]
    q = torch.empty(b, cfg.heads, 1, cfg.head_dim, dtype=model.k_cache[0].dtype, device=device).uniform_(
        -1, 1
    )
    caches = [
        (k[:, :, : context + 1], v[:, :, : context + 1])
        for k, v in zip(model.k_cache, model.v_cache, strict=True)
    ]
    keys, values = caches[-1]
    kv_bytes = 2 * keys.numel() * keys.element_size()
    params = {**params, "sdpa_backend": sdpa_backend(q, keys, values)}
    if params["sdpa_backend"] == "math":
        params["note"] = (
            "scaled_dot_product_attention ran its math fallback (scores materialised, KV heads repeated): "
            "slower than the fused attention an engine runs, so this attention figure is pessimistic"
        )
    result: dict[str, torch.Tensor] = {}

    def run() -> None:
        for k, v in caches:
            result["out"] = attention(q, k, v)

    def check() -> str | None:
        if "out" not in result:
            return "no output"
        got = result["out"].double()
        rep = cfg.heads // cfg.kv_heads
        k64 = keys.double().repeat_interleave(rep, 1)
        v64 = values.double().repeat_interleave(rep, 1)
        w = torch.softmax(q.double() @ k64.transpose(-1, -2) / math.sqrt(cfg.head_dim), -1)
        err = (got - w @ v64).abs().max().item()
        tol = 1e-4 if keys.dtype == torch.float32 else 2e-2
        return None if err <= tol else f"attention differs from the float64 reference by {err:.3g}"

    return measure_case(
        ctx,
        probe=NAME,
        case=f"{params['model']}/{params['dtype']}/attention/B={b}",
        device=device,
        params={**params, "kind": "attention"},
        fn=run,
        check=check,
        poison=result.clear,
        bytes_moved=kv_bytes,
        flush_cache=True,
        ops_per_call=len(caches),
    )


def host_time(split: Split, device: torch.device, small_ops: int) -> dict[str, float]:
    """The host time of a step outside its GEMMs and attention (Python, dispatch, the small ops; on a CPU their
    whole cost), per step and per small op; on a GPU also the host time of issuing the whole step."""
    outside = float(statistics.median(split.outside_s()))
    out = {"host_seconds": outside, "host_seconds_per_op": outside / max(1, small_ops)}
    if device.type != "cpu":
        out["enqueue_seconds"] = float(statistics.median(split.host_s))
    return out


def _finite_check(model: Decoder, tokens: torch.Tensor, pos: int):
    def check() -> str | None:
        logits = step(model, tokens, pos)
        return None if torch.isfinite(logits).all() else "non-finite logits"

    return check


if __name__ == "__main__":  # python -m probes.NAME: the whole run, this probe only
    from probes.all import probe_main

    sys.exit(probe_main(NAME))
