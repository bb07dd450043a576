"""Headline names: the one type that makes and reads them.

A run document's summary has one row per headline figure, and its name says what the figure is. The names
are part of the run-document contract (`gpuprobe.run/1`), so their text is fixed:

    dram_<pattern>_<variant>           dram_copy_torch                    bytes_per_s
    matmul_peak_<dtype>_<variant>      matmul_peak_fp8_e4m3_rowwise_torch flop_per_s
    <op>_busbw_<dtype>                 all_reduce_busbw_bf16              bytes_per_s
    host_link_<direction>_<memory>     host_link_h2d_pinned               bytes_per_s

Probes make names with the constructors (`Headline.dram("copy", "torch")`), analysis reads them with
`Headline.parse(name)`; nothing else slices a name. Dtype keys hold underscores (`fp8_e4m3_rowwise`), so a
name is parsed by its metric's known shape, never by counting underscores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METRICS = ("dram", "matmul_peak", "busbw", "host_link", "op_overhead", "sustained", "latency")
_BUSBW = "_busbw_"


def dtype_family(dtype: str) -> str:
    """The family of a dtype key: 'fp8_e4m3_rowwise' -> 'fp8', 'bf16' -> 'bf16', 'int4-wo' -> 'int4-wo'."""
    return dtype.split("_")[0]


WEIGHT_ONLY = ("int8-wo", "int4-wo")  # weights stored in 8 / 4 bits, multiplied in bf16
# Blackwell's block-scaled formats and the tensor-core rate they run at (the sheet's FP8 / FP4 figure)
BLOCK_SCALED = {"mxfp8": "fp8", "mxfp4": "fp4", "nvfp4": "fp4"}


def compute_family(dtype: str) -> str:
    """The tensor-core family a dtype's GEMMs run in: weight-only formats dequantize into bf16; block-scaled
    formats run at their element width's rate (MXFP8: fp8; NVFP4, MXFP4: fp4)."""
    fam = dtype_family(dtype)
    return "bf16" if fam in WEIGHT_ONLY else BLOCK_SCALED.get(fam, fam)


@dataclass(frozen=True)
class Headline:
    """One headline figure's identity.

    metric:  dram | matmul_peak | busbw | host_link | op_overhead | sustained | latency
    subject: the access pattern (dram), the matmul dtype key (matmul_peak), the collective op (busbw),
             the copy direction h2d | d2h | bidir (host_link), eager | graph (op_overhead: seconds per op),
             the dtype of the soak (sustained)
    variant: torch | triton (dram, matmul_peak), the element dtype (busbw), pinned | pageable (host_link),
             torch (op_overhead)
    """

    metric: str
    subject: str
    variant: str

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown headline metric {self.metric!r} (known: {', '.join(METRICS)})")
        if not self.subject or not self.variant:
            raise ValueError(f"headline {self.metric}: subject and variant must not be empty")

    @classmethod
    def dram(cls, pattern: str, variant: str) -> Headline:
        return cls("dram", pattern, variant)

    @classmethod
    def matmul_peak(cls, dtype: str, variant: str) -> Headline:
        return cls("matmul_peak", dtype, variant)

    @classmethod
    def busbw(cls, op: str, dtype: str) -> Headline:
        return cls("busbw", op, dtype)

    @classmethod
    def host_link(cls, direction: str, memory: str) -> Headline:
        return cls("host_link", direction, memory)

    @classmethod
    def op_overhead(cls, mode: str) -> Headline:
        """Seconds per tiny op back to back: eager launch/dispatch, or per kernel inside a CUDA graph."""
        return cls("op_overhead", mode, "torch")

    @classmethod
    def latency(cls, level: str, how: str) -> Headline:
        """Seconds of one dependent access: a pointer chase in the L2 or DRAM (`chase`), a tiny pinned
        host-to-device copy (`h2d`, `pinned`), a tiny copy between two GPUs (`p2p`, `copy`)."""
        return cls("latency", level, how)

    @classmethod
    def sustained(cls, dtype: str) -> Headline:
        """FLOP/s a device holds under a long back-to-back matmul (probes.health): the last half's median."""
        return cls("sustained", dtype, "torch")

    def __str__(self) -> str:
        if self.metric == "busbw":
            return f"{self.subject}{_BUSBW}{self.variant}"
        return f"{self.metric}_{self.subject}_{self.variant}"

    @classmethod
    def parse(cls, name: str) -> Headline:
        """The headline a summary name stands for; ValueError for a name outside the scheme."""
        for metric in ("matmul_peak", "host_link", "op_overhead", "sustained", "latency", "dram"):
            prefix = f"{metric}_"
            if name.startswith(prefix):
                subject, sep, variant = name.removeprefix(prefix).rpartition("_")
                if sep:
                    return cls(metric, subject, variant)
        op, sep, dtype = name.partition(_BUSBW)
        if sep and op and dtype:
            return cls("busbw", op, dtype)
        raise ValueError(f"not a gpuprobe headline name: {name!r}")

    @classmethod
    def try_parse(cls, name: str) -> Headline | None:
        try:
            return cls.parse(name)
        except ValueError:
            return None

    @property
    def dtype(self) -> str | None:
        """The dtype key the figure was measured in (matmul peaks and collectives), else None."""
        return {"matmul_peak": self.subject, "busbw": self.variant}.get(self.metric)

    @property
    def family(self) -> str | None:
        """The matmul compute family (fp8 for every fp8 variant); None for figures that are not matmuls."""
        return dtype_family(self.subject) if self.metric == "matmul_peak" else None

    @property
    def resource(self) -> str:
        """What on a spec sheet the figure is judged against: memory, a compute family, link or host."""
        fixed = {
            "dram": "memory",
            "busbw": "link",
            "host_link": "host",
            "op_overhead": "overhead",
            "latency": "latency",
        }
        return fixed.get(self.metric) or BLOCK_SCALED.get(
            dtype_family(self.subject), dtype_family(self.subject)
        )


def headlines(
    summary: list[dict[str, Any]], metric: str | None = None
) -> list[tuple[Headline, dict[str, Any]]]:
    """The summary rows named by a headline (of `metric`, when given), each with its parsed name."""
    out = []
    for row in summary:
        h = Headline.try_parse(row.get("name", ""))
        if h is not None and (metric is None or h.metric == metric):
            out.append((h, row))
    return out
