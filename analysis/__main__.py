"""python -m analysis <command>: arithmetic on saved run documents (no torch needed).

python -m analysis report RUN.json     # headline table, errors and skip reasons
python -m analysis plot RUN.json [-o OUT.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape

from analysis.cli import (
    ArgumentParser,
    BadInput,
    check_output_dir,
    check_output_file,
    guard,
    int_list,
    percent,
    positive_int,
)
from analysis.rundoc import load

REPORTS = {"md": (".md", ".markdown"), "html": (".html", ".htm")}
IMAGES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps")


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m analysis", description="Analyse gpuprobe run documents.")
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="the report of a run document: terminal, Markdown or one HTML file")
    rep.add_argument("run", type=Path)
    rep.add_argument("--format", choices=["text", "md", "html"], default="text")
    rep.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="md / html: the file (default: beside the run document)",
    )
    plot = sub.add_parser("plot", help="write the bandwidth-vs-working-set PNG of a run document")
    plot.add_argument("run", type=Path)
    plot.add_argument(
        "-o", "--output", type=Path, default=None, help="PNG path (default: beside the run document)"
    )
    val = sub.add_parser(
        "validate", help="verdicts: each headline figure against the spec sheet and good nodes"
    )
    val.add_argument("run", type=Path)
    roof = sub.add_parser("roofline", help="the run's fitted roofline: ceilings, ridge points, PNG")
    roof.add_argument("run", type=Path)
    roof.add_argument(
        "-o", "--output", type=Path, default=None, help="PNG path (default: beside the run document)"
    )
    aud = sub.add_parser(
        "audit", help="audit throughput claims against the physical bound and our projection"
    )
    aud.add_argument("claims", type=Path)
    cro = sub.add_parser("crossover", help="tokens/s and $/M tokens of two GPU setups across batch sizes")
    cro.add_argument("--model", required=True)
    cro.add_argument("--a", required=True, help="GPU_KEY_OR_RUN.json:DTYPE:TP[:PRICE_PER_GPU_HOUR]")
    cro.add_argument("--b", required=True)
    cro.add_argument("--batch", type=int_list, default="1,2,4,8,16,32,64,128,256")
    cro.add_argument("--input-len", type=positive_int, default=1024)
    cro.add_argument("--output-len", type=positive_int, default=256)
    cro.add_argument("-o", "--output", type=Path, default=Path("crossover.png"))
    flt = sub.add_parser("fleet", help="one row per node; nodes outside the fleet's robust band flagged")
    flt.add_argument("runs", type=Path, nargs="+", help="run documents, or folders of them")
    cmp_ = sub.add_parser("compare", help="two run documents, headline by headline; exit 1 on a regression")
    cmp_.add_argument("old", type=Path)
    cmp_.add_argument("new", type=Path)
    cmp_.add_argument(
        "--threshold",
        type=percent,
        default=10.0,
        help="percent drop that counts as a regression (default 10)",
    )
    exp = sub.add_parser(
        "export", help="the run's calibrated profile for planners (llm-analysis GPU config or JSON)"
    )
    exp.add_argument("run", type=Path)
    exp.add_argument("--format", choices=["llm-analysis", "json", "prometheus"], default="llm-analysis")
    exp.add_argument("-o", "--output", type=Path, default=Path("."), help="folder to write into")
    bt = sub.add_parser(
        "backtest", help="the spec-only decode projection against published decode measurements"
    )
    bt.add_argument("--csv", type=Path, default=None, help="published rows (default: the bundled set)")
    bt.add_argument("--half", choices=["all", "fit", "holdout"], default="all")
    bt.add_argument("--json", action="store_true", help="print the rows as JSON")
    bt.add_argument("--rows", action="store_true", help="print every row before the summaries")
    bt.add_argument(
        "--ttft",
        action="store_true",
        help="the prefill / TTFT projection against published TTFT figures instead",
    )
    from analysis.plan_cli import add_parser as add_plan
    from analysis.project import add_parser as add_project

    add_project(sub)
    add_plan(sub)
    args = ap.parse_args(argv)
    return guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    """The command, its inputs checked at the door (bad input raises BadInput: one line, exit 2)."""
    if getattr(args, "output", None) is not None:
        if args.command == "export":
            check_output_dir(args.output)
        elif args.command == "report":
            if args.format == "text":
                raise BadInput(
                    "-o: the text report goes to the terminal; use --format md or html to write a file"
                )
            check_output_file(args.output, REPORTS[args.format])
        else:
            check_output_file(args.output, IMAGES)
    commands = {
        "project": _project,
        "plan": _plan,
        "backtest": _backtest,
        "compare": _compare,
        "audit": _audit,
        "crossover": _crossover,
        "fleet": _fleet,
    }
    if args.command in commands:
        return commands[args.command](args)
    doc = load(args.run)
    if args.command in ("plot", "roofline") and args.output is None:
        suffix = {"plot": "_bandwidth.png", "roofline": "_roofline.png"}[args.command]
        check_output_file(args.run.with_name(args.run.stem + suffix))
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=140)
    if args.command == "report" and args.format != "text":
        from analysis import share

        out = args.output or check_output_file(args.run.with_name(f"{args.run.stem}_report.{args.format}"))
        print(share.write(doc, args.run, args.format, out))
        return 0
    if args.command == "report":
        from analysis.report import print_report

        print_report(doc, console)
        return 0
    if args.command == "validate":
        from analysis.report import print_verdicts

        print_verdicts(doc, console)
        return 0
    if args.command == "roofline":
        from analysis.roofline import print_roofline

        return print_roofline(doc, args.run, args.output)
    if args.command == "export":
        from analysis import export

        path, notes = export.write(doc, args.format, args.output)
        print(path)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return 0
    from analysis.plots import plot_bandwidth

    out = args.output or args.run.with_name(args.run.stem + "_bandwidth.png")
    path = plot_bandwidth(doc, out)
    if path is None:
        print(f"error: {args.run}: no bandwidth measurements to plot", file=sys.stderr)
        return 2
    print(path)
    return 0


def _console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=140)


def _audit(args: argparse.Namespace) -> int:
    from rich.table import Table

    from analysis import planning, specs
    from analysis.models import ModelConfigError

    rows = []
    for i, c in enumerate(planning.load_claims(args.claims), 1):
        try:
            rows.append(planning.audit_claim(c))
        except (specs.UnknownGPU, ModelConfigError, ValueError) as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise planning.PlanningError(f"{args.claims}: claim {i} ({c['name']}): {msg}") from None
    t = Table(title=escape(f"Claims audit: {args.claims}"))
    for col in ("claim", "counts", "claimed tok/s", "physical bound", "our projection", "verdict", "why"):
        t.add_column(
            col, justify="right" if "tok" in col or col in ("physical bound", "our projection") else "left"
        )
    colors = {"impossible": "red", "optimistic": "yellow", "plausible": "green", "conservative": "cyan"}
    for r in rows:
        c = colors[r["verdict"]]
        t.add_row(
            escape(r["name"]),
            r["counts"],
            f"{r['claimed']:.0f}",
            f"{r['bound']:.0f}",
            f"{r['projected']:.0f}",
            f"[{c}]{r['verdict']}[/{c}]",
            escape(r["why"]),
        )
    _console().print(t)
    return 0


def _crossover(args: argparse.Namespace) -> int:
    from rich.table import Table

    from analysis import planning

    planning.model_check(args.model)
    batches = args.batch
    sides = [planning.parse_side(args.a), planning.parse_side(args.b)]
    try:
        rows = [planning.curve(s, args.model, batches, args.input_len, args.output_len) for s in sides]
    except Exception as exc:  # a TP that does not divide the heads, and the like
        raise planning.PlanningError(exc.args[0] if exc.args else str(exc)) from None
    t = Table(title=escape(f"{args.model}: A = {sides[0].label}, B = {sides[1].label}"))
    for col in ("batch", "A tok/s", "A $/M", "B tok/s", "B $/M", "A/B"):
        t.add_column(col, justify="right")
    for ra, rb in zip(*rows, strict=True):

        def cost(r):
            c = r["cost_per_million_output_tokens"]
            return "-" if c is None else f"{c:.2f}{'' if r['fits'] else '*'}"

        t.add_row(
            str(ra["batch"]),
            f"{ra['output_tokens_per_s']:.0f}",
            cost(ra),
            f"{rb['output_tokens_per_s']:.0f}",
            cost(rb),
            f"{ra['output_tokens_per_s'] / rb['output_tokens_per_s']:.2f}",
        )
    console = _console()
    console.print(t)
    x = planning.crossover(*rows)
    console.print(
        f"crossover: A reaches B's tokens/s at batch {x}"
        if x
        else "crossover: A never reaches B's tokens/s in this batch range"
    )
    console.print("(* over KV capacity)")
    print(planning.plot_crossover(sides, rows, args.model, args.output))
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from rich.table import Table

    from analysis import planning
    from analysis.units import display

    docs, problems = planning.load_fleet(args.runs)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not docs:
        raise planning.PlanningError("no readable run document among the inputs")
    figures, rows, medians = planning.fleet(docs)
    units = {f"{s['name']} [{s['device']}]": s["unit"] for _, d in docs for s in d.get("summary", [])}
    t = Table(title=f"Fleet of {len(rows)} node(s): flagged outside median +- max(3 x MAD, 10 %)")
    t.add_column("node")
    for f in figures:
        t.add_column(f, justify="right")
    t.add_column("flags")
    for r in rows:
        t.add_row(
            escape(f"{r['host']} {r['device']} ({r['file']})"),
            *(" ".join(display(r["values"].get(f), units[f])) for f in figures),
            escape("; ".join(r["flags"]) or "ok"),
        )
    t.add_row("fleet median", *(" ".join(display(medians[f], units[f])) for f in figures), "")
    _console().print(t)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from analysis.compare import compare
    from analysis.units import display

    old, new = load(args.old), load(args.new)
    changes = compare(old, new, args.threshold / 100)
    both = [c for c in changes if c.old is not None and c.new is not None]
    if not both:

        def side(doc: dict) -> str:
            s = doc.get("summary", [])
            return (
                f"{len(s)} on {', '.join(sorted({x['device'] for x in s})) or 'no device'}" if s else "none"
            )

        raise BadInput(
            f"nothing to compare: {args.old.name} and {args.new.name} share no headline figure on the same device "
            f"({args.old.name}: {side(old)}; {args.new.name}: {side(new)}), so no regression can be judged"
        )
    console = Console() if sys.stdout.isatty() else Console(width=140)
    t = Table(
        title=escape(
            f"{args.old.name} -> {args.new.name} (regression: a drop of more than {args.threshold:g} %)"
        )
    )
    for col in ("figure", "device", "old", "new", "change", "flag"):
        t.add_column(col, justify="right" if col in ("old", "new", "change") else "left")
    for c in changes:
        old_s = " ".join(display(c.old, c.unit)) if c.old is not None else "(missing)"
        new_s = " ".join(display(c.new, c.unit)) if c.new is not None else "(missing)"
        change = f"{100 * c.change:+.1f}%" if c.change is not None else "-"
        t.add_row(
            escape(c.figure),
            escape(c.device),
            old_s,
            new_s,
            change,
            "[red]REGRESSION[/red]" if c.regressed else "",
        )
    console.print(t)
    bad = [c for c in changes if c.regressed]
    alone = len(changes) - len(both)
    judged = f"{len(both)} figure(s) compared" + (f", {alone} on one side only (not judged)" if alone else "")
    console.print(
        f"{judged}: " + (f"{len(bad)} regression(s) beyond {args.threshold:g} %" if bad else "no regression")
    )
    return 1 if bad else 0


def _backtest(args: argparse.Namespace) -> int:
    if args.ttft:
        from analysis.ttft_backtest import ttft_command

        return ttft_command(args.csv, args.half, args.json, args.rows)
    from analysis.decode_report import backtest_command

    return backtest_command(args.csv, args.half, args.json, args.rows)


def _plan(args: argparse.Namespace) -> int:
    from analysis.plan_cli import run

    return run(args)


def _project(args: argparse.Namespace) -> int:
    from analysis.project import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
