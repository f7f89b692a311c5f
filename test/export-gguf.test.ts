/**
 * The GGUF writer: metadata and tensors read back by our reader; q/k permutation undone exactly
 * (a dense re-export reloads with bit-identical logits); and a real llama.cpp (node-llama-cpp's
 * prebuilt binary) runs the exported files — the dense SmolLM2 and a FLAP-pruned model with
 * per-layer head counts and o/down biases — agreeing with Topiary's logits and NLL.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { drawCalibration } from '../src/data/calibration.js';
import { exportGguf, writeGguf } from '../src/export/gguf-writer.js';
import { quantizeQ8_0 } from '../src/formats/ggml-quantize.js';
import { convertRopeRows } from '../src/model/components/rope.js';
import { GgufValueType, openGguf } from '../src/formats/gguf.js';
import { dequantize } from '../src/formats/ggml-quants.js';
import { GGML_TYPES } from '../src/formats/ggml-quants.js';
import { CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { structuredMethodByName } from '../src/prune/structured/index.js';
import { prunePipeline } from '../src/prune/pipeline.js';
import { structuredStrategy } from '../src/prune/structured/strategy.js';
import { createRng } from '../src/util/random.js';
import { smolLM2Path, stories260K, tempDir, testDataDir } from './helpers.js';
import { assertLlamaCppAgrees, nodeLlamaCpp } from './llama-cpp.js';

test('gguf writer: key/values of every type and F32/F16/Q8_0 tensors read back', () => {
  const file = path.join(tempDir(), 'kv.gguf');
  const rng = createRng(3);
  const values = Float32Array.from({ length: 64 * 3 }, () => rng.next() * 4 - 2);
  writeGguf(
    file,
    [
      { key: 'general.architecture', type: GgufValueType.STRING, value: 'llama' },
      { key: 'a.u32', type: GgufValueType.UINT32, value: 7 },
      { key: 'a.i32', type: GgufValueType.INT32, value: -7 },
      { key: 'a.f32', type: GgufValueType.FLOAT32, value: 0.5 },
      { key: 'a.bool', type: GgufValueType.BOOL, value: true },
      { key: 'a.u64', type: GgufValueType.UINT64, value: 2 ** 40 },
      { key: 'a.ints', type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: [9, 0, 3] },
      { key: 'a.strings', type: GgufValueType.ARRAY, elementType: GgufValueType.STRING, value: ['x', 'ÿ', ''] },
    ],
    [
      { name: 'f32', shape: [3, 64], type: 'F32', data: () => values },
      { name: 'f16', shape: [3, 64], type: 'F16', data: () => values },
      { name: 'q8', shape: [3, 64], type: 'Q8_0', data: () => values },
      { name: 'vec', shape: [5], type: 'F32', data: () => Float32Array.of(1, 2, 3, 4, 5) },
    ],
  );
  const store = openGguf(file);
  assert.equal(store.version, 3);
  assert.deepEqual(
    Object.fromEntries(Object.entries(store.metadata).filter(([key]) => key.startsWith('a.'))),
    { 'a.u32': 7, 'a.i32': -7, 'a.f32': 0.5, 'a.bool': true, 'a.u64': 2 ** 40, 'a.ints': [9, 0, 3], 'a.strings': ['x', 'ÿ', ''] },
  );
  assert.deepEqual(store.info('q8').shape, [3, 64]);
  assert.deepEqual(store.read('f32'), values);
  assert.deepEqual(store.read('vec'), Float32Array.of(1, 2, 3, 4, 5));
  const f16 = store.read('f16');
  const q8 = store.read('q8');
  for (let i = 0; i < values.length; i++) {
    assert.ok(Math.abs(f16[i]! - values[i]!) <= Math.abs(values[i]!) * 2 ** -11 + 1e-7);
    // Q8_0: error at most half a step of the block's scale max|x|/127.
    assert.ok(Math.abs(q8[i]! - values[i]!) <= (2 / 127) * 0.5 * 1.01, `q8 ${i}`);
  }
  store.close();
  // ggml's rounding: the block max maps to ±127, x = 0.25 to round(0.25·127/4) = 8 (7.94 rounded).
  const block = Float32Array.from({ length: 32 }, (_, i) => (i - 16) * 0.25);
  const quantized = quantizeQ8_0(block);
  assert.equal((quantized[2]! << 24) >> 24, -127);
  assert.equal(quantized[2 + 16], 0);
  assert.equal(quantized[2 + 17], 8);
  const scale = dequantize(GGML_TYPES.Q8_0, quantized, 32)[17]! / 8;
  assert.ok(Math.abs(scale - 4 / 127) < 1e-5, 'the block scale is max|x|/127 (as fp16)');
});

test('convertRopeRows toInterleaved puts rotate-half pairs (i, i + headDim/2) at rows (2i, 2i + 1)', () => {
  const rows = 2 * 8;
  const data = Float32Array.from({ length: rows * 3 }, (_, i) => i);
  const interleaved = convertRopeRows(data, rows, 3, 2, 'toInterleaved');
  // Row 1 of head 0 in the interleaved layout is rotate-half row headDim/2 = 4.
  assert.deepEqual([...interleaved.subarray(3, 6)], [12, 13, 14]);
  assert.notDeepEqual(interleaved, data);
  assert.deepEqual(convertRopeRows(interleaved, rows, 3, 2, 'toRotateHalf'), data, 'the two directions are inverses');
});

test('dense stories260K exported to GGUF reloads with bit-identical logits', async () => {
  const model = await loadModel(stories260K, { backend: getBackend() });
  const file = path.join(tempDir(), 'dense.gguf');
  assert.equal(exportGguf(model, file, { dtype: 'F32' }).architecture, 'llama');
  const reloaded = await loadModel(file, { backend: getBackend() });
  const windows = [[1, 403, 407, 261, 378, 414, 267, 261, 422, 268]];
  assert.deepEqual(await reloaded.logits(windows), await model.logits(windows));
});

const smol = smolLM2Path();
const skip = !smol ? 'SmolLM2 GGUF not present (scripts/fetch-smollm2.sh)' : undefined;

test('llama.cpp runs the dense SmolLM2 re-exported as F32 GGUF and agrees with Topiary', { skip }, async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const model = await loadModel(smol!, { backend: getBackend() });
  const file = path.join(tempDir(), 'smol-dense.gguf');
  exportGguf(model, file, { dtype: 'F32' });
  const tokens = model.tokenizer.encode(' = Robert Boulter = Robert Boulter is an English film, television and theatre actor. He had a guest-starring role').slice(0, 24);
  try {
    await assertLlamaCppAgrees(lib, file, tokens);
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('llama.cpp runs a FLAP-pruned SmolLM2 (per-layer heads and widths, o/down biases) and agrees with Topiary', { skip }, async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const model = await loadModel(smol!, { backend: getBackend() });
  const { windows } = drawCalibration(model.tokenizer, { corpus: { kind: 'wikitext2' }, nsamples: 4, seqlen: 64, seed: 0 }, testDataDir);
  const result = await prunePipeline(model, windows, structuredStrategy(model, structuredMethodByName('flap'), 0.2, {}), {
    batchWindows: 4,
    checkpoint: { dir: tempDir(), fingerprint: 'flap', resume: false },
  });
  const smaller = new CausalLM(result.source(), model.backend);
  const file = path.join(tempDir(), 'smol-flap.gguf');
  assert.equal(exportGguf(smaller, file, { dtype: 'F16' }).architecture, 'deci');
  const tokens = model.tokenizer.encode(' The game began development in 2010 , carrying over a large portion of the work done on Valkyria Chronicles II').slice(0, 24);
  try {
    await assertLlamaCppAgrees(lib, file, tokens);
  } finally {
    fs.rmSync(file, { force: true });
  }
});
