"""What a decode projection is asked: weight formats, KV dtypes, the serving engine, and the Query itself.

Weight formats: fp32, bf16, fp16, fp8 (W8A8), int8 (W8A8), int8-wo and int4-wo (weight-only, bf16
activations; int4 carries a bf16 scale and zero per `group_size` weights), and Blackwell's block-scaled mxfp8,
nvfp4 and mxfp4 (weights and activations in the format, GEMMs at the sheet's FP8 / FP4 rate). KV cache: fp32, bf16, fp16, fp8,
int8. The engine (analysis/engines.py) decides the launch mode (eager PyTorch, CUDA graphs, a C++ runtime's
native launches), the kernels and the host time per step; `launch` overrides its launch mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.cli import BadInput
from analysis.engines import LAUNCH_MODES, Engine, resolve
from analysis.headline import compute_family
from analysis.models import ModelConfig

FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int8-wo", "int4-wo", "mxfp8", "nvfp4", "mxfp4")
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")
ELEMENT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}
BYTES_PER_WEIGHT = {**ELEMENT_BYTES, "int8-wo": 1.0, "int4-wo": 0.5}  # before scales
# Blackwell's block-scaled formats, their one-byte block scale included (probes/blockscaled.py): MXFP8 E4M3 + an
# E8M0 scale per 32, NVFP4 E2M1 + an E4M3 scale per 16 (the per-tensor fp32 scale is negligible), MXFP4 per 32
BYTES_PER_WEIGHT.update({"mxfp8": 1.0 + 1 / 32, "nvfp4": 0.5 + 1 / 16, "mxfp4": 0.5 + 1 / 32})
GROUP_SIZES = (32, 64, 128, 256)


class ProjectionError(BadInput):
    """Inputs that cannot be projected (TP not dividing heads, batch <= 0, a run without the figures)."""


def weight_bytes(fmt: str, group_size: int = 128, group_bytes: float = 4.0) -> float:
    """Bytes per weight read, scales included: int4-wo adds `group_bytes` per group (torch's int4 layout: a
    bf16 scale and zero, 4 bytes; GGML's Q4_0 and MLC's q4f16: an fp16 scale, 2; AWQ / GPTQ: fp16 scale and
    a 4-bit zero, 2.5)."""
    return BYTES_PER_WEIGHT[fmt] + (group_bytes / group_size if fmt == "int4-wo" else 0.0)


def activation_dtype(fmt: str) -> str:
    return fmt if fmt in ("fp32", "fp16") else "bf16"


def head_format(fmt: str) -> str:
    """The LM head's format: quantized models keep it in 16 bits (vLLM, TensorRT-LLM, AWQ/GPTQ checkpoints)."""
    return fmt if fmt in ("fp32", "bf16", "fp16") else activation_dtype(fmt)


@dataclass(frozen=True)
class Query:
    model: ModelConfig
    weight_dtype: str = "bf16"
    kv_dtype: str | None = None
    tp: int = 1
    input_len: int = 1024
    output_len: int = 256
    price_per_gpu_hour: float | None = None
    group_size: int = 128
    ops_per_layer: int | None = None  # small ops per layer; None: the engine's count
    ops_head: int | None = None
    # the serving engine (analysis/engines.py); the default is what capacity planners run (engines.toml)
    engine: Engine = field(default_factory=resolve)
    # overrides the engine's launch mode: "eager" (PyTorch: an aten op per kernel, Python and dispatch per
    # op), "graph" (kernels replayed from a CUDA graph), "native" (a C++ runtime launching one by one)
    launch: str | None = None
    # MoE models: experts spread over the TP GPUs (expert parallelism, EP = TP) instead of each expert sharded:
    # the MoE layers' all-reduce becomes two all-to-alls (dispatch and combine)
    expert_parallel: bool = False

    @property
    def run_engine(self) -> Engine:
        """The engine as this query runs it (its launch mode overridden where asked)."""
        return self.engine.with_launch(self.launch)

    @property
    def kv(self) -> str:
        return self.kv_dtype or activation_dtype(self.weight_dtype)

    @property
    def compute_dtype(self) -> str:
        return compute_family(self.weight_dtype)


def check_query(q: Query) -> None:
    """ProjectionError (one line) for a format, KV dtype or group size the model does not know."""
    if q.weight_dtype not in FORMATS:
        raise ProjectionError(f"--dtype {q.weight_dtype!r}: expected one of {', '.join(FORMATS)}")
    if q.kv not in KV_DTYPES:
        raise ProjectionError(f"--kv-dtype {q.kv!r}: expected one of {', '.join(KV_DTYPES)}")
    if q.group_size not in GROUP_SIZES:
        raise ProjectionError(
            f"--group-size {q.group_size}: expected one of {', '.join(map(str, GROUP_SIZES))}"
        )
    if q.weight_dtype == "int4-wo" and q.model.hidden % q.group_size:
        raise ProjectionError(f"--group-size {q.group_size} does not divide the hidden size {q.model.hidden}")
    if q.tp < 1:
        raise ProjectionError(f"--tp {q.tp}: must be at least 1")
    if q.launch is not None and q.launch not in LAUNCH_MODES:
        raise ProjectionError(f"--launch {q.launch!r}: expected one of {', '.join(LAUNCH_MODES)}")
