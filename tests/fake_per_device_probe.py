"""A probe for tests/test_parallel.py: one measurement per device, whose value is the device's index;
`die_at` / `raise_at` options make that device's worker die or raise."""

from __future__ import annotations

import os
import time

from analysis.rundoc import Measurement

NAME = "fake"


def n_cases(ctx) -> int:
    return len(ctx.devices)


def run(ctx) -> list[Measurement]:
    index = ctx.options.get("device_index", 0)
    ctx.progress(f"fake on {ctx.devices[0]} #{index}")
    if ctx.options.get("die_at") == index:
        os._exit(3)
    if ctx.options.get("raise_at") == index:
        raise RuntimeError("a driver fault")
    time.sleep(0.2 * (3 - index) if index < 3 else 0)  # finish out of order
    return [
        Measurement(probe=NAME, case="c", device=str(d), params={"index": index}, value=float(index))
        for d in ctx.devices
    ]
