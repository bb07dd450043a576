"""`python -m analysis project`: decode throughput of one model, format and TP on a GPU, under a serving engine.

The answer names the engine it assumed in every row (the default is what capacity planners run: a graph-capturing
serving engine, engines.toml `default`), how a step splits (weights, KV, compute, small-kernel overhead,
communication, the engine's host time) and the band the projection carries: the p10-p90 of the published figures
of the same engine class and batch regime relative to our projection of them (analysis/backtest.py, the held-out
half), or "unknown" where nothing was published for that engine.

    python -m analysis project --gpu h100-sxm5-80gb --model llama-3.1-8b --batch 1,8,64
    python -m analysis project --gpu h100-sxm5-80gb --model llama-3.1-8b --engine vllm@0.5.3
    python -m analysis project --gpu rtx-4090 --model llama-3.1-8b --dtype int4-wo --group-size 32 --engine llama.cpp
    python -m analysis project --run results/RUN.json --model llama-3.1-8b --engine pytorch-eager --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from analysis.cli import int_list, nonneg_float, positive_int


def add_parser(sub: Any) -> None:
    proj = sub.add_parser("project", help="project LLM decode throughput on a measured or spec-sheet GPU")
    src = proj.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a run document: measured and fitted ceilings")
    src.add_argument("--gpu", help="a spec-database key (e.g. h100-sxm5-80gb): sheet x default efficiencies")
    proj.add_argument(
        "--ideal", action="store_true", help="with --gpu: 100%% of the sheet, the physical bound"
    )
    proj.add_argument("--model", required=True, help="bundled model name or a config.json path")
    proj.add_argument(
        "--dtype",
        default="bf16",
        help="weight format: fp32, bf16, fp16, fp8 (W8A8), int8 (W8A8), int8-wo, int4-wo (weight-only)",
    )
    proj.add_argument(
        "--group-size",
        type=positive_int,
        default=128,
        help="int4-wo: weights per scale and zero (32, 64, 128, 256)",
    )
    proj.add_argument(
        "--kv-dtype",
        default=None,
        help="KV cache: fp32, bf16, fp16, fp8, int8 (default: the activation dtype, bf16 for quantized weights)",
    )
    proj.add_argument(
        "--engine",
        default=None,
        help="serving engine, optionally NAME@VERSION: vllm, sglang, trtllm, llama.cpp, hf-transformers, tgi, "
        "gpt-fast, mlc, lmdeploy, awq-pytorch, exllamav2, pytorch-eager (default: vllm, newest profile)",
    )
    proj.add_argument("--engine-version", default=None, help="the engine's version (or NAME@VERSION)")
    proj.add_argument(
        "--launch",
        default=None,
        choices=["eager", "graph", "native"],
        help="override the engine's launch mode: eager (PyTorch), graph (CUDA graphs), native (C++ launches)",
    )
    proj.add_argument(
        "--cuda-graphs", action="store_true", help="the same as --launch graph (kept for older scripts)"
    )
    proj.add_argument("--tp", type=positive_int, default=1)
    proj.add_argument(
        "--expert-parallel",
        action="store_true",
        help="MoE models: experts spread over the TP GPUs (EP = TP): two all-to-alls per MoE layer",
    )
    proj.add_argument("--batch", type=int_list, default="1,8,32", help="comma-separated batch sizes")
    proj.add_argument("--input-len", type=positive_int, default=1024)
    proj.add_argument("--output-len", type=positive_int, default=256)
    proj.add_argument("--price-per-gpu-hour", type=nonneg_float, default=None)
    proj.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from analysis import backtest, decode, engines, formats, hardware, specs
    from analysis.models import load_model
    from analysis.rundoc import load

    if args.ideal and not args.gpu:
        raise formats.ProjectionError("--ideal needs --gpu (a run document is measured, not ideal)")
    if args.engine_version is not None and args.engine is None:
        raise engines.EngineError("--engine-version needs --engine (the version of which engine?)")
    engine = engines.resolve(args.engine, args.engine_version)
    model = load_model(args.model)
    hw = (
        hardware.profile_from_run(load(args.run), args.run.name)
        if args.run
        else hardware.profile_from_spec(specs.get(args.gpu), args.ideal)
    )
    q = formats.Query(
        model,
        args.dtype,
        args.kv_dtype,
        args.tp,
        args.input_len,
        args.output_len,
        args.price_per_gpu_hour,
        group_size=args.group_size,
        engine=engine,
        launch="graph" if args.cuda_graphs else args.launch,
        expert_parallel=args.expert_parallel,
    )
    rows = backtest.with_band(decode.project(hw, q, args.batch), q.run_engine)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console

    from analysis.decode_report import print_projection

    print_projection(hw, q, rows, Console() if sys.stdout.isatty() else Console(width=150))
    return 0
