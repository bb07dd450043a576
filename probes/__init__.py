"""Measurement: one module per probe, plus the shared timing, device, config and runner code.

Every probe keeps one contract, written down here as `Probe`: a module with `NAME`, an optional `NOTE` (the
convention its figures follow, copied into the run document), `n_cases(ctx)` (for the progress bar),
`run(ctx) -> list[Measurement]`, and optionally `preflight(devices, cfg, options)`, which refuses bad input
with a ConfigError before anything runs. The registry lists the probes explicitly (no filename discovery);
a module is imported only when its probe is used, so this package imports without torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Probe:
    """One probe of the registry: its name, its module and what it measures."""

    name: str
    module: str
    measures: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def note(self) -> str | None:
        return getattr(self.load(), "NOTE", None)

    def n_cases(self, ctx: Any) -> int:
        return int(self.load().n_cases(ctx))

    def run(self, ctx: Any) -> list[Any]:
        return list(self.load().run(ctx))

    def preflight(self, devices: list[Any], cfg: Any, options: dict[str, Any]) -> None:
        """Refuse bad probe-specific input (a ConfigError) before any probe runs; most probes have none."""
        check = getattr(self.load(), "preflight", None)
        if check is not None:
            check(devices, cfg, options)


REGISTRY: dict[str, Probe] = {
    p.name: p
    for p in (
        Probe("bandwidth", "probes.bandwidth", "device-memory bandwidth, STREAM-style"),
        Probe("hostlink", "probes.hostlink", "host <-> device copies over PCIe / C2C"),
        Probe(
            "latency", "probes.latency", "load-to-use latency (pointer chase), tiny H2D and GPU-to-GPU copies"
        ),
        Probe("matmul", "probes.matmul", "matmul TFLOPS per dtype and decode-shaped GEMMs"),
        Probe("collectives", "probes.collectives", "all-reduce / all-gather / reduce-scatter busbw, P2P"),
        Probe("decode", "probes.decode", "decode steps of a model-shaped decoder"),
        Probe(
            "health", "probes.health", "sustained load, memory test, ECC/XID/PCIe checks: keep or send back"
        ),
    )
}
