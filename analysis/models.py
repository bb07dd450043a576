"""Model configs in Hugging Face `config.json` format, and the GEMM shapes a decode step runs.

A decode step multiplies a (batch x hidden) activation by every weight matrix of the model, so its linear
layers are GEMMs with M = batch and the real N x K of the weights. Per layer of a Llama-style decoder:

    qkv       N = (heads + 2 * kv_heads) * head_dim      K = hidden          (column-parallel: N / tp)
    o         N = hidden                                 K = heads * head_dim (row-parallel: K / tp)
    gate_up   N = 2 * intermediate                       K = hidden          (column-parallel)
    down      N = hidden                                 K = intermediate    (row-parallel)
and once per step the LM head, N = vocab, K = hidden (column-parallel). With tensor parallelism, KV heads
are split across ranks, or replicated when there are fewer of them than ranks. MoE models (Mixtral) run
gate_up and down once per routed expert (`num_experts_per_tok` of `num_local_experts`).

Bundled configs: analysis/data/models/*.json; any local config.json path works too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.cli import BadInput, read_text

MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"


class ModelConfigError(BadInput):
    """A model name that is not bundled, or a config.json that lacks what a decoder needs."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    experts: int  # 1 for dense models
    experts_per_token: int  # 1 for dense models


@dataclass(frozen=True)
class Linear:
    """One weight matrix of a decode step: y[M, n] = x[M, k] @ W[n, k]^T, `per_step` times a step."""

    op: str
    n: int
    k: int
    per_step: int


def bundled_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def load_model(name_or_path: str) -> ModelConfig:
    """A bundled model by name (e.g. 'llama-3.1-70b') or any config.json path."""
    p = Path(name_or_path)
    if p.suffix != ".json" or not p.exists():
        p = MODELS_DIR / f"{name_or_path}.json"
    if p.is_dir():
        raise ModelConfigError(f"{p}: is a folder, not a config.json")
    if not p.is_file():
        raise ModelConfigError(
            f"unknown model {name_or_path!r} (bundled: {', '.join(bundled_models())}; or a config.json path)"
        )
    try:
        raw = json.loads(read_text(p, "config.json"))
    except BadInput as exc:
        raise ModelConfigError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{p}: cannot read config.json: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{p}: not a config.json (top level is {type(raw).__name__}, not an object)")
    _check_config(p, raw)
    heads = raw["num_attention_heads"]
    return ModelConfig(
        name=p.stem if p.parent == MODELS_DIR else str(p),
        hidden=raw["hidden_size"],
        intermediate=raw["intermediate_size"],
        layers=raw["num_hidden_layers"],
        heads=heads,
        kv_heads=raw.get("num_key_value_heads") or heads,
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
        vocab=raw["vocab_size"],
        tied_embeddings=bool(raw.get("tie_word_embeddings", False)),
        experts=raw.get("num_local_experts") or 1,
        experts_per_token=raw.get("num_experts_per_tok") or 1,
    )


POSITIVE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
OPTIONAL_POSITIVE_KEYS = ("num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok")


def _check_config(p: Path, raw: dict[str, Any]) -> None:
    """What the step model divides by and multiplies with: positive integers that fit together."""

    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    for key in POSITIVE_KEYS:
        if key not in raw:
            raise ModelConfigError(f"{p}: missing {key}")
        if not positive_int(raw[key]):
            raise ModelConfigError(f"{p}: {key} = {raw[key]!r}: expected a positive integer")
    for key in OPTIONAL_POSITIVE_KEYS:
        if raw.get(key) is not None and not positive_int(raw[key]):
            raise ModelConfigError(f"{p}: {key} = {raw[key]!r}: expected a positive integer")
    heads, kv = raw["num_attention_heads"], raw.get("num_key_value_heads") or raw["num_attention_heads"]
    if heads % kv:
        raise ModelConfigError(
            f"{p}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
        )
    if raw.get("head_dim") is None and raw["hidden_size"] % heads:
        raise ModelConfigError(
            f"{p}: hidden_size {raw['hidden_size']} is not a multiple of num_attention_heads {heads} (no head_dim)"
        )
    experts = raw.get("num_local_experts") or 1
    if (raw.get("num_experts_per_tok") or 1) > experts:
        raise ModelConfigError(
            f"{p}: num_experts_per_tok {raw['num_experts_per_tok']} > num_local_experts {experts}"
        )


def parameter_count(cfg: ModelConfig) -> int:
    """All parameters: embeddings, attention, MLP (every expert), router, norms, LM head unless tied."""
    attn = cfg.hidden * cfg.heads * cfg.head_dim * 2 + cfg.hidden * cfg.kv_heads * cfg.head_dim * 2
    mlp = 3 * cfg.hidden * cfg.intermediate * cfg.experts + (
        cfg.hidden * cfg.experts if cfg.experts > 1 else 0
    )
    per_layer = attn + mlp + 2 * cfg.hidden
    embed = cfg.vocab * cfg.hidden
    return embed * (1 if cfg.tied_embeddings else 2) + cfg.layers * per_layer + cfg.hidden


def experts_touched(cfg: ModelConfig, batch: int) -> float:
    """Expected distinct experts a batch of tokens routes to per layer (uniform routing): E(1 - (1 - k/E)^B)."""
    if cfg.experts <= 1:
        return 1.0
    return cfg.experts * (1 - (1 - cfg.experts_per_token / cfg.experts) ** batch)


def kv_bytes_per_token(cfg: ModelConfig, bytes_per_element: float) -> float:
    """KV cache per token: 2 (K and V) x layers x KV heads x head_dim x bytes per element."""
    return 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * bytes_per_element


def decode_linears(cfg: ModelConfig, tp: int = 1) -> list[Linear]:
    """The distinct GEMM shapes of one decode step on one of `tp` tensor-parallel ranks."""
    if tp < 1 or cfg.heads % tp:
        raise ModelConfigError(
            f"{cfg.name}: tensor-parallel degree {tp} does not divide {cfg.heads} attention heads"
        )
    if cfg.intermediate % tp or cfg.vocab % tp:
        raise ModelConfigError(
            f"{cfg.name}: tensor-parallel degree {tp} does not divide the MLP or vocabulary"
        )
    kv_per_rank = max(1, cfg.kv_heads // tp)
    heads_per_rank = cfg.heads // tp
    moe = cfg.experts_per_token if cfg.experts > 1 else 1
    return [
        Linear("qkv", (heads_per_rank + 2 * kv_per_rank) * cfg.head_dim, cfg.hidden, cfg.layers),
        Linear("o", cfg.hidden, heads_per_rank * cfg.head_dim, cfg.layers),
        Linear("gate_up", 2 * cfg.intermediate // tp, cfg.hidden, cfg.layers * moe),
        Linear("down", cfg.hidden, cfg.intermediate // tp, cfg.layers * moe),
        Linear("lm_head", cfg.vocab // tp, cfg.hidden, 1),
    ]
