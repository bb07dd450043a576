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
an error of that device, beside the cases it finished; so does one that hangs (no word for `SILENCE_S`
plus the health soak: it is killed). Ctrl-C or SIGTERM stops every worker; a worker
dies with its parent even when the parent is SIGKILLed (`probes.interrupt.die_with_parent`).

    python -m probes.all                 # per-GPU probes at once on a multi-GPU node
    python -m probes.all --sequential    # one GPU after another
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from analysis.rundoc import Measurement, error_line
from probes import REGISTRY, Probe
from probes.config import RunConfig

PER_DEVICE = frozenset({"bandwidth", "matmul", "health"})  # probes measured on every GPU at once
JOIN_S = 10.0  # how long a stopped worker may take to exit before it is killed
# A worker says something at every case; one silent this long (plus the health soak, its one long case) is
# hung (a kernel that never ends, a driver call stuck after an XID): killed, and recorded as its device's error.
SILENCE_S = 600.0


def silence_limit_s(cfg: RunConfig) -> float:
    """How long a per-GPU worker may go without a word (progress, a case) before it counts as hung."""
    return SILENCE_S + cfg.health.soak_s


def runs_in_parallel(name: str, devices: list[Any], sequential: bool) -> bool:
    """Whether probe `name` runs one process per device on this node."""
    return not sequential and name in PER_DEVICE and len(devices) > 1


def _worker(
    probe: Probe, cfg: RunConfig, device: str, index: int, options: dict[str, Any], out: Any, parent: int
) -> None:
    from probes.interrupt import die_with_parent

    die_with_parent(parent)
    import torch

    from probes.context import Context
    from probes.nvml import Nvml

    nvml = Nvml()
    # `out` is this worker's end of a pipe: send() writes at once, so a case sent is the parent's even if
    # this process dies right after (a Queue's feeder thread would lose it).
    ctx = Context(
        cfg=cfg,
        devices=[torch.device(device)],
        nvml=nvml,
        options={**options, "device_index": index},
        progress=lambda desc: out.send(("progress", desc)),
        keep=lambda m: out.send(("case", m.to_dict())),  # saved by the parent as it comes
    )
    try:
        ms = probe.run(ctx)
        out.send(("done", [m.to_dict() for m in ms]))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # recorded as this device's failure; the other devices go on
        out.send(("failed", error_line(exc)))
    finally:
        nvml.shutdown()


def run_per_device(
    name: str | Probe,
    cfg: RunConfig,
    devices: list[Any],
    options: dict[str, Any],
    progress: Callable[[str], None],
    keep: Callable[[dict[str, Any]], None] = lambda m: None,
) -> list[dict[str, Any]]:
    """Run probe `name` on each of `devices` at once, one process each; measurement dicts in device order.

    Every finished case is handed to `keep` as it arrives (the runner saves it). A device whose worker failed
    or died contributes the cases it finished and one `error` measurement saying why it stopped."""
    probe = REGISTRY[name] if isinstance(name, str) else name
    name = probe.name
    spawn = mp.get_context("spawn")
    procs, readers = [], {}
    for i, d in enumerate(devices):
        reader, writer = spawn.Pipe(duplex=False)
        args = (probe, cfg, str(d), i, options, writer, os.getpid())
        procs.append(spawn.Process(target=_worker, args=args, daemon=True))
        readers[i] = (reader, writer)
    results: dict[int, list[dict[str, Any]]] = {}
    cases: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(devices))}
    try:
        for p in procs:
            p.start()
        for _, writer in readers.values():
            writer.close()  # only the worker holds its write end now: its exit is an EOF here
        open_ = {i: r for i, (r, _) in readers.items()}
        limit = silence_limit_s(cfg)
        heard = {i: time.monotonic() for i in open_}
        while open_:
            for i in [i for i in open_ if time.monotonic() - heard[i] > limit]:
                procs[i].kill()  # hung: its device's cases so far are kept, the rest is its error
                del open_[i]
                why = f"hung: no word from its process for {limit:.0f} s (killed)"
                results[i] = [*cases[i], _died(name, devices[i], why)]
            for conn in wait(list(open_.values()), timeout=0.5):
                i = next(k for k, r in open_.items() if r is conn)
                heard[i] = time.monotonic()
                try:
                    kind, payload = conn.recv()
                except EOFError:  # the worker is gone; if it said nothing final, it died
                    del open_[i]
                    if i not in results:
                        procs[i].join(JOIN_S)
                        why = f"its process exited with code {procs[i].exitcode}"
                        results[i] = [*cases[i], _died(name, devices[i], why)]
                    continue
                if kind == "progress":
                    progress(payload)
                elif kind == "case":
                    cases[i].append(payload)
                    keep(payload)
                elif kind == "done":
                    results[i] = payload
                else:
                    results[i] = [*cases[i], _died(name, devices[i], payload)]
    finally:
        _stop(procs)
        for reader, _ in readers.values():
            reader.close()
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
