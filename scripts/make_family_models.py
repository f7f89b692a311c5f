#!/usr/bin/env python3
"""Generate tiny random models of every decoder family, with transformers' logits for them.

Used by test/family-parity.test.ts through test/family-models.ts, which runs this script once into a
cache folder outside git (there are too many models to commit). For each model, OUT/<name>/ holds
config.json and model.safetensors as save_pretrained writes them (some config.json files rewritten
to the older layout published checkpoints still ship), reference.json = {"input_ids": 2 windows x 24
ids, "logits_file": "logits.f32"} and logits.f32, the raw little-endian float32 logits
[2 * 24 * vocab] transformers computes for the windows (each window independent, no padding).
OUT/manifest.json lists every model with its model_type and what its configuration exercises.

The weights have a much larger spread than transformers' default init (linears, embeddings and
biases N(0, 0.2²); norm weights their neutral value ± 0.1; LayerNorm biases N(0, 0.1²)), so the
logits are far from uniform and a wrong rope, mask, norm or bias shows up as a large difference.

Every model is checked here: transformers must reload the saved folder with the same logits, the
logits must be spread out, and each feature a model is meant to exercise (sliding window,
soft-capping, partial rotary, ...) must change its logits when switched off, so a fixture cannot
silently stop testing what it claims.

Run from the repository root:  python3 scripts/make_family_models.py --out DIR
Deterministic (seeded per model); re-running rewrites the same files.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as transformers_logging

SEED = 1234
WINDOWS = 2
WINDOW_TOKENS = 24
# Shorter than WINDOW_TOKENS, so later positions lose the start of the window.
SLIDING_WINDOW = 8
LINEAR_STD = 0.2
NORM_SPREAD = 0.1
VOCAB = 256
# The logits must be spread out (std over all entries); transformers' default init gives about 0.16.
MIN_LOGIT_STD = 0.8
# A feature counts as exercised when switching it off moves the logits by more than this
# (max |difference| / max |logit|), 100x the parity tolerance of the tests.
MIN_FEATURE_EFFECT = 1e-2
# transformers must reload the saved folder to these logits (they should be bit-identical).
MAX_RELOAD_DIFFERENCE = 1e-6

ConfigRewrite = Callable[[dict], dict]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    description: str
    config: dict[str, Any]
    # Rewrites the saved config.json, e.g. into the layout published checkpoints ship.
    rewrite_config: ConfigRewrite | None = None
    # Renames the saved tensors, e.g. to the names published checkpoints use.
    rename_tensor: Callable[[str], str] | None = None
    # Feature name → config overrides that switch it off; each must change the logits.
    features: dict[str, dict[str, Any]] = field(default_factory=dict)


def rope(theta: float, **extra: Any) -> dict[str, Any]:
    """A transformers-5 rope_parameters dict."""
    return {"rope_type": "default", "rope_theta": theta, **extra}


def legacy_rope_layout(config: dict) -> dict:
    """transformers-5 "rope_parameters" back to top-level "rope_theta" (+ "partial_rotary_factor")
    and "rope_scaling", the layout of published Llama, Qwen, Phi and Gemma 2 checkpoints."""
    rope_parameters = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope_parameters.pop("rope_theta")
    if "partial_rotary_factor" in rope_parameters:
        config["partial_rotary_factor"] = rope_parameters.pop("partial_rotary_factor")
    if rope_parameters.get("rope_type", "default") != "default":
        config["rope_scaling"] = rope_parameters
    return config


def without_layer_types(config: dict) -> dict:
    """Published Qwen3 / Gemma 2 configs have no "layer_types": transformers derives them."""
    del config["layer_types"]
    return config


def legacy_qwen(config: dict) -> dict:
    return without_layer_types(legacy_rope_layout(config))


def legacy_qwen2_window_disabled(config: dict) -> dict:
    """As Qwen2.5 ships: a sliding_window value that use_sliding_window=false turns off."""
    config = legacy_qwen(config)
    assert config["use_sliding_window"] is False
    config["sliding_window"] = SLIDING_WINDOW
    return config


def legacy_gemma2(config: dict) -> dict:
    """As Gemma 2 ships: top-level rope_theta, no layer_types (sliding layers alternate, first sliding)."""
    return without_layer_types(legacy_rope_layout(config))


def legacy_gemma3(config: dict) -> dict:
    """As Gemma 3 ships: rope_theta + rope_scaling for the global (full-attention) layers,
    rope_local_base_freq for the sliding ones, and sliding_window_pattern instead of layer_types."""
    rope_parameters = config.pop("rope_parameters")
    full = dict(rope_parameters["full_attention"])
    config["rope_theta"] = full.pop("rope_theta")
    config["rope_local_base_freq"] = rope_parameters["sliding_attention"]["rope_theta"]
    config["rope_scaling"] = full if full.get("rope_type", "default") != "default" else None
    layer_types = config.pop("layer_types")
    pattern = config.pop("_sliding_window_pattern")
    expected = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(len(layer_types))]
    assert layer_types == expected, f"layer_types {layer_types} do not follow sliding_window_pattern {pattern}"
    config["sliding_window_pattern"] = pattern
    return config


def unprefixed_gpt2(name: str) -> str:
    """openai-community/gpt2 stores h.0.attn.c_attn.weight, wte.weight, ... without "transformer."."""
    return name.removeprefix("transformer.")


def legacy_gpt_neox(config: dict) -> dict:
    """As Pythia ships: rotary_pct and rotary_emb_base."""
    rope_parameters = config.pop("rope_parameters")
    config["rotary_pct"] = rope_parameters["partial_rotary_factor"]
    config["rotary_emb_base"] = rope_parameters["rope_theta"]
    return config


# Shared shape of the families with Llama-style config names: hidden 64, 4 heads of 16, vocab 256.
LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
GEMMA = dict(LLAMA_LIKE, num_hidden_layers=3, hidden_activation="gelu_pytorch_tanh", sliding_window=SLIDING_WINDOW)
NO_HEAD_DIM = {k: v for k, v in LLAMA_LIKE.items() if k != "head_dim"}
MAMBA = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)

SPECS = [
    ModelSpec(
        "llama-yarn",
        "llama",
        "Llama with YaRN rope scaling (factor 4, original context 32: ramp, interpolation and the 1+0.1·ln(4) attention factor), GQA 4/2",
        dict(
            LLAMA_LIKE,
            num_key_value_heads=2,
            rope_parameters=rope(10000.0, rope_type="yarn", factor=4.0, original_max_position_embeddings=32),
        ),
        features={"yarn": dict(rope_parameters=rope(10000.0))},
    ),
    ModelSpec(
        "mistral-sliding",
        "mistral",
        f"Mistral with sliding_window {SLIDING_WINDOW} (< {WINDOW_TOKENS} tokens) on every layer, GQA 4/2",
        dict(LLAMA_LIKE, num_key_value_heads=2, sliding_window=SLIDING_WINDOW, rope_parameters=rope(10000.0)),
        features={"sliding window": dict(sliding_window=None)},
    ),
    ModelSpec(
        "qwen2-sliding",
        "qwen2",
        f"Qwen2 with use_sliding_window, sliding_window {SLIDING_WINDOW} on layers >= max_window_layers 1 "
        "(layer 0 full, layer 1 sliding, as layer_types says), q/k/v biases, GQA 4/2, tied",
        dict(
            LLAMA_LIKE,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            use_sliding_window=True,
            sliding_window=SLIDING_WINDOW,
            max_window_layers=1,
            rope_parameters=rope(1000000.0),
        ),
        features={"sliding window": dict(sliding_window=1000)},
    ),
    ModelSpec(
        "qwen2-window-disabled",
        "qwen2",
        f"Qwen2.5-style legacy config.json: sliding_window {SLIDING_WINDOW} present but use_sliding_window false "
        "(transformers ignores the window), rope_theta top level, no layer_types, MQA, untied",
        dict(NO_HEAD_DIM, num_key_value_heads=1, use_sliding_window=False, max_window_layers=1, rope_parameters=rope(1000000.0)),
        rewrite_config=legacy_qwen2_window_disabled,
    ),
    ModelSpec(
        "qwen3-gqa-tied",
        "qwen3",
        "Qwen3: q/k RMSNorm per head before rope, head_dim 32 != hidden/heads (q_proj 64→128), GQA 4/2, tied, no biases",
        dict(LLAMA_LIKE, head_dim=32, num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=rope(1000000.0)),
    ),
    ModelSpec(
        "qwen3-mqa",
        "qwen3",
        "Qwen3 legacy config.json (rope_theta top level, no layer_types), MQA (1 kv head), untied, 3 layers",
        dict(LLAMA_LIKE, num_hidden_layers=3, num_key_value_heads=1, rope_parameters=rope(10000.0)),
        rewrite_config=legacy_qwen,
    ),
    ModelSpec(
        "gemma2-softcap",
        "gemma2",
        f"Gemma 2: attn_logit_softcapping 5 and final_logit_softcapping 3, sliding_window {SLIDING_WINDOW} on layers "
        "0 and 2 (layer_types), query_pre_attn_scalar 24 != head_dim, 1+w RMSNorm, sandwich norms, √hidden embedding "
        "scale, gelu_pytorch_tanh gated MLP, GQA 4/2, tied",
        dict(
            GEMMA,
            num_key_value_heads=2,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            rope_parameters=rope(10000.0),
        ),
        features={
            "attention soft-capping": dict(attn_logit_softcapping=None),
            "final soft-capping": dict(final_logit_softcapping=None),
            "sliding window": dict(sliding_window=1000),
            "query_pre_attn_scalar": dict(query_pre_attn_scalar=16),
        },
    ),
    ModelSpec(
        "gemma2-mqa-legacy",
        "gemma2",
        "Gemma 2 as published configs are laid out (rope_theta top level, no layer_types: sliding layers 0 and 2), "
        f"sliding_window {SLIDING_WINDOW}, no soft-capping, query_pre_attn_scalar = head_dim 16, MQA, tied",
        dict(
            GEMMA,
            num_key_value_heads=1,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=None,
            final_logit_softcapping=None,
            rope_parameters=rope(10000.0),
        ),
        rewrite_config=legacy_gemma2,
        features={"sliding window": dict(sliding_window=1000)},
    ),
    ModelSpec(
        "gemma3-gqa",
        "gemma3_text",
        f"Gemma 3 (text): layer_types sliding, sliding, full with sliding_window {SLIDING_WINDOW}, rope theta 10000 on "
        "sliding layers and 1e6 on the full one (nested rope_parameters), q/k 1+w RMSNorm, sandwich norms, "
        "query_pre_attn_scalar 24, √hidden embedding scale, GQA 4/2, tied",
        dict(
            GEMMA,
            num_key_value_heads=2,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            rope_parameters={"sliding_attention": rope(10000.0), "full_attention": rope(1000000.0)},
        ),
        features={
            "sliding window": dict(sliding_window=1000),
            "local rope theta": dict(rope_parameters={"sliding_attention": rope(1000000.0), "full_attention": rope(1000000.0)}),
        },
    ),
    ModelSpec(
        "gemma3-legacy-linear",
        "gemma3_text",
        "Gemma 3 as published configs are laid out: rope_theta 1e6 with linear rope_scaling factor 8 for the full "
        "layers only, rope_local_base_freq 10000 for sliding ones, sliding_window_pattern 2 (layers 0 and 2 sliding), "
        f"sliding_window {SLIDING_WINDOW}, MQA, tied",
        dict(
            GEMMA,
            num_key_value_heads=1,
            query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "sliding_attention": rope(10000.0),
                "full_attention": rope(1000000.0, rope_type="linear", factor=8.0),
            },
            sliding_window_pattern=2,
        ),
        rewrite_config=legacy_gemma3,
        features={
            "linear scaling of full layers": dict(
                rope_parameters={"sliding_attention": rope(10000.0), "full_attention": rope(1000000.0)}
            ),
        },
    ),
    ModelSpec(
        "phi3-mha-sliding",
        "phi3",
        f"Phi-3: fused qkv_proj and gate_up_proj (gate first), MHA, full rotary, sliding_window {SLIDING_WINDOW} on every layer, untied",
        dict(NO_HEAD_DIM, num_key_value_heads=4, sliding_window=SLIDING_WINDOW, rope_parameters=rope(10000.0, partial_rotary_factor=1.0)),
        features={"sliding window": dict(sliding_window=None)},
    ),
    ModelSpec(
        "phi3-gqa-partial",
        "phi3",
        "Phi-4-mini-style Phi-3: partial_rotary_factor 0.75 (12 of 16 dims rotated) as a top-level config field, "
        "fused qkv_proj with GQA 4/2, tied, no sliding window",
        dict(NO_HEAD_DIM, num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=rope(10000.0, partial_rotary_factor=0.75)),
        rewrite_config=legacy_rope_layout,
        features={"partial rotary": dict(rope_parameters=rope(10000.0, partial_rotary_factor=1.0))},
    ),
    ModelSpec(
        "phi-mha",
        "phi",
        "Phi-2: parallel attention + MLP from one LayerNorm, partial rotary 0.5 (8 of 16 dims), biases everywhere "
        "including lm_head, final_layernorm, gelu_new MLP, MHA, untied",
        dict(
            NO_HEAD_DIM,
            num_key_value_heads=4,
            hidden_act="gelu_new",
            rope_parameters=rope(10000.0, partial_rotary_factor=0.5),
        ),
        features={"partial rotary": dict(rope_parameters=rope(10000.0, partial_rotary_factor=1.0))},
    ),
    ModelSpec(
        "phi-gqa-legacy",
        "phi",
        "Phi-2 legacy config.json (top-level partial_rotary_factor 0.25 = 4 of 16 dims, rope_theta), GQA 4/2, "
        "gelu MLP, 3 layers, untied",
        dict(
            NO_HEAD_DIM,
            num_hidden_layers=3,
            num_key_value_heads=2,
            hidden_act="gelu",
            rope_parameters=rope(10000.0, partial_rotary_factor=0.25),
        ),
        rewrite_config=legacy_rope_layout,
    ),
    ModelSpec(
        "gpt_neox-parallel",
        "gpt_neox",
        "Pythia-style GPT-NeoX: use_parallel_residual true, per-head interleaved fused query_key_value "
        "([q|k|v] per head), rotary_pct 0.25 / rotary_emb_base (legacy config names), biases, gelu, untied",
        dict(
            NO_HEAD_DIM,
            num_hidden_layers=2,
            hidden_act="gelu",
            use_parallel_residual=True,
            rope_parameters=rope(10000.0, partial_rotary_factor=0.25),
        ),
        rewrite_config=legacy_gpt_neox,
        features={"parallel residual": dict(use_parallel_residual=False)},
    ),
    ModelSpec(
        "gpt_neox-sequential",
        "gpt_neox",
        "GPT-NeoX with use_parallel_residual false (attention then MLP), partial_rotary_factor 0.5 in "
        "rope_parameters (transformers-5 layout), relu MLP, 3 layers, untied",
        dict(
            NO_HEAD_DIM,
            num_hidden_layers=3,
            hidden_act="relu",
            use_parallel_residual=False,
            rope_parameters=rope(10000.0, partial_rotary_factor=0.5),
        ),
        features={"sequential residual": dict(use_parallel_residual=True)},
    ),
    ModelSpec(
        "opt-prenorm",
        "opt",
        "OPT (125m-style): learned positions with offset 2, do_layer_norm_before true with final LayerNorm, "
        "biases, relu MLP (fc1/fc2), q scaled before the dot product, tied",
        dict(
            vocab_size=VOCAB,
            hidden_size=64,
            word_embed_proj_dim=64,
            ffn_dim=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            do_layer_norm_before=True,
            activation_function="relu",
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
    ),
    ModelSpec(
        "opt-postnorm-proj",
        "opt",
        "OPT (350m-style): do_layer_norm_before false (post-LayerNorm, no final norm), word_embed_proj_dim 32 "
        "with project_in/project_out, learned positions offset 2, gelu MLP, 3 layers, tied",
        dict(
            vocab_size=VOCAB,
            hidden_size=64,
            word_embed_proj_dim=32,
            ffn_dim=160,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=64,
            do_layer_norm_before=False,
            activation_function="gelu",
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
    ),
    ModelSpec(
        "gpt2",
        "gpt2",
        "GPT-2: Conv1D weights stored [in, out] (c_attn fused q|k|v, c_fc, c_proj), learned positions (no offset), "
        "biases, gelu_new, n_inner 160, tied",
        dict(
            vocab_size=VOCAB,
            n_embd=64,
            n_head=4,
            n_layer=2,
            n_inner=160,
            n_positions=64,
            activation_function="gelu_new",
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    ModelSpec(
        "gpt2-default-inner",
        "gpt2",
        "GPT-2 as openai-community/gpt2 stores it (tensor names without the transformer. prefix), n_inner null "
        "(MLP width 4·n_embd = 256), relu activation, 3 layers, tied",
        dict(
            vocab_size=VOCAB,
            n_embd=64,
            n_head=4,
            n_layer=3,
            n_inner=None,
            n_positions=64,
            activation_function="relu",
            bos_token_id=1,
            eos_token_id=2,
        ),
        rename_tensor=unprefixed_gpt2,
    ),
    ModelSpec(
        "mamba-tied",
        "mamba",
        "Mamba (mamba-130m-hf layout): d_state 16, expand 2 (d_inner 128), conv kernel 4 with bias, time_step_rank "
        "auto (⌈64/16⌉ = 4), no in/out_proj biases, silu, tied",
        dict(MAMBA, state_size=16, expand=2, conv_kernel=4, time_step_rank="auto"),
        features={"conv activation": dict(hidden_act="relu")},
    ),
    ModelSpec(
        "mamba-biased-untied",
        "mamba",
        "Mamba: d_state 5, expand 3 (d_inner 192), conv kernel 2 without bias (use_conv_bias false), time_step_rank 7, "
        "in_proj/out_proj biases (use_bias), gelu conv activation, 3 layers, untied",
        dict(MAMBA, num_hidden_layers=3, state_size=5, expand=3, conv_kernel=2, time_step_rank=7, use_conv_bias=False,
             use_bias=True, hidden_act="gelu", tie_word_embeddings=False),
    ),
    ModelSpec(
        "mamba-narrow",
        "mamba",
        "Mamba: d_state 1, expand 1 (d_inner 64), conv kernel 6 (longer than the first positions), time_step_rank 1, tied",
        dict(MAMBA, state_size=1, expand=1, conv_kernel=6, time_step_rank=1),
    ),
]


def build_config(model_type: str, settings: dict[str, Any]):
    config = AutoConfig.for_model(model_type, **copy.deepcopy(settings))
    config.dtype = torch.float32
    return config


def new_model(config) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or "RMSNorm" in type(module).__name__


def randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Large-spread random weights. Norm weights are spread around their neutral value as the
    default init leaves it: 1, or 0 for Gemma's (1 + w) RMSNorm."""
    seen: set[int] = set()
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for parameter_name, parameter in module.named_parameters(recurse=False):
                if id(parameter) in seen:  # tied head: already drawn as the embedding
                    continue
                seen.add(id(parameter))
                noise = torch.randn(parameter.shape, generator=generator)
                if is_norm(module) and parameter_name == "weight":
                    neutral = parameter.flatten()[0].item()
                    assert neutral in (0.0, 1.0) and torch.all(parameter == neutral), f"{module_name}: unexpected norm init"
                    parameter.copy_(neutral + NORM_SPREAD * noise)
                elif is_norm(module):
                    parameter.copy_(NORM_SPREAD * noise)
                else:
                    parameter.copy_(LINEAR_STD * noise)


