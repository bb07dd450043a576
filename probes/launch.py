"""Starting the collectives probe's ranks on one node, watching them, and tearing them down.

One process per device (spawned: forking after torch or CUDA initialisation is unsafe), rendezvous on
127.0.0.1. The parent collects rank 0's measurements from a queue and watches every rank: a rank that exits
early or a case with no progress past its timeout (`collective_timeout_s`) ends the launch, every process is
torn down (SIGTERM, then SIGKILL) and the failure is recorded for the case in flight and the cases not run,
so the rest of the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import time
from dataclasses import replace
from typing import Any

import torch

from analysis.rundoc import Measurement, error_line
from probes.config import ConfigError, RunConfig
from probes.context import Context, skipped
from probes.interrupt import die_with_parent
from probes.ranks import NAME, Launch, plan, tag_plateau, worker

MAX_CPU_WORLD = 64


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def resolve_launch(devices: list[torch.device], cfg: RunConfig, options: dict[str, Any]) -> Launch:
    """The launch for these devices and flags (--world-size, --backend, --port); bad input is a ConfigError."""
    import torch.distributed as dist

    kind = "cpu" if devices[0].type == "cpu" else "gpu"
    n_gpu = len(devices) if kind == "gpu" else 0
    world = options.get("world_size")
    backend = options.get("backend") or "auto"
    port = options.get("port") or 0
    if world is not None:
        if world < 1:
            raise ConfigError(f"--world-size {world}: must be at least 1")
        if kind == "gpu" and world > n_gpu:
            raise ConfigError(f"--world-size {world}: only {n_gpu} GPU(s) selected (one process per GPU)")
        if kind == "cpu" and world > MAX_CPU_WORLD:
            raise ConfigError(f"--world-size {world}: at most {MAX_CPU_WORLD} CPU processes")
    else:
        world = n_gpu if kind == "gpu" else cfg.collectives.cpu_world_size
    if backend == "auto":
        backend = "nccl" if kind == "gpu" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"--backend {backend}: expected auto, gloo or nccl")
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed")
    if backend == "nccl" and kind == "cpu":
        raise ConfigError("--backend nccl: NCCL runs on GPUs; use gloo (or auto) with --device cpu")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("--backend nccl: this torch build has no NCCL (a CPU or ROCm-without-RCCL build?)")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ConfigError("--backend gloo: this torch build has no gloo")
    if port and not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 1..65535")
    if port and port_in_use(port):
        raise ConfigError(f"--port {port}: already in use on 127.0.0.1")
    return Launch(world_size=world, backend=backend, device_kind=kind, port=port)


def launch_ranks(
    ctx: Context, launch: Launch, link: str = "", fault: dict[str, Any] | None = None
) -> list[Measurement]:
    """Spawn the ranks, collect rank 0's measurements, and tear everything down on a death or a hang.

    `fault` injects a failure for tests: {"rank": r, "kind": "hang" | "die" | "corrupt"}.
    """
    import multiprocessing as mp

    cc, timing = ctx.cfg.collectives, ctx.cfg.timing
    port = launch.port or free_port()
    mpc = mp.get_context("spawn")  # fork after torch (and CUDA) initialisation is unsafe
    q = mpc.Queue()
    procs = [
        mpc.Process(
            target=_spawned_worker,
            args=(rank, replace(launch, port=port), ctx.cfg, link, q, fault, os.getpid()),
            daemon=True,
            name=f"gpuprobe-rank{rank}",
        )
        for rank in range(launch.world_size)
    ]
    for p in procs:
        p.start()
    cases = plan(cc)
    by_name: dict[str, Measurement] = {}
    # A case takes its warm-up, its budget and a verification; a collective stuck past its timeout is a hang.
    case_deadline = cc.collective_timeout_s + 2 * (timing.warmup_s + timing.case_budget_s) + 10.0
    deadline = time.monotonic() + cc.startup_timeout_s
    current, failure, finished = "start-up", None, False
    try:
        while not finished:
            try:
                msg = q.get(timeout=0.2)
            except queue.Empty:
                dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    failure = f"rank {dead[0][0]} exited with code {dead[0][1]} during {current}"
                elif time.monotonic() > deadline:
                    failure = f"no progress for {case_deadline if current != 'start-up' else cc.startup_timeout_s:.0f} s during {current}: a rank hung (collective timeout)"
                if failure:
                    break
                continue
            kind = msg[0]
            if kind == "case":
                current = msg[1]
                ctx.progress(f"{NAME}: {current}")
                deadline = time.monotonic() + case_deadline
            elif kind == "measurement":
                m = Measurement(**msg[1])
                by_name[m.case] = m
                ctx.keep(m)
            elif kind == "error":
                failure = _root_cause(procs, reporter=msg[1], message=msg[2], during=current)
                break
            elif kind == "done":
                finished = True
    finally:
        _teardown(procs)
        q.close()
    out = []
    for case in cases:
        if case.name in by_name:
            out.append(by_name[case.name])
        elif failure and case.name == current:
            params = {
                "op": case.op,
                "dtype": case.dtype,
                "size_bytes": case.size,
                "world_size": launch.world_size,
            }
            out.append(skipped(NAME, case.name, launch.label, params, failure, status="error"))
        else:
            params = {
                "op": case.op,
                "dtype": case.dtype,
                "size_bytes": case.size,
                "world_size": launch.world_size,
            }
            out.append(skipped(NAME, case.name, launch.label, params, f"not run: {failure}", status="error"))
    tag_plateau(out, cc.plateau_sizes)
    return out


def _root_cause(procs: list[Any], reporter: int, message: str, during: str) -> str:
    """A rank's error is often the echo of another rank's death (connection reset): name the dead one."""
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        dead = [(r, p.exitcode) for r, p in enumerate(procs) if r != reporter and p.exitcode not in (None, 0)]
        if dead:
            return f"rank {dead[0][0]} exited with code {dead[0][1]} during {during} ({message})"
        time.sleep(0.05)
    return message


def _teardown(procs: list[Any]) -> None:
    """Every rank gone: a polite SIGTERM, then SIGKILL for whatever is stuck in a collective."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=3)
        if p.is_alive():
            p.kill()
            p.join(timeout=3)


def _spawned_worker(
    rank: int, launch: Launch, cfg: RunConfig, link: str, q: Any, fault: dict[str, Any] | None, parent: int
) -> None:
    die_with_parent(parent)  # no rank outlives the run, even one SIGKILLed
    code = 0
    try:
        worker(rank, launch, None, cfg, link, q.put, fault)
        if rank == 0:
            q.put(("done",))
    except BaseException as exc:
        code = 1
        with contextlib.suppress(Exception):
            q.put(
                (
                    "error",
                    rank,
                    f"rank {rank}: {error_line(exc)}",
                )
            )
    q.close()
    q.join_thread()
    # Skip interpreter teardown: a process group whose peer vanished can block in its destructor.
    os._exit(code)
