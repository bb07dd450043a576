"""A profile's time budget, held by the runner: a probe runs its optional cases only while the probes after
it still have the time they are predicted to need.

`[timing] profile_budget_s` is the time all probes of a run may take (the quick profile: 72 s on a CPU box, so
`python -m probes.all` keeps its 90 s promise with start-up and the report; 150 s on a GPU node). Before a
probe starts, the runner reserves for the probes after it what `probes.estimate` predicts for them (case
counts and time budgets), scaled by this host's pace so far (seconds taken / seconds estimated by the probes
already run, at least 1: a 2-core VM fills and checks a 2 GB working set slower than the estimate's
per-case budget says):

    deadline(i) = t_start + budget - pace x (est(i+1) + ... + est(n))

Before its deadline a probe runs every case; past it (`Context.trimmed()`), it skips the cases no headline
comes from (cache-resident bandwidth sizes, decode-shaped GEMMs, the decode steps of the second and later
weight formats) and records each as `skipped` with the reason, which the report lists. Cases a headline
comes from always run, so a host far slower than the estimate overruns the budget rather than lose a
headline; the run document's notes give the budget, the time taken and what was trimmed. A profile without a
budget (`--profile full`) measures everything.

    python -m probes.all                       # quick, budget held
    python -m probes.estimate --profile quick  # the estimate the reserves come from
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from probes.config import RunConfig

TRIMMED = "trimmed"  # the first word of every trimmed case's reason


@dataclass
class Schedule:
    """The budget, the estimate per probe in run order, and the seconds each finished probe took."""

    budget_s: float
    profile: str
    est: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    spent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, cfg: RunConfig, names: list[str], devices: list[Any], sequential: bool) -> Schedule:
        from probes.estimate import estimate_seconds

        out = cls(budget_s=cfg.timing.profile_budget_s, profile=cfg.profile)
        if out.budget_s > 0 and names:
            n_gpus = sum(getattr(d, "type", "cpu") != "cpu" for d in devices)
            est = estimate_seconds(dataclasses.replace(cfg, probes=tuple(names)), n_gpus, sequential)
            out.est = {n: est.get(n, 0.0) for n in names}
        return out

    def pace(self) -> float:
        """Seconds taken per second estimated by the probes run so far; at least 1 (the estimate's budgets
        are upper bounds where the host keeps up with them)."""
        est = sum(self.est.get(n, 0.0) for n in self.spent)
        return max(1.0, sum(self.spent.values()) / est) if est > 0 else 1.0

    def options_for(self, name: str) -> dict[str, Any]:
        """The Context options that hold probe `name` to the budget (none without one)."""
        if name not in self.est:
            return {"deadline": None, "trim_reason": None}
        names = list(self.est)
        after = names[names.index(name) + 1 :]
        pace = self.pace()
        reserve = pace * sum(self.est[n] for n in after)
        reason = (
            f"{TRIMMED}: the {self.profile} profile's time budget ({self.budget_s:.0f} s, [timing] "
            f"profile_budget_s) keeps {reserve:.0f} s for the probes after this one"
            f"{' (' + ', '.join(after) + ')' if after else ''}: their estimate x {pace:.1f}, this host's pace; "
            "no headline comes from this case (a profile without a budget, e.g. --profile full, measures it)"
        )
        return {"deadline": self.started + self.budget_s - reserve, "trim_reason": reason}

    def done(self, name: str, seconds: float) -> None:
        self.spent[name] = seconds

    def note(self, measurements: list[dict[str, Any]]) -> str | None:
        """One line for the run document: the budget, the time taken, and what was trimmed per probe."""
        if not self.est:
            return None
        counts: dict[str, int] = {}
        for m in measurements:
            if m.get("status") == "skipped" and str(m.get("error") or "").startswith(TRIMMED):
                counts[m["probe"]] = counts.get(m["probe"], 0) + 1
        took = time.time() - self.started
        what = ", ".join(f"{p} {n}" for p, n in counts.items()) or "nothing"
        return (
            f"time budget: {self.budget_s:.0f} s for the {self.profile} profile's probes ([timing] "
            f"profile_budget_s), {took:.0f} s taken; cases trimmed (no headline comes from them): {what}"
        )
