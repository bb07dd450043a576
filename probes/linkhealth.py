"""The health of a GPU's links as the driver and the kernel count it: NVLink's error counters (replays, recoveries,
flit and data CRC errors, summed over the active links, as DCGM's NVLink health watch reads them) and PCIe
Advanced Error Reporting totals (Linux sysfs aer_dev_*, found by NVML's PCI bus id). probes.health reads them
before and after a run; analysis.health judges what grew."""

from __future__ import annotations

from typing import Any

from probes.nvml import NA, Nvml

NVLINK_COUNTERS = {  # nvmlNvLinkErrorCounter_t: data-link replays and recoveries, flit and data CRC errors
    "replay": ("NVML_NVLINK_ERROR_DL_REPLAY", 0),
    "recovery": ("NVML_NVLINK_ERROR_DL_RECOVERY", 1),
    "crc_flit": ("NVML_NVLINK_ERROR_DL_CRC_FLIT", 2),
    "crc_data": ("NVML_NVLINK_ERROR_DL_CRC_DATA", 3),
}


def nvlink_errors(nv: Nvml, handle: Any) -> dict[str, Any] | str:
    """The NVLink error counters summed over the GPU's active links (DCGM's NVLink health inputs); NA with no
    active link or where NVML does not report them."""
    links = nv.const("NVML_NVLINK_MAX_LINKS", 18)
    active = [i for i in range(links) if nv.call("nvmlDeviceGetNvLinkState", handle, i) == 1]
    if not active:
        return NA
    out: dict[str, Any] = {"links": len(active)}
    for key, (const, default) in NVLINK_COUNTERS.items():
        vals = [
            nv.call("nvmlDeviceGetNvLinkErrorCounter", handle, i, nv.const(const, default)) for i in active
        ]
        out[key] = sum(vals) if all(isinstance(v, int) for v in vals) else NA
    return out


AER_ROOT = "/sys/bus/pci/devices"


def pcie_aer(nv: Nvml, handle: Any, root: str | None = None) -> dict[str, Any] | str:
    """PCIe Advanced Error Reporting totals of the GPU's function (Linux sysfs aer_dev_*, found by NVML's PCI
    bus id): correctable, non-fatal and fatal error counts; NA where the kernel does not expose them."""
    import os

    info = nv.call("nvmlDeviceGetPciInfo", handle)
    bus = getattr(info, "busId", None) if info != NA else None
    if isinstance(bus, bytes):
        bus = bus.decode()
    if not isinstance(bus, str):
        return NA
    domain, _, rest = bus.partition(":")
    path = os.path.join(root or AER_ROOT, f"{domain[-4:]}:{rest}".lower())
    out: dict[str, Any] = {}
    for kind in ("correctable", "nonfatal", "fatal"):
        try:
            with open(os.path.join(path, f"aer_dev_{kind}")) as fh:
                lines = [line.split() for line in fh if line.strip()]
        except OSError:
            return NA
        totals = [int(w[1]) for w in lines if len(w) == 2 and w[0].startswith("TOTAL_ERR") and w[1].isdigit()]
        out[kind] = totals[0] if totals else sum(int(w[1]) for w in lines if len(w) == 2 and w[1].isdigit())
    return out
