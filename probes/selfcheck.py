"""Does the probes' method report what the hardware does? A benchmark of the method itself, not a test.

Each check measures one operation twice, alternating for several rounds so drift hits both alike: once
through the probe's own code path (verified, warmed up by time, L2 flushed, median of adaptive repetitions)
and once "the obvious way" (a bare loop between two synchronizations, mean time per call). The ratio
probe / loop should be close to 1: below 0.95 the harness is under-reporting (overhead inside the timed
window); well above 1 the bare loop is the one that suffers (it cannot exclude its own outliers).

    python -m probes.selfcheck matmul --device cpu --size 1024
    python -m probes.selfcheck bandwidth --device cpu
    python -m probes.selfcheck collectives --device cpu      # 2-rank gloo all-reduce, 64 MiB
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from analysis.cli import ArgumentParser, guard, positive_float, positive_int, word
from probes.config import ConfigError, load_config
from probes.context import Context
from probes.device import device_context, free_memory_bytes, resolve_devices
from probes.nvml import Nvml
from probes.timing import synchronize


def bare_loop(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    """Mean seconds per call of a plain loop, run for about `seconds` after one untimed call."""
    with device_context(device):
        return _bare_loop(fn, device, seconds)


def _bare_loop(fn: Callable[[], object], device: torch.device, seconds: float) -> float:
    fn()
    synchronize(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    synchronize(device)
    return (time.perf_counter() - t0) / n


def check_matmul(ctx: Context, device: torch.device, size: int, seconds: float) -> tuple[float, float]:
    """(probe FLOP/s, loop FLOP/s) for an fp32 square matmul."""
    import probes.matmul as mm

    run = mm.DeviceRun(ctx, device)
    m = run.measure(mm.Case("square", "fp32", "torch", size, size, size))
    if m.status != "ok":
        raise SelfcheckError(f"the probe's case failed: {m.error}")
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)
    c = torch.empty(size, size, device=device)
    with mm.tf32_mode(False):
        t = bare_loop(lambda: torch.matmul(a, b, out=c), device, seconds)
    return m.value, 2 * size**3 / t


def check_bandwidth(ctx: Context, device: torch.device, size: int, seconds: float) -> tuple[float, float]:
    """(probe B/s, loop B/s) for a copy whose working set is `size` bytes (both arrays)."""
    import probes.bandwidth as bw

    buf = torch.empty(size // 4, dtype=torch.float32, device=device)
    m = bw.measure_pattern(ctx, device, buf, "copy", "torch", {}, "selfcheck", False)
    if m.status != "ok":
        raise SelfcheckError(f"the probe's case failed: {m.error}")
    n = buf.numel() // 2
    src, dst = buf[:n], buf[n:]
    t = bare_loop(lambda: dst.copy_(src), device, seconds)
    return m.value, 2 * n * 4 / t


def _collectives_rank(
    rank: int, port: int, cfg: Any, size: int, rounds: int, seconds: float, q: Any, parent: int
) -> None:
    """One rank of the collectives selfcheck: the probe's case and a bare all_reduce loop, alternating."""
    from datetime import timedelta

    import torch.distributed as dist

    from probes import ranks
    from probes.interrupt import die_with_parent
    from probes.nvml import NoNvml

    die_with_parent(parent)
    launch = ranks.Launch(world_size=2, backend="gloo", device_kind="cpu", port=port)
    torch.set_num_threads(1)
    timeout = timedelta(seconds=cfg.collectives.collective_timeout_s)
    store = ranks.loopback_store(rank, 2, port, timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=timeout)

    def agree(flags: list[int]) -> list[int]:
        t = torch.tensor(flags, dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [int(v) for v in t.tolist()]

    ctx = Context(cfg=cfg, devices=[torch.device("cpu")], nvml=NoNvml())
    case = ranks.Case("all_reduce", "fp32", size)
    x = torch.rand(size // 4)
    for _ in range(rounds):
        m = ranks.measure(ctx, torch.device("cpu"), case, rank, 2, agree, None)
        per_rank: list[Any] = [None, None]
        dist.all_gather_object(per_rank, m.to_dict())
        probe = ranks.combine(per_rank, case, launch, "").value
        # the obvious way: a barrier, a loop of all_reduce calls, the slowest rank's mean
        # every rank derives the same count from the shared probe figure: about `seconds` of calls
        n = max(5, round(seconds * probe / size))
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            dist.all_reduce(x)
        slowest = [0.0, 0.0]
        dist.all_gather_object(slowest, (time.perf_counter() - t0) / n)
        if rank == 0:
            q.put((probe, size / max(slowest)))  # n = 2: busbw = algbw * 2(n-1)/n = algbw
    dist.destroy_process_group()


def check_collectives(
    ctx: Context, device: torch.device, size: int, seconds: float, rounds: int
) -> list[tuple[float, float]]:
    """[(probe busbw, bare-loop busbw)] per round for a 2-rank gloo all-reduce of `size` bytes."""
    import multiprocessing as mp
    import os
    import queue

    from probes.launch import free_port

    mpc = mp.get_context("spawn")
    q = mpc.Queue()
    port = free_port()
    args = (port, ctx.cfg, size, rounds, seconds, q, os.getpid())
    procs = [mpc.Process(target=_collectives_rank, args=(r, *args), daemon=True) for r in range(2)]
    for p in procs:
        p.start()
    out: list[tuple[float, float]] = []
    try:
        while len(out) < rounds:
            try:
                out.append(q.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise SelfcheckError(f"a rank exited with code {dead[0]}") from None
    finally:
        for p in procs:
            p.join(timeout=5 if len(out) == rounds else 0)
            if p.is_alive():
                p.kill()
    return out


MIN_BYTES = 4096  # bandwidth and collectives: two arrays of at least 512 floats
MAX_SECONDS = 600.0

CHECKS = {
    "matmul": (check_matmul, 1024, "TFLOPS", 1e12),
    "bandwidth": (check_bandwidth, 512 << 20, "GB/s", 1e9),
    "collectives": (check_collectives, 64 << 20, "GB/s busbw", 1e9),
}


class SelfcheckError(RuntimeError):
    """The probe's own case failed: the comparison cannot be made."""


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m probes.selfcheck", description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=sorted(CHECKS))
    ap.add_argument("--device", default="auto", type=word)
    ap.add_argument(
        "--size", type=positive_int, default=None, help="matmul: M = N = K; bandwidth: working set in bytes"
    )
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--seconds", type=positive_float, default=1.0, help="length of each bare loop")
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)
    return guard(lambda: _main(args), extra=(SelfcheckError,))


def _main(args: argparse.Namespace) -> int:
    fn, default_size, unit, scale = CHECKS[args.check]
    devices, note = resolve_devices(args.device)
    cfg = load_config(args.config, None, "cpu" if devices[0].type == "cpu" else "gpu")
    device, size = devices[0], args.size or default_size
    need = 3 * size * size * 4 if args.check == "matmul" else size
    if args.check != "matmul" and size < MIN_BYTES:
        raise ConfigError(f"--size {size}: at least {MIN_BYTES} bytes for {args.check}")
    if args.seconds > MAX_SECONDS:
        raise ConfigError(f"--seconds {args.seconds:g}: at most {MAX_SECONDS} (one bare loop)")
    if need > free_memory_bytes(device) // 2:
        raise ConfigError(f"--size {size}: needs {need / 1e9:.3g} GB, over half the free memory of {device}")
    ctx = Context(cfg=cfg, devices=[device], nvml=Nvml())
    print(f"{note}; {args.check} at size {size}, {args.rounds} alternating rounds")
    probe, loop = [], []
    if args.check == "collectives":  # the ranks alternate the two methods themselves, in the same processes
        pairs = check_collectives(ctx, device, size, args.seconds, args.rounds)
    else:
        pairs = [fn(ctx, device, size, args.seconds) for _ in range(args.rounds)]
    for i, (p, lp) in enumerate(pairs):
        probe.append(p)
        loop.append(lp)
        print(
            f"round {i + 1}: probe {p / scale:.4g} {unit}   bare loop {lp / scale:.4g} {unit}   ratio {p / lp:.3f}"
        )
    p, lp = statistics.median(probe), statistics.median(loop)
    print(f"median: probe {p / scale:.4g} {unit}, bare loop {lp / scale:.4g} {unit}, ratio {p / lp:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
