"""bench.toml -> frozen, validated dataclasses.

The file has one section per concern (`[timing]`, `[bandwidth]`, `[hostlink]`) holding the defaults (the
shipped bench.toml is the only place defaults live: the dataclasses below hold types and checks, and another
bench.toml is read over the shipped one's sections), and
`[profiles.NAME]` tables that pick the probes to run and override any default for that profile
(`[profiles.full.bandwidth]`). Everything is validated before anything runs: a bad file is one line naming
the file, the key and the problem (`ConfigError`, exit code 2 in the CLIs), never a half-run.

    python -m probes.config [--config bench.toml] [--profile full] [--gpus 8]   # resolved config, time estimate
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.cli import BadInput, read_text
from probes import REGISTRY
from probes.tomlcheck import (
    ConfigError,
    choices,
    coerce,
    duration,
    fraction,
    non_empty,
    non_negative,
    positive,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO_ROOT / "bench.toml"
PROBE_NAMES = tuple(REGISTRY)


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


COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter")


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


def _memory_fraction(name: str, v: Any) -> str | None:
    return (
        None
        if 0 < v <= 0.95
        else f"must be in (0, 0.95] (the rest is the driver's and the soak's), got {v!r}"
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


SECTIONS: dict[str, type] = {
    "timing": TimingConfig,
    "bandwidth": BandwidthConfig,
    "hostlink": HostlinkConfig,
    "matmul": MatmulConfig,
    "collectives": CollectivesConfig,
    "bench": BenchConfig,
    "decode": DecodeConfig,
    "health": HealthConfig,
}
DEVICE_KINDS = ("cpu", "gpu")


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one run: a profile's probes and every section with its overrides."""

    profile: str
    probes: tuple[str, ...]
    timing: TimingConfig
    bandwidth: BandwidthConfig
    hostlink: HostlinkConfig
    matmul: MatmulConfig
    collectives: CollectivesConfig
    bench: BenchConfig
    decode: DecodeConfig
    health: HealthConfig
    source: str
    device_kind: str | None = None  # "cpu" or "gpu" once the [profiles.NAME.<kind>] overrides are applied

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_config_path() -> Path:
    """./bench.toml when there is one (a user's own), else the one shipped beside the package."""
    local = Path.cwd() / "bench.toml"
    return local if local.is_file() else SHIPPED_CONFIG


