"""bench.toml -> frozen, validated dataclasses.

The file has one section per concern (`[timing]`, `[bandwidth]`, `[hostlink]`) holding the defaults, and
`[profiles.NAME]` tables that pick the probes to run and override any default for that profile
(`[profiles.full.bandwidth]`). Everything is validated before anything runs: a bad file is one line naming
the file, the key and the problem (`ConfigError`, exit code 2 in the CLIs), never a half-run.

    python -m probes.config [--config bench.toml] [--profile full]   # print the resolved config
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes import REGISTRY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE_NAMES = tuple(REGISTRY)


class ConfigError(ValueError):
    """A bad bench.toml or a bad command-line value: one line, exit code 2."""


def _positive(name: str, v: Any) -> str | None:
    values = v if isinstance(v, tuple) else (v,)
    return None if all(x > 0 for x in values) else f"must be positive, got {v!r}"


def _non_negative(name: str, v: Any) -> str | None:
    values = v if isinstance(v, tuple) else (v,)
    return None if all(x >= 0 for x in values) else f"must not be negative, got {v!r}"


def _fraction(name: str, v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1], got {v!r}"


def _non_empty(name: str, v: Any) -> str | None:
    return None if len(v) > 0 else "must not be empty"


def _choices(*allowed: str):
    def check(name: str, v: Any) -> str | None:
        values = v if isinstance(v, tuple) else (v,)
        bad = [x for x in values if x not in allowed]
        return None if not bad else f"unknown value {bad[0]!r} (expected one of: {', '.join(allowed)})"

    return check


def _models(name: str, v: Any) -> str | None:
    from analysis.models import ModelConfigError, load_model

    for model in v:
        try:
            load_model(model)
        except ModelConfigError as exc:
            return str(exc)
    return None


def _opt(default: Any, *checks: Any) -> Any:
    return field(default=default, metadata={"checks": checks})


@dataclass(frozen=True)
class TimingConfig:
    """How every case is timed (probes.timing)."""

    warmup_s: float = _opt(0.1, _non_negative)  # by time, so clocks and caches settle whatever the case size
    min_reps: int = _opt(5, _positive)
    max_reps: int = _opt(1000, _positive)
    target_rse: float = _opt(
        0.01, _positive
    )  # stop when the relative standard error of the mean is below this
    case_budget_s: float = _opt(1.0, _positive)  # ...or when this much time was spent timing the case
    telemetry_interval_s: float = _opt(0.05, _positive)


@dataclass(frozen=True)
class BandwidthConfig:
    """STREAM-style device-memory bandwidth (probes.bandwidth)."""

    dtype: str = _opt("float32", _choices("float32", "float16", "bfloat16"))
    patterns: tuple[str, ...] = _opt(
        ("read", "write", "copy", "triad"), _non_empty, _choices("read", "write", "copy", "triad")
    )
    variants: tuple[str, ...] = _opt(("torch", "triton"), _non_empty, _choices("torch", "triton"))
    # Working-set sizes as multiples of the device's last-level cache (GPU L2, CPU L3), so one list spans
    # the cache plateau and the DRAM plateau on an L4 (48 MB L2) and an H100 (50 MB) alike.
    working_set_cache_multiples: tuple[float, ...] = _opt(
        (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0), _non_empty, _positive
    )
    dram_min_cache_multiple: float = _opt(
        4.0, _positive
    )  # sizes at or above this count toward the DRAM headline
    max_working_set_bytes: int = _opt(8_000_000_000, _positive)
    max_memory_fraction: float = _opt(0.5, _fraction)  # of the device's free memory
    triton_block: int = _opt(4096, _positive)


@dataclass(frozen=True)
class HostlinkConfig:
    """Host <-> device copy bandwidth over PCIe / C2C (probes.hostlink)."""

    sizes_bytes: tuple[int, ...] = _opt((1 << 20, 16 << 20, 256 << 20), _non_empty, _positive)
    memory: tuple[str, ...] = _opt(("pinned", "pageable"), _non_empty, _choices("pinned", "pageable"))
    directions: tuple[str, ...] = _opt(("h2d", "d2h", "bidir"), _non_empty, _choices("h2d", "d2h", "bidir"))


MATMUL_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e4m3_rowwise", "fp8_e5m2", "int8")


@dataclass(frozen=True)
class MatmulConfig:
    """Matmul throughput per dtype: square sweep, shape search, decode-shaped GEMMs (probes.matmul)."""

    dtypes: tuple[str, ...] = _opt(MATMUL_DTYPES, _non_empty, _choices(*MATMUL_DTYPES))
    variants: tuple[str, ...] = _opt(("torch", "triton"), _non_empty, _choices("torch", "triton"))
    # dtypes the Triton kernel is timed in (on GPUs), beside torch/cuBLAS
    triton_dtypes: tuple[str, ...] = _opt(("fp16", "bf16", "fp8_e4m3"), _choices("fp16", "bf16", "fp8_e4m3"))
    square_sizes: tuple[int, ...] = _opt((1024, 2048, 4096, 8192, 16384), _non_empty, _positive)
    # MAMF-style search around the best square size, M, N and K in steps of search_step (0 s: no search)
    search_dtypes: tuple[str, ...] = _opt(("bf16", "fp8_e4m3"), _choices(*MATMUL_DTYPES))
    search_step: int = _opt(256, _positive)
    search_radius_steps: int = _opt(2, _non_negative)
    search_budget_s: float = _opt(0.0, _non_negative)  # per dtype
    decode_models: tuple[str, ...] = _opt(("llama-3.1-8b",), _models)  # bundled names or config.json paths
    decode_dtypes: tuple[str, ...] = _opt(("bf16", "fp8_e4m3"), _choices(*MATMUL_DTYPES))
    decode_m: tuple[int, ...] = _opt((1, 2, 4, 8, 16, 32, 64, 128, 256, 512), _positive)
    decode_tp: int = _opt(1, _positive)
    decode_devices: str = _opt(
        "first", _choices("first", "all")
    )  # shapes for the roofline: one GPU is enough
    # Extra warm-up before a device's first matmul case: tensor-core clocks and power take a second or so to
    # reach their sustained level; later cases follow back to back and need only timing.warmup_s.
    first_warmup_s: float = _opt(1.0, _non_negative)
    max_memory_fraction: float = _opt(0.8, _fraction)


COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter")


@dataclass(frozen=True)
class CollectivesConfig:
    """All-reduce / all-gather / reduce-scatter bus bandwidth and the P2P link matrix (probes.collectives)."""

    ops: tuple[str, ...] = _opt(COLLECTIVE_OPS, _non_empty, _choices(*COLLECTIVE_OPS))
    dtypes: tuple[str, ...] = _opt(("bf16", "fp32"), _non_empty, _choices("bf16", "fp32", "fp16"))
    min_bytes: int = _opt(8, _positive)
    max_bytes: int = _opt(1 << 30, _positive)
    size_factor: int = _opt(4, _positive)  # x2 or x4 steps from min_bytes to max_bytes
    plateau_sizes: int = _opt(3, _positive)  # the largest sizes that make the busbw headline
    cpu_world_size: int = _opt(2, _positive)  # gloo processes on a CPU box (--world-size overrides)
    collective_timeout_s: float = _opt(60.0, _positive)  # a rank silent this long is hung: tear down
    startup_timeout_s: float = _opt(120.0, _positive)  # spawning, importing torch, rendezvous
    p2p_bytes: int = _opt(256 << 20, _positive)  # per copy in the GPU peer-to-peer matrix


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the pytest-benchmark cases (tests/benchmarks): regression tracking of the headline cases."""

    bandwidth_bytes: int = _opt(2 << 30, _positive)  # working set of copy and triad: DRAM-sized
    matmul_dtypes: tuple[str, ...] = _opt(
        ("fp32", "tf32", "bf16", "fp8_e4m3", "int8"), _choices(*MATMUL_DTYPES)
    )
    matmul_peak_size: int = _opt(8192, _positive)
    decode_model: str = _opt("llama-3.1-8b", lambda name, v: _models(name, (v,)))
    decode_op: str = _opt("gate_up", _choices("qkv", "o", "gate_up", "down", "lm_head"))
    decode_m: tuple[int, ...] = _opt((1, 64), _non_empty, _positive)
    allreduce_bytes: int = _opt(64 << 20, _positive)
    hostlink_bytes: int = _opt(256 << 20, _positive)
    rounds: int = _opt(10, _positive)
    warmup_rounds: int = _opt(2, _non_negative)


