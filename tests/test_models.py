"""Model configs: parameter counts of the bundled models (the published parameter counts of their model cards), KV bytes (DESIGN.md's seed arithmetic)."""

from __future__ import annotations

import pytest

from analysis.models import bundled_models, experts_touched, kv_bytes_per_token, load_model, parameter_count

PARAMS = {
    "llama-2-7b": 6.74e9,
    "llama-2-70b": 69.0e9,
    "llama-3.1-8b": 8.03e9,
    "llama-3.1-70b": 70.6e9,
    "llama-3.1-405b": 405.9e9,
    "llama-3.2-1b": 1.24e9,
    "qwen3-8b": 8.19e9,
    "qwen3-32b": 32.8e9,
    "qwen2.5-0.5b": 0.49e9,
    "mixtral-8x7b": 46.7e9,
    "llama-2-13b": 13.0e9,
    "mistral-7b": 7.24e9,
    "codellama-34b": 33.7e9,
}


def test_every_bundled_model_has_its_published_count():
    assert sorted(PARAMS) == bundled_models()


@pytest.mark.parametrize(("name", "expected"), sorted(PARAMS.items()))
def test_parameter_counts_within_one_percent(name, expected):
    assert parameter_count(load_model(name)) == pytest.approx(expected, rel=0.01)


def test_kv_cache_seed_arithmetic():
    cfg = load_model("llama-3.1-70b")  # 80 layers, 8 KV heads, head_dim 128
    bf16_32k = kv_bytes_per_token(cfg, 2) * 32_768
    assert bf16_32k / 1e9 == pytest.approx(10.7, abs=0.05)
    assert bf16_32k / 2**30 == pytest.approx(10.0, abs=0.05)
    fp8_4k = kv_bytes_per_token(cfg, 1) * 4_096
    assert fp8_4k / 1e9 == pytest.approx(0.67, abs=0.005)
    assert fp8_4k / 2**30 == pytest.approx(0.63, abs=0.006)  # 0.625


def test_experts_touched_by_a_batch():
    mix = load_model("mixtral-8x7b")
    assert experts_touched(mix, 1) == pytest.approx(2.0)
    assert experts_touched(mix, 64) == pytest.approx(8.0, rel=1e-6)  # a big batch touches every expert
    assert experts_touched(load_model("llama-3.1-8b"), 64) == 1.0
