"""AMD Instinct GPUs through amdsmi, best effort: the same health records and telemetry NVML gives on NVIDIA.

An MI300X node gets what an H100 node gets: power, clocks, temperature and the energy counter during every
case; ECC counts (correctable, uncorrectable, deferred), bad (retired) pages and pending ones, the PCIe link
(trained vs maximum, replays), the power cap against its default, and every XGMI link's state, in the same
record shape as probes.health's NVML snapshot, so analysis.health judges both alike; and, per GPU pair, whether
they talk over XGMI and in how many hops (the slowest link caps RCCL). amdsmi (PyPI, or the one your ROCm ships
in /opt/rocm/share/amd_smi) needs libamd_smi.so: without it, or on a node without AMD GPUs, every call answers
"not available" and says why, as NVML does where it is absent.

    python -m probes.health      # on an MI300X node: the same verdict as on an NVIDIA one
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

NA = "not available"
LINK_TYPES = {0: "internal", 1: "PCIe", 2: "xGMI", 3: "not applicable", 4: "unknown"}  # AMDSMI_LINK_TYPE_*
PAGE_STATUS = {0: "reserved", 1: "pending", 2: "unreservable"}  # AMDSMI_MEM_PAGE_STATUS_*


class AmdSmi:
    """A best-effort amdsmi session: `call()` returns NA instead of raising, whatever went wrong."""

    def __init__(self) -> None:
        self.available, self.reason, self._handles = False, "", []
        try:
            import amdsmi  # its import itself fails without libamd_smi.so (a KeyError, not an ImportError)

            self._smi = amdsmi
            amdsmi.amdsmi_init(amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS)
            self._handles = list(amdsmi.amdsmi_get_processor_handles())
            self.available = True
        except Exception as exc:
            self.reason = f"amdsmi not available: {type(exc).__name__}: {exc}".strip().rstrip(":")

    def call(self, fn: str, *args: Any) -> Any:
        if not self.available:
            return NA
        try:
            return getattr(self._smi, fn)(*args)
        except Exception:  # AmdSmiLibraryException (not supported, no permission) or a missing binding
            return NA

    def handle(self, device: torch.device) -> Any:
        """The amdsmi handle of a ROCm torch device, matched by PCI bus id (HIP_VISIBLE_DEVICES reorders
        indices); None off ROCm, or when no handle has that bus id."""
        if not self.available or device.type != "cuda" or not torch.version.hip:
            return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        bus = getattr(props, "pci_bus_id", None)
        for h in self._handles:
            bdf = self.call("amdsmi_get_gpu_device_bdf", h)
            if isinstance(bdf, str) and bus is not None and int(bdf.split(":")[1], 16) == bus:
                return h
        return None

    def shutdown(self) -> None:
        if self.available:
            with contextlib.suppress(Exception):
                self._smi.amdsmi_shut_down()
            self.available = False


_SESSION: AmdSmi | None = None


def session() -> AmdSmi:
    """This process's amdsmi session, opened on first use."""
    global _SESSION
    if _SESSION is None:
        _SESSION = AmdSmi()
    return _SESSION


def _pcie_gen(speed_mts: Any) -> Any:
    """PCIe generation of a link speed in MT/s (amdsmi reports 16000 for Gen4, 32000 for Gen5)."""
    gens = {2500: 1, 5000: 2, 8000: 3, 16000: 4, 32000: 5, 64000: 6}
    return gens.get(speed_mts, NA) if isinstance(speed_mts, int) else NA


def _watts(microwatts: Any) -> Any:
    return microwatts / 1e6 if isinstance(microwatts, (int, float)) else NA