@dataclass(frozen=True)
class DecodeConfig:
    """Real decode steps of a model-shaped network (probes.decode)."""

    model: str = _opt("llama-3.1-8b", lambda name, v: _models(name, (v,)))
    dtype: str = _opt("bf16", _choices("fp32", "bf16", "fp16"))
    batches: tuple[int, ...] = _opt((1, 8, 32), _non_empty, _positive)
    context: int = _opt(2048, _positive)  # tokens already in each request's KV cache
    max_layers: int = _opt(0, _non_negative)  # 0: every layer; else run this many and scale by layer count


SECTIONS: dict[str, type] = {
    "timing": TimingConfig,
    "bandwidth": BandwidthConfig,
    "hostlink": HostlinkConfig,
    "matmul": MatmulConfig,
    "collectives": CollectivesConfig,
    "bench": BenchConfig,
    "decode": DecodeConfig,
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
    source: str
    device_kind: str | None = None  # "cpu" or "gpu" once the [profiles.NAME.<kind>] overrides are applied

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_config_path() -> Path:
    """./bench.toml when there is one (a user's own), else the one shipped beside the package."""
    local = Path.cwd() / "bench.toml"
    return local if local.is_file() else REPO_ROOT / "bench.toml"


def _coerce(where: str, tp: Any, value: Any) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(f"{where}[{i}]", elem, v) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - no optional fields yet
        raise ConfigError(f"{where}: unsupported type")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


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
            values[key] = (where, _coerce(where, hints[key], raw))
    resolved = {}
    for name, f in fields.items():
        where, value = values.get(name, (f"{prefix}.{name}", f.default))
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
        with open(p, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        hint = "" if path is not None else " (run from the repository, or pass --config PATH)"
        raise ConfigError(f"{p}: no such file{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: TOML syntax error: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
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
    probes = _coerce(f"{prefix}.probes", tuple[str, ...], body.get("probes", list(PROBE_NAMES)))
    problem = _non_empty("probes", probes) or _choices(*PROBE_NAMES)("probes", probes)
    if problem:
        raise ConfigError(f"{prefix}.probes: {problem}")
    sections = {}
    for sec, cls in SECTIONS.items():
        override = body.get(sec, {})
        if not isinstance(override, dict):
            raise ConfigError(f"{prefix}.{sec}: expected a table")
        layers = [(sec, raw.get(sec, {})), (f"{prefix}.{sec}", override)]
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


if __name__ == "__main__":
    sys.exit(main())
