"""A probe for tests/test_parallel.py: a first case handed to `ctx.keep` as soon as it is measured, then one
measurement per device whose value is the device's index; `die_at` / `raise_at` / `hang_at` options make
that device's worker die, raise or hang after its first case."""

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
    first = Measurement(
        probe=NAME, case="first", device=str(ctx.devices[0]), params={"index": index}, value=1.0
    )
    ctx.keep(first)
    if ctx.options.get("die_at") == index:
        os._exit(3)
    if ctx.options.get("hang_at") == index:
        time.sleep(3600)
    if ctx.options.get("raise_at") == index:
        raise RuntimeError("a driver fault")
    time.sleep(0.2 * (3 - index) if index < 3 else 0)  # finish out of order
    return [first] + [
        Measurement(probe=NAME, case="c", device=str(d), params={"index": index}, value=float(index))
        for d in ctx.devices
    ]
