"""One command that proves a GPU node: the test suite on its GPUs, the self-checks, the quick profile, one screen.

Whoever is lent a GPU runs this first. Each step runs in its own process with a time limit; a failed step never
stops the others, and the summary says what passed and what to look at:

    1. tests      the suite (not the slow end-to-end runs): on a GPU node the GPU-marked tests run for real
    2. selfcheck  the timing method against a bare loop: matmul and bandwidth (collectives with 2+ GPUs);
                  a ratio below 0.95 means the harness under-reports
    3. profile    python -m probes.all (quick, health included) with a Markdown report; then the verdicts
                  against the sheet, the health verdicts and every error of the run document

    python -m probes.acceptance                          # from a checkout, on the node: ~8 min on one GPU
    python -m probes.acceptance --skip tests --out acc/  # a later rerun without the suite
    python -m probes.acceptance --device cpu             # the same steps on a CPU (figures are CPU figures)

Exit code 0 when every step passed and nothing failed its verdict, 1 otherwise, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from analysis.cli import ArgumentParser, check_output_dir, guard, positive_float, word

REPO = Path(__file__).resolve().parents[1]
STEPS = ("tests", "selfcheck", "profile")
SELFCHECK_OK = (0.95, 1.5)  # probe / bare loop: under 0.95 the harness under-reports


@dataclass
class Step:
    name: str
    ok: bool = True
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)  # what it found, one line each
    look_at: list[str] = field(default_factory=list)  # what needs a person's eye


def _run(cmd: list[str], timeout_s: float) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n(timed out after {timeout_s:.0f} s)", time.perf_counter() - t0


def tests_step(timeout_s: float) -> Step:
    s = Step("tests")
    if not (REPO / "tests").is_dir():
        s.ok, s.lines = False, ["no tests/ folder: run from a checkout of the repository"]
        return s
    rc, out, s.seconds = _run([sys.executable, "-m", "pytest", "tests", "-q", "-m", "not slow"], timeout_s)
    summary = next((ln for ln in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed)", ln)), "")
    s.lines.append(summary.strip("= ") or f"pytest exited {rc}")
    s.ok = rc == 0
    s.look_at += [ln.strip() for ln in out.splitlines() if ln.startswith("FAILED")][:10]
    if rc == 124:
        s.look_at.append(f"the suite did not finish in {timeout_s:.0f} s")
    return s


def selfcheck_step(device: str, gpus: int, timeout_s: float) -> Step:
    s = Step("selfcheck")
    checks = ["matmul", "bandwidth"] + (["collectives"] if gpus >= 2 or device == "cpu" else [])
    for check in checks:
        cmd = [sys.executable, "-m", "probes.selfcheck", check, "--device", device, "--rounds", "3"]
        rc, out, dt = _run([*cmd, "--seconds", "0.5"], timeout_s)
        s.seconds += dt
        ratios = [float(x) for x in re.findall(r"ratio\D{0,20}?(\d+\.\d+)", out)]
        if rc != 0 or not ratios:
            s.ok = False
            s.look_at.append(
                f"selfcheck {check}: exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"
            )
            continue
        r = ratios[-1]
        s.lines.append(f"selfcheck {check}: probe / bare loop = {r:.2f}")
        if not SELFCHECK_OK[0] <= r <= SELFCHECK_OK[1]:
            s.ok = False
            s.look_at.append(f"selfcheck {check}: ratio {r:.2f} outside {SELFCHECK_OK[0]}-{SELFCHECK_OK[1]}")
    return s


def profile_step(args: argparse.Namespace, timeout_s: float) -> Step:
    from analysis import health, verdicts
    from analysis.rundoc import load

    s = Step("profile")
    before = set(args.out.glob("*.json"))
    cmd = [
        sys.executable,
        "-m",
        "probes.all",
        "--device",
        args.device,
        "--out",
        str(args.out),
        "--report",
        "md",
    ]
    if args.profile:
        cmd += ["--profile", args.profile]
    if args.config:
        cmd += ["--config", str(args.config)]
    rc, out, s.seconds = _run(cmd, timeout_s)
    docs = sorted(set(args.out.glob("*.json")) - before)
    if not docs:
        s.ok = False
        s.look_at.append(f"probes.all exited {rc} without a run document: {out.strip().splitlines()[-1:]}")
        return s
    doc = load(docs[-1])
    s.lines.append(f"run document {docs[-1]} ({doc.get('status')}, exit {rc})")
    s.ok = rc == 0 and doc.get("status") == "completed"
    for v in verdicts.validate(doc):
        if v.verdict in ("pass", "warn", "fail"):
            s.lines.append(
                f"{v.figure} [{v.device}]: {v.verdict} ({100 * (v.ratio or 0):.0f} % of the sheet)"
            )
        if v.verdict == "fail":
            s.ok = False
            s.look_at.append(f"{v.figure} [{v.device}] fails its verdict: {v.note}")
        elif v.verdict == "warn":
            s.look_at.append(f"{v.figure} [{v.device}] warns: {v.note}")
    for h in health.judge(doc):
        s.lines.append(f"health {h.line()}")
        if h.verdict != "pass":
            s.look_at.append(f"health {h.line()}")
            s.ok = s.ok and h.verdict != "fail"
    errors = [m for m in doc.get("measurements", []) if m.get("status") == "error"]
    for m in errors[:10]:
        s.look_at.append(f"{m['probe']} {m['case']}: {m.get('error')}")
    return s


def summary(steps: list[Step]) -> str:
    lines = ["", "gpuprobe acceptance", "-" * 60]
    for st in steps:
        lines.append(f"{'PASS' if st.ok else 'FAIL'}  {st.name:10} {st.seconds:6.0f} s")
        lines += [f"      {ln}" for ln in st.lines]
    look = [ln for st in steps for ln in st.look_at]
    lines += ["-" * 60, "what to look at:" if look else "nothing to look at: keep the node"]
    lines += [f"  - {ln}" for ln in look]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m probes.acceptance", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", type=word, help="auto (every GPU, else the CPU), cuda, cpu")
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
    ap.add_argument("--out", type=Path, default=Path("results") / "acceptance")
    ap.add_argument("--profile", default=None, help="bench.toml profile of the profile step (default quick)")
    ap.add_argument("--config", type=Path, default=None, help="another bench.toml")
    ap.add_argument("--step-timeout-s", type=positive_float, default=420.0, help="per step (default 420)")
    args = ap.parse_args(argv)
    return guard(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    from analysis.cli import BadInput

    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if skip - set(STEPS):
        raise BadInput(f"--skip {sorted(skip - set(STEPS))[0]!r}: expected some of {', '.join(STEPS)}")
    args.out = check_output_dir(args.out)
    import torch

    gpus = torch.cuda.device_count() if args.device != "cpu" else 0
    device = args.device if args.device != "auto" else ("cuda" if gpus else "cpu")
    args.device = device
    print(f"acceptance on {device} ({gpus} GPUs visible); output in {args.out}", file=sys.stderr, flush=True)
    steps = []
    if "tests" not in skip:
        steps.append(tests_step(args.step_timeout_s))
    if "selfcheck" not in skip:
        steps.append(selfcheck_step(device, gpus, args.step_timeout_s))
    if "profile" not in skip:
        steps.append(profile_step(args, args.step_timeout_s))
    text = summary(steps)
    print(text)
    (args.out / "acceptance.txt").write_text(text + "\n")
    return 0 if all(st.ok for st in steps) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
