#!/usr/bin/env python3
"""Generate the tiny random decoder models used by test/model-parity.test.ts.

Each fixture is a Hugging Face folder test/fixtures/tiny/<name>/ with config.json,
model.safetensors and reference.json = {"input_ids": 2 windows x 24 ids, "logits": the flat
[2*24*vocab] fp32 logits transformers computes for them (each window independent)}.

The weights are drawn with a much larger spread than transformers' default init, so the logits are
far from uniform and a wrong rope, GQA mapping, bias or norm shows up as a large difference.

Run from the repository root:  python scripts/make_tiny_models.py
Deterministic: torch.manual_seed is fixed per model, so re-running reproduces the same files.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

FIXTURES = Path(__file__).resolve().parent.parent / "test" / "fixtures" / "tiny"
SEED = 1234
WINDOWS = 2
WINDOW_TOKENS = 24
LINEAR_STD = 0.2
NORM_SPREAD = 0.1

# Shared shape: hidden 64, 4 heads of 16, 2 layers, vocab 256, MLP 160.
BASE = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=128,
)


def legacy_rope_layout(config: dict) -> dict:
    """Rewrite transformers-5 "rope_parameters" as the "rope_theta" + "rope_scaling" layout that
    most published checkpoints (Llama 3.x, SmolLM2, Qwen2.5) still ship, so both layouts are tested."""
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = rope
    return config


# name → (model class, config, storage dtype, rewrite of the saved config.json or None)
MODELS = {
    # GQA (2 query heads per kv head), separate lm_head, plain rope.
    "llama-gqa": (
        LlamaForCausalLM,
        LlamaConfig(**BASE, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5),
        torch.float32,
        None,
    ),
    # Tied head and Llama-3 rope scaling. With head_dim 16, theta 5e5 and an original context of 64
    # the 8 frequencies fall in all three bands of the llama3 rule: wavelength 6.3 (< 64/4, kept),
    # 32 (between 16 and 64, smoothly interpolated) and the rest (> 64, divided by the factor 8).
    "llama-tied-llama3rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **BASE,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
        torch.float32,
        legacy_rope_layout,
    ),
    # Multi-head attention (kv heads = heads) with linear rope scaling (positions divided by 2).
    "llama-mha-linear-rope": (
        LlamaForCausalLM,
        LlamaConfig(
            **BASE,
            num_key_value_heads=4,
            tie_word_embeddings=False,
            rope_theta=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        ),
        torch.float32,
        None,
    ),
    # Qwen2: biases on q/k/v only, GQA, tied head, weights stored as BF16 (as Qwen ships them);
    # the reference runs in fp32 on the BF16 values widened exactly.
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config(**BASE, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
        torch.bfloat16,
        legacy_rope_layout,
    ),
    # Mistral without a sliding window (the 24-token windows are shorter than any window anyway).
    "mistral": (
        MistralForCausalLM,
        MistralConfig(**BASE, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=None),
        torch.float32,
        None,
    ),
}


def randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Large-spread random weights: N(0, 0.2²) for embeddings, linears and biases; norms 1 ± 0.1."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.copy_(1.0 + NORM_SPREAD * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(LINEAR_STD * torch.randn(parameter.shape, generator=generator))


def format_float(value: float) -> str:
    return f"{value:.7g}"


def write_reference(folder: Path, input_ids: torch.Tensor) -> None:
    """Logits from the model as reloaded from disk, so the reference reflects what the files say."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    flat = logits.to(torch.float32).reshape(-1).tolist()
    assert all(math.isfinite(v) for v in flat)
    ids_json = json.dumps(input_ids.tolist(), separators=(",", ":"))
    logits_json = "[" + ",".join(format_float(v) for v in flat) + "]"
    (folder / "reference.json").write_text(f'{{"input_ids":{ids_json},"logits":{logits_json}}}\n')
    spread = logits.std().item()
    print(f"  logits std {spread:.3f}, max |logit| {logits.abs().max().item():.3f}")


def make(name: str, model_class, config, storage_dtype: torch.dtype, rewrite_config) -> None:
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = model_class(config)
    randomize(model, generator)
    model = model.to(storage_dtype)

    folder = FIXTURES / name
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "generation_config.json").unlink(missing_ok=True)
    if rewrite_config is not None:
        config_path = folder / "config.json"
        config_path.write_text(json.dumps(rewrite_config(json.loads(config_path.read_text())), indent=2) + "\n")

    input_ids = torch.randint(0, config.vocab_size, (WINDOWS, WINDOW_TOKENS), generator=generator)
    print(name)
    write_reference(folder, input_ids)


def main() -> None:
    for name, (model_class, config, storage_dtype, rewrite_config) in MODELS.items():
        make(name, model_class, config, storage_dtype, rewrite_config)
    total = 0
    for file in sorted(FIXTURES.rglob("*")):
        if file.is_file():
            size = file.stat().st_size
            total += size
            print(f"{size:>10,}  {file.relative_to(FIXTURES)}")
    print(f"{total:>10,}  total")


if __name__ == "__main__":
    main()
