"""Shared set-up of the pytest-benchmark cases: the device, and sizes from bench.toml's [bench] section."""

from __future__ import annotations

import pytest
import torch

from probes.config import BenchConfig, load_config

DEVICE = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def bench() -> BenchConfig:
    return load_config(None, "quick", "cpu" if DEVICE.type == "cpu" else "gpu").bench


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE
