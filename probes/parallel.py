"""Per-GPU probes on every GPU of a node at once: one process per GPU, results merged in device order.

Memory bandwidth and matmul are properties of each GPU alone, so a node's GPUs can measure them side by side:
an 8-GPU node then takes about as long as one GPU, and every figure is taken in the node's real power and
thermal condition (all GPUs loaded, as in training or serving) rather than with seven GPUs idle. Host-link
copies stay one GPU after another (they share host memory, PCIe switches and the CPU sockets, so side by side
they would measure the contention, not the link: nvbandwidth's default too); collectives and decode have
their own process layout.

Each worker is a fresh `spawn`ed process (CUDA cannot be forked) that runs the probe with the one device it
owns and sends back its measurements as run-document dicts, and its progress as it goes. A worker that dies
(a driver fault, a segfault) costs only its device's cases: the others are kept and the death is recorded as
an error of that device. Ctrl-C stops every worker.

    python -m probes.all                 # per-GPU probes at once on a multi-GPU node
    python -m probes.all --sequential    # one GPU after another
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from typing import Any

from analysis.rundoc import Measurement, error_line
from probes import REGISTRY, Probe
from probes.config import RunConfig

PER_DEVICE = frozenset({"bandwidth", "matmul"})  # probes measured on every GPU at once
JOIN_S = 10.0  # how long a stopped worker may take to exit before it is killed


def runs_in_parallel(name: str, devices: list[Any], sequential: bool) -> bool:
    """Whether probe `name` runs one process per device on this node."""
    return not sequential and name in PER_DEVICE and len(devices) > 1


def _worker(probe: Probe, cfg: RunConfig, device: str, index: int, options: dict[str, Any], out: Any) -> None:
    import torch

    from probes.context import Context
    from probes.nvml import Nvml

    nvml = Nvml()
    ctx = Context(
        cfg=cfg,
        devices=[torch.device(device)],
        nvml=nvml,
        options={**options, "device_index": index},
        progress=lambda desc: out.put(("progress", index, desc)),
    )
    try:
        ms = probe.run(ctx)
        out.put(("done", index, [m.to_dict() for m in ms]))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # recorded as this device's failure; the other devices go on
        out.put(("failed", index, error_line(exc)))
    finally:
        nvml.shutdown()


def run_per_device(
    name: str | Probe,
    cfg: RunConfig,
    devices: list[Any],
    options: dict[str, Any],
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Run probe `name` on each of `devices` at once, one process each; measurement dicts in device order.

    A device whose worker failed or died contributes one `error` measurement saying so."""
    probe = REGISTRY[name] if isinstance(name, str) else name
    name = probe.name
    spawn = mp.get_context("spawn")
    out = spawn.Queue()
    procs = [
        spawn.Process(target=_worker, args=(probe, cfg, str(d), i, options, out), daemon=True)
        for i, d in enumerate(devices)
    ]
    results: dict[int, list[dict[str, Any]]] = {}
    try:
        for p in procs:
            p.start()
        while len(results) < len(procs):
            try:
                kind, index, payload = out.get(timeout=0.5)
            except queue.Empty:
                for i, p in enumerate(procs):
                    if i not in results and not p.is_alive() and out.empty():
                        results[i] = [_died(name, devices[i], f"its process exited with code {p.exitcode}")]
                continue
            if kind == "progress":
                progress(payload)
            elif kind == "done":
                results[index] = payload
            else:
                results[index] = [_died(name, devices[index], payload)]
    finally:
        _stop(procs)
    return [m for i in range(len(devices)) for m in results[i]]


def _died(name: str, device: Any, why: str) -> dict[str, Any]:
    m = Measurement(probe=name, case="all", device=str(device), params={}, status="error")
    m.error = f"{name} on {device} failed: {why}"
    return m.to_dict()


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + JOIN_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
