"""Loading the user's workload for `probes.profile` and its `--trace`: the factory named MODULE:FUNCTION, the user's
own frame of an error it raised, and a roofline measured on the spot when no run document is given."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from probes.config import ConfigError, RunConfig


def fresh_run_doc(device: torch.device, cfg: RunConfig) -> dict[str, Any]:
    """A minimal run document from a quick bandwidth + matmul probe on `device` (no file written)."""
    from analysis.rundoc import headline_summary
    from probes import bandwidth, matmul
    from probes.context import Context
    from probes.device import describe_devices
    from probes.nvml import Nvml

    nvml = Nvml()
    ctx = Context(cfg=cfg, devices=[device], nvml=nvml)
    ms = [m.to_dict() for m in bandwidth.run(ctx) + matmul.run(ctx)]
    return {"summary": headline_summary(ms), "measurements": ms, "devices": describe_devices([device], nvml)}


def load_factory(spec: str) -> Callable[..., Any]:
    if ":" not in spec:
        raise ConfigError(f"{spec!r}: expected MODULE:FUNCTION")
    mod_name, fn_name = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"{spec}: cannot import {mod_name}: {exc}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{spec}: {mod_name} has no callable {fn_name!r}")
    return fn


def user_frame(exc: BaseException) -> str:
    """' (at FILE:LINE in FUNC)' of the deepest frame of the user's own code (not gpuprobe's, not a library's)."""
    import traceback

    ours = Path(__file__).resolve().parent.parent
    theirs = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not Path(f.filename).resolve().is_relative_to(ours / "probes")
        and "site-packages" not in f.filename
        and not f.filename.startswith("<")
    ]
    return f" (at {theirs[-1].filename}:{theirs[-1].lineno} in {theirs[-1].name})" if theirs else ""


def call_factory(target: str, device: torch.device) -> Any:
    """What the user's factory MODULE:FUNCTION makes for `device`; its failure is one line (theirs to fix)."""
    factory = load_factory(target)
    try:
        return factory(device)
    except Exception as exc:
        from analysis.rundoc import error_line

        raise ConfigError(f"{target}({device}) failed: {error_line(exc)}{user_frame(exc)}") from None
