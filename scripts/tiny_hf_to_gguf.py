#!/usr/bin/env python3
"""Write a tiny Hugging Face model folder as an F32 GGUF file the way llama.cpp's
convert_hf_to_gguf.py does (same metadata keys, tensor names and tensor transformations), for
tests of Topiary's GGUF input. Only what the test models need: no tokenizer.

Usage: python3 scripts/tiny_hf_to_gguf.py MODEL_DIR OUT.gguf [MODEL_DIR OUT.gguf ...]
(several pairs share one start of Python). Supports model_type gpt2 and gpt_neox.
"""
import json
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


ARCHITECTURES = {
    "gpt2": (gguf.MODEL_ARCH.GPT2, gpt2_metadata, gpt2_tensor),
    "gpt_neox": (gguf.MODEL_ARCH.GPTNEOX, gpt_neox_metadata, gpt_neox_tensor),
}


def convert(model_dir: Path, out: str) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    arch, write_metadata, transform = ARCHITECTURES[config["model_type"]]
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    write_metadata(config, writer)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = gguf.TensorNameMap(arch, config.get("n_layer", config.get("num_hidden_layers")))
    for name, data in load_file(model_dir / "model.safetensors").items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise SystemExit(f"no GGUF name for {name}")
        writer.add_tensor(gguf_name, np.ascontiguousarray(transform(config, name, data), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    pairs = sys.argv[1:]
    if not pairs or len(pairs) % 2:
        raise SystemExit(__doc__)
    for model_dir, out in zip(pairs[::2], pairs[1::2]):
        convert(Path(model_dir), out)


if __name__ == "__main__":
    main()
