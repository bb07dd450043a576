"""NVML, best effort: what the driver says about each GPU, and its clocks, power and temperature while it works.

NVML may be missing (no driver, a CPU box, an AMD node) or refuse single fields (not supported, no
permission): every field then reads "not available" and nothing crashes. `Nvml.call()` is the only way this
project calls NVML, so that rule holds everywhere. `TelemetrySampler` samples SM clock, power, temperature and
clock-event (throttle) reasons in a background thread while a case is timed, so a shortfall can be explained
("held 1650 MHz under a power cap") rather than guessed.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import threading
import time
from typing import Any

import torch

NA = "not available"


class Nvml:
    """A best-effort NVML session: `call()` returns NA instead of raising, whatever went wrong."""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        try:
            import pynvml

            self._nv = pynvml
            pynvml.nvmlInit()
            self.available = True
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError...
            self.reason = f"NVML not available: {type(exc).__name__}: {exc}".strip().rstrip(":")

    def call(self, fn: str, *args: Any) -> Any:
        if not self.available:
            return NA
        try:
            value = getattr(self._nv, fn)(*args)
        except Exception:  # NVMLError (not supported, no permission, GPU lost) or a missing binding
            return NA
        return value.decode() if isinstance(value, bytes) else value

    def const(self, name: str, default: int) -> int:
        """An NVML enum or bit mask by name; `default` where this binding lacks it."""
        value = getattr(self._nv, name, default) if self.available else default
        return value if isinstance(value, int) else default

    def handle(self, device: torch.device) -> Any:
        """NVML handle of a torch CUDA device, matched by UUID (CUDA_VISIBLE_DEVICES reorders indices).

        A MIG instance's UUID is NVML's "MIG-..." one: its physical GPU's handle is returned (clocks, power,
        ECC and XIDs are the GPU's). A UUID that NVML does not know gives None, never another GPU's handle by
        index (under MIG or UUID-listed CUDA_VISIBLE_DEVICES, torch's index is not NVML's)."""
        if not self.available or device.type != "cuda":
            return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            h = self.call("nvmlDeviceGetHandleByUUID", f"GPU-{uuid}")
            if h != NA:
                return h
            mig = self.call("nvmlDeviceGetHandleByUUID", f"MIG-{uuid}")
            if mig == NA:
                return None
            parent = self.call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", mig)
            return mig if parent == NA else parent
        h = self.call("nvmlDeviceGetHandleByIndex", index)
        return None if h == NA else h

    def shutdown(self) -> None:
        if self.available:
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()
            self.available = False


_THROTTLE_NAMES = {
    "nvmlClocksEventReasonGpuIdle": "gpu_idle",
    "nvmlClocksEventReasonApplicationsClocksSetting": "applications_clocks_setting",
    "nvmlClocksEventReasonSwPowerCap": "sw_power_cap",
    "nvmlClocksEventReasonHwSlowdown": "hw_slowdown",
    "nvmlClocksEventReasonSyncBoost": "sync_boost",
    "nvmlClocksEventReasonSwThermalSlowdown": "sw_thermal_slowdown",
    "nvmlClocksEventReasonHwThermalSlowdown": "hw_thermal_slowdown",
    "nvmlClocksEventReasonHwPowerBrakeSlowdown": "hw_power_brake_slowdown",
    "nvmlClocksEventReasonDisplayClockSetting": "display_clock_setting",
}


def throttle_reasons(nvml: Nvml, handle: Any) -> list[str] | str:
    """Decoded clock-event (throttle) reasons, e.g. ["sw_power_cap"]; NA when NVML cannot say."""
    mask = nvml.call("nvmlDeviceGetCurrentClocksEventReasons", handle)
    if mask == NA:
        mask = nvml.call("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    if mask == NA:
        return NA
    return [name for const, name in _THROTTLE_NAMES.items() if mask & nvml.const(const, 0)]


def mw_to_w(v: Any) -> Any:
    return v / 1000.0 if isinstance(v, (int, float)) else NA


def nvml_device_info(nvml: Nvml, handle: Any) -> dict[str, Any]:
    """Everything NVML says about one GPU; each field NA where it cannot say."""
    fields = [
        "name",
        "uuid",
        "memory_total_bytes",
        "memory_free_bytes",
        "sm_clock_mhz",
        "sm_clock_max_mhz",
        "memory_clock_mhz",
        "memory_clock_max_mhz",
        "memory_bus_width_bits",
        "pcie_gen_current",
        "pcie_gen_max",
        "pcie_width_current",
        "pcie_width_max",
        "nvlink",
        "power_limit_w",
        "power_limit_enforced_w",
        "ecc_mode",
        "temperature_c",
        "throttle_reasons",
    ]
    if handle is None:
        return dict.fromkeys(fields, NA)
    sm, mem = nvml.const("NVML_CLOCK_SM", 1), nvml.const("NVML_CLOCK_MEM", 2)
    meminfo = nvml.call("nvmlDeviceGetMemoryInfo", handle)
    ecc = nvml.call("nvmlDeviceGetEccMode", handle)
    info = {
        "name": nvml.call("nvmlDeviceGetName", handle),
        "uuid": nvml.call("nvmlDeviceGetUUID", handle),
        "memory_total_bytes": getattr(meminfo, "total", NA),
        "memory_free_bytes": getattr(meminfo, "free", NA),
        "sm_clock_mhz": nvml.call("nvmlDeviceGetClockInfo", handle, sm),
        "sm_clock_max_mhz": nvml.call("nvmlDeviceGetMaxClockInfo", handle, sm),
        "memory_clock_mhz": nvml.call("nvmlDeviceGetClockInfo", handle, mem),
        "memory_clock_max_mhz": nvml.call("nvmlDeviceGetMaxClockInfo", handle, mem),
        "memory_bus_width_bits": nvml.call("nvmlDeviceGetMemoryBusWidth", handle),
        "pcie_gen_current": nvml.call("nvmlDeviceGetCurrPcieLinkGeneration", handle),
        "pcie_gen_max": nvml.call("nvmlDeviceGetMaxPcieLinkGeneration", handle),
        "pcie_width_current": nvml.call("nvmlDeviceGetCurrPcieLinkWidth", handle),
        "pcie_width_max": nvml.call("nvmlDeviceGetMaxPcieLinkWidth", handle),
        "nvlink": _nvlink(nvml, handle),
        "power_limit_w": mw_to_w(nvml.call("nvmlDeviceGetPowerManagementLimit", handle)),
        "power_limit_enforced_w": mw_to_w(nvml.call("nvmlDeviceGetEnforcedPowerLimit", handle)),
        "ecc_mode": {"current": bool(ecc[0]), "pending": bool(ecc[1])}
        if isinstance(ecc, (list, tuple))
        else NA,
        "temperature_c": nvml.call("nvmlDeviceGetTemperature", handle, nvml.const("NVML_TEMPERATURE_GPU", 0)),
        "throttle_reasons": throttle_reasons(nvml, handle),
    }
    return {k: info[k] for k in fields}


# nvmlDeviceGetNvLinkVersion returns an enum, not a generation: NVML_NVLINK_VERSION_1_0 = 1, 2_0 = 2,
# 2_2 = 3, 3_0 = 4, 3_1 = 5, 4_0 = 6, 5_0 = 7, 6_0 = 8 (nvml.h). An A100 reports 5 (NVLink 3.1), an H100 6.
NVLINK_VERSIONS = {1: "1.0", 2: "2.0", 3: "2.2", 4: "3.0", 5: "3.1", 6: "4.0", 7: "5.0", 8: "6.0"}


def nvlink_version(enum: Any) -> tuple[str, int] | None:
    """(version text, generation) of an NVML NVLink version enum: 5 -> ("3.1", 3); None if unknown."""
    text = NVLINK_VERSIONS.get(enum) if isinstance(enum, int) else None
    return None if text is None else (text, int(text.split(".")[0]))


def _nvlink(nvml: Nvml, handle: Any) -> dict[str, Any] | str:
    links = []
    for link in range(nvml.const("NVML_NVLINK_MAX_LINKS", 18)):
        state = nvml.call("nvmlDeviceGetNvLinkState", handle, link)
        if state == NA:
            # Links are numbered densely; the first unsupported one ends the list (or there is no NVLink).
            break
        enum = nvml.call("nvmlDeviceGetNvLinkVersion", handle, link)
        version = nvlink_version(enum)
        links.append(
            {
                "link": link,
                "active": bool(state),
                "version_enum": enum,
                "version": version[0] if version else NA,
                "generation": version[1] if version else NA,
            }
        )
    if not links:
        return NA
    active = [lk for lk in links if lk["active"]]
    gens = {lk["generation"] for lk in active if isinstance(lk["generation"], int)}
    return {"links": links, "active_links": len(active), "generation": gens.pop() if len(gens) == 1 else NA}


def read_sample(nv: Nvml, handle: Any) -> dict[str, Any]:
    """SM and memory clocks, power, temperature and clock-event reasons of one GPU now."""
    return {
        "sm_clock_mhz": nv.call("nvmlDeviceGetClockInfo", handle, nv.const("NVML_CLOCK_SM", 1)),
        "memory_clock_mhz": nv.call("nvmlDeviceGetClockInfo", handle, nv.const("NVML_CLOCK_MEM", 2)),
        "power_w": mw_to_w(nv.call("nvmlDeviceGetPowerUsage", handle)),
        "temperature_c": nv.call("nvmlDeviceGetTemperature", handle, nv.const("NVML_TEMPERATURE_GPU", 0)),
        "throttle_reasons": throttle_reasons(nv, handle),
    }


class TelemetrySampler:
    """Samples SM clock, power, temperature and throttle reasons in a background thread during a case.

    NVML calls release the GIL, so sampling every 50 ms costs the measured kernel nothing measurable.
    """

    def __init__(self, nvml: Nvml, device: torch.device, interval_s: float) -> None:
        self.nvml, self.interval_s = nvml, interval_s
        self.handle = nvml.handle(device) if nvml.available else None
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy: list[tuple[float, Any]] = []  # (time, the energy counter in mJ) at enter and exit
        self.amd: tuple[Any, Any] | None = None  # (amdsmi session, handle) of an AMD GPU: probes.amd
        if self.handle is None and device.type == "cuda" and torch.version.hip:
            from probes import amd

            smi = amd.session()
            h = smi.handle(device)
            self.amd = (smi, h) if h is not None else None

    def _read_energy(self) -> None:
        if self.amd is not None:
            from probes import amd

            self._energy.append((time.perf_counter(), amd.energy_mj(*self.amd)))
        elif self.handle is not None:
            mj = self.nvml.call("nvmlDeviceGetTotalEnergyConsumption", self.handle)  # mJ since driver load
            self._energy.append((time.perf_counter(), mj))

    def _sample(self) -> dict[str, Any]:
        if self.amd is not None:
            from probes import amd

            return {"t_s": time.perf_counter(), **amd.sample(*self.amd)}
        return {"t_s": time.perf_counter(), **read_sample(self.nvml, self.handle)}

    @property
    def sampling(self) -> bool:
        return self.handle is not None or self.amd is not None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TelemetrySampler:
        self._read_energy()
        if self.sampling:
            self._thread = threading.Thread(target=self._loop, name="gpuprobe-telemetry", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.samples.append(self._sample())
        self._read_energy()

    def energy(self) -> dict[str, Any]:
        """Joules the GPU drew over the sampled window and its average power: NVML's energy counter (Volta+),
        else the power samples integrated over time; where neither exists, not measured and why."""
        if not self.sampling:
            return {"measured": False, "why": self.nvml.reason or "no NVML device for this torch device"}
        (t0, e0), (t1, e1) = self._energy[0], self._energy[-1]
        seconds = t1 - t0
        if isinstance(e0, int) and isinstance(e1, int) and e1 > e0 and seconds > 0:
            counter = (
                "amdsmi energy counter (amdsmi_get_energy_count)"
                if self.amd
                else ("NVML energy counter (nvmlDeviceGetTotalEnergyConsumption)")
            )
            joules, source = (e1 - e0) / 1e3, counter
        else:
            pts = [(x["t_s"], x["power_w"]) for x in self.samples if isinstance(x["power_w"], (int, float))]
            if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
                return {
                    "measured": False,
                    "why": "NVML gives this GPU neither an energy counter nor power readings",
                }
            joules = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(pts))
            seconds, source = pts[-1][0] - pts[0][0], "power samples integrated over time (no energy counter)"
        return {
            "measured": True,
            "joules": joules,
            "seconds": seconds,
            "avg_power_w": joules / seconds,
            "source": source,
        }

    def summary(self) -> dict[str, Any]:
        """Min / median / max per numeric field and the union of throttle reasons seen."""
        if not self.sampling:
            why = self.nvml.reason or "no NVML device for this torch device"
            return {"available": False, "reason": why, "energy": self.energy()}
        t0 = self.samples[0]["t_s"] if self.samples else 0.0
        out: dict[str, Any] = {"available": True, "n": len(self.samples), "energy": self.energy()}
        for key in ("sm_clock_mhz", "power_w", "temperature_c"):
            vals = [s[key] for s in self.samples if isinstance(s[key], (int, float))]
            out[key] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)} if vals else NA
        reasons = sorted(
            {
                r
                for s in self.samples
                if isinstance(s["throttle_reasons"], list)
                for r in s["throttle_reasons"]
            }
        )
        out["throttle_reasons"] = reasons
        out["samples"] = [{**s, "t_s": round(s["t_s"] - t0, 4)} for s in self.samples]
        return out


class NoNvml:
    """An NVML session that samples nothing: for processes other than the one that owns telemetry."""

    available = False
    reason = "telemetry is sampled by rank 0"

    def handle(self, device: torch.device) -> None:
        return None
