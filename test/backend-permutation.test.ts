/**
 * The N:M channel order refinement (Backend.refineNmOrder): the native kernel against the
 * TypeScript reference, bit for bit, on shapes with one and several blocks, ties and zeros; and
 * the pruning path through a backend against the reference search.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadNativeBackend } from '../src/backend/native.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { chooseMask, chooseMaskOn } from '../src/prune/permutation.js';
import { createRng } from '../src/util/random.js';

const reference = new ReferenceBackend();
const loaded = loadNativeBackend();
const native = loaded.backend;
const skip = native ? false : `native addon not built (${loaded.reason})`;

/**
 * Channel-major scores [cols, rows] with strong and weak channels; `levels` > 0 rounds them to
 * that many steps so that equal values (ties in sorts and in the assignment) are common, and a
 * few are zero.
 */
function channelScores(rows: number, cols: number, seed: number, levels = 0): Float32Array {
  const rng = createRng(seed);
  const scale = Float64Array.from({ length: cols }, () => Math.exp(rng.normal()));
  return Float32Array.from({ length: rows * cols }, (_, i) => {
    const value = Math.abs(rng.normal()) * scale[Math.floor(i / rows)]!;
    return levels > 0 ? Math.round(value * levels) / levels : value;
  });
}

test('native refineNmOrder equals the reference bit for bit (one and several blocks, 1:4 to 4:8, ties)', { skip }, async () => {
  const cases: [rows: number, cols: number, n: number, m: number, blockGroups: number, maxRounds: number, levels: number][] = [
    [37, 64, 2, 4, 128, 10, 0], // one block, odd row count (a partial tile of groups)
    [16, 96, 2, 4, 5, 10, 0], // several blocks, both partitions, uneven block sizes
    [23, 128, 4, 8, 3, 6, 0],
    [19, 120, 1, 4, 9, 10, 0],
    [11, 40, 3, 4, 128, 10, 0],
    [29, 96, 2, 4, 7, 10, 2], // coarse values: many ties and zeros
    [13, 64, 5, 8, 128, 10, 3],
    [8, 32, 2, 4, 128, 0, 0], // no rounds
  ];
  let seed = 1;
  for (const [rows, cols, n, m, blockGroups, maxRounds, levels] of cases) {
    const channels = channelScores(rows, cols, seed++, levels);
    const start = Uint32Array.from({ length: cols }, (_, c) => c);
    const rng = createRng(seed++);
    for (let i = cols - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [start[i], start[j]] = [start[j]!, start[i]!];
    }
    const kept = 1000 * rng.next();
    const plan = { n, m, blockGroups, maxRounds };
    const expected = start.slice();
    const expectedRounds = await reference.refineNmOrder(channels, rows, expected, plan, kept);
    const got = start.slice();
    const rounds = await native!.refineNmOrder(channels, rows, got, plan, kept);
    const label = `${rows}×${cols} ${n}:${m} block ${blockGroups}`;
    assert.equal(rounds, expectedRounds, label);
    assert.deepEqual(got, expected, label);
    if (maxRounds > 0 && levels === 0) assert.notDeepEqual(got, start, `${label}: refinement moved nothing`);
  }
});

test('native refineNmOrder refuses an order that is not a permutation and N:M it cannot run', { skip }, async () => {
  const channels = channelScores(4, 8, 9);
  const plan = { n: 2, m: 4, blockGroups: 8, maxRounds: 2 };
  await assert.rejects(native!.refineNmOrder(channels, 4, Uint32Array.of(0, 1, 2, 3, 4, 5, 6, 6), plan, 1), /permutation/);
  await assert.rejects(native!.refineNmOrder(channels, 4, Uint32Array.of(0, 1, 2, 3, 4, 5, 6, 7), { ...plan, n: 4 }, 1), /0 < N < M/);
  await assert.rejects(native!.refineNmOrder(channels, 5, Uint32Array.of(0, 1, 2, 3, 4, 5, 6, 7), plan, 1), /channels/);
});

test('chooseMaskOn a backend gives the reference chooseMask result', { skip }, async () => {
  const rows = 48;
  const cols = 160;
  const channels = channelScores(rows, cols, 30);
  const scores = new Float32Array(rows * cols);
  channels.forEach((value, i) => (scores[(i % rows) * cols + Math.floor(i / rows)] = value));
  const target = { kind: 'nm', n: 2, m: 4 } as const;
  const options = { blockGroups: 16, maxRounds: 10 };
  const expected = chooseMask(scores, rows, cols, target, 'row', options);
  for (const backend of [reference, native!]) {
    const got = await chooseMaskOn(backend, scores, rows, cols, target, 'row', options);
    assert.deepEqual(got, expected);
  }
});
