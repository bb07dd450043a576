"""Compare two run documents headline by headline: two days on one node, or two nodes of a fleet.

Every headline is a rate (bytes/s, FLOP/s), so higher is better: a figure that dropped by more than the
threshold is a regression, and `python -m analysis compare OLD.json NEW.json` exits 1 so a CI job can gate
on it. Figures present on one side only are listed, not judged.

    python -m analysis compare results/monday.json results/tuesday.json --threshold 10
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Change:
    figure: str
    device: str
    unit: str
    old: float | None
    new: float | None
    change: float | None  # (new - old) / old
    regressed: bool


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float) -> list[Change]:
    """One Change per headline figure of either document; `threshold` is a fraction (0.10 = 10 %)."""
    a = {(s["name"], s["device"]): s for s in old.get("summary", [])}
    b = {(s["name"], s["device"]): s for s in new.get("summary", [])}
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        o, n = a.get(key), b.get(key)
        unit = (o or n)["unit"]
        if o is None or n is None:
            out.append(Change(key[0], key[1], unit, o and o["value"], n and n["value"], None, False))
            continue
        change = (n["value"] - o["value"]) / o["value"]
        out.append(Change(key[0], key[1], unit, o["value"], n["value"], change, change < -threshold))
    return out
