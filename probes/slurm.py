"""Slurm: the ranks of a collectives run from srun's environment, and the job a run document belongs to.

Under `srun -N NODES --ntasks-per-node GPUS python -m probes.collectives` every task is one rank, as
nccl-tests' ranks are under srun: rank = SLURM_PROCID, world size = SLURM_NTASKS, local rank (its GPU) =
SLURM_LOCALID, and the rendezvous is the first host of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST) at
MASTER_PORT if set, else a port derived from the job ID (every task of a step derives the same one). A run
document written inside a job records it (job ID and name, node, task, nodes), so a fleet folder tells its
nodes apart.

    srun -N 2 --ntasks-per-node 8 python -m probes.collectives          # NCCL across two nodes
    sbatch -N 4 examples/slurm/fleet.sbatch                            # probes.all per node, then fleet
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from probes.tomlcheck import ConfigError

RANK_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
BASE_PORT = 20000


def in_job(env: Mapping[str, str] = os.environ) -> bool:
    return "SLURM_JOB_ID" in env


def under_srun(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is one of several tasks of a Slurm step (then it is one rank of the run).

    srun's tasks carry SLURM_STEP_ID; a batch script (or an salloc shell) has SLURM_NTASKS and SLURM_PROCID
    too but no step: there the process is alone and launches its ranks itself."""
    return "SLURM_STEP_ID" in env and env.get("SLURM_NTASKS", "1") not in ("", "1")


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: 'gpu[07-09,12],login1' -> 'gpu07'; every bracket of a name takes its
    first value ('rack[0-63]_blade[0-41]' -> 'rack0_blade0')."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip(), maxsplit=1)[0]
    host = first
    while (m := re.search(r"\[([^\[\]]+)\]", host)) is not None:
        start = re.split(r"[,-]", m.group(1), maxsplit=1)[0]
        if not start.isdigit():
            raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r}: not a Slurm host list")
        host = host[: m.start()] + start + host[m.end() :]
    if not host or "[" in host or "]" in host:
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r}: not a Slurm host list")
    return host


def _int(env: Mapping[str, str], key: str) -> int:
    value = env.get(key)
    if value is None:
        present = [k for k in (*RANK_VARS, "SLURM_JOB_NODELIST") if k in env]
        raise ConfigError(
            f"Slurm environment: {key} is missing (have {', '.join(present) or 'none'}); run under srun"
        )
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"Slurm environment: {key}={value!r} is not an integer") from None


def ranks(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """torch.distributed's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) of this
    task; a missing or malformed Slurm variable is a ConfigError naming it."""
    rank, world, local = (_int(env, k) for k in RANK_VARS)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise ConfigError(
            "Slurm environment: SLURM_JOB_NODELIST is missing (the rendezvous host comes from it)"
        )
    if not (0 <= rank < world and local >= 0):
        raise ConfigError(f"Slurm environment: SLURM_PROCID={rank} does not fit SLURM_NTASKS={world}")
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:  # every task of the step derives the same port; steps of one job differ
        step = env.get("SLURM_STEP_ID", "0")
        port = BASE_PORT + _int(env, "SLURM_JOB_ID") % 10000 * 4 + (int(step) % 4 if step.isdigit() else 0)
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodelist),
        "MASTER_PORT": str(port),
    }


def job_facts(env: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The job, node and task this process runs in (None outside Slurm), for the run document."""
    if not in_job(env):
        return None
    keys = {
        "job_id": "SLURM_JOB_ID",
        "job_name": "SLURM_JOB_NAME",
        "node": "SLURMD_NODENAME",
        "nodes": "SLURM_JOB_NODELIST",
        "task": "SLURM_PROCID",
        "tasks": "SLURM_NTASKS",
        "step": "SLURM_STEP_ID",
        "partition": "SLURM_JOB_PARTITION",
    }
    return {k: env[v] for k, v in keys.items() if v in env}
