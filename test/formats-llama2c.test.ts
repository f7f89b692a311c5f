import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openLlama2c } from '../src/formats/llama2c.js';
import { openTensors } from '../src/formats/open.js';
import { assertTopiaryError, tempDir, testDataDir } from './helpers.js';

const modelDir = path.join(testDataDir, 'models', 'stories260K');
const legacyFile = path.join(modelDir, 'checkpoint_legacy.bin');
const v1File = path.join(modelDir, 'checkpoint_v1.bin');

test('stories260K: legacy and version-1 files hold identical tensors', () => {
  const legacy = openLlama2c(legacyFile);
  const v1 = openTensors(v1File);
  try {
    const expectedMeta = { dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true };
    assert.deepEqual(legacy.metadata, { version: 0, ...expectedMeta });
    assert.deepEqual(v1.metadata, { version: 1, ...expectedMeta });
    assert.equal(v1.format, 'llama2c');
    const names = legacy.list().map((t) => t.name).sort();
    assert.deepEqual(v1.list().map((t) => t.name).sort(), names);
    assert.equal(names.length, 2 + 9 * 5, 'embedding, final norm and nine tensors per layer; tied, so no output.weight');
    assert.deepEqual(legacy.info('tok_embeddings.weight').shape, [512, 64]);
    assert.deepEqual(legacy.info('layers.4.attention.wk.weight').shape, [32, 64]);
    assert.deepEqual(legacy.info('layers.0.feed_forward.w2.weight').shape, [64, 172]);
    assert.deepEqual(legacy.info('layers.0.feed_forward.w3.weight').shape, [172, 64]);
    assert.deepEqual(legacy.info('norm.weight'), { name: 'norm.weight', dtype: 'F32', shape: [64], byteLength: 256 });
    for (const name of names) {
      assert.deepEqual(v1.info(name), legacy.info(name));
      assert.deepEqual(v1.read(name), legacy.read(name), name);
    }
    // Different tensors really differ (a reader returning one region for all would fail above only by luck).
    assert.notDeepEqual(legacy.read('layers.0.attention.wq.weight'), legacy.read('layers.0.attention.wo.weight'));
    // Trained RMSNorm gains are positive and of order one; a misplaced offset would read a projection.
    const norm = legacy.read('norm.weight');
    assert.ok(norm.every((v) => v > 0.1 && v < 10), 'final norm weights look like norm weights');
  } finally {
    legacy.close();
    v1.close();
  }
});

/** A tiny checkpoint whose every float is its own index, so offsets can be checked by hand. */
function tinyCheckpoint(file: string, version: 0 | 1, floats: number, shared: boolean): string {
  const ints = [4, 6, 1, 2, 1, version === 0 && !shared ? -3 : 3, 2];
  const header = Buffer.alloc(version === 0 ? 28 : 256);
  let at = 0;
  if (version === 1) {
    header.writeUInt32LE(0x616b3432, 0);
    header.writeInt32LE(1, 4);
    at = 8;
  }
  for (const value of ints) {
    header.writeInt32LE(value, at);
    at += 4;
  }
  if (version === 1) header.writeUInt8(shared ? 1 : 0, at);
  const data = Float32Array.from({ length: floats }, (_, i) => i);
  fs.writeFileSync(file, Buffer.concat([header, Buffer.from(data.buffer)]));
  return file;
}

