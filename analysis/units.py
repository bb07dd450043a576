"""Display units. Run documents hold SI numbers (bytes_per_s, flop_per_s, seconds); only displays convert."""

from __future__ import annotations

DISPLAY: dict[str, tuple[str, float]] = {
    "bytes_per_s": ("GB/s", 1e9),  # decimal, as spec sheets print it
    "flop_per_s": ("TFLOPS", 1e12),
    "seconds": ("ms", 1e-3),
}


def display(value: float | None, unit: str | None) -> tuple[str, str]:
    """(number as text, display unit) for an SI value, e.g. (2.95e12, 'bytes_per_s') -> ('2950.0', 'GB/s')."""
    if value is None:
        return "-", ""
    label, scale = DISPLAY.get(unit or "", (unit or "", 1.0))
    v = value / scale
    return (f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"), label


def fmt_bytes(n: float) -> str:
    """Binary-prefixed size for labels: 8388608 -> '8 MiB' (sizes of buffers, not rates)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g} B"
