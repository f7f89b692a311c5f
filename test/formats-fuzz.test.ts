/**
 * Seeded, bounded fuzzing of the readers: mutated small files (byte flips, truncations, length
 * fields inflated to huge values) must either open and read, or throw TopiaryError; never another
 * error type, never a hang, never a huge allocation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openTensors } from '../src/formats/open.js';
import { writeSafetensors } from '../src/formats/safetensors.js';
import { TopiaryError } from '../src/util/errors.js';
import { createRng, type Rng } from '../src/util/random.js';
import { repoRoot, tempDir } from './helpers.js';

const MUTATIONS_PER_SEED = 1500;
/** External (ArrayBuffer) memory allowed at any check: far above what these tiny files need. */
const MAX_ARRAY_BUFFER_BYTES = 256 * 1024 * 1024;

const INFLATED_VALUES = [0xffffffffn, 0x7fffffffn, 2n ** 32n, 2n ** 40n, 2n ** 53n, 2n ** 62n, 2n ** 63n, 2n ** 64n - 1n, 100_000_001n];

function mutate(original: Buffer, rng: Rng): Buffer {
  const bytes = Buffer.from(original);
  switch (rng.int(4)) {
    case 0: {
      // Flip a few random bytes.
      const flips = 1 + rng.int(8);
      for (let i = 0; i < flips; i++) bytes[rng.int(bytes.length)] ^= 1 + rng.int(255);
      return bytes;
    }
    case 1:
      return bytes.subarray(0, rng.int(bytes.length));
    case 2: {
      // Inflate a length-like field: overwrite 4 or 8 aligned-ish bytes in the header region with a huge value.
      const width = rng.next() < 0.5 ? 4 : 8;
      const headerRegion = Math.min(bytes.length, 512) - width;
      if (headerRegion <= 0) return bytes;
      const at = rng.int(headerRegion);
      const value = INFLATED_VALUES[rng.int(INFLATED_VALUES.length)];
      if (width === 8) bytes.writeBigUInt64LE(value, at);
      else bytes.writeUInt32LE(Number(value & 0xffffffffn), at);
      return bytes;
    }
    default: {
      // Insert or delete a few bytes, shifting everything after.
      const at = rng.int(bytes.length);
      const count = 1 + rng.int(8);
      return rng.next() < 0.5
        ? Buffer.concat([bytes.subarray(0, at), Buffer.alloc(count, rng.int(256)), bytes.subarray(at)])
        : Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + count)]);
    }
  }
}

function fuzz(seedFile: string, seed: number, scratchPrefix: string): { opened: number; refused: number } {
  const original = fs.readFileSync(seedFile);
  const rng = createRng(seed);
  let opened = 0;
  let refused = 0;
  for (let iteration = 0; iteration < MUTATIONS_PER_SEED; iteration++) {
    const mutated = mutate(original, rng);
    // A fresh name each time: overwriting (truncating) a file is several times slower on most disks.
    const scratch = `${scratchPrefix}-${iteration}`;
    fs.writeFileSync(scratch, mutated);
    try {
      const store = openTensors(scratch);
      try {
        for (const info of store.list()) {
          assert.ok(info.byteLength <= mutated.length, `${info.name} claims ${info.byteLength} bytes of a ${mutated.length}-byte file`);
          store.read(info.name);
        }
      } finally {
        store.close();
      }
      opened++;
    } catch (error) {
      if (!(error instanceof TopiaryError)) {
        fs.writeFileSync(`${scratch}.failing`, mutated);
        assert.fail(`${path.basename(seedFile)} mutation ${iteration} (seed ${seed}) threw ${String(error)}; input kept at ${scratch}.failing\n${(error as Error).stack}`);
      }
      assert.ok(error.message.startsWith(scratch), `error names the file: ${error.message}`);
      refused++;
    }
    fs.rmSync(scratch);
    if (iteration % 100 === 0) {
      const { arrayBuffers } = process.memoryUsage();
      assert.ok(arrayBuffers < MAX_ARRAY_BUFFER_BYTES, `array buffers grew to ${arrayBuffers} bytes`);
    }
  }
  return { opened, refused };
}

test('mutated safetensors, GGUF and llama2.c files open cleanly or fail with TopiaryError', () => {
  // Thousands of small files: use memory-backed /dev/shm where the machine has it.
  const dir = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/topiary-fuzz-') : tempDir();
  const safetensors = path.join(dir, 'seed.safetensors');
  const rng = createRng(1);
  writeSafetensors(safetensors, [
    { name: 'a', shape: [3, 4], data: Float32Array.from({ length: 12 }, () => rng.normal()) },
    { name: 'b', shape: [5], data: Float32Array.from({ length: 5 }, () => rng.normal()), dtype: 'F16' },
    { name: 'c', shape: [2, 3], data: Float32Array.from({ length: 6 }, () => rng.normal()), dtype: 'BF16' },
  ], { note: 'fuzz seed' });
  const llama2c = path.join(dir, 'seed.bin');
  // dim 4, hidden 6, 1 layer, 2 heads, 1 kv head, vocab -3 (untied), seq_len 2: 160 floats.
  fs.writeFileSync(llama2c, Buffer.concat([Buffer.from(new Int32Array([4, 6, 1, 2, 1, -3, 2]).buffer), Buffer.alloc(160 * 4, 0x3f)]));
  const fixtures = path.join(repoRoot, 'test', 'fixtures', 'formats');
  const seeds = [safetensors, path.join(fixtures, 'small.gguf'), path.join(fixtures, 'quants.gguf'), llama2c];
  const started = Date.now();
  seeds.forEach((seedFile, k) => {
    const { opened, refused } = fuzz(seedFile, 1000 + k, path.join(dir, `mutant-${k}`));
    // Both outcomes must occur, or the mutations are not exercising the readers.
    assert.ok(opened > 50 && refused > 50, `${path.basename(seedFile)}: ${opened} opened, ${refused} refused`);
  });
  assert.ok(Date.now() - started < 60_000, 'fuzzing stays fast');
  fs.rmSync(dir, { recursive: true });
});