def compute_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.to(torch.float32)


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def check_features(spec: ModelSpec, model: torch.nn.Module, input_ids: torch.Tensor, logits: torch.Tensor) -> None:
    """Each listed feature, switched off, must move the logits: otherwise the fixture does not test it."""
    for feature, overrides in spec.features.items():
        settings = dict(spec.config, **overrides)
        ablated = new_model(build_config(spec.model_type, settings))
        ablated.load_state_dict(model.state_dict())
        effect = relative_difference(compute_logits(ablated, input_ids), logits)
        assert effect > MIN_FEATURE_EFFECT, f"{spec.name}: {feature} changes the logits by only {effect:.2e}"
        print(f"    {feature}: switching it off moves the logits by {effect:.3f}")


def make(spec: ModelSpec, out: Path) -> None:
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    config = build_config(spec.model_type, spec.config)
    assert config.model_type == spec.model_type
    model = new_model(config)
    randomize(model, generator)

    folder = out / spec.name
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "generation_config.json").unlink(missing_ok=True)
    if spec.rewrite_config is not None:
        config_path = folder / "config.json"
        config_path.write_text(json.dumps(spec.rewrite_config(json.loads(config_path.read_text())), indent=2) + "\n")
    if spec.rename_tensor is not None:
        weights_path = folder / "model.safetensors"
        tensors = load_file(weights_path)
        save_file({spec.rename_tensor(name): tensor for name, tensor in tensors.items()}, weights_path, metadata={"format": "pt"})

    input_ids = torch.randint(0, VOCAB, (WINDOWS, WINDOW_TOKENS), generator=generator)
    logits = compute_logits(model, input_ids)
    reloaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    reload_difference = relative_difference(compute_logits(reloaded, input_ids), logits)
    assert reload_difference <= MAX_RELOAD_DIFFERENCE, f"{spec.name}: reloaded logits differ by {reload_difference:.2e}"
    assert torch.isfinite(logits).all(), f"{spec.name}: non-finite logits"
    spread = logits.std().item()
    assert spread >= MIN_LOGIT_STD, f"{spec.name}: logits too close to uniform (std {spread:.3f})"

    logits.numpy().astype("<f4").tofile(folder / "logits.f32")
    reference = {"input_ids": input_ids.tolist(), "logits_file": "logits.f32"}
    (folder / "reference.json").write_text(json.dumps(reference, separators=(",", ":")) + "\n")
    print(
        f"{spec.name} ({spec.model_type}): logits std {spread:.3f}, max |logit| {logits.abs().max().item():.3f}, "
        f"reload difference {reload_difference:.1e}, {time.perf_counter() - started:.2f}s"
    )
    check_features(spec, model, input_ids, logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the models and manifest.json into")
    args = parser.parse_args()
    torch.set_num_threads(1)  # deterministic reductions, and the test machine is shared
    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    names = [spec.name for spec in SPECS]
    assert len(set(names)) == len(names), "duplicate model names"
    for spec in SPECS:
        make(spec, args.out)
    manifest = {
        "window_tokens": WINDOW_TOKENS,
        "models": [{"name": s.name, "model_type": s.model_type, "description": s.description} for s in SPECS],
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(SPECS)} models in {args.out} ({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
