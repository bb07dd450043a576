"""`python -m probes.profile --trace MODULE:FUNCTION`: trace a step (probes.trace), place it on this node's roofline,
and write it as a run document (one `trace` measurement per op) with the Chrome trace and a roofline PNG beside
it, so `python -m analysis report RUN.json --format html` shows it.

    python -m probes.profile --trace mymodel:make_step --device cuda --run results/RUN.json -o traces/
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from analysis.rundoc import Measurement, create_exclusive, error_line, new_document, write_atomic
from probes.config import ConfigError, load_config


def run_trace(args: argparse.Namespace) -> int:
    from analysis.cli import check_output_dir
    from analysis.rundoc import load
    from probes.device import describe_devices, describe_host, resolve_devices
    from probes.nvml import Nvml
    from probes.runner import tool_info
    from probes.trace import attribute, place, run_traced
    from probes.workload import call_factory, fresh_run_doc, user_frame

    check_output_dir(args.out, "-o")
    devices, note = resolve_devices(args.device)
    device = devices[0]
    made = call_factory(args.trace, device)
    fn = made.fn if hasattr(made, "fn") else made
    if not callable(fn):
        raise ConfigError(f"{args.trace}: returned {type(made).__name__}, not a callable to trace")
    try:
        prof = run_traced(fn, device, args.iterations)
    except Exception as exc:
        raise ConfigError(
            f"{args.trace}: the traced call raised {error_line(exc)}{user_frame(exc)}"
        ) from None
    trace = attribute(prof, device, args.iterations)
    if not trace.rows:
        raise ConfigError(
            f"{args.trace}: the traced call ran no torch op and no kernel: nothing to attribute"
        )
    if args.run:
        roof_doc = load(args.run)
    else:
        print(f"{note}; measuring this node's roofline first (quick bandwidth + matmul)")
        roof_doc = fresh_run_doc(device, load_config(None, "quick", "cpu" if device.type == "cpu" else "gpu"))
    place(trace, roof_doc)
    nvml = Nvml()
    try:
        doc = new_document(
            tool=tool_info(),
            host=describe_host(nvml),
            devices=describe_devices([device], nvml),
            config={"profile": "trace", "target": args.trace, "iterations": args.iterations},
            started=datetime.now(timezone.utc),
        )
    finally:
        nvml.shutdown()
    doc["summary"] = roof_doc.get("summary", [])  # the roofline the ops were placed on
    doc["measurements"] = [_measurement(r, str(device)) for r in trace.rows]
    doc["trace"] = {
        "wall_s": trace.wall_s,
        "device_s": trace.device_s,
        "ops_s": trace.ops_s,
        "idle_share": trace.idle_share,
        "iterations": trace.iterations,
    }
    doc["notes"] = [note, step_note(trace), *([f"roofline from {args.run}"] if args.run else [])]
    doc["status"], doc["finished_utc"] = "completed", datetime.now(timezone.utc).isoformat(timespec="seconds")
    label = "cpu" if device.type == "cpu" else "gpu"
    path = create_exclusive(
        args.out, datetime.now(timezone.utc), doc["host"].get("hostname", "host"), label, doc
    )
    chrome = path.with_name(path.stem + "_trace.json")
    prof.export_chrome_trace(str(chrome))
    doc["notes"].append(f"Chrome trace: {chrome.name} (chrome://tracing or ui.perfetto.dev)")
    write_atomic(doc, path)
    from analysis.trace_report import plot_trace, print_trace

    png = plot_trace(doc, path.with_name(path.stem + "_trace.png"))
    print_trace(doc)
    for p in (path, chrome, png):
        if p is not None:
            print(p)
    return 0


def step_note(trace: Any) -> str:
    share = trace.ops_s / trace.device_s if trace.device_s else 0.0
    return (
        f"traced step: {trace.wall_s * 1e3:.3f} ms wall, {trace.device_s * 1e3:.3f} ms device busy, "
        f"idle share {100 * trace.idle_share:.0f} % (the device waiting for the host), the ops below "
        f"{100 * share:.0f} % of the device time; {trace.iterations} iterations"
    )


def _measurement(r: Any, device: str) -> dict[str, Any]:
    m = Measurement(probe="trace", case=f"{r.name} {r.shapes}".strip(), device=device, params=r.to_params())
    m.value, m.unit = r.seconds, "seconds"
    if r.kind in ("no formula", "kernel (no formula)"):
        m.params["note"] = "no FLOP/byte formula for this op: timed, not placed on the roofline"
    return m.to_dict()
