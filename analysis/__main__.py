"""python -m analysis <command>: arithmetic on saved run documents (no torch needed).

python -m analysis report RUN.json     # headline table, errors and skip reasons
python -m analysis plot RUN.json [-o OUT.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probes.results import RunDocumentError, load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description="Analyse gpuprobe run documents.")
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print the report of a run document")
    rep.add_argument("run", type=Path)
    plot = sub.add_parser("plot", help="write the bandwidth-vs-working-set PNG of a run document")
    plot.add_argument("run", type=Path)
    plot.add_argument(
        "-o", "--output", type=Path, default=None, help="PNG path (default: beside the run document)"
    )
    args = ap.parse_args(argv)
    try:
        doc = load(args.run)
    except RunDocumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "report":
        from rich.console import Console

        from analysis.report import print_report

        print_report(doc, Console() if sys.stdout.isatty() else Console(width=140))
        return 0
    from analysis.plots import plot_bandwidth

    out = args.output or args.run.with_name(args.run.stem + "_bandwidth.png")
    path = plot_bandwidth(doc, out)
    if path is None:
        print(f"error: {args.run}: no bandwidth measurements to plot", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
