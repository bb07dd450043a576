"""The ranks of the collectives probe: what each process measures, and how rank 0 combines the ranks.

Each rank joins the process group, runs every case of the plan (nccl-tests semantics: S = the whole buffer,
all-gather: output, reduce-scatter: input), checks its own result after a fresh start (rank r contributes
(r+1) * base, so every sum is known) and sends its measurement to rank 0, which keeps the slowest rank's
median: the collective is done when its last rank is. algbw = S / t; busbw = algbw * 2(n-1)/n (all-reduce)
or (n-1)/n (all-gather, reduce-scatter). Every decision about repetitions is taken by all ranks together
over a gloo control group, so no rank waits in a collective another rank skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from analysis.formulas import alg_bandwidth, bus_bandwidth
from analysis.headline import Headline
from analysis.rundoc import Measurement
from analysis.units import fmt_bytes
from probes.config import CollectivesConfig, RunConfig
from probes.context import Context, measure_case, skipped
from probes.nvml import NoNvml, Nvml
from probes.verify import compare, poison, tolerance

NAME = "collectives"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass(frozen=True)
class Case:
    op: str
    dtype: str
    size: int  # bytes of the whole buffer, nccl-tests' S

    @property
    def name(self) -> str:
        return f"{self.op}/{self.dtype}/{fmt_bytes(self.size)}"


@dataclass(frozen=True)
class Launch:
    """How the ranks are started: world size, backend, device kind and rendezvous."""

    world_size: int
    backend: str  # "gloo" or "nccl"
    device_kind: str  # "cpu" or "gpu"
    port: int  # 0: pick a free one at launch

    @property
    def label(self) -> str:
        """The device a combined measurement is recorded on: 'cuda x8 (nccl)'."""
        kind = "cuda" if self.device_kind == "gpu" else "cpu"
        return f"{kind} x{self.world_size} ({self.backend})"


def sizes(cc: CollectivesConfig) -> list[int]:
    """min_bytes, x size_factor, ..., and max_bytes itself even when the steps jump over it."""
    out, s = [], cc.min_bytes
    while s <= cc.max_bytes:
        out.append(s)
        s *= cc.size_factor
    if out[-1] != cc.max_bytes:
        out.append(cc.max_bytes)
    return out


def plan(cc: CollectivesConfig) -> list[Case]:
    return [Case(op, d, s) for op in cc.ops for d in cc.dtypes for s in sizes(cc)]


def element_counts(case: Case, n: int) -> tuple[int, int] | None:
    """(input elements, output elements) per rank for a message of case.size bytes; None if too small."""
    elem = torch.empty((), dtype=DTYPES[case.dtype]).element_size()
    total = case.size // elem
    if case.op == "all_reduce":
        return (total, total) if total >= 1 else None
    per_rank = total // n
    if per_rank < 1:
        return None
    if case.op == "all_to_all":  # the whole buffer in and out: one chunk of `per_rank` to and from every rank
        return (per_rank * n, per_rank * n)
    return (per_rank, per_rank * n) if case.op == "all_gather" else (per_rank * n, per_rank)


def tag_plateau(ms: list[Measurement], n: int) -> None:
    """The largest `n` measured sizes of each (op, dtype) make its busbw headline."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in ms:
        if m.status == "ok" and "op" in m.params and not m.case.startswith("p2p/"):
            groups.setdefault((m.params["op"], m.params["dtype"]), []).append(m)
    for (op, dtype), group in groups.items():
        for m in sorted(group, key=lambda m: m.params["size_bytes"])[-n:]:
            m.headline = str(Headline.busbw(op, dtype))


def loopback_store(rank: int, world: int, port: int, timeout: timedelta) -> Any:
    """The rendezvous of a one-node launch, reachable from this host only: rank 0 serves a TCPStore on a
    socket it binds to 127.0.0.1 itself (a store given only a port listens on every interface), the other
    ranks connect to it. The data transport is kept on the loopback interface too (GLOO_SOCKET_IFNAME /
    NCCL_SOCKET_IFNAME, unless the user set them)."""
    import socket

    import torch.distributed as dist

    lo = next((name for _, name in socket.if_nameindex() if name in ("lo", "lo0")), None)
    if lo is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    if rank != 0:
        return dist.TCPStore("127.0.0.1", port, world, False, timeout)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(max(128, world))
    # The store takes the descriptor over (and closes it with the server): detach it from the Python socket.
    return dist.TCPStore(
        "127.0.0.1", port, world, True, timeout, wait_for_workers=False, master_listen_fd=sock.detach()
    )


