"""Node health: keep the node or send it back. A sustained load, a memory test and the driver's own records.

A short peak hides what a renter most needs to know: a card that throttles after a minute, a weak HBM row,
a link trained at x8, a logged XID. On every device at once (one process per GPU, `probes.parallel`: the
node's real power and thermal state), this probe
- runs one square matmul (bf16 on GPUs, fp32 on CPUs) back to back for `soak_s`, and per `window_s` records
  the achieved FLOP/s beside NVML's SM and memory clocks, power, temperature and clock-event (throttle)
  reasons sampled at the same moment; every window's result is compared with the first one (a card that
  computes wrong under heat shows it here). Sustained = the median of the last half of the windows; drop =
  1 - sustained / the first windows' median;
- writes and verifies patterns over `memory_fraction` of the free memory (walking ones through all 32 bits,
  each word's own index, seeded random words), counting mismatches and their byte offsets (host memory on a
  CPU);
- reads NVML before and after: ECC mode and corrected / uncorrected counts, pending page retirement, row
  remapping (pending, failure), PCIe generation and width current vs max (read under load) and the replay
  counter, enforced vs default power limit, persistence and MIG mode, and watches XID events during the
  soak. Each field is "not available" where NVML cannot say (no driver, a CPU, an AMD GPU).
The verdict per device (pass / warn / fail with reasons in words) is `analysis.health`.

    python -m probes.health --device cpu --soak-s 10     # CPU: a sustained matmul and a host-memory test
    python -m probes.health --soak-s 300                 # every GPU of the node at once
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from typing import Any

import torch

from analysis.headline import Headline
from analysis.rundoc import Measurement, error_line
from probes import amd
from probes.context import Context, skipped
from probes.device import device_context, free_memory_bytes
from probes.linkhealth import nvlink_errors, pcie_aer
from probes.nvml import NA, Nvml, mw_to_w, read_sample
from probes.timing import synchronize

NAME = "health"
NOTE = (
    "health: sustained = median FLOP/s over the last half of the soak, drop = 1 - sustained / the first "
    "windows; memory-test mismatches and XID events must be 0 (analysis.health gives the verdict)"
)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHUNK = 1 << 24  # int32 words per step of the memory test: 64 MiB (its temporaries stay small)
MAX_BAD = 8  # byte offsets kept per memory test


def n_cases(ctx: Context) -> int:
    return 2 * len(ctx.devices)


def run(ctx: Context) -> list[Measurement]:
    out = []
    for device in ctx.devices:
        out.append(soak(ctx, device))
        ctx.keep(out[-1])
        out.append(memtest(ctx, device))
        ctx.keep(out[-1])
    return out


# ---- NVML: what the driver recorded ------------------------------------------------------------------


def device_snapshot(nv: Nvml, handle: Any, device: torch.device) -> dict[str, Any]:
    """The driver's health records of a GPU: NVML's on NVIDIA, amdsmi's (probes.amd, same shape) on AMD."""
    if handle is None and device.type == "cuda" and torch.version.hip:
        smi = amd.session()
        return amd.snapshot(smi, smi.handle(device))
    return snapshot(nv, handle)


