"""A roofline fitted to a run's measurements, and any kernel placed on it.

Ceilings: the memory-bandwidth roof is the run's best DRAM-plateau figure (bytes/s); the compute roof of
each dtype is its best measured matmul. attainable(I) = min(P, I x B) for arithmetic intensity I (FLOP/byte);
the ridge point I* = P / B separates memory-bound from compute-bound kernels.

Real GEMMs fall short of the roof at small M (too few tiles to fill the SMs, launch and tail effects), and
decode runs exactly there. The fit keeps that: for every decode-shaped GEMM the run measured, the efficiency
at M is roofline time / measured time; the median over shapes at each M, interpolated in log M, is the
small-M efficiency curve the decode projection applies to shapes the run did not measure.

    python -m analysis roofline RUN.json [-o roofline.png]
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.formulas import interp_log_x
from analysis.headline import compute_family, dtype_family, headlines


@dataclass
class Roofline:
    bandwidth_bytes_per_s: float
    compute_flop_per_s: dict[str, float]  # per dtype family: fp32, tf32, fp16, bf16, fp8, int8
    # decode GEMMs, per dtype family: measured fraction of the roofline at each M
    efficiency_by_m: dict[str, dict[int, float]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)  # measured kernels, for the plot

    def ridge(self, dtype: str) -> float:
        """I* = P / B, FLOP/byte."""
        return self.compute_flop_per_s[dtype] / self.bandwidth_bytes_per_s

    def attainable(self, intensity: float, dtype: str) -> float:
        return min(self.compute_flop_per_s[dtype], intensity * self.bandwidth_bytes_per_s)

    def place(
        self, flops: float, nbytes: float, seconds: float, dtype: str = "bf16"
    ) -> dict[str, float | str]:
        """Where a kernel sits: its intensity, achieved FLOP/s and byte/s, and the fraction of the attainable."""
        intensity = flops / nbytes if nbytes else math.inf
        achieved = flops / seconds
        attainable = self.attainable(intensity, dtype) if flops else self.bandwidth_bytes_per_s
        fraction = (achieved if flops else nbytes / seconds) / attainable
        return {
            "intensity_flop_per_byte": intensity,
            "achieved_flop_per_s": achieved,
            "achieved_bytes_per_s": nbytes / seconds,
            "attainable": attainable,
            "fraction_of_attainable": fraction,
            "bound": "memory" if intensity < self.ridge(dtype) else "compute",
        }

    def gemm_efficiency(self, m: int, family: str) -> float:
        """Measured fraction of the roofline for a `family` GEMM at M = m (1.0 where the run did not sweep it)."""
        eff = self.efficiency_by_m.get(family)
        return interp_log_x(eff, m) if eff else 1.0


def from_run(doc: dict[str, Any]) -> Roofline | None:
    """The run's roofline, or None when it lacks a DRAM figure or any matmul figure."""
    summary = doc.get("summary", [])
    dram = [s["value"] for _h, s in headlines(summary, "dram")]
    compute: dict[str, float] = {}
    for h, s in headlines(summary, "matmul_peak"):
        fam = h.resource
        compute[fam] = max(compute.get(fam, 0.0), s["value"])
    if not dram or not compute:
        return None
    roof = Roofline(max(dram), compute)
    by_m: dict[str, dict[int, list[float]]] = {}
    for m in doc.get("measurements", []):
        p = m["params"]
        if m["probe"] != "matmul" or m["status"] != "ok" or "flops" not in p:
            continue
        fam = dtype_family(p["dtype"])
        roof.points.append(
            {
                "intensity": p["flops"] / p["bytes_moved"],
                "flop_per_s": m["value"],
                "dtype": fam,
                "kind": p["kind"],
            }
        )
        if p["kind"] == "decode" and compute_family(fam) in compute:
            peak = compute[compute_family(fam)]
            t_roof = max(p["flops"] / peak, p["bytes_moved"] / roof.bandwidth_bytes_per_s)
            by_m.setdefault(fam, {}).setdefault(p["m"], []).append(
                min(1.0, t_roof / m["timing"]["stats"]["median_s"])
            )
    roof.efficiency_by_m = {
        f: {mm: statistics.median(v) for mm, v in sorted(d.items())} for f, d in by_m.items()
    }
    return roof


def plot(roof: Roofline, path: str | Path, title: str, spec: Any = None) -> Path:
    """Log-log roofline: measured points, fitted ceilings (solid) and spec-sheet ceilings (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    xs = [2**i for i in range(-4, 15)]
    colors = {}
    for i, (fam, peak) in enumerate(sorted(roof.compute_flop_per_s.items(), key=lambda kv: kv[1])):
        c = f"C{i}"
        colors[fam] = c
        ax.plot(
            xs,
            [min(peak, x * roof.bandwidth_bytes_per_s) / 1e12 for x in xs],
            color=c,
            label=f"{fam} (measured ceiling)",
        )
        if spec is not None and spec.flop_per_s(fam):
            sp = spec.flop_per_s(fam)
            ax.plot(
                xs,
                [min(sp, x * spec.memory_bytes_per_s) / 1e12 for x in xs],
                color=c,
                linestyle="--",
                alpha=0.6,
                label=f"{fam} (spec sheet)",
            )
    for pt in roof.points:
        ax.scatter(
            pt["intensity"],
            pt["flop_per_s"] / 1e12,
            s=12,
            color=colors.get(pt["dtype"], "grey"),
            marker="o" if pt["kind"] == "decode" else "^",
            alpha=0.7,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("TFLOPS")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    from analysis.plots import save

    return save(
        fig, path, "points: measured GEMMs (o decode-shaped, ^ square); roof: best DRAM plateau x intensity"
    )


def print_roofline(doc: dict[str, Any], run: Path, output: Path | None) -> int:
    """`python -m analysis roofline`: ceilings, ridge points, small-M efficiency, and the PNG; exit code."""
    import sys

    from analysis import specs

    roof = from_run(doc)
    if roof is None:
        print(f"error: {run}: no DRAM bandwidth or matmul figure to fit a roofline to", file=sys.stderr)
        return 2
    name = (doc.get("devices") or [{}])[0].get("name", "")
    key = specs.lookup(name)
    for fam, peak in sorted(roof.compute_flop_per_s.items()):
        print(f"{fam}: {peak / 1e12:.3g} TFLOPS, ridge point {roof.ridge(fam):.1f} FLOP/byte")
    eff = "; ".join(
        f"{fam} " + ", ".join(f"M={m}: {e:.2f}" for m, e in by_m.items())
        for fam, by_m in roof.efficiency_by_m.items()
    )
    eff = eff or "no decode sweep"
    print(
        f"memory: {roof.bandwidth_bytes_per_s / 1e9:.1f} GB/s; decode GEMM fraction of the roof by M: {eff}"
    )
    png = output or run.with_name(run.stem + "_roofline.png")
    print(plot(roof, png, f"Roofline: {name}", specs.get(key) if key else None))
    return 0
