"""The matmul probe's case plan: the square sweep per dtype and variant, the decode-shaped GEMMs of each model
(its real N x K per linear at every M, the LM head in the dtype its format keeps it in), and the shapes the full
profile's search tries around the best square."""

from __future__ import annotations

from dataclasses import dataclass

from analysis.formats import head_format
from analysis.headline import dtype_family
from analysis.models import decode_linears, load_model
from probes.config import MatmulConfig


@dataclass(frozen=True)
class Case:
    kind: str  # "square", "search", "decode"
    dtype: str
    variant: str
    m: int
    n: int
    k: int
    model: str = ""
    op: str = ""

    @property
    def name(self) -> str:
        if self.kind == "decode":
            return f"decode/{self.model}/{self.op}/{self.dtype}/M={self.m}"
        shape = str(self.m) if self.kind == "square" else f"{self.m}x{self.n}x{self.k}"
        return f"{self.kind}/{self.dtype}/{self.variant}/{shape}"


def _variants(mm: MatmulConfig, dtype: str) -> list[str]:
    return [v for v in mm.variants if v == "torch" or dtype in mm.triton_dtypes]


def square_cases(mm: MatmulConfig) -> list[Case]:
    return [
        Case("square", d, v, s, s, s)
        for d in mm.dtypes
        for v in _variants(mm, d)
        for s in sorted(mm.square_sizes)
    ]


def decode_cases(mm: MatmulConfig) -> list[Case]:
    """Every layer's GEMM in every decode dtype; the LM head in the dtype a model in that format keeps it in
    (16-bit for fp8, int8 and weight-only models: analysis.decode.head_format), each once."""
    out: list[Case] = []
    for model in mm.decode_models:
        cfg = load_model(model)
        for lin in decode_linears(cfg, mm.decode_tp):
            dtypes = mm.decode_dtypes
            if lin.op == "lm_head":
                dtypes = tuple(dict.fromkeys(_head_dtype(d) for d in dtypes))
            for d in dtypes:
                out.extend(
                    Case("decode", d, "torch", m, lin.n, lin.k, model, lin.op) for m in sorted(mm.decode_m)
                )
    return out


def _head_dtype(key: str) -> str:
    fam = dtype_family(key)
    return key if head_format(fam) == fam else head_format(fam)


def search_shapes(best: int, step: int, radius: int) -> list[tuple[int, int, int]]:
    """(M, N, K) around a square size, nearest first, excluding the square itself."""
    span = [best + step * i for i in range(-radius, radius + 1) if best + step * i > 0]
    shapes = [(m, n, k) for m in span for n in span for k in span if (m, n, k) != (best, best, best)]
    return sorted(shapes, key=lambda s: (sum(abs(x - best) for x in s), s))
