"""A run's lifecycle: one run document started, each probe recorded as it ends, the document finished.

The document is written atomically when the run starts and again after every probe, so an interrupted run
keeps what it measured; a probe that raises is recorded as failed and the run goes on. At the end the report,
the verdicts, the plots and a decode projection are printed from the document, by the same analysis
functions `python -m analysis` uses. The command lines (`probes.all`, `probes.torchrun`) only parse flags
and call this.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from analysis.headline import dtype_family
from analysis.rundoc import default_path, error_line, headline_summary, new_document, utc_now, write_atomic
from probes import REGISTRY
from probes.config import REPO_ROOT, RunConfig

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def tool_info() -> dict[str, Any]:
    try:
        from importlib.metadata import version

        v = version("gpuprobe")
    except Exception:
        v = "0.1.0+source"
    commit = "unknown"
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if r.returncode == 0:
            commit = r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"name": "gpuprobe", "version": v, "git_commit": commit, "argv": sys.argv}


def start_document(
    cfg: RunConfig, names: list[str], devices: list[Any], device_note: str, out_dir: Path, nvml: Any
) -> tuple[dict[str, Any], Path]:
    """A new run document for this node, already written to results/<UTC time>_<host>_<device>.json."""
    from probes.device import describe_devices, describe_host

    started = utc_now()
    host = describe_host(nvml)
    doc = new_document(
        tool=tool_info(),
        host=host,
        devices=describe_devices(devices, nvml),
        config={**cfg.to_dict(), "selected_probes": names},
        started=started,
    )
    label = "cpu" if devices[0].type == "cpu" else f"{len(devices)}x{doc['devices'][0]['name']}"
    path = default_path(out_dir, started, host["hostname"], label)
    doc["notes"].append(device_note)
    write_atomic(doc, path)
    return doc, path


def record_probe(
    doc: dict[str, Any],
    path: Path,
    name: str,
    seconds: float,
    ms: list[Any] | None = None,
    exc: BaseException | None = None,
) -> None:
    """Add one probe's measurements (or its failure) to the document, and rewrite it atomically."""
    if exc is None:
        doc["measurements"].extend(m if isinstance(m, dict) else m.to_dict() for m in ms or [])
        doc["probes"][name] = {"status": "completed", "seconds": seconds}
        note = REGISTRY[name].note
        if note and note not in doc["notes"]:
            doc["notes"].append(note)
    else:
        msg = f"probe {name} failed: {error_line(exc)}"
        doc["errors"].append(msg)
        doc["probes"][name] = {"status": "failed", "seconds": seconds, "error": msg}
    doc["summary"] = headline_summary(doc["measurements"])
    write_atomic(doc, path)


def finish_document(doc: dict[str, Any], path: Path, status: str, seconds: float) -> None:
    doc["status"] = status
    doc["finished_utc"] = utc_now().isoformat(timespec="seconds")
    doc["seconds"] = seconds
    doc["summary"] = headline_summary(doc["measurements"])
    write_atomic(doc, path)


def print_outputs(doc: dict[str, Any], path: Path) -> None:
    """The report, the plot, and where both are."""
    from rich.console import Console

    from analysis.plots import plot_bandwidth
    from analysis.report import print_report, print_run_analysis

    # Tables are wide; a pipe or a log file gets 140 columns rather than rich's 80-column default.
    out = Console() if sys.stdout.isatty() else Console(width=140)
    print_report(doc, out)
    png = plot_bandwidth(doc, path.with_name(path.stem + "_bandwidth.png"))
    if png is not None:
        out.print(f"bandwidth plot: {png}")
    mm = doc["config"].get("matmul", {})
    # project in the dtype the run measured decode GEMMs in, so the fitted small-M efficiency applies
    dtype = dtype_family(next(iter(mm.get("decode_dtypes") or ["bf16"])))
    print_run_analysis(doc, path, list(mm.get("decode_models", [])), dtype, out)
    out.print(f"run document: {path}")


def run(
    cfg: RunConfig,
    names: list[str],
    devices: list[Any],
    device_note: str,
    out_dir: Path,
    options: dict[str, Any] | None = None,
) -> int:
    """Run the named probes on `devices` into one run document; returns the exit code (0, or 130)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from probes.context import Context
    from probes.nvml import Nvml
    from probes.parallel import run_per_device, runs_in_parallel

    console = Console(stderr=True)
    console.print(device_note)
    nvml = Nvml()
    doc, path = start_document(cfg, names, devices, device_note, out_dir, nvml)
    ctx = Context(cfg=cfg, devices=devices, nvml=nvml, options=dict(options or {}))
    t_run = time.perf_counter()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            for name in names:
                probe = REGISTRY[name]
                task = progress.add_task(name, total=probe.n_cases(ctx))

                def advance(desc: str, task: Any = task) -> None:
                    progress.update(task, advance=1, description=desc)

                ctx.progress = advance
                t0 = time.perf_counter()
                try:
                    if runs_in_parallel(name, devices, bool(ctx.options.get("sequential"))):
                        ms = run_per_device(name, cfg, devices, ctx.options, advance)
                    else:
                        ms = probe.run(ctx)
                    record_probe(doc, path, name, time.perf_counter() - t0, ms=ms)
                except Exception as exc:  # a probe bug must not cost the other probes' results
                    record_probe(doc, path, name, time.perf_counter() - t0, exc=exc)
                progress.update(task, description=f"{name} done")
    except KeyboardInterrupt:
        finish_document(doc, path, "interrupted", time.perf_counter() - t_run)
        console.print(f"interrupted; what was measured is in {path}")
        return EXIT_INTERRUPTED
    finally:
        nvml.shutdown()
    finish_document(doc, path, "completed", time.perf_counter() - t_run)
    print_outputs(doc, path)
    return 0
