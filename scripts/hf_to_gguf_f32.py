#!/usr/bin/env python3
"""Writes a small Hugging Face model as an F32 GGUF laid out as llama.cpp's convert_hf_to_gguf.py
lays it out: tensor names from the gguf package's name map, and the hyper-parameter keys the
converter writes for the architecture. No tokenizer: tests feed token ids. For tests of GGUF input
on tiny models; add an architecture by adding its metadata function to ARCHITECTURES.

Usage: python3 scripts/hf_to_gguf_f32.py MODEL_DIR OUT.gguf [--fuse-qkv]
--fuse-qkv stores each layer's q, k and v projections as one attn_qkv [q | k | v], as Phi-2 GGUFs
converted from Microsoft's original checkpoint have them.
"""
import json
import math
import os
import sys

import gguf
import numpy as np
from safetensors.numpy import load_file


def rope_field(config: dict, key: str, default: float) -> float:
    """A rope setting from transformers 5's rope_parameters or, in older configs, the top level."""
    parameters = config.get("rope_parameters") or {}
    return parameters.get(key, config.get(key, default))


def phi3_metadata(writer: gguf.GGUFWriter, config: dict) -> None:
    """As Phi3MiniModel.set_gguf_parameters (a sliding_window of 0 means none) and, for LongRoPE,
    generate_extra_tensors: the factor tensors and the attention factor."""
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    settings = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if settings.get("long_factor"):
        scale = config["max_position_embeddings"] / config["original_max_position_embeddings"]
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(config["original_max_position_embeddings"])) if scale > 1 else 1.0)
        writer.add_tensor("rope_factors_long.weight", np.array(settings["long_factor"], dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(settings["short_factor"], dtype=np.float32))
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_rope_scaling_orig_ctx_len(config.get("original_max_position_embeddings", config["max_position_embeddings"]))
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(int(rope_field(config, "partial_rotary_factor", 1.0) * n_embd) // n_head)
    writer.add_rope_freq_base(rope_field(config, "rope_theta", 10000.0))
    writer.add_sliding_window(config.get("sliding_window") or 0)


def phi2_metadata(writer: gguf.GGUFWriter, config: dict) -> None:
    """As Phi2Model.set_gguf_parameters, which writes 4·hidden as the MLP width and no separate
    key/value head count whatever the model has."""
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


ARCHITECTURES = {"phi3": (gguf.MODEL_ARCH.PHI3, phi3_metadata), "phi": (gguf.MODEL_ARCH.PHI2, phi2_metadata)}


def main() -> None:
    model_dir, out, fuse_qkv = sys.argv[1], sys.argv[2], "--fuse-qkv" in sys.argv[3:]
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if config["model_type"] not in ARCHITECTURES:
        sys.exit(f"no GGUF layout for model_type {config['model_type']!r} (known: {', '.join(ARCHITECTURES)})")
    arch, metadata = ARCHITECTURES[config["model_type"]]
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    metadata(writer, config)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    if fuse_qkv:
        for layer in range(config["num_hidden_layers"]):
            for kind in ("weight", "bias"):
                parts = [tensors.pop(f"model.layers.{layer}.self_attn.{p}_proj.{kind}") for p in "qkv"]
                writer.add_tensor(f"blk.{layer}.attn_qkv.{kind}", np.concatenate(parts).astype(np.float32))
    for name, data in tensors.items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            sys.exit(f"no GGUF name for tensor {name!r}")
        writer.add_tensor(gguf_name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
