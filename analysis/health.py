"""Health verdicts: pass / warn / fail per device, with the reasons in words, from a run's health probe.

Fail: a wrong result under load, a memory-test mismatch, an XID event, new uncorrected ECC errors, a row
remapping failure or a pending page retirement, a PCIe link narrower than the card's (read under load), a
throttle from heat or a hardware slowdown for more than a quarter of the soak, a sustained figure more than a
quarter below its first seconds, or more than 20 % below the node's median. Warn: the same at lower levels
(throttled > 5 %, drop > 10 %, outside the node's robust band: median +- max(3 x 1.4826 x MAD, 5 %)), ECC off,
corrected ECC errors during the run, pending row remapping, a PCIe generation below the card's, PCIe replays,
an enforced power limit below the default, MIG on. Power capping (`sw_power_cap`) is how a loaded GPU holds
its TDP and is reported, not judged. What NVML could not say is listed as not checked.

    python -m analysis report RUN.json      # the health table and verdicts of a run
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SEVERITY = {"pass": 0, "warn": 1, "fail": 2}
HEAT = ("sw_thermal_slowdown", "hw_thermal_slowdown", "hw_slowdown", "hw_power_brake_slowdown")
THROTTLED = (0.05, 0.25)  # warn, fail: fraction of the soak throttled by HEAT reasons
DROP = (0.10, 0.25)  # warn, fail: 1 - sustained / first windows
PEER_BAND, PEER_FAIL = 0.05, 0.20  # outlier band floor; below the node median by more than this fails


@dataclass
class DeviceHealth:
    device: str
    verdict: str = "pass"
    reasons: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    sustained_flop_per_s: float | None = None
    sm_clock_mhz: float | None = None
    memory_bytes_per_s: float | None = None  # the DRAM copy headline of the device, else its memory test

    def flag(self, severity: str, reason: str) -> None:
        self.reasons.append(f"{severity}: {reason}")
        if SEVERITY[severity] > SEVERITY[self.verdict]:
            self.verdict = severity

    def line(self) -> str:
        why = "; ".join(r.split(": ", 1)[1] for r in self.reasons) or "no problem found"
        return f"{self.device}: {self.verdict} ({why})"


def health_measurements(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{device: {"soak": m, "memtest": m, "died": m}} of a run's health probe ("died": the error record a
    per-GPU worker leaves when it dies, probes.parallel; it has no kind of its own)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in doc.get("measurements", []):
        if m.get("probe") == "health":
            kind = m["params"].get("kind") or ("died" if m.get("status") == "error" else "?")
            out.setdefault(m["device"], {})[kind] = m
    return out


def judge(doc: dict[str, Any]) -> list[DeviceHealth]:
    """One verdict per device the health probe ran on (none when it did not run)."""
    found = health_measurements(doc)
    out = [_judge_device(device, ms) for device, ms in found.items()]
    copy = {r["device"]: r["value"] for r in doc.get("summary", []) if r.get("name") == "dram_copy_torch"}
    for d in out:
        mem = found[d.device].get("memtest") or {}
        d.memory_bytes_per_s = copy.get(d.device) or (mem.get("value") if mem.get("status") == "ok" else None)
    _peers(out)
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _judge_device(device: str, ms: dict[str, dict[str, Any]]) -> DeviceHealth:
    h = DeviceHealth(device)
    soak, mem = ms.get("soak"), ms.get("memtest")
    if soak is None or soak.get("status") != "ok":
        h.flag("fail", (soak or {}).get("error") or "no sustained-load result")
    else:
        _judge_soak(h, soak)
    died = ms.get("died")
    if died is not None:  # the worker process ended without its results: a segfault, an OOM kill, an XID
        where = "during the memory test" if soak is not None and mem is None else "before it finished"
        h.flag("fail", f"the health worker died {where}: {died.get('error') or 'no reason given'}")
    if mem is None:
        h.not_checked.append("memory test (not run)")
    elif mem["params"].get("mismatches"):
        p = mem["params"]
        first = ", ".join(hex(o) for o in p.get("bad_offsets", [])[:3])
        h.flag(
            "fail",
            f"memory test: {p['mismatches']} mismatched words in {p['tested_bytes'] >> 20} MiB (first at {first})",
        )
    elif mem.get("status") != "ok":
        h.flag("warn", mem.get("error") or "memory test not run")
    if mem is not None:
        _judge_memtest_records(h, mem["params"])
    return h


# XID classes (NVIDIA's XID catalog, docs.nvidia.com/deploy/xid-errors): 13 (graphics engine exception), 31 (GPU
# memory page fault), 43 (GPU stopped processing) and 45 (preemptive cleanup) are raised by what an application
# did, not by the card; 63 records a successful row remap or page retirement (the card repaired itself: reset
# soon). Every other XID (48 double-bit ECC, 64 remap failure, 74 NVLink, 79 fallen off the bus, 92-95 ...)
# fails the GPU.
APPLICATION_XIDS = {13, 31, 43, 45}
RECORDED_REPAIR_XIDS = {63}


def _judge_xids(h: DeviceHealth, events: list[dict[str, Any]], during: str) -> None:
    xids = sorted({e.get("xid") for e in events}, key=str)
    app = [x for x in xids if x in APPLICATION_XIDS]
    repair = [x for x in xids if x in RECORDED_REPAIR_XIDS]
    hard = [x for x in xids if x not in APPLICATION_XIDS and x not in RECORDED_REPAIR_XIDS]
    if hard:
        h.flag("fail", f"XID {', '.join(map(str, hard))} during {during}")
    if repair:
        h.flag(
            "warn", f"XID {', '.join(map(str, repair))} during {during}: a row remap was recorded, reset soon"
        )
    if app:
        h.flag(
            "warn",
            f"XID {', '.join(map(str, app))} during {during}: an application fault (the workload's, not the card's)",
        )


def _judge_memtest_records(h: DeviceHealth, p: dict[str, Any]) -> None:
    """What the driver recorded while the memory test ran: XIDs, ECC errors it provoked (corrected ones leave
    the data right, so no mismatch shows), rows remapped or pending."""
    before, after = p.get("nvml_before") or {}, p.get("nvml_after") or {}
    if not after.get("available"):
        return
    if p.get("xid_events"):
        _judge_xids(h, p["xid_events"], "the memory test")
    unc, cor = _delta(before, after, "uncorrected_volatile"), _delta(before, after, "corrected_volatile")
    if unc:
        h.flag("fail", f"{unc:.0f} uncorrected ECC errors during the memory test")
    if cor:
        h.flag("warn", f"{cor:.0f} corrected ECC errors during the memory test (mismatches 0: ECC hid them)")
    rows = after.get("remapped_rows") if isinstance(after.get("remapped_rows"), dict) else {}
    was = before.get("remapped_rows") if isinstance(before.get("remapped_rows"), dict) else {}
    if rows.get("failure") and not was.get("failure"):
        h.flag("fail", "row remapping failed during the memory test: the card is out of spare rows")
    elif rows.get("pending") and not was.get("pending"):
        h.flag("warn", "the memory test left a row remapping pending: reset the GPU")


def _judge_soak(h: DeviceHealth, m: dict[str, Any]) -> None:
    p = m["params"]
    h.sustained_flop_per_s = m["value"]
    clocks = [c for w in p.get("timeline", []) if (c := _num(w.get("sm_clock_mhz"))) is not None]
    h.sm_clock_mhz = statistics.median(clocks) if clocks else None
    if p.get("result_mismatch_windows"):
        h.flag(
            "fail",
            f"wrong results under load in {p['result_mismatch_windows']} of {len(p['timeline'])} seconds",
        )
    drop = _num(p.get("drop")) or 0.0
    if drop > DROP[0]:
        sev = "fail" if drop > DROP[1] else "warn"
        h.flag(sev, f"sustained {m['value'] / 1e12:.3g} TFLOPS, {100 * drop:.0f} % below its first seconds")
    soak_s = max((w["t_s"] for w in p.get("timeline", [])), default=0.0) or 1.0
    for reason, seconds in sorted((p.get("throttled_s") or {}).items()):
        share = seconds / soak_s
        if reason in HEAT and share > THROTTLED[0]:
            h.flag(
                "fail" if share > THROTTLED[1] else "warn",
                f"{reason.replace('_', ' ')} {100 * share:.0f}% of the soak",
            )
    before, after = p.get("nvml_before") or {}, p.get("nvml_after") or {}
    if not before.get("available"):
        h.not_checked.append(f"ECC, XID, PCIe, power, clocks ({before.get('reason', 'NVML not available')})")
        return
    _judge_nvml(h, before, after, p)


def _delta(before: dict[str, Any], after: dict[str, Any], key: str) -> float | None:
    a, b = _num((after.get("ecc") or {}).get(key)), _num((before.get("ecc") or {}).get(key))
    return None if a is None or b is None else a - b


def _judge_nvml(h: DeviceHealth, before: dict[str, Any], after: dict[str, Any], p: dict[str, Any]) -> None:
    if p.get("xid_events"):
        _judge_xids(h, p["xid_events"], "the run")
    elif p.get("xid_watch") != "watched":
        h.not_checked.append("XID events (no NVML event set)")
    if after.get("ecc_enabled") is False:
        h.flag("warn", "ECC is off: memory errors go undetected")
    unc, cor = _delta(before, after, "uncorrected_volatile"), _delta(before, after, "corrected_volatile")
    if unc:
        h.flag("fail", f"{unc:.0f} uncorrected ECC errors during the run")
    if cor:
        h.flag("warn", f"{cor:.0f} corrected ECC errors during the run")
    if (_num((after.get("ecc") or {}).get("uncorrected_aggregate")) or 0) > 0 and not unc:
        h.flag(
            "warn", f"{after['ecc']['uncorrected_aggregate']} uncorrected ECC errors in the card's lifetime"
        )
    if after.get("retired_pages_pending") == 1:
        h.flag("fail", "page retirement pending: reset the GPU before use")
    rows = after.get("remapped_rows") if isinstance(after.get("remapped_rows"), dict) else {}
    if rows.get("failure"):
        h.flag("fail", "row remapping failed: the card is out of spare rows")
    elif rows.get("pending"):
        h.flag("warn", "row remapping pending: reset the GPU")
    link = p.get("pcie_under_load") or after.get("pcie") or {}
    width, width_max = _num(link.get("width_current")), _num(link.get("width_max"))
    gen, gen_max = _num(link.get("gen_current")), _num(link.get("gen_max"))
    if width and width_max and width < width_max:
        h.flag("fail", f"PCIe link x{width:.0f} of x{width_max:.0f} under load")
    if gen and gen_max and gen < gen_max:
        h.flag("warn", f"PCIe Gen{gen:.0f} of Gen{gen_max:.0f} under load")
    replays = [_num((s.get("pcie") or {}).get("replay_counter")) for s in (before, after)]
    if None not in replays and replays[1] > replays[0]:
        h.flag("warn", f"{replays[1] - replays[0]:.0f} PCIe replays during the run")
    _judge_links(h, before, after)
    _judge_amd(h, before, after)
    enforced, default = _num(after.get("power_limit_enforced_w")), _num(after.get("power_limit_default_w"))
    if enforced and default and enforced < 0.99 * default:
        h.flag("warn", f"power limit {enforced:.0f} W of the default {default:.0f} W")
    if after.get("mig_mode") == 1:
        h.flag("warn", "MIG mode is on: the GPU is partitioned")


def _grew(before: dict[str, Any], after: dict[str, Any], group: str, key: str) -> float:
    a, b = after.get(group), before.get(group)
    x = _num(a.get(key)) if isinstance(a, dict) else None
    y = _num(b.get(key)) if isinstance(b, dict) else None
    return 0.0 if x is None or y is None else max(0.0, x - y)


def _judge_links(h: DeviceHealth, before: dict[str, Any], after: dict[str, Any]) -> None:
    """NVLink error counters and PCIe AER totals that grew during the run: a fatal PCIe error fails the GPU;
    CRC errors, replays, recoveries and other PCIe errors warn (a marginal link or connector, DCGM's NVLink and
    PCIe health watches). What the node does not expose is listed as not checked."""
    if isinstance(after.get("nvlink_errors"), dict):
        for key, words in (
            ("crc_flit", "NVLink flit CRC errors"),
            ("crc_data", "NVLink data CRC errors"),
            ("replay", "NVLink replays"),
            ("recovery", "NVLink link recoveries"),
        ):
            if n := _grew(before, after, "nvlink_errors", key):
                h.flag("warn", f"{n:.0f} {words} during the run")
    elif "nvlink_errors" in after:
        h.not_checked.append("NVLink error counters (no active NVLink, or NVML does not report them)")
    if isinstance(after.get("pcie_aer"), dict):
        if n := _grew(before, after, "pcie_aer", "fatal"):
            h.flag("fail", f"{n:.0f} fatal PCIe errors (AER) during the run")
        for key, words in (("nonfatal", "non-fatal"), ("correctable", "correctable")):
            if n := _grew(before, after, "pcie_aer", key):
                h.flag("warn", f"{n:.0f} {words} PCIe errors (AER) during the run")
    elif "pcie_aer" in after:
        h.not_checked.append("PCIe AER counters (no aer_dev_* in sysfs for this GPU)")


def _judge_amd(h: DeviceHealth, before: dict[str, Any], after: dict[str, Any]) -> None:
    """amdsmi's records (probes.amd): retired HBM pages pending (reset the GPU) or unreservable (out of spare
    pages), deferred ECC errors during the run, and XGMI links down (RCCL then routes over the slower ones)."""
    if after.get("source") != "amdsmi":
        return
    pages = after.get("bad_pages") if isinstance(after.get("bad_pages"), dict) else {}
    if pages.get("unreservable"):
        h.flag("fail", f"{pages['unreservable']} bad HBM pages could not be retired")
    elif pages.get("pending"):
        h.flag("warn", f"{pages['pending']} bad HBM pages pending retirement: reset the GPU")
    if n := _grew(before, after, "ecc", "deferred"):
        h.flag("warn", f"{n:.0f} deferred ECC errors during the run")
    xgmi = after.get("xgmi")
    if isinstance(xgmi, dict) and xgmi.get("down"):
        h.flag("fail", f"{xgmi['down']} of {xgmi['links']} XGMI links down")
    elif not isinstance(xgmi, dict):
        h.not_checked.append("XGMI link state (amdsmi does not report it here)")


def _peers(devices: list[DeviceHealth]) -> None:
    """Identical GPUs of one node should agree: flag one whose sustained TFLOPS, SM clock or memory bandwidth
    sits outside the node's robust band."""
    for attr, label, unit, scale in (
        ("sustained_flop_per_s", "sustained", "TFLOPS", 1e12),
        ("sm_clock_mhz", "SM clock", "MHz", 1.0),
        ("memory_bytes_per_s", "memory bandwidth", "GB/s", 1e9),
    ):
        values = {d.device: getattr(d, attr) for d in devices if getattr(d, attr)}
        if len(values) < 3:
            continue
        med = statistics.median(values.values())
        mad = statistics.median(abs(v - med) for v in values.values())
        band = max(3 * 1.4826 * mad, PEER_BAND * med)
        for d in devices:
            v = values.get(d.device)
            if v is not None and abs(v - med) > band:
                sev = "fail" if v < (1 - PEER_FAIL) * med else "warn"
                d.flag(sev, f"{label} {v / scale:.4g} {unit} vs node median {med / scale:.4g} {unit}")


