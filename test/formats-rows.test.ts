/**
 * Row reads: a range of a tensor's rows read from the file equals those rows of the whole tensor,
 * in every format and stored type (the embedding rows a batch needs are read this way), and a
 * range outside the tensor is refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { openGguf } from '../src/formats/gguf.js';
import { openLlama2c } from '../src/formats/llama2c.js';
import { openSafetensors, writeSafetensors } from '../src/formats/safetensors.js';
import type { TensorStore } from '../src/formats/tensors.js';
import { openModelSource } from '../src/model/sources.js';
import { createRng } from '../src/util/random.js';
import { TopiaryError } from '../src/util/errors.js';
import { smolLM2Path, stories260K, tempDir } from './helpers.js';

function assertRowsMatch(store: TensorStore, name: string, ranges: [number, number][]): void {
  const whole = store.read(name);
  const [rows, ...rest] = store.info(name).shape as [number, ...number[]];
  const cols = rest.reduce((a, b) => a * b, 1);
  assert.equal(whole.length, rows * cols);
  for (const [first, count] of ranges) {
    assert.deepEqual(store.read(name, { first, count }), whole.slice(first * cols, (first + count) * cols), `${name} rows ${first}+${count}`);
  }
  assert.throws(() => store.read(name, { first: rows - 1, count: 2 }), (error: unknown) => error instanceof TopiaryError && /outside tensor/.test(error.message));
}

test('safetensors F32, F16 and BF16: row ranges equal the rows of the whole tensor', () => {
  const rng = createRng(3);
  const data = Float32Array.from({ length: 37 * 24 }, () => rng.next() * 2 - 1);
  const file = path.join(tempDir(), 'rows.safetensors');
  writeSafetensors(file, (['F32', 'F16', 'BF16'] as const).map((dtype) => ({ name: dtype, shape: [37, 24], dtype, data })));
  const store = openSafetensors(file);
  for (const dtype of ['F32', 'F16', 'BF16']) assertRowsMatch(store, dtype, [[0, 1], [5, 7], [36, 1], [0, 37]]);
  store.close();
});

test('GGUF quantized tensors and llama2.c: row ranges equal the rows of the whole tensor', (t) => {
  const llama2c = openLlama2c(stories260K);
  assertRowsMatch(llama2c, 'tok_embeddings.weight', [[0, 1], [100, 3], [511, 1]]);
  llama2c.close();
  const smol = smolLM2Path();
  if (!smol) return t.skip('SmolLM2 GGUF not fetched');
  const gguf = openGguf(smol);
  // Each quantized type the file holds, embedding included.
  const byType = new Map(gguf.list().filter((info) => info.shape.length === 2).map((info) => [info.dtype, info.name]));
  assert.ok(byType.size >= 2, `types: ${[...byType.keys()]}`);
  for (const name of byType.values()) assertRowsMatch(gguf, name, [[0, 2], [17, 5]]);
  gguf.close();
});

test('a model source gathers scattered rows in order, reading each run of consecutive rows once', () => {
  const source = openModelSource(stories260K);
  const name = source.family.embedTokens;
  const whole = source.read(name);
  const cols = source.shape(name)[1]!;
  const rows = [0, 1, 2, 9, 40, 41, 511];
  const expected = new Float32Array(rows.length * cols);
  rows.forEach((row, i) => expected.set(whole.subarray(row * cols, (row + 1) * cols), i * cols));
  assert.deepEqual(source.readRows(name, rows), expected);
  assert.throws(() => source.readRows(name, [3, 512]), /outside tensor/);
  source.close();
});
