#!/usr/bin/env python3
"""Writes the small weight-format fixtures under test/fixtures/formats/.

Reference values come from the Python `gguf` package (gguf.quants.dequantize, the port of ggml's
dequantize_row_* functions) and from `safetensors`/`torch`, so the TypeScript readers are checked
against independent implementations, not against themselves.

  python3 scripts/make_format_fixtures.py            # small fixtures only
  python3 scripts/make_format_fixtures.py --smollm2  # also expected values for the real SmolLM2 GGUF

Everything is seeded: running it twice gives identical files.
"""
import argparse
import hashlib
import json
import os

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'formats')
SMOLLM2 = os.path.expanduser('~/.cache/topiary/SmolLM2-135M-Instruct.Q4_1.gguf')


def f32_bits(values: np.ndarray) -> list[int]:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).ravel().tolist()


def special_values() -> np.ndarray:
    """Values that exercise fp16/bf16 edge cases: signed zero, subnormals, overflow, fp16 and bf16 ties."""
    return np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 65520.0, 1e-7, 6e-8, 2e-8, 1e-40, 3.0e38,
                     1.0009765625, 1.00048828125, -1.00146484375, 1.00390625, 1.01171875, float('inf'), float('-inf')],
                    dtype=np.float32)


def random_k_blocks(rng: np.random.Generator, qtype: Q, n_blocks: int) -> np.ndarray:
    """The python package cannot quantize to K-quants, but any bytes are a valid K-quant block, so
    random quant bits with sane fp16 super-block scales are a fair decoding test."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scales = (rng.standard_normal((n_blocks, 2)) * 0.01).astype(np.float16).view(np.uint8)
    if qtype == Q.Q4_K:  # layout: d (f16), dmin (f16), scales[12], qs[128]
        blocks[:, 0:4] = scales
    elif qtype == Q.Q6_K:  # layout: ql[128], qh[64], scales[16] (int8), d (f16)
        blocks[:, -2:] = scales[:, 0:2]
    else:
        raise ValueError(qtype)
    return blocks


def quants_fixture(rng: np.random.Generator) -> None:
    """quants.gguf: one tensor per supported type (odd row counts, a couple of blocks per row),
    every metadata value type, and a custom alignment of 64."""
    path = os.path.join(OUT, 'quants.gguf')
    writer = gguf.GGUFWriter(path, 'llama')
    writer.add_custom_alignment(64)
    writer.add_uint8('test.u8', 200)
    writer.add_int8('test.i8', -100)
    writer.add_uint16('test.u16', 60000)
    writer.add_int16('test.i16', -30000)
    writer.add_uint32('test.u32', 4000000000)
    writer.add_int32('test.i32', -2000000000)
    writer.add_float32('test.f32', 0.25)
    writer.add_bool('test.bool', True)
    writer.add_string('test.string', 'héllo, wörld ✓')
    writer.add_uint64('test.u64_small', 2**40 + 3)
    writer.add_uint64('test.u64_big', 2**63 + 5)
    writer.add_int64('test.i64', -(2**50) - 7)
    writer.add_float64('test.f64', -1.0e-300)
    writer.add_key_value('test.array_i32', [1, -2, 3], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
    writer.add_key_value('test.array_str', ['a', '', 'ü'], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)
    writer.add_key_value('test.array_f32', [0.5, -1.5], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)

    tensors = []
    def add(name: str, qtype: Q, shape: tuple[int, int], raw: np.ndarray) -> None:
        writer.add_tensor(name, raw, raw_shape=None, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
        tensors.append((name, qtype, shape, raw))

    f32 = rng.standard_normal((3, 40)).astype(np.float32)
    f32[0, :18] = special_values()
    add('t.f32', Q.F32, f32.shape, f32)
    f16 = rng.standard_normal((3, 40)).astype(np.float16)
    with np.errstate(over='ignore'):  # 65520 and 3e38 overflow to inf on purpose
        f16[0, :18] = special_values().astype(np.float16)
    add('t.f16', Q.F16, f16.shape, f16)
    bf16_source = rng.standard_normal((5, 64)).astype(np.float32)
    bf16_source[0, :18] = special_values()
    add('t.bf16', Q.BF16, bf16_source.shape, gguf.quants.quantize(bf16_source, Q.BF16))
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
        source = (rng.standard_normal((3, 64)) * 0.1).astype(np.float32)
        source[1, 3] = 2.0  # an outlier that sets one block's scale
        add(f't.{qtype.name.lower()}', qtype, source.shape, gguf.quants.quantize(source, qtype))
    for qtype in (Q.Q4_K, Q.Q6_K):
        rows, cols = 3, 512
        blocks = random_k_blocks(rng, qtype, rows * cols // 256)
        add(f't.{qtype.name.lower()}', qtype, (rows, cols), blocks.reshape(rows, -1))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Expected values come from reading the file back with the package's own reader and dequantizer.
    reader = gguf.GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    expected, chunks, offset = [], [], 0
    for name, qtype, shape, _ in tensors:
        t = by_name[name]
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).ravel()
        assert values.size == shape[0] * shape[1], name
        expected.append({'name': name, 'type': qtype.name, 'shape': list(shape), 'offset': offset,
                         'count': int(values.size)})
        chunks.append(values)
        offset += values.size
    np.concatenate(chunks).astype('<f4').tofile(os.path.join(OUT, 'quants.expected.bin'))
    metadata = {
        'test.u8': 200, 'test.i8': -100, 'test.u16': 60000, 'test.i16': -30000,
        'test.u32': 4000000000, 'test.i32': -2000000000, 'test.f32': 0.25, 'test.bool': True,
        'test.string': 'héllo, wörld ✓', 'test.u64_small': 2**40 + 3, 'test.u64_big': str(2**63 + 5),
        'test.i64': -(2**50) - 7, 'test.f64': -1.0e-300, 'test.array_i32': [1, -2, 3],
        'test.array_str': ['a', '', 'ü'], 'test.array_f32': [0.5, -1.5], 'general.alignment': 64,
        'general.architecture': 'llama',
    }
    with open(os.path.join(OUT, 'quants.expected.json'), 'w') as f:
        json.dump({'tensors': expected, 'metadata': metadata}, f, indent=1, ensure_ascii=False)


def small_gguf_fixture(rng: np.random.Generator) -> None:
    """small.gguf: default alignment, one F32 and one Q8_0 tensor; also the fuzz test's seed."""
    writer = gguf.GGUFWriter(os.path.join(OUT, 'small.gguf'), 'llama')
    writer.add_string('general.name', 'small')
    writer.add_key_value('tokenizer.ggml.tokens', ['<s>', 'a', 'b'], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)
    writer.add_tensor('norm.weight', rng.standard_normal(7).astype(np.float32))
    writer.add_tensor('proj.weight', gguf.quants.quantize(rng.standard_normal((3, 32)).astype(np.float32), Q.Q8_0),
                      raw_dtype=Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(os.path.join(OUT, 'small.gguf'))
    expected = {t.name: f32_bits(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)) for t in reader.tensors}
    with open(os.path.join(OUT, 'small.expected.json'), 'w') as f:
        json.dump(expected, f)


