"""What `analysis plan` draws and writes: the ranked rows, the frontier PNG (InferenceMAX-style: output tokens/s
per GPU against tokens/s per user, one curve per candidate and format at its chosen TP, the target drawn), and
the plan as JSON, Markdown and one self-contained HTML page (the same renderers as the run report).

    python -m analysis plan ... -o plan/    # plan/plan.json, plan/plan_frontier.png, plan/plan.md, plan/plan.html
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.plan import ASSUMPTIONS, Option, Plan
from analysis.share import Section, render_html, render_markdown

RANKED_COLUMNS = (
    "rank",
    "candidate",
    "format",
    "TP",
    "batch",
    "TPOT ms",
    "TTFT ms",
    "tok/s/user",
    "tok/s/GPU (band)",
    "$/M out",
    "$/M in",
    "limited by",
)


def _band(o: Option) -> str:
    if o.best is None:
        return ""
    if o.band is None:
        return f"{o.best.per_gpu:.0f} (band unknown)"
    lo, hi = o.band["output_tokens_per_s_per_gpu_p10"], o.band["output_tokens_per_s_per_gpu_p90"]
    return f"{o.best.per_gpu:.0f} ({lo:.0f}-{hi:.0f})"


def ranked_rows(p: Plan) -> list[list[str]]:
    rows = []
    for i, o in enumerate(p.ranked, 1):
        b = o.best
        assert b is not None
        rows.append(
            [
                str(i),
                o.candidate.label,
                o.fmt,
                str(o.tp),
                str(b.batch),
                f"{b.tpot_s * 1e3:.1f}",
                f"{b.ttft_s * 1e3:.0f}",
                f"{b.per_user:.1f}",
                _band(o),
                f"{b.cost_out:.3f}",
                f"{b.cost_in:.3f}",
                o.limit,
            ]
        )
    return rows


def sections(p: Plan) -> list[Section]:
    out = [
        Section(
            "Cheapest first",
            list(RANKED_COLUMNS),
            ranked_rows(p),
            notes=[
                "tok/s/GPU band: p10-p90 of published/projected for the engine class and batch regime (backtest)"
            ],
        )
    ]
    misses = [[o.candidate.label, o.fmt, str(o.tp), o.why_not or ""] for o in p.rejected]
    misses += [[c.label, fmt, "-", why] for c, fmt, why in p.unfit]
    if misses:
        out.append(
            Section(
                "Candidates that miss the targets or do not fit", ["candidate", "format", "TP", "why"], misses
            )
        )
    out.append(Section("Assumptions", ["assumption"], [[a] for a in ASSUMPTIONS]))
    return out


def facts(p: Plan) -> list[tuple[str, str]]:
    w = p.workload
    return [
        ("model", w.model.name),
        ("request", f"{w.input_len} prompt + {w.output_len} output tokens"),
        ("targets", p.targets.describe()),
        ("engine", w.engine.label),
        ("candidates", ", ".join(dict.fromkeys(o.candidate.text for o in p.options))),
    ]


def curves(p: Plan) -> list[Option]:
    """One option per candidate and format: its chosen TP, else the smallest TP that fits."""
    chosen: dict[tuple[str, str], Option] = {(o.candidate.text, o.fmt): o for o in p.ranked}
    for o in p.options:
        chosen.setdefault((o.candidate.text, o.fmt), o)
    return list(chosen.values())


def plot_frontier(p: Plan, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import save

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for o in curves(p):
        xs = [pt.per_user for pt in o.curve]
        ys = [pt.per_gpu for pt in o.curve]
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=f"{o.name}")
        bad = [pt for pt in o.curve if not pt.meets(p.targets)]
        ax.scatter(
            [pt.per_user for pt in bad],
            [pt.per_gpu for pt in bad],
            facecolors="white",
            edgecolors=line.get_color(),
            s=18,
            zorder=3,
        )
        if o.best is not None:
            ax.scatter(
                [o.best.per_user], [o.best.per_gpu], marker="*", s=160, color=line.get_color(), zorder=4
            )
    if p.targets.tpot_s is not None:
        ax.axvline(
            1 / p.targets.tpot_s,
            color="red",
            linestyle="--",
            linewidth=1,
            label=f"target: {1 / p.targets.tpot_s:.3g} tok/s per user",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens/s per user (1 / TPOT)")
    ax.set_ylabel("output tokens/s per GPU")
    w = p.workload
    ax.set_title(f"{w.model.name}, {w.input_len} in / {w.output_len} out: throughput vs interactivity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    foot = (
        f"{p.targets.describe()}; hollow: misses a target; star: the operating point; engine {w.engine.label}"
    )
    return save(fig, path, foot)


def write_all(p: Plan, folder: Path) -> list[Path]:
    """plan.json, plan_frontier.png, plan.md and plan.html in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "plan.json"
    js.write_text(json.dumps(p.to_dict(), indent=1), encoding="utf-8")
    png = plot_frontier(p, folder / "plan_frontier.png")
    title = f"gpuprobe plan: {p.workload.model.name}"
    md = folder / "plan.md"
    md.write_text(render_markdown(title, facts(p), sections(p), [png], md), encoding="utf-8")
    page = folder / "plan.html"
    page.write_text(render_html(title, facts(p), sections(p), [png]), encoding="utf-8")
    return [js, png, md, page]