def snapshot(nv: Nvml, handle: Any) -> dict[str, Any]:
    """The driver's health records of one GPU; {"available": False, ...} without NVML."""
    if handle is None:
        return {"available": False, "reason": nv.reason or "no NVML device for this torch device"}

    def ecc(kind: str, counter: str) -> Any:
        error_type = nv.const(f"NVML_MEMORY_ERROR_TYPE_{kind}", 0 if kind == "CORRECTED" else 1)
        return nv.call("nvmlDeviceGetTotalEccErrors", handle, error_type, nv.const(counter, 0))

    mode = nv.call("nvmlDeviceGetEccMode", handle)
    remap = nv.call("nvmlDeviceGetRemappedRows", handle)
    mig = nv.call("nvmlDeviceGetMigMode", handle)
    return {
        "available": True,
        "ecc_enabled": bool(mode[0]) if isinstance(mode, (list, tuple)) else NA,
        "ecc": {
            "corrected_volatile": ecc("CORRECTED", "NVML_VOLATILE_ECC"),
            "uncorrected_volatile": ecc("UNCORRECTED", "NVML_VOLATILE_ECC"),
            "corrected_aggregate": ecc("CORRECTED", "NVML_AGGREGATE_ECC"),
            "uncorrected_aggregate": ecc("UNCORRECTED", "NVML_AGGREGATE_ECC"),
        },
        "retired_pages_pending": nv.call("nvmlDeviceGetRetiredPagesPendingStatus", handle),
        "remapped_rows": dict(zip(("corrected", "uncorrected", "pending", "failure"), remap, strict=False))
        if isinstance(remap, (list, tuple))
        else NA,
        "pcie": pcie(nv, handle),
        "nvlink_errors": nvlink_errors(nv, handle),
        "pcie_aer": pcie_aer(nv, handle),
        "power_limit_enforced_w": mw_to_w(nv.call("nvmlDeviceGetEnforcedPowerLimit", handle)),
        "power_limit_default_w": mw_to_w(nv.call("nvmlDeviceGetPowerManagementDefaultLimit", handle)),
        "persistence_mode": nv.call("nvmlDeviceGetPersistenceMode", handle),
        "mig_mode": mig[0] if isinstance(mig, (list, tuple)) else mig,
    }


def pcie(nv: Nvml, handle: Any) -> dict[str, Any]:
    return {
        "gen_current": nv.call("nvmlDeviceGetCurrPcieLinkGeneration", handle),
        "gen_max": nv.call("nvmlDeviceGetMaxPcieLinkGeneration", handle),
        "width_current": nv.call("nvmlDeviceGetCurrPcieLinkWidth", handle),
        "width_max": nv.call("nvmlDeviceGetMaxPcieLinkWidth", handle),
        "replay_counter": nv.call("nvmlDeviceGetPcieReplayCounter", handle),
    }


def sample(nv: Nvml, handle: Any) -> dict[str, Any]:
    """Clocks, power, temperature and clock-event reasons now (empty without NVML)."""
    return {} if handle is None else read_sample(nv, handle)


class XidWatch:
    """XID (critical driver error) events of one GPU during a block, from an NVML event set."""

    def __init__(self, nv: Nvml, handle: Any) -> None:
        self.nv, self.handle, self.events, self.status = nv, handle, [], "not available"
        self._stop, self._thread, self._set = threading.Event(), None, None

    def __enter__(self) -> XidWatch:
        if self.handle is None:
            return self
        es = self.nv.call("nvmlEventSetCreate")
        mask = self.nv.const("nvmlEventTypeXidCriticalError", 0x8)
        if es == NA or self.nv.call("nvmlDeviceRegisterEvents", self.handle, mask, es) == NA:
            return self
        self._set, self.status, self.t0 = es, "watched", time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="gpuprobe-xid", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            data = self.nv.call("nvmlEventSetWait_v2", self._set, 200)  # NA on a timeout: nothing happened
            if data != NA and data is not None:
                xid = getattr(data, "eventData", NA)
                self.events.append({"xid": xid, "t_s": round(time.monotonic() - self.t0, 3)})

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.nv.call("nvmlEventSetFree", self._set)


# ---- the sustained load ------------------------------------------------------------------------------