def gpu_index(index: int, visible: int) -> int:
    """The CUDA ordinal of a node-local rank. Under `srun --gpus-per-task` (or --gpu-bind=per_task|single|
    closest) each task sees only its own GPU(s): local rank 3 then owns cuda:0 of its own view, as nccl-tests
    picks `local_rank % visible devices`."""
    return index if visible <= 0 or index < visible else index % visible


def worker(
    rank: int,
    launch: Launch,
    init_method: str | None,
    cfg: RunConfig,
    link: str,
    emit: Callable[[tuple[Any, ...]], None],
    fault: dict[str, Any] | None = None,
    local_rank: int | None = None,
    nodes: int | None = None,
) -> None:
    """One rank: join the group, run every case, send rank 0's combined measurements through `emit`.

    `init_method` is torch.distributed's (`env://` under torchrun); None: this node only, on 127.0.0.1 at
    `launch.port` (`loopback_store`)."""
    import torch.distributed as dist

    n = launch.world_size
    if launch.device_kind == "gpu":
        index = rank if local_rank is None else local_rank
        device = torch.device("cuda", gpu_index(index, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # n processes share the cores: oversubscribed threads would time the scheduler, not gloo
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    timeout = timedelta(seconds=cfg.collectives.collective_timeout_s)
    if init_method is None:
        store = loopback_store(rank, n, launch.port, timeout)
        dist.init_process_group(launch.backend, store=store, rank=rank, world_size=n, timeout=timeout)
    else:
        dist.init_process_group(
            launch.backend, init_method=init_method, rank=rank, world_size=n, timeout=timeout
        )
    # Decisions (warm-up done? stop?) travel over gloo on the CPU, never inside the timed NCCL stream.
    control = dist.new_group(backend="gloo", timeout=timeout) if launch.backend != "gloo" else None

    def agree(flags: list[int]) -> list[int]:
        t = torch.tensor(flags, dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=control)
        return [int(v) for v in t.tolist()]

    ctx = Context(cfg=cfg, devices=[device], nvml=Nvml() if rank == 0 else NoNvml())
    for i, case in enumerate(plan(cfg.collectives)):
        if rank == 0:
            emit(("case", case.name))
        m = measure(
            ctx,
            device,
            case,
            rank,
            n,
            agree,
            fault if i == 0 or (fault or {}).get("kind") == "corrupt" else None,
        )
        gathered: list[Any] = [None] * n if rank == 0 else []
        dist.gather_object(m.to_dict(), gathered if rank == 0 else None, dst=0, group=control)
        if rank == 0:
            combined = combine(gathered, case, launch, link)
            if nodes is not None:  # how many nodes the ranks span: one node is a local link, not the network
                combined.params["nodes"] = nodes
            emit(("measurement", combined.to_dict()))
    dist.barrier(group=control)
    dist.destroy_process_group()


def measure(
    ctx: Context,
    device: torch.device,
    case: Case,
    rank: int,
    n: int,
    agree: Callable[[list[int]], list[int]],
    fault: dict[str, Any] | None,
) -> Measurement:
    import torch.distributed as dist

    params: dict[str, Any] = {
        "op": case.op,
        "dtype": case.dtype,
        "size_bytes": case.size,
        "world_size": n,
        "rank": rank,
    }
    counts = element_counts(case, n)
    if counts is None:
        return skipped(NAME, case.name, device, params, f"{case.size} B is less than one element per rank")
    dtype = DTYPES[case.dtype]
    n_in, n_out = counts
    base_in = exact_pattern(n_in, n).to(device=device, dtype=dtype)
    inp = torch.empty(n_in, dtype=dtype, device=device)
    out = inp if case.op == "all_reduce" else torch.empty(n_out, dtype=dtype, device=device)
    ranks_sum = sum(rank_weight(r, n) for r in range(n))
    if case.op == "all_reduce":
        expected = base_in.double() * ranks_sum
        fn: Callable[[], Any] = lambda: dist.all_reduce(inp)  # noqa: E731
    elif case.op == "all_gather":
        expected = torch.cat([base_in.double() * rank_weight(r, n) for r in range(n)])
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        fn = lambda: gather(out, inp)  # noqa: E731
    elif case.op == "all_to_all":
        chunk = n_in // n
        expected = torch.cat([a2a_chunk(src, rank, n, chunk) for src in range(n)]).double()
        fn = lambda: dist.all_to_all_single(out, inp)  # noqa: E731
    else:
        expected = base_in.double()[rank * n_out : (rank + 1) * n_out] * ranks_sum
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        fn = lambda: scatter(out, inp)  # noqa: E731
    fn = _with_fault(fn, rank, fault)
    if case.op == "all_to_all":
        source = torch.cat([a2a_chunk(rank, dst, n, n_in // n) for dst in range(n)]).to(
            device=device, dtype=dtype
        )
    else:
        source = base_in * rank_weight(rank, n)

    def reset() -> None:
        inp.copy_(source)
        if out is not inp:
            poison(out)

    rtol, atol = tolerance(dtype)

    def local_check() -> str | None:
        if fault and fault.get("kind") == "corrupt" and fault.get("rank") == rank:
            out[0] += 1  # the injected corruption a real link or NCCL bug would cause
        return compare(out, expected, rtol=rtol, atol=atol, name="result")

    def check() -> str | None:
        # Every rank checks its own result and all learn whether any failed, so they take the same branch.
        problem = local_check()
        (any_wrong,) = agree([int(problem is not None)])
        if problem:
            return f"rank {rank}: {problem}"
        return "another rank received a wrong result" if any_wrong else None

    return measure_case(
        ctx,
        probe=NAME,
        case=case.name,
        device=device,
        params=params,
        fn=fn,
        check=check,
        poison=reset,
        bytes_moved=case.size,
        agree=agree,
    )


def a2a_chunk(src: int, dst: int, n: int, numel: int) -> torch.Tensor:
    """What rank `src` sends rank `dst` in an all-to-all: integers 1..255 (exact in bf16) that differ by
    source, destination and position, so a chunk delivered to the wrong rank or slot is caught."""
    return ((src * n + dst + torch.arange(numel)) % 255 + 1).float()


EXACT_RANKS = 8  # 7 x (1 + ... + 8) = 252: the largest world whose distinct-weight sums stay within 256


def rank_weight(rank: int, n: int) -> int:
    """What rank `rank` of `n` multiplies the pattern by: rank + 1 (a rank missing or counted twice changes
    the sum) while every partial sum stays exact in bf16, i.e. up to EXACT_RANKS; 1 beyond."""
    return rank + 1 if n <= EXACT_RANKS else 1


def exact_pattern(numel: int, n: int) -> torch.Tensor:
    """Per-element values whose every partial sum over ranks is exact in bf16 (8 significant bits), in any
    reduction order, so the check can be strict. Up to 8 ranks: 1..7 times the distinct rank weights (sums
    <= 252). Beyond (multi-node worlds), 1, 2, 4 times weight 1: a partial sum is m x 2^j with m <= n,
    exact up to 256 ranks; small integers times rank + 1 would round past 256 and fail a correct all-reduce."""
    i = torch.arange(numel)
    return (i % 7 + 1).float() if n <= EXACT_RANKS else torch.pow(2.0, (i % 3).float())


def _with_fault(fn: Callable[[], Any], rank: int, fault: dict[str, Any] | None) -> Callable[[], Any]:
    if not fault or fault.get("rank") != rank or fault.get("kind") not in ("hang", "die"):
        return fn

    def faulty() -> Any:
        if fault["kind"] == "die":
            os._exit(3)
        time.sleep(3600)  # a hung rank: the others wait in the collective until their timeout
        return fn()

    return faulty


def combine(per_rank: list[dict[str, Any]], case: Case, launch: Launch, link: str) -> Measurement:
    """Rank 0's record of a case: the slowest rank's median sets t; busbw from it; every rank's checks."""
    n = launch.world_size
    first = per_rank[0]
    params = {**first["params"], "backend": launch.backend, "link": link}
    params.pop("rank", None)
    m = Measurement(
        probe=NAME, case=case.name, device=launch.label, params=params, telemetry=first.get("telemetry")
    )
    # A rank that saw its own wrong result explains more than the ranks that were told "another rank".
    bad = sorted(
        (d for d in per_rank if d["status"] != "ok"), key=lambda d: "another rank" in (d.get("error") or "")
    )
    if bad:
        m.status = bad[0]["status"]
        m.error = bad[0]["error"]
        m.verification = bad[0].get("verification") or m.verification
        wrong = [
            d["params"].get("rank")
            for d in per_rank
            if (d.get("verification") or {}).get("status") == "failed"
            and "another rank" not in (d.get("error") or "")
        ]
        m.params["wrong_ranks"] = [r for r in wrong if r is not None]
        return m
    medians = [d["timing"]["stats"]["median_s"] for d in per_rank]
    t = max(medians)
    algbw = alg_bandwidth(case.size, t)
    busbw = bus_bandwidth(case.op, algbw, n)
    m.params.update(
        time_s=t,
        rank_median_s=medians,
        algbw_bytes_per_s=algbw,
        busbw_bytes_per_s=busbw,
        wrong_ranks=[],
    )
    m.timing = first["timing"]
    m.verification = {"status": "passed", "ranks": n}
    m.value, m.unit = busbw, "bytes_per_s"
    return m
