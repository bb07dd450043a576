"""The decode probe's network: against a straightforward reference, and counted like the analysis counts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import fast_timing_toml, requires_cuda

import probes.decode as probe
import probes.decoder as pd
from analysis.models import ModelConfig, kv_bytes_per_token, load_model, parameter_count
from probes import quant
from probes.config import load_config
from probes.context import Context
from probes.nvml import Nvml

TINY = ModelConfig(
    name="tiny",
    hidden=64,
    intermediate=96,
    layers=2,
    heads=4,
    kv_heads=2,
    head_dim=16,
    vocab=50,
    tied_embeddings=False,
    experts=1,
    experts_per_token=1,
)


def rotate(t: torch.Tensor, pos: int, head_dim: int) -> torch.Tensor:
    half = head_dim // 2
    ang = pos / 10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    cos, sin = ang.cos(), ang.sin()
    return torch.cat(
        [t[..., :half] * cos - t[..., half:] * sin, t[..., half:] * cos + t[..., :half] * sin], -1
    )


def reference_step(m: pd.Decoder, tokens: torch.Tensor, pos: int) -> torch.Tensor:
    """Float64, one head and one sequence at a time, explicit softmax over every cached position."""
    cfg = m.cfg
    d = lambda t: t.double()  # noqa: E731
    out = []
    for b in range(tokens.shape[0]):
        x = d(m.embed[tokens[b]])
        for i, L in enumerate(m.layers):
            h = x / torch.sqrt((x * x).mean() + 1e-6) * d(L["attn_norm"])
            qkv = d(L["qkv"]) @ h
            q = qkv[: cfg.heads * cfg.head_dim].view(cfg.heads, cfg.head_dim)
            k = qkv[cfg.heads * cfg.head_dim : (cfg.heads + cfg.kv_heads) * cfg.head_dim].view(
                cfg.kv_heads, cfg.head_dim
            )
            v = qkv[(cfg.heads + cfg.kv_heads) * cfg.head_dim :].view(cfg.kv_heads, cfg.head_dim)
            q, k = rotate(q, pos, cfg.head_dim), rotate(k, pos, cfg.head_dim)
            keys = torch.cat([d(m.k_cache[i][b, :, :pos]), k[:, None]], dim=1)  # [kv, pos+1, hd]
            vals = torch.cat([d(m.v_cache[i][b, :, :pos]), v[:, None]], dim=1)
            heads = []
            for hq in range(cfg.heads):
                kv = hq // (cfg.heads // cfg.kv_heads)
                scores = keys[kv] @ q[hq] / math.sqrt(cfg.head_dim)
                w = torch.exp(scores - scores.max())
                heads.append((w / w.sum()) @ vals[kv])
            x = x + d(L["o"]) @ torch.cat(heads)
            h = x / torch.sqrt((x * x).mean() + 1e-6) * d(L["mlp_norm"])
            gate, up = (d(L["gate_up"]) @ h).chunk(2)
            x = x + d(L["down"]) @ (gate * torch.sigmoid(gate) * up)
        x = x / torch.sqrt((x * x).mean() + 1e-6) * d(m.final_norm)
        out.append(d(m.lm_head) @ x)
    return torch.stack(out)


def dense(m: pd.Decoder) -> pd.Decoder:
    """The same decoder with every quantized weight replaced by its float64 dequantization."""
    layers = [
        {k: (w.dequantized() if isinstance(w, quant.QuantWeight) else w) for k, w in layer.items()}
        for layer in m.layers
    ]
    return pd.Decoder(
        m.cfg, layers, m.embed, m.lm_head, m.final_norm, m.k_cache, m.v_cache, m.rope_cos, m.rope_sin
    )


WO_TINY = ModelConfig("wo", 128, 256, 2, 4, 2, 32, 50, False, 1, 1)


@pytest.mark.parametrize("fmt", ["int8-wo", "int4-wo"])
def test_weight_only_decoder_matches_the_reference_on_dequantized_weights(fmt):
    m = pd.build(
        WO_TINY, 2, batch=2, max_seq=6, fmt=fmt, device=torch.device("cpu"), group_size=64, keep_codes=True
    )
    assert isinstance(m.layers[0]["qkv"], quant.QuantWeight) and m.embed.dtype == torch.bfloat16
    pos, tokens = 4, torch.tensor([1, 33])
    k_before = [c.clone() for c in m.k_cache]
    expected = reference_step(dense(m), tokens, pos)
    m.k_cache = k_before
    got = pd.step(m, tokens, pos).double()
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 0.05 * scale, ((got - expected).abs().max(), scale)


def test_ops_are_counted_per_layer_with_gemms_and_attention_apart():
    m = pd.build(TINY, 2, batch=1, max_seq=9, fmt="fp32", device=torch.device("cpu"))
    counts = pd.count_ops(m, torch.tensor([3]), 7)
    assert counts["gemms_per_layer"] == 4  # qkv, o, gate_up, down
    assert 10 <= counts["ops_per_layer"] <= 120 and counts["ops_head"] >= 3


def test_decoder_matches_a_straightforward_reference():
    m = pd.build(TINY, TINY.layers, batch=3, max_seq=9, fmt="fp32", device=torch.device("cpu"))
    pos = 7  # seven cached positions, the new token at index 7
    k_before = [c.clone() for c in m.k_cache]
    tokens = torch.tensor([3, 17, 42])
    expected = reference_step(m, tokens, pos)
    m.k_cache = k_before  # the reference read the caches before the probe's step writes position 7
    got = pd.step(m, tokens, pos)
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4), (got.double() - expected).abs().max()
    assert not torch.equal(
        m.k_cache[0][:, :, pos], k_before[0][:, :, pos].clone().zero_()
    )  # it wrote K at pos


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama-3.2-1b"])
def test_built_network_counts_equal_the_analysis_counts(name):
    cfg = load_model(name)
    # a meta-device build: shapes only, so the real sizes can be counted without the memory
    m = pd.build(cfg, cfg.layers, batch=1, max_seq=4, fmt="bf16", device=torch.device("meta"))
    assert m.parameter_count() == parameter_count(cfg)
    assert m.kv_bytes_per_token() == kv_bytes_per_token(cfg, 2)


def test_probe_runs_scaled_layers_and_reports_tokens_per_s(tmp_path):
    cfg_json = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg_json))
    toml = (
        fast_timing_toml(0.05)
        + f'[decode]\nmodel = "{tmp_path / "config.json"}"\ndtypes = ["fp32"]\nbatches = [1, 4]\ncontext = 32\nmax_layers = 2\n[profiles.t]\nprobes = ["decode"]\n'
    )
    (tmp_path / "b.toml").write_text(toml)
    cfg = load_config(tmp_path / "b.toml")
    ctx = Context(cfg=cfg, devices=[torch.device("cpu")], nvml=Nvml())
    ms = probe.run(ctx)
    steps = [m for m in ms if m.params.get("kind") == "step"]
    assert [m.params["batch"] for m in steps] == [1, 4]
    for m in steps:
        assert m.status == "ok" and m.unit == "tokens_per_s" and m.verification["status"] == "passed"
        assert m.params["scaled"] and "ran 2 of 6 layers" in m.params["note"]
        assert m.value == pytest.approx(m.params["batch"] / m.params["step_seconds"])
        assert m.params["step_seconds"] == pytest.approx(
            m.params["layers_seconds"] * 3 + m.params["head_seconds"]
        )  # 6 layers from the 2 run, plus the head
        assert m.params["ops_per_layer"] > 0 and m.params["gemms_per_layer"] == 4
    kinds = {m.params.get("kind") for m in ms}
    assert {"overhead", "attention", "head", "step"} <= kinds
    (over,) = [m for m in ms if m.params.get("kind") == "overhead"]
    assert over.headline == "op_overhead_eager_torch" and 0 < over.value < 1e-3
    for a in (m for m in ms if m.params.get("kind") == "attention"):
        assert a.status == "ok" and a.unit == "bytes_per_s" and a.verification["status"] == "passed"
        assert a.timing["ops_per_call"] == 2  # every run layer's cache in turn after one flush


def test_whole_model_steps_are_measured_as_they_are_not_scaled(tmp_path):
    cfg_json = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 500,
        "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg_json))
    toml = (
        fast_timing_toml(0.05)
        + f'[decode]\nmodel = "{tmp_path / "config.json"}"\ndtypes = ["fp32"]\nbatches = [2]\ncontext = 16\nmax_layers = 0\n[profiles.t]\nprobes = ["decode"]\n'
    )
    (tmp_path / "b.toml").write_text(toml)
    ctx = Context(cfg=load_config(tmp_path / "b.toml"), devices=[torch.device("cpu")], nvml=Nvml())
    ms = probe.run(ctx)
    assert "head" not in {m.params.get("kind") for m in ms}  # the head runs inside the measured step
    (m,) = [m for m in ms if m.params.get("kind") == "step"]
    assert m.status == "ok" and m.params["scaled"] is False and m.params["layers_run"] == 3
    assert m.params["step_seconds"] == m.timing["stats"]["median_s"] and "note" not in m.params
    assert m.value == pytest.approx(2 / m.params["step_seconds"]) and m.timing["cache_flushed"] is True
    # the step's host time outside its GEMMs and attention, per step and per small op, from the same samples
    assert m.timing["stats"]["n"] >= 7
    ops = 3 * m.params["ops_per_layer"] + m.params["ops_head"]
    assert 0 < m.params["host_seconds"] < m.params["step_seconds"] * 1.5
    assert m.params["host_seconds_per_op"] == pytest.approx(m.params["host_seconds"] / ops)
    assert "enqueue_seconds" not in m.params  # a CPU: the host time is the step's own


def test_the_host_split_counts_the_wrapped_calls_apart():
    """A repetition of 3 ms inside wrapped calls and ~2 ms outside: the split tells them apart."""
    import time

    from probes.sections import TimingConfig
    from probes.timing import Split, time_fn

    split = Split()
    inside = split.wrap(lambda: time.sleep(0.003))

    def rep() -> None:
        inside()
        time.sleep(0.002)

    cfg = TimingConfig(
        warmup_s=0.0,
        min_reps=4,
        max_reps=4,
        target_rse=1e-9,
        case_budget_s=10,
        telemetry_interval_s=1,
        profile_budget_s=0,
    )
    t = time_fn(rep, torch.device("cpu"), cfg, split=split)
    assert len(split.inside_s) == len(split.host_s) == t.stats.n == 4
    assert all(i >= 0.003 for i in split.inside_s) and all(o >= 0.002 for o in split.outside_s())
    assert all(h == pytest.approx(s, abs=1e-3) for h, s in zip(split.host_s, t.samples_s, strict=True))


def test_the_attention_case_names_the_sdpa_kernel_it_got():
    """Which kernel scaled_dot_product_attention picked is recorded; the math fallback is named as such."""
    import torch

    from probes.decoder import sdpa_backend

    q, k = torch.randn(2, 8, 1, 64), torch.randn(2, 2, 33, 64)
    assert sdpa_backend(q, k, k) in {"flash_attention", "efficient_attention", "cudnn_attention", "math"}
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        assert sdpa_backend(q, k, k) == "math"


@requires_cuda
def test_gpu_steps_record_the_idle_share_the_trace_machinery_measures(tmp_path):
    """probes.decode uses probes.trace on a GPU: each step records the share of it the GPU waited for the host."""
    import torch

    from probes import decode
    from probes.config import load_config
    from probes.context import Context
    from probes.nvml import Nvml

    cfg = tmp_path / "d.toml"
    cfg.write_text(
        '[decode]\nmodel = "qwen2.5-0.5b"\ndtypes = ["bf16"]\nbatches = [1]\ncontext = 64\nmax_layers = 2\n[profiles.t]\nprobes = ["decode"]\n'
    )
    ms = decode.run_format(
        Context(cfg=load_config(cfg), devices=[torch.device("cuda", 0)], nvml=Nvml()),
        torch.device("cuda", 0),
        "bf16",
    )
    step = next(m for m in ms if m.params.get("kind") == "step")
    assert 0.0 <= step.params["trace_idle_share"] <= 1.0
