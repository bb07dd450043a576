"""Profile your own kernel: time any callable with the one timing primitive and place it on this node's roofline.

Give the work it does (FLOPs and/or bytes moved); get achieved GB/s and TFLOPS, arithmetic intensity, the
attainable rate at that intensity on the node's *measured* roofline (from a run document, or a fresh quick
bandwidth + matmul probe), and the fraction of it the kernel reaches.

    python -m probes.profile examples.profile_kernels:torch_copy --device cpu --run results/RUN.json
    python -m probes.profile examples.profile_kernels:triton_copy --device cuda     # measures the roofline first

MODULE:FUNCTION names a factory called with the torch.device; it returns a `Workload` (or a bare callable,
with --flops / --bytes given on the command line).

    from probes.profile import Workload, profile
    report = profile(Workload(lambda: y.copy_(x), nbytes=2 * x.nbytes), device, run_doc=doc)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis.cli import ArgumentParser, guard, nonneg_float, positive_int, word
from analysis.rundoc import error_line
from probes.config import ConfigError, RunConfig, load_config
from probes.timing import time_fn
from probes.workload import call_factory, fresh_run_doc, user_frame


@dataclass
class Workload:
    fn: Callable[[], Any]
    flops: float = 0.0
    nbytes: float = 0.0
    dtype: str = "bf16"  # which compute ceiling applies (fp32, tf32, fp16, bf16, fp8, int8)
    name: str = ""


def profile(
    work: Workload, device: torch.device, run_doc: dict[str, Any] | None = None, cfg: RunConfig | None = None
) -> dict[str, Any]:
    """Time `work.fn` on `device` and place it on the roofline of `run_doc` (measured fresh when None)."""
    from analysis.headline import dtype_family
    from analysis.roofline import from_run

    if not work.flops and not work.nbytes:
        raise ValueError("a workload needs its FLOPs or its bytes moved (or both) to be placed on a roofline")
    cfg = cfg or load_config(None, "quick", "cpu" if device.type == "cpu" else "gpu")
    doc = run_doc if run_doc is not None else fresh_run_doc(device, cfg)
    roof = from_run(doc)
    if roof is None:
        raise ValueError("the run document has no DRAM bandwidth or matmul figure to build a roofline from")
    timing = time_fn(work.fn, device, cfg.timing)
    t = timing.stats.median_s
    fam = dtype_family(work.dtype)
    if work.flops and fam not in roof.compute_flop_per_s:
        raise ValueError(
            f"the run has no {fam} matmul ceiling (measured: {', '.join(roof.compute_flop_per_s)})"
        )
    placed = roof.place(
        work.flops, work.nbytes, t, fam if work.flops else next(iter(roof.compute_flop_per_s))
    )
    return {
        "name": work.name,
        "device": str(device),
        "seconds": t,
        "timing": timing.to_dict(),
        "flops": work.flops,
        "bytes": work.nbytes,
        **placed,
        "roofline": {
            "bandwidth_bytes_per_s": roof.bandwidth_bytes_per_s,
            "compute_flop_per_s": roof.compute_flop_per_s,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="python -m probes.profile", description="Time a kernel and place it on this node's roofline."
    )
    ap.add_argument("target", nargs="?", help="MODULE:FUNCTION, a factory taking the torch.device")
    ap.add_argument(
        "--trace",
        metavar="MODULE:FUNCTION",
        default=None,
        help="profile a whole step: every op of it on the roofline, and the device's idle share (probes.trace)",
    )
    ap.add_argument(
        "-o", "--out", type=Path, default=Path("results"), help="--trace: folder for the documents"
    )
    ap.add_argument("--iterations", type=positive_int, default=5, help="--trace: traced calls (default 5)")
    ap.add_argument("--device", default="auto", type=word)
    ap.add_argument(
        "--run",
        type=Path,
        default=None,
        help="run document with the node's roofline (default: measure one now)",
    )
    ap.add_argument("--flops", type=nonneg_float, default=None)
    ap.add_argument("--bytes", type=nonneg_float, default=None, dest="nbytes")
    ap.add_argument(
        "--dtype", default=None, help="compute ceiling for FLOPs: fp32, tf32, fp16, bf16, fp8, int8"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if (args.target is None) == (args.trace is None):
        ap.error("give MODULE:FUNCTION to time one callable, or --trace MODULE:FUNCTION to profile a step")
    if args.trace:
        from probes.trace_cli import run_trace

        return guard(lambda: run_trace(args))
    return guard(lambda: _profile(args))


def _profile(args: argparse.Namespace) -> int:
    from analysis.rundoc import load
    from probes.device import resolve_devices

    devices, note = resolve_devices(args.device)
    device = devices[0]
    made = call_factory(args.target, device)
    # duck-typed: under `python -m`, this module's Workload is __main__.Workload, not the factory's class
    work = made if hasattr(made, "fn") else Workload(made)
    if not callable(work.fn):
        raise ConfigError(f"{args.target}: returned {type(made).__name__}, not a Workload or a callable")
    work.flops = args.flops if args.flops is not None else work.flops
    work.nbytes = args.nbytes if args.nbytes is not None else work.nbytes
    work.dtype = args.dtype or work.dtype
    work.name = work.name or args.target
    try:  # once before anything is timed: a workload that raises is the user's error, in one line
        from probes.timing import synchronize

        work.fn()
        synchronize(device)  # a GPU kernel's error surfaces here, not at its launch
    except Exception as exc:
        raise ConfigError(f"{args.target}: the workload raised {error_line(exc)}{user_frame(exc)}") from None
    doc = load(args.run) if args.run else None
    if doc is None:
        print(f"{note}; measuring this node's roofline first (quick bandwidth + matmul)", file=sys.stderr)
    try:
        report = profile(work, device, doc)
    except ValueError as exc:  # no FLOPs or bytes to place, a roofline the run lacks, ...
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "timing"}, indent=1, default=str))
        return 0
    r = report
    print(f"{r['name']} on {r['device']}: median {r['seconds'] * 1e3:.3f} ms")
    print(
        f"  achieved {r['achieved_bytes_per_s'] / 1e9:.1f} GB/s, {r['achieved_flop_per_s'] / 1e12:.3g} TFLOPS; intensity {r['intensity_flop_per_byte']:.3g} FLOP/byte ({r['bound']}-bound)"
    )
    print(f"  {100 * r['fraction_of_attainable']:.1f} % of this node's measured roofline at that intensity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