def as_records(devices: list[DeviceHealth]) -> list[dict[str, Any]]:
    """For the run document's "health" key."""
    return [asdict(d) for d in devices]


def plot_timeline(doc: dict[str, Any], path: Path) -> Path | None:
    """TFLOPS, SM clock, temperature and power per device over the soak; None without a soak."""
    soaks = {
        d: ms["soak"]
        for d, ms in health_measurements(doc).items()
        if ms.get("soak", {}).get("status") == "ok"
    }
    if not soaks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("flop_per_s", "TFLOPS", 1e12),
        ("sm_clock_mhz", "SM clock (MHz)", 1.0),
        ("temperature_c", "temperature (C)", 1.0),
        ("power_w", "power (W)", 1.0),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 9), sharex=True)
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for device, m in soaks.items():
            pts = [
                (w["t_s"], v / scale) for w in m["params"]["timeline"] if (v := _num(w.get(key))) is not None
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=device)
        ax.set_ylabel(label)
        if not ax.lines:
            ax.text(0.5, 0.5, "not available (no NVML)", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("seconds into the soak")
    fig.suptitle("Sustained load per device")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_health(doc: dict[str, Any], console: Any) -> None:
    """The health table: sustained figure, drop, throttling, memory test and the verdict per device."""
    from rich.markup import escape
    from rich.table import Table

    devices = judge(doc)
    if not devices:
        return
    found = health_measurements(doc)
    t = Table(title="Node health (sustained load, memory test, NVML records)")
    for col in ("device", "sustained", "drop", "throttled", "memory test", "verdict", "reasons"):
        t.add_column(col, justify="right" if col in ("sustained", "drop") else "left")
    style = {"pass": "green", "warn": "yellow", "fail": "red"}
    for d in devices:
        soak = found[d.device].get("soak") or {}
        mem = found[d.device].get("memtest") or {}
        p = soak.get("params", {})
        ok = soak.get("status") == "ok"
        throttled = (
            ", ".join(f"{r} {s:.0f} s" for r, s in sorted((p.get("throttled_s") or {}).items())) or "-"
        )
        mp = mem.get("params", {})
        memory = f"{mp.get('mismatches', '?')} bad in {mp.get('tested_bytes', 0) >> 20} MiB" if mem else "-"
        t.add_row(
            escape(d.device),
            f"{soak['value'] / 1e12:.3g} TFLOPS" if ok else "-",
            f"{100 * p['drop']:.0f}%" if ok else "-",
            escape(throttled),
            escape(memory),
            f"[{style[d.verdict]}]{d.verdict}[/{style[d.verdict]}]",
            escape("; ".join(r.split(": ", 1)[1] for r in d.reasons) or "-"),
        )
    console.print(t)
    for d in devices:
        if d.not_checked:
            console.print(f"  {d.device}: not checked: {'; '.join(d.not_checked)}", markup=False)