def safetensors_fixture(rng: np.random.Generator) -> None:
    """python.safetensors, written by the reference library; the JSON holds each tensor's fp32
    source bits and the bits torch stored, so both the reader and the writer's fp16/bf16 rounding
    are checked against torch."""
    sources = {
        'embed.weight': (rng.standard_normal((5, 3)).astype(np.float32), torch.float32),
        'layer.0.f16': (np.concatenate([special_values(), rng.standard_normal(6).astype(np.float32)]).reshape(4, 6), torch.float16),
        'layer.0.bf16': (np.concatenate([special_values(), rng.standard_normal(3).astype(np.float32)]).reshape(3, 7), torch.bfloat16),
        'scalar_like': (np.array([3.5], dtype=np.float32), torch.float32),
    }
    tensors = {name: torch.from_numpy(src).to(dtype) for name, (src, dtype) in sources.items()}
    save_file(tensors, os.path.join(OUT, 'python.safetensors'), metadata={'format': 'pt'})
    expected = []
    for name, (src, dtype) in sources.items():
        stored = tensors[name]
        stored_bits = stored.view(torch.int16 if dtype != torch.float32 else torch.int32).numpy()
        stored_bits = stored_bits.astype(np.int64) & (0xFFFF if dtype != torch.float32 else 0xFFFFFFFF)
        expected.append({
            'name': name, 'dtype': {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16'}[dtype],
            'shape': list(src.shape), 'sourceBits': f32_bits(src), 'storedBits': stored_bits.ravel().tolist(),
            'valueBits': f32_bits(stored.float().numpy()),
        })
    with open(os.path.join(OUT, 'python.safetensors.json'), 'w') as f:
        json.dump({'metadata': {'format': 'pt'}, 'tensors': expected}, f, indent=1)


def smollm2_expectations() -> None:
    """Checksums and slices of a few real tensors, so the test can check the full-size file
    without committing it."""
    with open(SMOLLM2, 'rb') as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    reader = gguf.GGUFReader(SMOLLM2)
    wanted = ['token_embd.weight', 'blk.0.ffn_down.weight', 'blk.0.attn_norm.weight', 'blk.29.attn_v.weight',
              'output_norm.weight']
    tensors = []
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).ravel()
        picks = np.linspace(0, values.size - 1, 16).astype(np.int64)
        tensors.append({
            'name': t.name, 'type': t.tensor_type.name, 'shape': [int(d) for d in reversed(t.shape)],
            'sum': float(values.astype(np.float64).sum()), 'sumSquares': float((values.astype(np.float64) ** 2).sum()),
            'first': f32_bits(values[:8]), 'pickIndices': picks.tolist(), 'pickBits': f32_bits(values[picks]),
        })
    tokens = reader.fields['tokenizer.ggml.tokens']
    token_strings = [bytes(tokens.parts[i]).decode('utf-8') for i in tokens.data]
    expected = {
        'sha256': sha256, 'size': os.path.getsize(SMOLLM2), 'tensorCount': len(reader.tensors),
        'tensors': tensors, 'blockCount': int(reader.fields['llama.block_count'].parts[-1][0]),
        'tokenCount': len(token_strings), 'firstTokens': token_strings[:5], 'lastToken': token_strings[-1],
        'mergeCount': len(reader.fields['tokenizer.ggml.merges'].data),
    }
    with open(os.path.join(OUT, 'smollm2.expected.json'), 'w') as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--smollm2', action='store_true', help='also write expectations for the real SmolLM2 GGUF')
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240601)
    quants_fixture(rng)
    small_gguf_fixture(rng)
    safetensors_fixture(rng)
    if args.smollm2:
        smollm2_expectations()


if __name__ == '__main__':
    main()
