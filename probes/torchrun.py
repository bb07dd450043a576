"""One rank of the collectives probe started by torchrun or srun (or a launcher that sets the same variables).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; each process joins the group through
`env://` with them, runs the same cases as a local launch, and global rank 0 writes the run document and
prints the report. Without those variables `python -m probes.torchrun` (and `python -m probes.collectives`)
launch the ranks on this node themselves, as `python -m probes.all --only collectives` does.

    torchrun --standalone --nproc-per-node 2 -m probes.torchrun --device cpu
    srun -N 2 --ntasks-per-node 8 python -m probes.collectives          # Slurm: ranks from SLURM_* (probes.slurm)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m probes.torchrun
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from analysis.cli import EXIT_BAD_INPUT
from analysis.rundoc import Measurement, error_line
from probes import slurm
from probes.all import check_out_dir, parse_args, probe_main
from probes.config import ConfigError, load_config
from probes.device import resolve_devices
from probes.interrupt import as_interrupts, describe, exit_code
from probes.nvml import Nvml
from probes.ranks import NAME, Launch, gpu_index, tag_plateau, worker
from probes.runner import RunRecord, print_outputs


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def _env_int(key: str) -> int:
    value = os.environ.get(key, "")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {key}={value!r}: expected an integer") from None


def nodes_spanned(world: int, env: dict[str, str] | None = None) -> int | None:
    """How many nodes the ranks span: torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE, else Slurm's step or job
    node count; None when neither says."""
    env = dict(os.environ) if env is None else env
    local = env.get("LOCAL_WORLD_SIZE", "")
    if local.isdigit() and int(local) > 0:
        return max(1, -(-world // int(local)))
    for key in ("SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return None


def torchrun_main(argv: list[str]) -> int:
    """This process is one rank started by torchrun: join, measure, and let global rank 0 write the document."""
    args = parse_args(argv, prog="python -m probes.torchrun")
    rank, launcher = 0, "torchrun" if under_torchrun() else "srun"
    try:
        if launcher == "srun":  # a task of `srun`: the same variables, from Slurm's
            os.environ.update(slurm.ranks())
        rank, world, local = (_env_int(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        port = _env_int("MASTER_PORT")
        given = [
            f
            for f, v in (
                ("--only", args.only),
                ("--skip", args.skip),
                ("--world-size", args.world_size),
                ("--port", args.port),
                ("--sequential", args.sequential),
            )
            if v
        ]
        if given:
            raise ConfigError(
                f"{given[0]}: does not apply under torchrun (it runs collectives on the ranks it starts)"
            )
        devices, note = resolve_devices(args.device)
        kind = "cpu" if devices[0].type == "cpu" else "gpu"
        cfg = load_config(args.config, args.profile, kind)
        backend = args.backend if args.backend != "auto" else ("nccl" if kind == "gpu" else "gloo")
        if backend not in ("gloo", "nccl"):
            raise ConfigError(f"--backend {backend}: expected auto, gloo or nccl")
        if not (0 <= rank < world and local >= 0 and 1 <= port <= 65535):
            raise ConfigError(
                f"torchrun environment: RANK={rank} WORLD_SIZE={world} MASTER_PORT={port} do not fit"
            )
        out_dir = check_out_dir(args.out)  # before measuring: a bad --out must not cost the run
    except ConfigError as exc:
        if rank == 0 or "environment" in str(exc):  # every rank sees a bad environment of its own
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    launch = Launch(world_size=world, backend=backend, device_kind=kind, port=port)
    record: RunRecord | None = None
    nvml = Nvml() if rank == 0 else None
    collected: list[Measurement] = []

    def emit(msg: tuple[Any, ...]) -> None:
        if msg[0] == "measurement":
            collected.append(Measurement(**msg[1]))
            if record is not None:
                record.keep(collected[-1])
        elif msg[0] == "case":
            print(f"{NAME}: {msg[1]}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        with as_interrupts():
            if rank == 0:  # the document exists (and is saved case by case) before anything is measured
                local_devices = (
                    devices
                    if kind == "cpu"
                    else [torch.device("cuda", gpu_index(local, torch.cuda.device_count()))]
                )
                note = f"{launcher}: {world} ranks ({backend}); {note}"
                record = RunRecord.start(cfg, [NAME], local_devices, note, out_dir, nvml)
                record.begin(NAME)
            try:
                worker(rank, launch, "env://", cfg, "", emit, local_rank=local, nodes=nodes_spanned(world))
            except Exception as exc:  # a peer died or a collective timed out: keep what was measured
                if record is None:
                    print(f"rank {rank}: {error_line(exc)}", file=sys.stderr)
                    return 1
                record.end(exc=exc)
                record.finish("completed", time.perf_counter() - t0)
                print_outputs(record.doc, record.path, args.report)
                return 1
    except KeyboardInterrupt as exc:
        if record is None:
            return exit_code(exc)
        record.end(interrupted=describe(exc))
        record.finish("interrupted", time.perf_counter() - t0)
        print(f"interrupted by {describe(exc)}: what was measured is in {record.path}", file=sys.stderr)
        return exit_code(exc)
    finally:
        if nvml is not None:
            nvml.shutdown()
    if record is None:
        return 0
    tag_plateau(collected, cfg.collectives.plateau_sizes)
    record.end(collected)
    record.finish("completed", time.perf_counter() - t0)
    print_outputs(record.doc, record.path, args.report)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if under_torchrun() or slurm.under_srun():
        return torchrun_main(argv)
    return probe_main(NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
