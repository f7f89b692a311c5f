"""Decompresses sparse folders with the compressed-tensors package and compares them with dense ones.

Reads JSON [{"sparse": DIR, "dense": DIR}, ...] on stdin. For each pair: the compressor that
config.json names (ModelCompressor.from_pretrained, as llm-compressor and vLLM load it), its
decompress() of the folder, and the names of the tensors whose bits differ from the dense folder's
model.safetensors. Prints one JSON object per pair.
"""
import json
import sys

import torch
from compressed_tensors.compressors import ModelCompressor
from safetensors.torch import load_file


def compare(sparse: str, dense: str) -> dict:
    compressor = ModelCompressor.from_pretrained(sparse)
    decompressed = dict(compressor.sparsity_compressor.decompress(sparse))
    reference = load_file(f"{dense}/model.safetensors")
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(bits[a.dtype]), b.view(bits[b.dtype]))

    return {
        "compressor": type(compressor.sparsity_compressor).__name__,
        "quantization": compressor.quantization_config is not None,
        "tensors": len(reference),
        "missing": sorted(set(reference) - set(decompressed)),
        "extra": sorted(set(decompressed) - set(reference)),
        "differing": sorted(name for name in reference if name in decompressed and not same(decompressed[name], reference[name])),
    }


for pair in json.load(sys.stdin):
    print(json.dumps(compare(pair["sparse"], pair["dense"])))
