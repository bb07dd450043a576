"""The profile's time budget (probes/schedule.py): reserves for the probes still to come, this host's pace, what
a probe trims past its deadline (never a case a headline comes from), and the note that says so."""

from __future__ import annotations

import time

from helpers import TINY_PROBES_TOML, tiny_ctx

from probes import bandwidth
from probes.schedule import TRIMMED, Schedule


def schedule(est: dict[str, float], budget: float = 100.0) -> Schedule:
    return Schedule(budget_s=budget, profile="quick", est=est, started=1000.0)


def test_each_probe_keeps_what_the_probes_after_it_are_predicted_to_need():
    s = schedule({"bandwidth": 10.0, "matmul": 40.0, "decode": 20.0})
    assert s.options_for("bandwidth")["deadline"] == 1000.0 + 100 - 60
    assert s.options_for("matmul")["deadline"] == 1000.0 + 100 - 20
    assert s.options_for("decode")["deadline"] == 1000.0 + 100  # the last probe may use what is left
    assert "keeps 20 s for the probes after this one (decode)" in s.options_for("matmul")["trim_reason"]


def test_a_host_slower_than_the_estimate_reserves_more_for_what_follows():
    s = schedule({"bandwidth": 10.0, "matmul": 40.0, "decode": 20.0})
    s.done("bandwidth", 25.0)  # 2.5x the estimate
    assert s.pace() == 2.5
    assert s.options_for("matmul")["deadline"] == 1000.0 + 100 - 2.5 * 20
    s.done("matmul", 10.0)  # faster than predicted: the pace never drops below the estimate's own
    assert s.pace() == 1.0


def test_no_budget_no_deadline():
    s = Schedule(budget_s=0.0, profile="full")
    assert s.options_for("matmul") == {"deadline": None, "trim_reason": None}
    assert s.note([]) is None


def test_the_note_counts_trimmed_cases_per_probe():
    s = schedule({"bandwidth": 1.0, "matmul": 1.0})
    ms = [
        {"probe": "matmul", "status": "skipped", "error": f"{TRIMMED}: the quick profile's ..."},
        {"probe": "matmul", "status": "skipped", "error": "TF32 is a GPU tensor-core mode"},
        {"probe": "bandwidth", "status": "ok", "error": None},
    ]
    note = s.note(ms)
    assert note.startswith("time budget: 100 s for the quick profile's probes")
    assert note.endswith("cases trimmed (no headline comes from them): matmul 1")


def test_past_its_deadline_bandwidth_trims_the_cache_sizes_and_keeps_every_headline(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(TINY_PROBES_TOML)
    ctx = tiny_ctx(path)
    ctx.options.update(deadline=time.time() - 1, trim_reason=f"{TRIMMED}: test")
    ms = bandwidth.run(ctx)
    ok = [m for m in ms if m.status == "ok"]
    trimmed = [m for m in ms if m.status == "skipped" and m.error == f"{TRIMMED}: test"]
    dram = ctx.cfg.bandwidth.dram_min_cache_multiple
    assert ok and all(m.params["cache_multiple"] >= dram for m in ok)  # the DRAM size ran first, in full
    assert {m.headline for m in ok} == {f"dram_{p}_torch" for p in ctx.cfg.bandwidth.patterns}
    assert trimmed and all(m.params["cache_multiple"] < dram for m in trimmed)
    # a case that cannot run here keeps its own reason rather than "trimmed"
    assert all(m.params["variant"] == "torch" for m in trimmed)


def test_before_its_deadline_nothing_is_trimmed(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(TINY_PROBES_TOML)
    ctx = tiny_ctx(path)
    ctx.options.update(deadline=time.time() + 3600, trim_reason=f"{TRIMMED}: test")
    assert ctx.trimmed() is None
    ms = bandwidth.run(ctx)
    assert not [m for m in ms if (m.error or "").startswith(TRIMMED)]
