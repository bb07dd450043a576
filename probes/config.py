"""bench.toml -> frozen, validated dataclasses.

The file has one section per concern (`[timing]`, `[bandwidth]`, `[hostlink]`) holding the defaults (the
shipped bench.toml is the only place defaults live: the dataclasses of `probes.sections` hold types and checks, and another
bench.toml is read over the shipped one's sections), and
`[profiles.NAME]` tables that pick the probes to run and override any default for that profile
(`[profiles.full.bandwidth]`). Everything is validated before anything runs: a bad file is one line naming
the file, the key and the problem (`ConfigError`, exit code 2 in the CLIs), never a half-run.

    python -m probes.config [--config bench.toml] [--profile full]   # the resolved config (its time: probes.estimate)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.cli import BadInput, read_text
from probes import REGISTRY
from probes.sections import (
    SECTIONS,
    BandwidthConfig,
    BenchConfig,
    CollectivesConfig,
    DecodeConfig,
    HealthConfig,
    HostlinkConfig,
    LatencyConfig,
    MatmulConfig,
    TimingConfig,
)
from probes.tomlcheck import ConfigError, choices, coerce, non_empty

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO_ROOT / "bench.toml"
PROBE_NAMES = tuple(REGISTRY)


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
    latency: LatencyConfig
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


if __name__ == "__main__":  # the resolved profile; its time on a GPU node: python -m probes.estimate
    from analysis.cli import ArgumentParser, guard

    _ap = ArgumentParser(prog="python -m probes.config", description="Print the resolved bench.toml profile.")
    _ap.add_argument("--config", default=None)
    _ap.add_argument("--profile", default=None)
    _args = _ap.parse_args()
    sys.exit(
        guard(
            lambda: (
                print(json.dumps(load_config(_args.config, _args.profile, "gpu").to_dict(), indent=2)) or 0
            )
        )
    )
