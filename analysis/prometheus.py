"""A run's headline figures and health verdicts as a node_exporter textfile (`gpuprobe.prom`), for Prometheus.

node_exporter's textfile collector reads `*.prom` files from one folder (`--collector.textfile.directory`);
DCGM's exporter feeds the same dashboards. Every gauge carries `node` (the host) and `device`, plus what tells
figures apart (`pattern`/`variant`, `dtype`, `op`, `direction`/`memory`); units are in the names, SI, as
Prometheus expects (bytes per second, FLOP per second, seconds). Health verdicts are 0 pass, 1 warn, 2 fail.
Written with prometheus_client (atomically: a temporary file, then a rename, so the collector never reads half
a file).

    python -m analysis export RUN.json --format prometheus -o /var/lib/node_exporter/textfile/
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from analysis.headline import Headline
from analysis.rundoc import SCHEMA

FILE = "gpuprobe.prom"
VERDICT = {"pass": 0, "warn": 1, "fail": 2}

# metric of a headline -> (gauge name, help, label names of its subject and variant)
GAUGES: dict[str, tuple[str, str, tuple[str, str]]] = {
    "dram": (
        "gpuprobe_memory_bandwidth_bytes_per_second",
        "DRAM plateau bandwidth (STREAM counting)",
        ("pattern", "variant"),
    ),
    "matmul_peak": ("gpuprobe_matmul_flops_per_second", "best matmul FLOP/s per dtype", ("dtype", "variant")),
    "busbw": (
        "gpuprobe_collective_busbw_bytes_per_second",
        "collective bus bandwidth (nccl-tests)",
        ("op", "dtype"),
    ),
    "host_link": (
        "gpuprobe_host_link_bytes_per_second",
        "host <-> device copy bandwidth",
        ("direction", "memory"),
    ),
    "op_overhead": ("gpuprobe_op_overhead_seconds", "seconds per tiny op back to back", ("mode", "variant")),
    "latency": (
        "gpuprobe_latency_seconds",
        "one dependent load (pointer chase) or one tiny copy (host to device, GPU to GPU)",
        ("level", "how"),
    ),
    "sustained": (
        "gpuprobe_sustained_flops_per_second",
        "FLOP/s held under a long soak (health)",
        ("dtype", "variant"),
    ),
}


def registry(doc: dict[str, Any]) -> Any:
    """A prometheus_client registry holding the run's gauges."""
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    node = str(doc.get("host", {}).get("hostname", "unknown"))
    gauges: dict[str, Any] = {}
    for row in doc.get("summary", []):
        h = Headline.try_parse(row.get("name", ""))
        if h is None or h.metric not in GAUGES:
            continue
        name, text, (a, b) = GAUGES[h.metric]
        if name not in gauges:
            gauges[name] = Gauge(name, text, ["node", "device", a, b], registry=reg)
        gauges[name].labels(node, row["device"], h.subject, h.variant).set(row["value"])
        e = row.get("energy") or {}
        if isinstance(
            e.get("joules_per"), (int, float)
        ):  # NVML-measured energy per unit of the figure's work
            if "energy" not in gauges:
                gauges["energy"] = Gauge(
                    "gpuprobe_energy_joules_per_unit",
                    "energy per unit of a headline's work (per: TFLOP, GB, token) from NVML",
                    ["node", "device", "figure", "per"],
                    registry=reg,
                )
            gauges["energy"].labels(node, row["device"], row["name"], e["per"]).set(e["joules_per"])
    health = doc.get("health") or []
    if health:
        g = Gauge(
            "gpuprobe_health_verdict",
            "node health verdict: 0 pass, 1 warn, 2 fail",
            ["node", "device"],
            registry=reg,
        )
        for h in health:
            g.labels(node, h["device"]).set(VERDICT[h["verdict"]])
    info = Gauge(
        "gpuprobe_run_info",
        "the run these figures come from (1)",
        ["node", "profile", "status", "schema"],
        registry=reg,
    )
    info.labels(node, str(doc.get("config", {}).get("profile", "?")), doc["status"], SCHEMA).set(1)
    when = doc.get("finished_utc") or doc.get("started_utc")
    stamp = Gauge(
        "gpuprobe_run_timestamp_seconds", "when the run finished (Unix time)", ["node"], registry=reg
    )
    stamp.labels(node).set(datetime.fromisoformat(when).timestamp())
    return reg


def write(doc: dict[str, Any], out_dir: Path) -> Path:
    """`out_dir/gpuprobe.prom`, written atomically by prometheus_client."""
    from prometheus_client import write_to_textfile

    path = out_dir / FILE
    write_to_textfile(str(path), registry(doc))
    return path
