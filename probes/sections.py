"""The sections of bench.toml as frozen dataclasses: each field's type and checks (the values live in
bench.toml; `probes.config` reads the file, layers profiles over sections and fills these in).

A field is `_checks(check, ...)`: its type is the annotation, `probes.tomlcheck.coerce` checks the type
(finite numbers, integers, lists), then each check returns None or what is wrong in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probes.tomlcheck import (
    choices,
    duration,
    fraction,
    non_empty,
    non_negative,
    positive,
)


def _models(name: str, v: Any) -> str | None:
    from analysis.models import ModelConfigError, load_model

    for model in v:
        try:
            load_model(model)
        except ModelConfigError as exc:
            return str(exc)
    return None


def _checks(*checks: Any) -> Any:
    """A config field: its type is the annotation, its default is in bench.toml, these validate it."""
    return field(metadata={"checks": checks})


@dataclass(frozen=True)
class TimingConfig:
    """How every case is timed (probes.timing)."""

    warmup_s: float = _checks(
        non_negative, duration
    )  # by time, so clocks and caches settle whatever the case size
    min_reps: int = _checks(positive)
    max_reps: int = _checks(positive)
    target_rse: float = _checks(positive)  # stop when the relative standard error of the mean is below this
    case_budget_s: float = _checks(positive, duration)  # ...or when this much time was spent timing the case
    telemetry_interval_s: float = _checks(positive, duration)
    # The whole profile's probes (probes.runner.Schedule): once a probe has used its share, its optional
    # cases (those no headline comes from) are skipped as "trimmed". 0: no budget.
    profile_budget_s: float = _checks(non_negative, duration)


@dataclass(frozen=True)
class BandwidthConfig:
    """STREAM-style device-memory bandwidth (probes.bandwidth)."""

    dtype: str = _checks(choices("float32", "float16", "bfloat16"))
    patterns: tuple[str, ...] = _checks(non_empty, choices("read", "write", "copy", "triad"))
    variants: tuple[str, ...] = _checks(non_empty, choices("torch", "triton"))
    # Working-set sizes as multiples of the device's last-level cache (GPU L2, CPU L3), so one list spans
    # the cache plateau and the DRAM plateau on an L4 (48 MB L2) and an H100 (50 MB) alike.
    working_set_cache_multiples: tuple[float, ...] = _checks(non_empty, positive)
    dram_min_cache_multiple: float = _checks(
        positive
    )  # sizes at or above this count toward the DRAM headline
    max_working_set_bytes: int = _checks(positive)
    max_memory_fraction: float = _checks(fraction)  # of the device's free memory
    triton_block: int = _checks(positive)


@dataclass(frozen=True)
class HostlinkConfig:
    """Host <-> device copy bandwidth over PCIe / C2C (probes.hostlink)."""

    sizes_bytes: tuple[int, ...] = _checks(non_empty, positive)
    memory: tuple[str, ...] = _checks(non_empty, choices("pinned", "pageable"))
    directions: tuple[str, ...] = _checks(non_empty, choices("h2d", "d2h", "bidir"))


MATMUL_DTYPES = (
    "fp32",
    "tf32",
    "fp16",
    "bf16",
    "fp8_e4m3",
    "fp8_e4m3_rowwise",
    "fp8_e5m2",
    "int8",
    "int8-wo",
    "int4-wo",
    "mxfp8",  # block-scaled (Blackwell): E4M3 x 32 with E8M0 scales
    "nvfp4",  # E2M1 x 16 with E4M3 scales and an fp32 tensor scale
    "mxfp4",  # E2M1 x 32 with E8M0 scales
)


@dataclass(frozen=True)
class MatmulConfig:
    """Matmul throughput per dtype: square sweep, shape search, decode-shaped GEMMs (probes.matmul)."""

    dtypes: tuple[str, ...] = _checks(non_empty, choices(*MATMUL_DTYPES))
    variants: tuple[str, ...] = _checks(non_empty, choices("torch", "triton"))
    # dtypes the Triton kernel is timed in (on GPUs), beside torch/cuBLAS
    triton_dtypes: tuple[str, ...] = _checks(choices("fp16", "bf16", "fp8_e4m3"))
    square_sizes: tuple[int, ...] = _checks(non_empty, positive)
    # MAMF-style search around the best square size, M, N and K in steps of search_step (0 s: no search)
    search_dtypes: tuple[str, ...] = _checks(choices(*MATMUL_DTYPES))
    search_step: int = _checks(positive)
    search_radius_steps: int = _checks(non_negative)
    search_budget_s: float = _checks(non_negative, duration)  # per dtype
    decode_models: tuple[str, ...] = _checks(_models)  # bundled names or config.json paths
    decode_dtypes: tuple[str, ...] = _checks(choices(*MATMUL_DTYPES))
    decode_m: tuple[int, ...] = _checks(positive)
    decode_tp: int = _checks(positive)
    decode_devices: str = _checks(choices("first", "all"))  # shapes for the roofline: one GPU is enough
    # Extra warm-up before a device's first matmul case: tensor-core clocks and power take a second or so to
    # reach their sustained level; later cases follow back to back and need only timing.warmup_s.
    first_warmup_s: float = _checks(non_negative, duration)
    # FP8 accumulation, one mode for cuBLAS (_scaled_mm use_fast_accum) and Triton alike; recorded per case
    fp8_accumulation: str = _checks(choices("precise", "fast"))
    group_size: int = _checks(choices(32, 64, 128, 256))  # int4-wo scales: one per group of K (decode too)
    max_memory_fraction: float = _checks(fraction)


COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


@dataclass(frozen=True)
class CollectivesConfig:
    """All-reduce / all-gather / reduce-scatter bus bandwidth and the P2P link matrix (probes.collectives)."""

    ops: tuple[str, ...] = _checks(non_empty, choices(*COLLECTIVE_OPS))
    dtypes: tuple[str, ...] = _checks(non_empty, choices("bf16", "fp32", "fp16"))
    min_bytes: int = _checks(positive)
    max_bytes: int = _checks(positive)
    size_factor: int = _checks(positive)  # x2 or x4 steps from min_bytes to max_bytes
    plateau_sizes: int = _checks(positive)  # the largest sizes that make the busbw headline
    cpu_world_size: int = _checks(positive)  # gloo processes on a CPU box (--world-size overrides)
    collective_timeout_s: float = _checks(positive, duration)  # a rank silent this long is hung: tear down
    startup_timeout_s: float = _checks(positive, duration)  # spawning, importing torch, rendezvous
    p2p_bytes: int = _checks(positive)  # per copy in the GPU peer-to-peer matrix
    p2p_pairs: str = _checks(choices("all", "ring"))  # every ordered GPU pair, or ring neighbours only


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the pytest-benchmark cases (tests/benchmarks): regression tracking of the headline cases."""

    bandwidth_bytes: int = _checks(positive)  # working set of copy and triad: DRAM-sized
    matmul_dtypes: tuple[str, ...] = _checks(choices(*MATMUL_DTYPES))
    matmul_peak_size: int = _checks(positive)
    decode_model: str = _checks(lambda name, v: _models(name, (v,)))
    decode_op: str = _checks(choices("qkv", "o", "gate_up", "down", "lm_head"))
    decode_m: tuple[int, ...] = _checks(non_empty, positive)
    allreduce_bytes: int = _checks(positive)
    hostlink_bytes: int = _checks(positive)
    rounds: int = _checks(positive)
    warmup_rounds: int = _checks(non_negative)


