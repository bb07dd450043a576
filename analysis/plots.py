"""Plots people would rather look at than read: bandwidth against working-set size.

The x axis is the working set (bytes, log scale), the y axis achieved GB/s, one line per access pattern and
variant; the device's last-level cache size is marked, so the cache plateau (left) and the DRAM plateau
(right) are told apart at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless nodes have no display
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from analysis.units import fmt_bytes


def bandwidth_series(doc: dict[str, Any]) -> dict[tuple[str, str, str], list[tuple[int, float]]]:
    """(device, pattern, variant) -> sorted [(working_set_bytes, bytes_per_s)] of the ok bandwidth cases."""
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for m in doc.get("measurements", []):
        if m["probe"] == "bandwidth" and m["status"] == "ok":
            p = m["params"]
            series.setdefault((m["device"], p["pattern"], p["variant"]), []).append(
                (p["working_set_bytes"], m["value"])
            )
    return {k: sorted(v) for k, v in series.items()}


def plot_bandwidth(doc: dict[str, Any], path: str | Path) -> Path | None:
    """Write the bandwidth-vs-working-set PNG; None when the run has no bandwidth figures."""
    series = bandwidth_series(doc)
    if not series:
        return None
    devices = sorted({k[0] for k in series})
    fig, axes = plt.subplots(len(devices), 1, figsize=(9, 4.5 * len(devices)), squeeze=False)
    caches = {
        d.get("torch_device"): d.get("l2_cache_bytes")
        if isinstance(d.get("l2_cache_bytes"), int)
        else d.get("last_level_cache_bytes")
        for d in doc.get("devices", [])
    }
    names = {d.get("torch_device"): d.get("name", "") for d in doc.get("devices", [])}
    headline_sizes: dict[str, set[int]] = {}
    for m in doc.get("measurements", []):
        if m["probe"] == "bandwidth" and m.get("headline"):
            headline_sizes.setdefault(m["device"], set()).add(m["params"]["working_set_bytes"])
    for ax, dev in zip(axes[:, 0], devices, strict=True):
        for (d, pattern, variant), pts in sorted(series.items()):
            if d != dev:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                [y / 1e9 for y in ys],
                marker="o",
                linestyle="-" if variant == "torch" else "--",
                label=f"{pattern} ({variant})",
            )
        cache = caches.get(dev)
        if isinstance(cache, int) and cache > 0:
            ax.axvline(cache, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                "last-level cache",
                (cache, 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=8,
                color="grey",
                ha="right",
            )
        dram = [
            ws
            for (d, _p, _v), pts in series.items()
            if d == dev
            for ws, _ in pts
            if ws in headline_sizes.get(dev, ())
        ]
        if dram:
            ax.axvspan(
                min(dram) / 1.2,
                max(dram) * 1.2,
                color="tab:blue",
                alpha=0.06,
                label="DRAM plateau (headline sizes)",
            )
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt_bytes(x)))
        ax.set_xlabel("working set (all arrays of the kernel)")
        ax.set_ylabel("achieved bandwidth (GB/s, decimal)")
        ax.set_title(f"Memory bandwidth vs working set: {names.get(dev, '')} ({dev})")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path, "bytes counted as STREAM: copy = read + write, triad = 2 reads + 1 write")


def save(fig: Any, path: str | Path, footnote: str = "") -> Path:
    """Every gpuprobe PNG: a grey footnote saying how the figure counts, tight layout, 110 dpi, closed."""
    if footnote:
        fig.text(0.01, 0.005, footnote, fontsize=7, color="grey")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
