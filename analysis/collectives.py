"""The collective time-vs-size curve of a run, for planners: look up the time of any message size.

Between measured sizes the time is interpolated linearly in log(size)-log(time) space, where a collective's
curve is close to straight on each side of its knee (latency-bound below, bandwidth-bound above). Below the
smallest size the latency floor holds; above the largest, the time grows at the plateau bandwidth.

    from analysis.collectives import curve
    c = curve(doc, "all_reduce", "bf16")
    c.seconds(2 * 8192 * 2)      # one TP all-reduce of a (batch 2, hidden 8192) bf16 activation
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Curve:
    op: str
    dtype: str
    world_size: int
    sizes_bytes: tuple[int, ...]  # ascending
    seconds_at: tuple[float, ...]  # the slowest rank's median at each size

    def seconds(self, size_bytes: float) -> float:
        """Time of one collective of `size_bytes` (the whole buffer, as nccl-tests counts it)."""
        xs, ys = self.sizes_bytes, self.seconds_at
        if size_bytes <= xs[0]:
            return ys[0]
        if size_bytes >= xs[-1]:
            return ys[-1] * size_bytes / xs[-1]
        for i in range(1, len(xs)):
            if size_bytes <= xs[i]:
                f = (math.log(size_bytes) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
                return math.exp(math.log(ys[i - 1]) + f * (math.log(ys[i]) - math.log(ys[i - 1])))
        raise AssertionError("unreachable")  # pragma: no cover

    def latency_floor_s(self, n: int = 3) -> float:
        """Median time of the `n` smallest sizes: what a tiny message costs whatever its size."""
        return statistics.median(self.seconds_at[:n])

    def plateau_algbw(self, n: int = 3) -> float:
        """Median algbw (bytes/s) of the `n` largest sizes."""
        return statistics.median(
            s / t for s, t in zip(self.sizes_bytes[-n:], self.seconds_at[-n:], strict=True)
        )


def curves(doc: dict[str, Any]) -> list[Curve]:
    """Every (op, dtype) curve of the ok collective measurements of a run document."""
    groups: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    for m in doc.get("measurements", []):
        p = m["params"]
        if m["probe"] == "collectives" and m["status"] == "ok" and "time_s" in p:
            groups.setdefault((p["op"], p["dtype"], p["world_size"]), []).append(
                (p["size_bytes"], p["time_s"])
            )
    out = []
    for (op, dtype, n), pts in sorted(groups.items()):
        pts.sort()
        out.append(Curve(op, dtype, n, tuple(s for s, _ in pts), tuple(t for _, t in pts)))
    return out


def curve(doc: dict[str, Any], op: str, dtype: str) -> Curve | None:
    return next((c for c in curves(doc) if c.op == op and c.dtype == dtype), None)
