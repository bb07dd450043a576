"""Run every probe of a profile on a node and write one run document, a report and a plot.

    python -m probes.all                       # quick profile; all GPUs, or the CPU when there is none
    python -m probes.all --device cpu --profile full --out results/
    python -m probes.all --only bandwidth      # or --skip hostlink; --config my-bench.toml

This module parses the flags and refuses bad input (exit 2) before anything is measured; `probes.runner`
runs the probes. The run document (results/<UTC time>_<host>_<device>_<pid>.json) is rewritten
atomically within seconds of every finished case, so an interrupted run keeps what it measured. A case that
fails (wrong result, out of memory, no such dtype) is recorded and the run goes on. Exit codes: 0 the run completed (even with recorded case errors, which the
report lists), 2 bad input (config, flags), 130 / 143 / 129 interrupted by SIGINT / SIGTERM / SIGHUP (the
document, marked "interrupted", keeps every finished case, and the report of them is still printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from analysis.cli import (
    EXIT_BAD_INPUT,
    ArgumentParser,
    BadInput,
    bounded,
    check_output_dir,
    guard,
    nonneg_int,
    positive_float,
    positive_int,
    word,
)
from probes import REGISTRY
from probes.config import ConfigError, RunConfig, load_config
from probes.interrupt import as_interrupts, describe, exit_code
from probes.runner import run
from probes.sections import MAX_MEMORY_FRACTION


def parse_args(argv: list[str] | None, prog: str = "python -m probes.all") -> argparse.Namespace:
    ap = ArgumentParser(
        prog=prog,
        description="Measure what this node delivers: memory bandwidth, host link, ... (see bench.toml).",
    )
    ap.add_argument(
        "--profile",
        default=None,
        type=word,
        help="profile in bench.toml (default: its default_profile, 'quick')",
    )
    ap.add_argument(
        "--device",
        default="auto",
        type=word,
        help="auto (GPUs if any, else CPU), cpu, cuda (all GPUs) or cuda:N",
    )
    ap.add_argument(
        "--out", default="results", type=word, help="folder for the run document and plots (default: results)"
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PROBE",
        help="run only these probes; repeatable or comma-separated: "
        + "; ".join(f"{p.name} ({p.measures})" for p in REGISTRY.values()),
    )
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PROBE",
        help="skip these probes; repeatable or comma-separated",
    )
    ap.add_argument(
        "--config",
        default=None,
        type=word,
        help="bench.toml to use (default: ./bench.toml, else the shipped one)",
    )
    ap.add_argument(
        "--world-size",
        type=positive_int,
        default=None,
        help="collectives: processes (default: one per GPU, or [collectives] cpu_world_size on a CPU)",
    )
    ap.add_argument(
        "--backend",
        default="auto",
        type=word,
        help="collectives: auto (NCCL on GPUs, gloo on CPUs), gloo or nccl",
    )
    ap.add_argument(
        "--port",
        type=port_number,
        default=0,
        help="collectives: rendezvous port on 127.0.0.1 (default: a free one)",
    )
    ap.add_argument(
        "--soak-s",
        type=positive_float,
        default=None,
        help="health: seconds of sustained load (bench.toml [health])",
    )
    ap.add_argument(
        "--memory-fraction",
        type=memory_fraction,
        default=None,
        help="health: fraction of the free memory the memory test writes and verifies, at most 0.95",
    )
    ap.add_argument(
        "--report",
        action="append",
        choices=["md", "html"],
        default=[],
        help="also write a shareable report beside the run document: md (Markdown) or html (one file); repeatable",
    )
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="per-GPU probes (bandwidth, matmul) one GPU after another, not on every GPU at once",
    )
    return ap.parse_args(argv)


def select_probes(cfg: RunConfig, only: list[str], skip: list[str]) -> list[str]:
    """The probes to run: the profile's, or --only's, minus --skip; unknown names are a ConfigError."""

    def names(values: list[str], flag: str) -> list[str]:
        out = [n.strip() for v in values for n in v.split(",") if n.strip()]
        if values and not out:
            raise ConfigError(f"{flag} {values[0]!r}: no probe named (known: {', '.join(REGISTRY)})")
        for n in out:
            if n not in REGISTRY:
                raise ConfigError(f"{flag} {n}: unknown probe (known: {', '.join(REGISTRY)})")
        return out

    chosen = names(only, "--only") or list(cfg.probes)
    skipped = set(names(skip, "--skip"))
    result = [p for p in chosen if p not in skipped]
    if not result:
        raise ConfigError("nothing to run: every probe was skipped")
    return result


memory_fraction = bounded(
    positive_float, lambda v: v <= MAX_MEMORY_FRACTION, "at most 0.95 (the driver and the soak need the rest)"
)


def with_flags(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """bench.toml's values with the command line's on top (--soak-s, --memory-fraction)."""
    health = cfg.health
    if args.soak_s is not None:
        health = dataclasses.replace(health, soak_s=args.soak_s)
    if args.memory_fraction is not None:
        health = dataclasses.replace(health, memory_fraction=args.memory_fraction)
    return dataclasses.replace(cfg, health=health)


def check_out_dir(out: str) -> Path:
    """--out: a folder that can be written into (made if missing); else a ConfigError, before measuring."""
    try:
        return check_output_dir(Path(out), what="--out")
    except BadInput as exc:
        raise ConfigError(str(exc)) from None


port_number = bounded(nonneg_int, lambda v: v <= 65535, "a port is 1..65535 (0: a free one)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with as_interrupts():  # Ctrl-C, SIGTERM, SIGHUP: what was measured is kept, exit 128 + signal
        return guard(lambda: _started(args))


def probe_main(name: str, argv: list[str] | None = None) -> int:
    """`python -m probes.NAME`: the whole run lifecycle for probe NAME alone (the flags of probes.all)."""
    argv = sys.argv[1:] if argv is None else argv
    for flag in ("--only", "--skip"):
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            print(
                f"python -m probes.{name}: error: {flag} does not apply (this runs {name} only; "
                f"use python -m probes.all {flag} ...)",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
    return main(["--only", name, *argv])


def _started(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except KeyboardInterrupt as exc:  # before the run document existed: nothing was measured
        print(f"interrupted by {describe(exc)} before anything was measured", file=sys.stderr)
        return exit_code(exc)


def _main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.profile)
        names = select_probes(cfg, args.only, args.skip)
        out_dir = check_out_dir(args.out)
        # torch is imported only now: a bad flag or config answers at once, without the import's seconds.
        from probes.device import resolve_devices

        devices, device_note = resolve_devices(args.device)
        # The profile's [profiles.NAME.cpu|gpu] overrides: sizes that suit the hardware actually measured.
        cfg = load_config(args.config, args.profile, "cpu" if devices[0].type == "cpu" else "gpu")
        cfg = with_flags(cfg, args)
        options = {
            "world_size": args.world_size,
            "backend": args.backend,
            "port": args.port,
            "sequential": args.sequential,
            "reports": list(dict.fromkeys(args.report)),
        }
        for name in names:  # e.g. a bad --world-size, --backend or --port: stop before anything runs
            REGISTRY[name].preflight(devices, cfg, options)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(cfg, names, devices, device_note, out_dir, options)


if __name__ == "__main__":
    sys.exit(main())
