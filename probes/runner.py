"""A run's lifecycle: one run document started, each case saved as it ends, each probe recorded, finished.

The document is written atomically when the run starts, within seconds of every finished case and after
every probe, so an interrupted run (Ctrl-C, SIGTERM: `probes.interrupt`) keeps every case it finished; a
probe that raises is recorded as failed with the cases it finished, and the run goes on. At the end the report,
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
from analysis.rundoc import (
    create_exclusive,
    error_line,
    headline_summary,
    measurement_text,
    new_document,
    utc_now,
    write_atomic,
)
from probes import REGISTRY
from probes.config import REPO_ROOT, RunConfig
from probes.schedule import Schedule


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


class RunRecord:
    """One run document in the making: started, every finished case saved as it comes, every probe recorded.

    The document on disk is rewritten atomically when the run starts, after every finished case (the probe
    in flight with its cases so far, its status "running") and after every probe, so a signal, a crash, an
    out-of-memory kill or a SIGKILL loses no finished case. Each measurement is serialized once
    (`measurement_text`), so a save costs milliseconds even for a document of a thousand cases; saves after a
    case skip the fsync (a killed process loses nothing by it), saves after a probe do not.
    """

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self.doc, self.path = doc, path
        self.texts = [measurement_text(m) for m in doc["measurements"]]
        self.probe: str | None = None  # the probe in flight
        self.t_probe = 0.0
        self.cases: list[dict[str, Any]] = []  # its finished cases, as saved
        self.case_texts: list[str] = []

    @classmethod
    def start(
        cls, cfg: RunConfig, names: list[str], devices: list[Any], device_note: str, out_dir: Path, nvml: Any
    ) -> RunRecord:
        """A new document for this node: results/<UTC time>_<host>_<device>_<pid>.json, already on disk."""
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
        doc["notes"].append(device_note)
        path = create_exclusive(out_dir, started, host["hostname"], label, doc)  # published whole
        return cls(doc, path)

    def begin(self, name: str) -> None:
        self.probe, self.t_probe, self.cases, self.case_texts = name, time.perf_counter(), [], []
        self.doc["probes"][name] = {"status": "running", "seconds": 0.0}

    def keep(self, m: Any) -> None:
        """A finished case of the probe in flight: on disk before the next case starts."""
        d = m if isinstance(m, dict) else m.to_dict()
        self.cases.append(d)
        self.case_texts.append(measurement_text(d))
        self.save(durable=False)

    def end(
        self, ms: list[Any] | None = None, exc: BaseException | None = None, interrupted: str | None = None
    ) -> None:
        """The probe in flight ended: with its measurements `ms`, by an exception `exc` (the cases finished
        before it are kept), or interrupted by a signal (named in `interrupted`; its finished cases kept)."""
        name, doc = self.probe, self.doc
        if name is None:
            return
        seconds = time.perf_counter() - self.t_probe
        if ms is not None:
            kept = [m if isinstance(m, dict) else m.to_dict() for m in ms]
            texts = [measurement_text(m) for m in kept]
        else:
            kept, texts = self.cases, self.case_texts
        if interrupted:
            entry = {"status": "interrupted", "seconds": seconds, "cases_kept": len(kept)}
            entry["error"] = f"probe {name} interrupted by {interrupted}"
        elif exc is not None:
            msg = f"probe {name} failed: {error_line(exc)}"
            doc["errors"].append(msg)
            entry = {"status": "failed", "seconds": seconds, "error": msg, "cases_kept": len(kept)}
        else:
            entry = {"status": "completed", "seconds": seconds}
            note = REGISTRY[name].note if name in REGISTRY else None
            if note and note not in doc["notes"]:
                doc["notes"].append(note)
        doc["measurements"] = doc["measurements"] + kept
        self.texts = self.texts + texts
        doc["probes"][name] = entry
        self.probe, self.cases, self.case_texts = None, [], []
        self.save()

    def finish(self, status: str, seconds: float) -> None:
        from analysis.health import as_records, judge

        verdicts = judge(self.doc)
        if verdicts:  # keep or send back, per device, in words (analysis.health)
            self.doc["health"] = as_records(verdicts)
        self.doc["status"] = status
        self.doc["finished_utc"] = utc_now().isoformat(timespec="seconds")
        self.doc["seconds"] = seconds
        self.save()

    def save(self, durable: bool = True) -> None:
        doc, texts = self.doc, self.texts
        doc["summary"] = headline_summary(doc["measurements"] + self.cases)
        write_atomic(doc, self.path, texts + self.case_texts, durable)


def print_outputs(doc: dict[str, Any], path: Path, reports: list[str] | None = None) -> None:
    """The report, the plots, the shareable reports asked for (`--report md|html`), and where they are."""
    from rich.console import Console

    from analysis.health import plot_timeline
    from analysis.plots import plot_bandwidth
    from analysis.report import print_report, print_run_analysis

    # Tables are wide; a pipe or a log file gets 140 columns rather than rich's 80-column default.
    out = Console() if sys.stdout.isatty() else Console(width=140)
    print_report(doc, out)
    png = plot_bandwidth(doc, path.with_name(path.stem + "_bandwidth.png"))
    if png is not None:
        out.print(f"bandwidth plot: {png}", markup=False)
    timeline = plot_timeline(doc, path.with_name(path.stem + "_health.png"))
    if timeline is not None:
        out.print(f"health timeline: {timeline}", markup=False)
    mm = doc["config"].get("matmul", {})
    # project in the dtype the run measured decode GEMMs in, so the fitted small-M efficiency applies
    dtype = dtype_family(next(iter(mm.get("decode_dtypes") or ["bf16"])))
    print_run_analysis(doc, path, list(mm.get("decode_models", [])), dtype, out)
    from analysis.share import write

    for fmt in reports or []:
        out.print(
            f"{fmt} report: {write(doc, path, fmt, path.with_name(f'{path.stem}_report.{fmt}'))}",
            markup=False,
        )
    out.print(f"run document: {path}", markup=False)


def run(
    cfg: RunConfig,
    names: list[str],
    devices: list[Any],
    device_note: str,
    out_dir: Path,
    options: dict[str, Any] | None = None,
) -> int:
    """Run the named probes on `devices` into one run document; returns the exit code.

    0 when the run completed; 128 + the signal's number (130 Ctrl-C, 143 SIGTERM) when a signal stopped it:
    then the probe in flight keeps its finished cases, the document says "interrupted", and the report and
    plots of what was measured are still written. Call it inside `probes.interrupt.as_interrupts()` for
    SIGTERM and SIGHUP to count as interrupts (`probes.all` does)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from probes.context import Context
    from probes.interrupt import describe, exit_code
    from probes.nvml import Nvml
    from probes.parallel import run_per_device, runs_in_parallel

    console = Console(stderr=True)
    console.print(device_note, markup=False)
    nvml = Nvml()
    t_run = time.perf_counter()
    record: RunRecord | None = None
    schedule: Schedule | None = None
    try:
        record = RunRecord.start(cfg, names, devices, device_note, out_dir, nvml)
        ctx = Context(cfg=cfg, devices=devices, nvml=nvml, options=dict(options or {}), keep=record.keep)
        schedule = Schedule.start(cfg, names, devices, bool(ctx.options.get("sequential")))
        with Progress(
            TextColumn("{task.description}", markup=False),
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
                ctx.options.update(schedule.options_for(name))
                record.begin(name)
                t_probe = time.time()
                try:
                    if runs_in_parallel(name, devices, bool(ctx.options.get("sequential"))):
                        ms = run_per_device(name, cfg, devices, ctx.options, advance, record.keep)
                    else:
                        ms = probe.run(ctx)
                    record.end(ms)
                except Exception as exc:  # a probe bug must not cost the other probes' results
                    record.end(exc=exc)
                schedule.done(name, time.time() - t_probe)
                progress.update(task, description=f"{name} done")
    except KeyboardInterrupt as exc:
        if record is None:
            console.print(f"interrupted by {describe(exc)} before anything was measured", markup=False)
            return exit_code(exc)
        record.end(interrupted=describe(exc))
        _note_schedule(record, schedule)
        record.finish("interrupted", time.perf_counter() - t_run)
        n = sum(m.get("status") == "ok" for m in record.doc["measurements"])
        console.print(
            f"interrupted by {describe(exc)}: {n} measured cases kept in {record.path}", markup=False
        )
        if n:
            print_outputs(record.doc, record.path, (options or {}).get("reports"))
        return exit_code(exc)
    finally:
        nvml.shutdown()
    _note_schedule(record, schedule)
    record.finish("completed", time.perf_counter() - t_run)
    print_outputs(record.doc, record.path, (options or {}).get("reports"))
    return 0


def _note_schedule(record: RunRecord, schedule: Schedule | None) -> None:
    note = schedule.note(record.doc["measurements"]) if schedule is not None else None
    if note:
        record.doc["notes"].append(note)