test('untied classifier and the exact tensor order of both layouts', () => {
  const dir = tempDir();
  // dim 4, hidden 6, 1 layer, 2 heads (head size 2), 1 kv head (kv dim 2), vocab 3, seq_len 2.
  const legacy = openLlama2c(tinyCheckpoint(path.join(dir, 'legacy.bin'), 0, 160, false));
  const legacyStarts: Record<string, number> = {
    'tok_embeddings.weight': 0, 'layers.0.attention_norm.weight': 12, 'layers.0.attention.wq.weight': 16,
    'layers.0.attention.wk.weight': 32, 'layers.0.attention.wv.weight': 40, 'layers.0.attention.wo.weight': 48,
    'layers.0.ffn_norm.weight': 64, 'layers.0.feed_forward.w1.weight': 68, 'layers.0.feed_forward.w2.weight': 92,
    'layers.0.feed_forward.w3.weight': 116, 'norm.weight': 140, 'output.weight': 148, // 144..148: RoPE tables, skipped
  };
  const v1 = openLlama2c(tinyCheckpoint(path.join(dir, 'v1.bin'), 1, 156, false));
  const v1Starts: Record<string, number> = {
    'layers.0.attention_norm.weight': 0, 'layers.0.ffn_norm.weight': 4, 'norm.weight': 8, 'tok_embeddings.weight': 12,
    'layers.0.attention.wq.weight': 24, 'layers.0.attention.wk.weight': 40, 'layers.0.attention.wv.weight': 48,
    'layers.0.attention.wo.weight': 56, 'layers.0.feed_forward.w1.weight': 72, 'layers.0.feed_forward.w2.weight': 96,
    'layers.0.feed_forward.w3.weight': 120, 'output.weight': 144,
  };
  for (const [store, starts] of [[legacy, legacyStarts], [v1, v1Starts]] as const) {
    assert.equal(store.metadata.sharedClassifier, false);
    assert.equal(store.metadata.vocabSize, 3);
    assert.deepEqual(store.list().map((t) => t.name).sort(), Object.keys(starts).sort());
    for (const [name, start] of Object.entries(starts)) {
      const values = store.read(name);
      assert.equal(values[0], start, `${name} starts at float ${start}`);
      assert.equal(values.at(-1), start + values.length - 1);
    }
    assert.deepEqual(store.info('output.weight').shape, [3, 4]);
    assert.deepEqual(store.info('layers.0.attention.wv.weight').shape, [2, 4]);
    store.close();
  }
  fs.rmSync(dir, { recursive: true });
});

test('bad llama2.c input gives one clear TopiaryError naming the file', () => {
  const dir = tempDir();
  const at = (name: string) => path.join(dir, name);
  let file = at('truncated.bin');
  fs.writeFileSync(file, fs.readFileSync(legacyFile).subarray(0, 1056540 - 4));
  assertTopiaryError(() => openLlama2c(file), file, /implies 1056540 bytes, but the file has 1056536/);
  file = tinyCheckpoint(at('v1-extra.bin'), 1, 157, false);
  assertTopiaryError(() => openLlama2c(file), file, /implies 880 bytes, but the file has 884/);
  file = at('v2.bin');
  const v2 = Buffer.from(fs.readFileSync(v1File));
  v2.writeInt32LE(2, 4);
  fs.writeFileSync(file, v2);
  assertTopiaryError(() => openLlama2c(file), file, /version 2 is not supported/);
  file = at('zero.bin');
  fs.writeFileSync(file, Buffer.alloc(64));
  assertTopiaryError(() => openLlama2c(file), file, /dim is 0/);
  file = at('lying.bin');
  fs.writeFileSync(file, Buffer.from(new Int32Array([64, 172, 2 ** 31 - 1, 8, 4, 512, 512]).buffer));
  assertTopiaryError(() => openLlama2c(file), file, /2147483647 layers.* implies \d+ bytes, but the file has 28/);
  file = at('heads.bin');
  fs.writeFileSync(file, Buffer.from(new Int32Array([64, 172, 5, 8, 3, 512, 512]).buffer));
  assertTopiaryError(() => openLlama2c(file), file, /n_heads 8 is not a multiple of n_kv_heads 3/);
  file = at('short.bin');
  fs.writeFileSync(file, Buffer.alloc(10));
  assertTopiaryError(() => openLlama2c(file), file, /too short/);
  file = at('missing.bin');
  assertTopiaryError(() => openLlama2c(file), file, /no such file/);
  fs.rmSync(dir, { recursive: true });
});