DECODE_FORMATS = ("fp32", "bf16", "fp16", "int8-wo", "int4-wo")  # weight formats the decode probe runs


@dataclass(frozen=True)
class DecodeConfig:
    """Real decode steps of a model-shaped network (probes.decode)."""

    model: str = _checks(lambda name, v: _models(name, (v,)))
    dtypes: tuple[str, ...] = _checks(non_empty, choices(*DECODE_FORMATS))
    batches: tuple[int, ...] = _checks(non_empty, positive)
    context: int = _checks(positive)  # tokens already in each request's KV cache
    max_layers: int = _checks(non_negative)  # 0: every layer; else run this many and scale by layer count


HEALTH_PATTERNS = ("walking_ones", "address", "random")


MAX_MEMORY_FRACTION = 0.95  # of the free memory the health memory test may take: the rest is the driver's


def _memory_fraction(name: str, v: Any) -> str | None:
    ok = 0 < v <= MAX_MEMORY_FRACTION
    return (
        None
        if ok
        else f"must be in (0, {MAX_MEMORY_FRACTION}] (the driver and the soak need the rest), got {v!r}"
    )


@dataclass(frozen=True)
class HealthConfig:
    """Node health (probes.health): a sustained matmul on every device at once, a memory test, NVML checks."""

    soak_s: float = _checks(positive, duration)  # back-to-back matmuls for this long
    window_s: float = _checks(positive, duration)  # one timeline point (TFLOPS, clocks, power) per window
    gpu_dtype: str = _checks(choices("bf16", "fp16"))
    gpu_size: int = _checks(positive)  # M = N = K of the soak's matmul on a GPU
    cpu_size: int = _checks(positive)  # ... on a CPU (fp32)
    memory_fraction: float = _checks(_memory_fraction)  # of the free memory the memory test writes and reads
    memory_max_bytes: int = _checks(non_negative)  # a cap on it (0: none); a CPU box tests host memory
    patterns: tuple[str, ...] = _checks(non_empty, choices(*HEALTH_PATTERNS))


@dataclass(frozen=True)
class LatencyConfig:
    """Load-to-use latency by pointer chase, tiny host-to-device and GPU-to-GPU copies (probes.latency)."""

    working_set_cache_multiples: tuple[float, ...] = _checks(non_empty, positive)  # x the last-level cache
    chase_steps: int = _checks(positive)  # dependent loads per timed repetition
    copy_bytes: int = _checks(positive)  # the tiny copy whose time is the link's latency
    devices: str = _checks(choices("first", "all"))  # chase and host copy on the first GPU, or on every one
    p2p_pairs: str = _checks(choices("none", "ring", "all"))  # GPU pairs whose tiny-copy latency is measured


SECTIONS: dict[str, type] = {
    "timing": TimingConfig,
    "bandwidth": BandwidthConfig,
    "hostlink": HostlinkConfig,
    "matmul": MatmulConfig,
    "collectives": CollectivesConfig,
    "bench": BenchConfig,
    "decode": DecodeConfig,
    "health": HealthConfig,
    "latency": LatencyConfig,
}