def soak(ctx: Context, device: torch.device) -> Measurement:
    """One matmul back to back for soak_s; a timeline of FLOP/s and NVML samples per window."""
    hc = ctx.cfg.health
    gpu = device.type == "cuda"
    dtype = hc.gpu_dtype if gpu else "fp32"
    n = hc.gpu_size if gpu else hc.cpu_size
    case = f"soak/{dtype}/{n}"
    params: dict[str, Any] = {"kind": "soak", "dtype": dtype, "m": n, "n": n, "k": n, "soak_s": hc.soak_s}
    ctx.progress(f"{NAME}: {case} for {hc.soak_s:g} s on {device}")
    nv, handle = ctx.nvml, ctx.nvml.handle(device)
    params["nvml_before"] = device_snapshot(nv, handle, device)
    try:
        with device_context(device), XidWatch(nv, handle) as xid:
            timeline, mismatched, under_load = _load(
                device, DTYPES[dtype], n, hc.soak_s, hc.window_s, nv, handle
            )
    except Exception as exc:  # out of memory, a driver fault: the device fails its soak, the run goes on
        _release_after(device)
        return skipped(NAME, case, device, params, f"soak failed: {error_line(exc)}", status="error")
    params["nvml_after"] = device_snapshot(nv, handle, device)
    params["pcie_under_load"] = under_load
    params["xid_events"], params["xid_watch"] = xid.events, xid.status
    rates = [w["flop_per_s"] for w in timeline]
    sustained = statistics.median(rates[len(rates) // 2 :])
    first = statistics.median(rates[: max(1, len(rates) // 10)])
    params.update(
        timeline=timeline,
        first_flop_per_s=first,
        drop=1 - sustained / first,
        result_mismatch_windows=mismatched,
        throttled_s=_throttled_seconds(timeline),
        flops=2 * n**3,
    )
    m = Measurement(NAME, case, str(device), params, value=sustained, unit="flop_per_s")
    m.headline = str(Headline.sustained(dtype))
    m.verification = {"status": "passed" if not mismatched else "failed"}
    return m


def _load(
    device: torch.device, dtype: torch.dtype, n: int, soak_s: float, window_s: float, nv: Nvml, handle: Any
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=c)
    synchronize(device)
    first = c.float()
    tol = 0.02 * float(first.abs().max()) + 1e-6  # a flipped bit shows; summation order does not
    timeline: list[dict[str, Any]] = []
    mismatched, under_load, per_batch = 0, {}, 1
    t0 = time.perf_counter()
    while True:
        w0, count = time.perf_counter(), 0
        while True:
            b0 = time.perf_counter()
            for _ in range(per_batch):
                torch.matmul(a, b, out=c)
            synchronize(device)
            count += per_batch
            elapsed = time.perf_counter() - w0
            if elapsed >= window_s:
                break
            # batches of about a tenth of a window: few synchronizations, windows that end on time
            per_op = (time.perf_counter() - b0) / per_batch
            per_batch = max(1, min(4 * per_batch, int(0.1 * window_s / max(per_op, 1e-9))))
        now = sample(nv, handle)
        if not under_load and handle is not None:
            under_load = pcie(nv, handle)  # links train down when idle: read the link while it works
        ok = bool((c.float() - first).abs().max() <= tol)
        mismatched += not ok
        timeline.append(
            {
                "t_s": round(time.perf_counter() - t0, 3),
                "flop_per_s": 2 * n**3 * count / elapsed,
                **now,
                "ok": ok,
            }
        )
        if time.perf_counter() - t0 >= soak_s:
            return timeline, mismatched, under_load


def _throttled_seconds(timeline: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds of the soak each clock-event reason was active (sampled once per window)."""
    out: dict[str, float] = {}
    prev = 0.0
    for w in timeline:
        span, prev = w["t_s"] - prev, w["t_s"]
        reasons = w.get("throttle_reasons")
        for r in reasons if isinstance(reasons, list) else []:  # NA where NVML cannot say
            if r != "gpu_idle":
                out[r] = round(out.get(r, 0.0) + span, 3)
    return out


# ---- the memory test ---------------------------------------------------------------------------------


def _settle(buf: torch.Tensor) -> None:
    """Between writing a pattern and reading it back (tests replace this to corrupt the buffer)."""
    synchronize(buf.device)


def _expected(pattern: str, step: int, lo: int, hi: int, device: torch.device) -> torch.Tensor | int:
    if pattern == "walking_ones":
        return (1 << step) - (1 << 32 if step == 31 else 0)  # bit `step` set, as an int32
    if pattern == "address":
        return torch.arange(lo, hi, dtype=torch.int64, device=device).to(torch.int32)  # wraps past 2^31
    g = torch.Generator(device=device).manual_seed(1000003 * step + lo)
    return torch.randint(-(2**31), 2**31 - 1, (hi - lo,), generator=g, dtype=torch.int32, device=device)


STEPS = {"walking_ones": 32, "address": 1, "random": 2}


def memtest(ctx: Context, device: torch.device) -> Measurement:
    """Write and verify every pattern over a fraction of the free memory; count and locate mismatches."""
    hc = ctx.cfg.health
    if device.type == "cuda":  # the soak's blocks, still cached by torch, count as free memory to test
        with device_context(device):
            torch.cuda.empty_cache()
    words = int(hc.memory_fraction * free_memory_bytes(device)) // 4
    if hc.memory_max_bytes:
        words = min(words, hc.memory_max_bytes // 4)
    where = "host memory" if device.type == "cpu" else "device memory"
    case = f"memtest/{words * 4 >> 20} MiB"
    params: dict[str, Any] = {"kind": "memtest", "tested_bytes": words * 4, "memory": where}
    params["patterns"] = list(hc.patterns)
    ctx.progress(f"{NAME}: {case} of {where} on {device}")
    by_pattern: dict[str, int] = {}
    bad: list[int] = []
    # the driver's records around the test: on ECC memory a weak card corrects its errors silently (no
    # mismatch), so the ECC counts, row remapping and XIDs the test provokes are read too (analysis.health)
    nv, handle = ctx.nvml, ctx.nvml.handle(device)
    params["nvml_before"] = device_snapshot(nv, handle, device)
    moved, t0 = 0, time.perf_counter()
    try:
        with device_context(device), XidWatch(nv, handle) as xid:
            buf = torch.empty(words, dtype=torch.int32, device=device)
            for pattern in hc.patterns:
                for step in range(STEPS[pattern]):
                    for lo in range(0, words, CHUNK):  # write the whole buffer, then read it all back
                        hi = min(words, lo + CHUNK)
                        value = _expected(pattern, step, lo, hi, device)
                        buf[lo:hi] = value
                    _settle(buf)
                    for lo in range(0, words, CHUNK):
                        hi = min(words, lo + CHUNK)
                        wrong = buf[lo:hi] != _expected(pattern, step, lo, hi, device)
                        count = int(wrong.sum())
                        if count:
                            by_pattern[pattern] = by_pattern.get(pattern, 0) + count
                            room = MAX_BAD - len(bad)
                            bad += [4 * (lo + int(i)) for i in wrong.nonzero().flatten()[:room].tolist()]
                    moved += 2 * words * 4
            del buf
            if device.type == "cuda":
                torch.cuda.empty_cache()
    except Exception as exc:
        _release_after(device)
        return skipped(NAME, case, device, params, f"memory test not run: {error_line(exc)}", status="error")
    seconds = time.perf_counter() - t0
    params["nvml_after"] = device_snapshot(nv, handle, device)
    params["xid_events"], params["xid_watch"] = xid.events, xid.status
    mismatches = sum(by_pattern.values())
    params.update(mismatches=mismatches, by_pattern=by_pattern, bad_offsets=bad, bytes_moved=moved)
    if mismatches:
        first = ", ".join(hex(o) for o in bad[:4])
        why = f"memory test: {mismatches} mismatched words ({by_pattern}), first at byte offsets {first}"
        m = skipped(NAME, case, device, params, why, status="error")
        m.verification = {"status": "failed", "detail": why}
        return m
    m = Measurement(NAME, case, str(device), params, value=moved / seconds, unit="bytes_per_s")
    m.verification = {"status": "passed"}
    return m


def _release_after(device: torch.device) -> None:
    """Give torch's cached blocks back after a failure. After a sticky CUDA error (an illegal address, XID 79)
    every CUDA call raises again: that must not kill the worker before the failure is recorded."""
    if device.type != "cuda":
        return
    with contextlib.suppress(Exception):  # the failure being recorded is the one that matters
        torch.cuda.empty_cache()


if __name__ == "__main__":  # python -m probes.health: the whole run, this probe only
    from probes.all import probe_main

    sys.exit(probe_main(NAME))
