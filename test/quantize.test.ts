/**
 * The GGUF quantizers (src/formats/ggml-quantize.ts) against two references on the same awkward
 * data — zeros, values too small for fp16 scales, exact rounding ties, blocks of one repeated value,
 * equal magnitudes of both signs, heavy outliers, plain Gaussian noise: the `gguf` Python package's
 * quantizers (Q8_0, Q4_0, Q5_0) and ggml's own quantize_row_*_ref from llama.cpp's libggml-base as
 * node-llama-cpp ships it (every type, Q4_K included), called through scripts/quantize_reference.py.
 * Bytes must be equal; Topiary's dequantizers must then give back each value within its step.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { dequantize, GGML_TYPES } from '../src/formats/ggml-quants.js';
import { quantizeQ4_0, quantizeQ4_K, quantizeQ5_0, quantizeQ8_0 } from '../src/formats/ggml-quantize.js';
import { createRng } from '../src/util/random.js';
import { repoRoot, tempDir } from './helpers.js';

const QUANTIZERS = { Q8_0: quantizeQ8_0, Q4_0: quantizeQ4_0, Q5_0: quantizeQ5_0, Q4_K: quantizeQ4_K } as const;

/** 16 super-blocks of 256 values, each a different kind of awkward. */
function awkwardValues(): Float32Array {
  const rng = createRng(11);
  const blocks: ((i: number) => number)[] = [
    () => rng.normal(),
    () => 0,
    (i) => (i % 37 === 0 ? 1e-30 : 0), // a scale below fp16's smallest subnormal
    (i) => (i % 7) * 1e-7, // scales in fp16's subnormal range
    (i) => ((i % 32) - 16) * 0.5, // exact halves after scaling: rounding ties
    (i) => (i % 32) - 15.5,
    (i) => Math.min(i % 32, 30) * 0.5, // Q4_K: max − min = 15, so x − min lands on halves (ties to even)
    (i) => (i % 32 === 0 ? 0 : (i % 32 === 1 ? 63 * 15 : (i % 16) + 0.5)),
    () => 3.25, // one repeated positive value
    () => -2.5, // one repeated negative value: Q4_K's max = min case
    (i) => (i % 2 === 0 ? 3 : -3), // equal magnitudes of both signs: the first wins
    (i) => (i % 2 === 0 ? -3 : 3),
    (i) => (i === 5 ? 1000 : rng.normal() * 0.01), // one outlier per super-block
    (i) => (i % 32 === 31 ? -5e4 : rng.normal()),
    (i) => (i < 128 ? 0 : rng.normal()), // half of the sub-blocks empty
    () => rng.next() * 1e-3,
    () => -rng.next() * 100,
    (i) => Math.fround(Math.sin(i) * 7),
  ];
  const values = new Float32Array(blocks.length * 256);
  blocks.forEach((value, block) => {
    for (let i = 0; i < 256; i++) values[block * 256 + i] = value(i);
  });
  return values;
}

const libggml = path.join(repoRoot, 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64', 'libggml-base.so');

test('Q8_0, Q4_0, Q5_0 and Q4_K bytes equal the gguf package and ggml reference quantizers on awkward data', (t) => {
  const values = awkwardValues();
  const dir = tempDir();
  const input = path.join(dir, 'values.f32');
  fs.writeFileSync(input, new Uint8Array(values.buffer));
  const withGgml = fs.existsSync(libggml);
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'quantize_reference.py'), input, dir, ...(withGgml ? [libggml] : [])], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  if (!withGgml) t.diagnostic('node-llama-cpp linux-x64 binaries absent: compared with the gguf package only (no Q4_K reference)');
  let compared = 0;
  for (const [name, quantize] of Object.entries(QUANTIZERS)) {
    const ours = quantize(values);
    for (const reference of ['gguf', 'ggml']) {
      const file = path.join(dir, `${reference}-${name}.bin`);
      if (!fs.existsSync(file)) continue;
      const theirs = new Uint8Array(fs.readFileSync(file));
      assert.equal(ours.length, theirs.length, `${name} size`);
      const first = ours.findIndex((byte, i) => byte !== theirs[i]);
      assert.equal(first, -1, `${name} differs from ${reference} at byte ${first} (block ${Math.floor(first / (ours.length / (values.length / GGML_TYPES[name as keyof typeof QUANTIZERS].blockSize)))})`);
      compared++;
    }
  }
  assert.equal(compared, withGgml ? 7 : 3, 'every reference answered');
});

test('dequantizing each quantized block gives every value back within its block step', () => {
  const values = awkwardValues();
  // Largest error per value relative to the block's largest magnitude: half a step of 127, 8, 16 levels; Q4_K's 15 levels over [min, max] with 6-bit scales.
  const bound = { Q8_0: 0.5 / 127, Q4_0: 1 / 8, Q5_0: 1 / 16, Q4_K: 2 / 15 };
  for (const [name, quantize] of Object.entries(QUANTIZERS)) {
    const type = GGML_TYPES[name as keyof typeof QUANTIZERS];
    const back = dequantize(type, quantize(values), values.length);
    for (let start = 0; start < values.length; start += type.blockSize) {
      let amax = 0;
      for (let i = start; i < start + type.blockSize; i++) amax = Math.max(amax, Math.abs(values[i]!));
      for (let i = start; i < start + type.blockSize; i++) {
        // The fp16 scale adds up to 2⁻¹¹ of the block's range, or in fp16's subnormal range 2⁻²⁴ per level (up to 63·15 for Q4_K).
        const tolerance = amax * (bound[name as keyof typeof bound] + 2 ** -10) + 2 ** -24 * 1024;
        assert.ok(Math.abs(back[i]! - values[i]!) <= tolerance, `${name} value ${i}: ${values[i]} came back as ${back[i]}`);
      }
    }
  }
});
