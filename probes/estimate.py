"""How long a profile takes on a node, from its case counts and time budgets, before anything runs.

Each probe says how many cases it has on a set of devices (`n_cases`); each case costs at most its warm-up plus
its time budget (most stop earlier, at the RSE target), plus fixed costs: a matmul warm-up per device, Triton
autotuning per shape, spawning the collective ranks or the per-GPU workers. Per-GPU probes (bandwidth, matmul)
run on every GPU at once (probes.parallel), so a node takes what its first GPU takes (which also sweeps the
decode GEMMs) plus the workers' start; with --sequential their cases scale with the GPU count.

    python -m probes.estimate --profile quick --gpus 8   # the resolved profile, then this estimate
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from analysis.cli import ArgumentParser, guard, positive_int
from probes import REGISTRY
from probes.config import RunConfig, load_config

TRITON_AUTOTUNE_S = 1.0  # per Triton matmul shape and device: 7 configurations benchmarked
TRITON_COMPILE_S = 10.0  # per Triton dtype, once per process: 7 configurations compiled
RANKS_STARTUP_S = 15.0  # spawning one process per GPU, importing torch, NCCL communicators
WORKER_STARTUP_S = 10.0
MEMTEST_S = 3.0  # 35 write-and-verify passes over half of an 80 GB GPU's memory at ~2.5 TB/s: ~2 s  # a per-GPU worker: spawn, import torch, create its CUDA context


def estimate_seconds(cfg: RunConfig, n_gpus: int, sequential: bool = False) -> dict[str, float]:
    """Upper-bound seconds per probe of `cfg` on a node of `n_gpus` GPUs (every case spends its budget)."""
    import torch

    from probes.context import Context
    from probes.nvml import NoNvml
    from probes.parallel import runs_in_parallel

    devices = [torch.device("cuda", i) for i in range(n_gpus)] or [torch.device("cpu")]
    per_case = cfg.timing.warmup_s + cfg.timing.case_budget_s
    out = {}
    for name in cfg.probes:
        at_once = runs_in_parallel(name, devices, sequential)
        ctx: Any = Context(cfg=cfg, devices=devices[:1] if at_once else devices, nvml=NoNvml())
        gpus = 1 if at_once else n_gpus  # GPUs whose cases add up: the first one alone when all run at once
        seconds = REGISTRY[name].n_cases(ctx) * per_case
        if name == "matmul":
            mm = cfg.matmul
            triton = [d for d in mm.dtypes if d in mm.triton_dtypes] if "triton" in mm.variants else []
            seconds += gpus * mm.first_warmup_s
            seconds += len(triton) * (TRITON_COMPILE_S + gpus * len(mm.square_sizes) * TRITON_AUTOTUNE_S)
        if name == "health":  # not cases with budgets: a soak of fixed length and a memory test
            seconds = max(1, gpus) * (cfg.health.soak_s + MEMTEST_S)
        if name == "collectives" and n_gpus >= 2:
            seconds += RANKS_STARTUP_S
        if at_once:
            seconds += WORKER_STARTUP_S
        out[name] = seconds
    return out


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="python -m probes.estimate",
        description="Print the resolved bench.toml profile, then how long it takes on a GPU node.",
    )
    ap.add_argument("--config", default=None)
    ap.add_argument("--profile", default=None)
    ap.add_argument(
        "--gpus", type=positive_int, default=8, help="GPUs of the node to estimate for (default 8)"
    )
    ap.add_argument("--sequential", action="store_true", help="estimate per-GPU probes one GPU after another")
    args = ap.parse_args(argv)
    return guard(lambda: _print(args))


def _print(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.profile, "gpu")
    print(json.dumps(cfg.to_dict(), indent=2))
    est = estimate_seconds(cfg, args.gpus, args.sequential)
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in est.items())
    how = "one after another" if args.sequential or args.gpus == 1 else "per-GPU probes on all at once"
    print(
        f"estimate, profile {cfg.profile} on {args.gpus} GPUs, {how}: {parts}; "
        f"total {sum(est.values()):.0f} s (an upper bound: every case spends its whole budget)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
