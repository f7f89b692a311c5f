#!/usr/bin/env python3
"""Write a tiny Hugging Face model folder as an F32 GGUF file the way llama.cpp's
convert_hf_to_gguf.py does (same metadata keys, tensor names and tensor transformations), for
tests of Topiary's GGUF input. Only what the test models need: no tokenizer.

Usage: python3 scripts/tiny_hf_to_gguf.py [--fuse-qkv] MODEL_DIR OUT.gguf [MODEL_DIR OUT.gguf ...]
(several pairs share one start of Python). Supports model_type gpt2, gpt_neox, phi, phi3 and mamba.
--fuse-qkv writes Phi's separate q, k and v projections as one attn_qkv [q | k | v], as GGUFs
converted from Microsoft's original Phi-2 checkpoint (mixer.Wqkv) hold them.
"""
import json
import math
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file


def gpt2_tensor(config: dict, name: str, data: np.ndarray) -> np.ndarray:
    del config
    # Conv1D weights are stored [in, out]; GGUF holds them as linear weights [out, in].
    if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
        return data.T
    return data


def gpt2_metadata(config: dict, writer: gguf.GGUFWriter) -> None:
    writer.add_block_count(config["n_layer"])
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    # As the converter: 4·n_embd whatever n_inner says (llama.cpp reads the width from the tensors).
    writer.add_feed_forward_length(4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])


def gpt_neox_tensor(config: dict, name: str, data: np.ndarray) -> np.ndarray:
    # Per-head interleaved rows [q_h | k_h | v_h] become [q | k | v].
    if name.endswith(".attention.query_key_value.weight") or name.endswith(".attention.query_key_value.bias"):
        heads = config["num_attention_heads"]
        per_head = data.reshape((heads, 3, -1) + data.shape[1:])
        return np.concatenate([per_head[:, part].reshape((-1,) + data.shape[1:]) for part in range(3)])
    return data


def gpt_neox_metadata(config: dict, writer: gguf.GGUFWriter) -> None:
    rope = config.get("rope_parameters") or {}
    fraction = rope.get("partial_rotary_factor", config.get("rotary_pct", 0.25))
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(int(fraction * head_dim))
    writer.add_head_count(config["num_attention_heads"])
    writer.add_parallel_residual(config.get("use_parallel_residual", True))
    writer.add_layer_norm_eps(config["layer_norm_eps"])


def rope_field(config: dict, key: str, default: float) -> float:
    """A rope setting from transformers 5's rope_parameters (or older rope_scaling), else the top level."""
    settings = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return settings.get(key, config.get(key, default))


def phi2_metadata(config: dict, writer: gguf.GGUFWriter) -> None:
    # As the converter: 4·hidden as the MLP width and the query head count for the key/value heads.
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(4 * n_embd)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_rope_dimension_count(int(rope_field(config, "partial_rotary_factor", 0.5) * n_embd) // n_head)
    writer.add_add_bos_token(False)


def phi3_metadata(config: dict, writer: gguf.GGUFWriter) -> None:
    # As the converter, a sliding_window of 0 meaning none; LongRoPE's factors become tensors.
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    original = config.get("original_max_position_embeddings", config["max_position_embeddings"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_rope_scaling_orig_ctx_len(original)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(int(rope_field(config, "partial_rotary_factor", 1.0) * n_embd) // n_head)
    writer.add_rope_freq_base(rope_field(config, "rope_theta", 10000.0))
    writer.add_sliding_window(config.get("sliding_window") or 0)
    settings = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if settings.get("long_factor"):
        scale = config["max_position_embeddings"] / original
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
        writer.add_tensor("rope_factors_long.weight", np.array(settings["long_factor"], dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(settings["short_factor"], dtype=np.float32))


def mamba_metadata(config: dict, writer: gguf.GGUFWriter) -> None:
    # As the converter's MambaModel: no positions limit (2^20), no heads, no MLP.
    writer.add_context_length(2**20)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_ssm_conv_kernel(config["conv_kernel"])
    writer.add_ssm_inner_size(config["intermediate_size"])
    writer.add_ssm_state_size(config["state_size"])
    writer.add_ssm_time_step_rank(config["time_step_rank"])
    writer.add_layer_norm_rms_eps(config["layer_norm_epsilon"])
    writer.add_ssm_dt_b_c_rms(False)


def mamba_tensor(config: dict, name: str, data: np.ndarray) -> np.ndarray:
    del config
    # llama.cpp stores A = −exp(A_log), and the conv1d weight [d_inner, 1, K] squeezed to [d_inner, K].
    if name.endswith(".A_log"):
        return -np.exp(data)
    if name.endswith(".conv1d.weight"):
        return data.squeeze(1)
    return data


def unchanged(config: dict, name: str, data: np.ndarray) -> np.ndarray:
    del config, name
    return data


ARCHITECTURES = {
    "gpt2": (gguf.MODEL_ARCH.GPT2, gpt2_metadata, gpt2_tensor),
    "gpt_neox": (gguf.MODEL_ARCH.GPTNEOX, gpt_neox_metadata, gpt_neox_tensor),
    "phi": (gguf.MODEL_ARCH.PHI2, phi2_metadata, unchanged),
    "phi3": (gguf.MODEL_ARCH.PHI3, phi3_metadata, unchanged),
    "mamba": (gguf.MODEL_ARCH.MAMBA, mamba_metadata, mamba_tensor),
}


def fuse_qkv(config: dict, tensors: dict) -> dict:
    """Phi's q_proj, k_proj and v_proj of each layer as the original checkpoint's mixer.Wqkv."""
    for layer in range(config["num_hidden_layers"]):
        for kind in ("weight", "bias"):
            parts = [tensors.pop(f"model.layers.{layer}.self_attn.{p}_proj.{kind}") for p in "qkv"]
            tensors[f"transformer.h.{layer}.mixer.Wqkv.{kind}"] = np.concatenate(parts)
    return tensors


def convert(model_dir: Path, out: str, fused_qkv: bool) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    arch, write_metadata, transform = ARCHITECTURES[config["model_type"]]
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    write_metadata(config, writer)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = gguf.TensorNameMap(arch, config.get("n_layer", config.get("num_hidden_layers")))
    tensors = load_file(model_dir / "model.safetensors")
    if fused_qkv:
        tensors = fuse_qkv(config, tensors)
    for name, data in tensors.items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise SystemExit(f"no GGUF name for {name}")
        writer.add_tensor(gguf_name, np.ascontiguousarray(transform(config, name, data), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    fused_qkv = "--fuse-qkv" in sys.argv[1:]
    pairs = [arg for arg in sys.argv[1:] if arg != "--fuse-qkv"]
    if not pairs or len(pairs) % 2:
        raise SystemExit(__doc__)
    for model_dir, out in zip(pairs[::2], pairs[1::2]):
        convert(Path(model_dir), out, fused_qkv)


if __name__ == "__main__":
    main()