def snapshot(smi: AmdSmi, handle: Any) -> dict[str, Any]:
    """The driver's health records of one AMD GPU, in probes.health.snapshot's shape (NVML's), plus XGMI."""
    if handle is None:
        return {"available": False, "reason": smi.reason or "no amdsmi device for this torch device"}
    ecc = smi.call("amdsmi_get_gpu_total_ecc_count", handle)
    pages = smi.call("amdsmi_get_gpu_bad_page_info", handle)
    pcie = smi.call("amdsmi_get_pcie_info", handle)
    cap = smi.call("amdsmi_get_power_cap_info", handle)
    links = smi.call("amdsmi_get_gpu_xgmi_link_status", handle)
    static = pcie.get("pcie_static", {}) if isinstance(pcie, dict) else {}
    metric = pcie.get("pcie_metric", {}) if isinstance(pcie, dict) else {}
    by_status: dict[str, int] = {}
    for p in pages if isinstance(pages, list) else []:
        s = p.get("status")
        name = PAGE_STATUS.get(s, str(s)) if isinstance(s, int) else str(s).lower()
        by_status[name] = by_status.get(name, 0) + 1
    status = links.get("status", []) if isinstance(links, dict) else []
    return {
        "available": True,
        "source": "amdsmi",
        "ecc_enabled": NA,
        "ecc": {
            "corrected_volatile": ecc.get("correctable_count", NA) if isinstance(ecc, dict) else NA,
            "uncorrected_volatile": ecc.get("uncorrectable_count", NA) if isinstance(ecc, dict) else NA,
            "deferred": ecc.get("deferred_count", NA) if isinstance(ecc, dict) else NA,
        },
        "bad_pages": by_status if isinstance(pages, list) else NA,
        "pcie": {
            "gen_current": _pcie_gen(metric.get("pcie_speed")),
            "gen_max": _pcie_gen(static.get("max_pcie_speed")),
            "width_current": metric.get("pcie_width", NA),
            "width_max": static.get("max_pcie_width", NA),
            "replay_counter": metric.get("pcie_replay_count", NA),
        },
        "power_limit_enforced_w": _watts(cap.get("power_cap")) if isinstance(cap, dict) else NA,
        "power_limit_default_w": _watts(cap.get("default_power_cap")) if isinstance(cap, dict) else NA,
        "xgmi": {
            "links": len(status),
            "up": status.count("U"),
            "down": status.count("D"),
            "disabled": status.count("X"),
        }
        if status
        else NA,
    }


def sample(smi: AmdSmi, handle: Any) -> dict[str, Any]:
    """Power, GFX clock and hotspot temperature now, in probes.nvml.read_sample's keys."""
    enums = getattr(smi, "_smi", None) if smi.available else None
    power = smi.call("amdsmi_get_power_info", handle)
    clock = smi.call("amdsmi_get_clock_info", handle, enums.AmdSmiClkType.GFX) if enums else NA
    temp = (
        smi.call(
            "amdsmi_get_temp_metric",
            handle,
            enums.AmdSmiTemperatureType.HOTSPOT,
            enums.AmdSmiTemperatureMetric.CURRENT,
        )
        if enums
        else NA
    )
    watts = NA
    if isinstance(power, dict):
        watts = next(
            (
                power[k]
                for k in ("current_socket_power", "average_socket_power")
                if isinstance(power.get(k), (int, float))
            ),
            NA,
        )
    return {
        "sm_clock_mhz": clock.get("clk", NA) if isinstance(clock, dict) else NA,
        "memory_clock_mhz": NA,
        "power_w": watts,
        "temperature_c": temp,
        "throttle_reasons": NA,
    }


def energy_mj(smi: AmdSmi, handle: Any) -> Any:
    """The GPU's energy counter in mJ (the accumulator x its resolution in microjoules), NA where unsupported."""
    e = smi.call("amdsmi_get_energy_count", handle)
    if not isinstance(e, dict) or not isinstance(e.get("energy_accumulator"), int):
        return NA
    return int(e["energy_accumulator"] * float(e.get("counter_resolution") or 15.3) / 1000)


def pair_link(smi: AmdSmi, a: Any, b: Any) -> str | None:
    """'xGMI (1 hop)' or 'PCIe (2 hops)' between two AMD GPUs; None where amdsmi cannot say."""
    t = smi.call("amdsmi_topo_get_link_type", a, b)
    if not isinstance(t, dict) or not isinstance(t.get("type"), int):
        return None
    hops = t.get("hops")
    kind = LINK_TYPES.get(t["type"], "unknown")
    return f"{kind} ({hops} hop{'s' if hops != 1 else ''})" if isinstance(hops, int) else kind