@functools.lru_cache(maxsize=1)
def shipped_defaults() -> dict[str, Any]:
    """The sections of the shipped bench.toml: the defaults under any other bench.toml ({} if it is absent)."""
    try:
        with open(SHIPPED_CONFIG, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {sec: raw[sec] for sec in SECTIONS if isinstance(raw.get(sec), dict)}


def _build(cls: type, prefix: str, layers: list[tuple[str, dict[str, Any]]]) -> Any:
    """Instantiate `cls` from the defaults overridden by each layer in turn, validating every value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer_prefix, layer in layers:
        for key, raw in layer.items():
            where = f"{layer_prefix}.{key}"
            if key not in fields:
                raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
            values[key] = (where, coerce(where, hints[key], raw))
    resolved = {}
    for name, f in fields.items():
        if name not in values:  # every default is in the shipped bench.toml, the one place defaults live
            raise ConfigError(
                f"{prefix}.{name}: missing, and no default for it (the shipped bench.toml has one)"
            )
        where, value = values[name]
        for check in f.metadata.get("checks", ()):
            problem = check(name, value)
            if problem:
                raise ConfigError(f"{where}: {problem}")
        resolved[name] = value
    obj = cls(**resolved)
    if isinstance(obj, TimingConfig) and obj.min_reps > obj.max_reps:
        raise ConfigError(f"{prefix}.min_reps: {obj.min_reps} is larger than max_reps {obj.max_reps}")
    if isinstance(obj, CollectivesConfig):
        if obj.min_bytes > obj.max_bytes:
            raise ConfigError(f"{prefix}.min_bytes: {obj.min_bytes} is larger than max_bytes {obj.max_bytes}")
        if obj.size_factor < 2:
            raise ConfigError(f"{prefix}.size_factor: must be at least 2, got {obj.size_factor}")
    return obj


def load_config(
    path: str | Path | None = None, profile: str | None = None, device_kind: str | None = None
) -> RunConfig:
    """Read and validate bench.toml; every problem is a ConfigError whose message starts with the file name.

    With `device_kind` ("cpu" or "gpu"), the profile's `[profiles.NAME.<kind>.SECTION]` overrides apply too:
    a CPU box and a GPU node run the same profile at sizes that suit each.
    """
    p = Path(path) if path is not None else default_config_path()
    try:
        raw = tomllib.loads(read_text(p, "bench.toml"))
    except BadInput as exc:
        hint = " (run from the repository, or pass --config PATH)" if path is None else ""
        raise ConfigError(f"{exc}{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: TOML syntax error: {exc}") from None
    try:
        return _resolve(raw, profile, str(p), device_kind)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def _resolve(
    raw: dict[str, Any], profile: str | None, source: str, device_kind: str | None = None
) -> RunConfig:
    known_top = {"default_profile", "profiles", *SECTIONS}
    for key in raw:
        if key not in known_top:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known_top))})")
    for key in SECTIONS:
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{key}: expected a table")
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError("profiles: at least one [profiles.NAME] table is required")
    default = raw.get("default_profile", next(iter(profiles)))
    if not isinstance(default, str):
        raise ConfigError(f"default_profile: expected a string, got {default!r}")
    if default not in profiles:
        raise ConfigError(f"default_profile: unknown profile {default!r} (known: {', '.join(profiles)})")
    name = profile or default
    if name not in profiles:
        raise ConfigError(f"profile {name!r} is not defined (known: {', '.join(profiles)})")
    # Validate every profile, not only the chosen one: a typo in `full` should not wait for the day it is used.
    for n, body in profiles.items():
        for kind in (None, *DEVICE_KINDS):
            _resolve_profile(n, body, raw, source, kind)
    return _resolve_profile(name, profiles[name], raw, source, device_kind)


def _resolve_profile(
    name: str, body: Any, raw: dict[str, Any], source: str, device_kind: str | None
) -> RunConfig:
    prefix = f"profiles.{name}"
    if not isinstance(body, dict):
        raise ConfigError(f"{prefix}: expected a table")
    for key in body:
        if key != "probes" and key not in SECTIONS and key not in DEVICE_KINDS:
            raise ConfigError(
                f"{prefix}.{key}: unknown key (known: probes, {', '.join((*SECTIONS, *DEVICE_KINDS))})"
            )
    for kind in DEVICE_KINDS:
        table = body.get(kind, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{prefix}.{kind}: expected a table")
        for key in table:
            if key not in SECTIONS:
                raise ConfigError(f"{prefix}.{kind}.{key}: unknown key (known: {', '.join(SECTIONS)})")
    probes = coerce(f"{prefix}.probes", tuple[str, ...], body.get("probes", list(PROBE_NAMES)))
    problem = non_empty("probes", probes) or choices(*PROBE_NAMES)("probes", probes)
    if problem:
        raise ConfigError(f"{prefix}.probes: {problem}")
    sections = {}
    for sec, cls in SECTIONS.items():
        override = body.get(sec, {})
        if not isinstance(override, dict):
            raise ConfigError(f"{prefix}.{sec}: expected a table")
        layers = [
            (sec, shipped_defaults().get(sec, {})),
            (sec, raw.get(sec, {})),
            (f"{prefix}.{sec}", override),
        ]
        if device_kind is not None:
            kind_override = body.get(device_kind, {}).get(sec, {})
            if not isinstance(kind_override, dict):
                raise ConfigError(f"{prefix}.{device_kind}.{sec}: expected a table")
            layers.append((f"{prefix}.{device_kind}.{sec}", kind_override))
        sections[sec] = _build(cls, sec, layers)
    return RunConfig(profile=name, probes=probes, source=source, device_kind=device_kind, **sections)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m probes.config", description="Print the resolved bench.toml profile."
    )
    ap.add_argument("--config", default=None)
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.profile)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


if (
    __name__ == "__main__"
):  # the profile, then its time on a GPU node (probes.estimate sits above this module)
    from probes.estimate import main as estimate_main

    sys.exit(estimate_main())
