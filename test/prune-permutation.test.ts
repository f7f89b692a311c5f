import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../src/backend/reference.js';
import { keptScore, selectNm } from '../src/prune/masks.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { ria, riaScores } from '../src/prune/methods/ria.js';
import { wanda, wandaScores } from '../src/prune/methods/wanda.js';
import {
  chooseMask,
  findNmPermutation,
  parsePermutationOptions,
  permutationHash,
  refinePosition,
  solveAssignment,
} from '../src/prune/permutation.js';
import { UsageError } from '../src/util/errors.js';
import { createRng } from '../src/util/random.js';

function randomMatrix(size: number, seed: number, transform: (value: number) => number = (v) => v): Float64Array {
  const rng = createRng(seed);
  return Float64Array.from({ length: size }, () => transform(rng.normal()));
}

/** Scores with strong and weak channels, as in real layers: |N(0,1)| · a per-column scale. */
function channelScores(rows: number, cols: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const columnScale = Float64Array.from({ length: cols }, () => Math.exp(rng.normal()));
  return Float32Array.from({ length: rows * cols }, (_, i) => Math.abs(rng.normal()) * columnScale[i % cols]);
}

function isPermutation(order: Uint32Array, size: number): boolean {
  return order.length === size && new Set(order).size === size && order.every((c) => c < size);
}

/** Best total over all n! assignments, by brute force. */
function bruteForceAssignment(cost: Float64Array, n: number, maximize: boolean): number {
  const used = new Uint8Array(n);
  const search = (row: number): number => {
    if (row === n) return 0;
    let best = maximize ? -Infinity : Infinity;
    for (let col = 0; col < n; col++) {
      if (used[col]) continue;
      used[col] = 1;
      const total = cost[row * n + col] + search(row + 1);
      used[col] = 0;
      best = maximize ? Math.max(best, total) : Math.min(best, total);
    }
    return best;
  };
  return search(0);
}

test('the assignment solver matches brute force on small random matrices (n ≤ 7), min and max', () => {
  let seed = 100;
  for (let n = 1; n <= 7; n++) {
    for (let trial = 0; trial < 6; trial++) {
      // Every other trial uses small integers, so that optimal assignments tie.
      const cost = randomMatrix(n * n, seed++, trial % 2 ? (v) => Math.round(v * 2) : (v) => v);
      for (const maximize of [false, true]) {
        const assignment = solveAssignment(cost, n, maximize);
        assert.equal(new Set(assignment).size, n, 'a one-to-one assignment');
        const total = Array.from(assignment).reduce((sum, col, row) => sum + cost[row * n + col], 0);
        const best = bruteForceAssignment(cost, n, maximize);
        assert.ok(Math.abs(total - best) < 1e-9, `n=${n} trial ${trial} maximize=${maximize}: ${total} vs ${best}`);
      }
    }
  }
});

test('the assignment solver finds a planted optimum on a larger matrix', () => {
  const n = 60;
  const rng = createRng(7);
  const planted = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [planted[i], planted[j]] = [planted[j], planted[i]];
  }
  const cost = new Float64Array(n * n).map(() => 1 + rng.next());
  planted.forEach((col, row) => (cost[row * n + col] = 0));
  assert.deepEqual(Array.from(solveAssignment(cost, n)), planted);
});

test('permutation finds the grouping that pairs complementary channels', () => {
  // Channels 0–3 matter only to row 0, channels 4–7 only to row 1. In the original order each
  // 2:4 group serves one row (kept 4·9 = 36); mixing them keeps 2 strong channels per row and group.
  // prettier-ignore
  const scores = new Float32Array([
    9, 9, 9, 9, 0, 0, 0, 0,
    0, 0, 0, 0, 9, 9, 9, 9,
  ]);
  const found = findNmPermutation(scores, 2, 8, 2, 4);
  assert.equal(found.keptBefore, 36);
  assert.equal(found.keptAfter, 72);
  const groups = [found.order.slice(0, 4), found.order.slice(4, 8)];
  for (const group of groups) assert.equal(group.filter((c) => c < 4).length, 2);
});

/** All orderings of 0..n-1. */
function allOrderings(n: number): number[][] {
  if (n === 0) return [[]];
  return allOrderings(n - 1).flatMap((rest) =>
    Array.from({ length: n }, (_, at) => [...rest.slice(0, at), n - 1, ...rest.slice(at)]),
  );
}

test('one refinement step finds the best reassignment of a position (checked against all reassignments)', () => {
  const rows = 6;
  let seed = 30;
  for (const [n, m, groups] of [[2, 4, 5], [1, 4, 4], [3, 4, 4], [4, 8, 4], [2, 8, 3]]) {
    const cols = groups * m;
    const scores = channelScores(rows, cols, seed++);
    const channels = new Float32Array(rows * cols);
    scores.forEach((value, i) => (channels[(i % cols) * rows + Math.floor(i / cols)] = value));
    const keptOf = (order: Uint32Array) => keptScore(scores, selectNm(scores, rows, cols, n, m, order));
    for (let position = 0; position < m; position++) {
      const order = Uint32Array.from({ length: cols }, (_, c) => c);
      const before = keptOf(order);
      const members = Array.from({ length: groups }, (_, g) => g);
      const gain = refinePosition(channels, rows, order, n, m, position, members);
      const after = keptOf(order);
      const label = `${n}:${m} × ${groups} groups, position ${position}`;
      assert.ok(Math.abs(after - before - gain) <= 1e-9 * after, `${label}: reported gain ${gain}, real ${after - before}`);
      let best = -Infinity;
      for (const reassignment of allOrderings(groups)) {
        const candidate = Uint32Array.from({ length: cols }, (_, c) => c);
        reassignment.forEach((from, to) => (candidate[to * m + position] = from * m + position));
        best = Math.max(best, keptOf(candidate));
      }
      assert.ok(Math.abs(after - best) <= 1e-9 * best, `${label}: ${after} vs best ${best}`);
    }
  }
});

test('permutation is valid, never keeps less than the original order, and reports its kept score', () => {
  const cases: [rows: number, cols: number, n: number, m: number, blockGroups: number, maxRounds: number][] = [
    [16, 32, 2, 4, 128, 10],
    [16, 64, 2, 4, 4, 10], // several blocks, both partitions
    [24, 64, 4, 8, 3, 10],
    [8, 48, 1, 4, 128, 0], // heuristic start only
    [12, 40, 3, 4, 128, 10],
  ];
  let seed = 20;
  for (const [rows, cols, n, m, blockGroups, maxRounds] of cases) {
    for (let trial = 0; trial < 3; trial++) {
      const scores = channelScores(rows, cols, seed++);
      const found = findNmPermutation(scores, rows, cols, n, m, { blockGroups, maxRounds });
      const label = `${rows}×${cols} ${n}:${m} block ${blockGroups} trial ${trial}`;
      assert.ok(isPermutation(found.order, cols), label);
      const identityKept = keptScore(scores, selectNm(scores, rows, cols, n, m));
      assert.ok(Math.abs(found.keptBefore - identityKept) <= 1e-9 * identityKept, label);
      assert.ok(found.keptAfter >= found.keptBefore, label);
      const permutedKept = keptScore(scores, selectNm(scores, rows, cols, n, m, found.order));
      assert.ok(Math.abs(found.keptAfter - permutedKept) <= 1e-9 * permutedKept, label);
      assert.ok(found.rounds <= maxRounds, label);
    }
  }
});

test('permutation gains kept score on channel-structured scores', () => {
  const rows = 64;
  const cols = 128;
  const scores = channelScores(rows, cols, 40);
  const found = findNmPermutation(scores, rows, cols, 2, 4);
  // Strong and weak channels bunched by chance in the original order: regrouping must help.
  assert.ok(found.keptAfter > found.keptBefore * 1.005, `${found.keptBefore} → ${found.keptAfter}`);
  // Refinement adds to the heuristic start.
  const startOnly = findNmPermutation(scores, rows, cols, 2, 4, { blockGroups: 128, maxRounds: 0 });
  assert.ok(found.keptAfter > startOnly.keptAfter);
});

async function prunePermuted(
  method: typeof ria | typeof wanda,
  weight: Float32Array,
  rows: number,
  cols: number,
  sqNorm: Float64Array,
  target: SparsityTarget,
) {
  return method.prune({
    name: 'layers.1.mlp.up_proj',
    weight: weight.slice(),
    rows,
    cols,
    stats: { rows: 32, sqNorm },
    target,
    backend: new ReferenceBackend(),
    options: { permute: true, permuteBlock: 8 },
  });
}

test('ria and wanda with permute: W_pruned = W ⊙ mask, N:M in the permuted order, written back in the original order', async () => {
  const rows = 20;
  const cols = 64;
  const rng = createRng(50);
  const weight = Float32Array.from({ length: rows * cols }, () => rng.normal());
  const sqNorm = Float64Array.from({ length: cols }, () => 0.1 + 20 * rng.next() ** 3);
  const scoresOf = { ria: riaScores(weight, rows, cols, 0.5, sqNorm), wanda: wandaScores(weight, rows, cols, sqNorm) };
  for (const method of [ria, wanda]) {
    for (const [n, m] of [[2, 4], [4, 8]]) {
      const result = await prunePermuted(method, weight, rows, cols, sqNorm, { kind: 'nm', n, m });
      const report = result.report;
      const order = Uint32Array.from(report.permutation as number[]);
      assert.ok(isPermutation(order, cols));
      assert.equal(report.permutationHash, permutationHash(order));
      // Every group of m consecutive positions of the permuted order holds exactly n zeros, and
      // the kept weights are the original ones, in their original columns.
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < cols; g += m) {
          let zeros = 0;
          for (let j = g; j < g + m; j++) if (result.weight[r * cols + order[j]] === 0) zeros++;
          assert.equal(zeros, n, `${method.name} ${n}:${m} row ${r} group ${g / m}`);
        }
      }
      result.weight.forEach((value, i) => assert.ok(value === 0 || value === weight[i]));
      // The mask is the N:M selection of the method's own scores in that order.
      const scores = scoresOf[method.name as 'ria' | 'wanda'];
      const expected = selectNm(scores, rows, cols, n, m, order);
      assert.deepEqual(Uint8Array.from(result.weight, (v) => (v === 0 ? 0 : 1)), expected);
      const kept = keptScore(scores, expected);
      assert.ok(Math.abs((report.permuteKeptScoreAfter as number) - kept) <= 1e-9 * kept);
      const unpermutedKept = keptScore(scores, selectNm(scores, rows, cols, n, m));
      assert.ok(Math.abs((report.permuteKeptScoreBefore as number) - unpermutedKept) <= 1e-9 * unpermutedKept);
      assert.ok((report.permuteKeptScoreAfter as number) >= (report.permuteKeptScoreBefore as number));
      // Deterministic: the same input gives the same bytes.
      const again = await prunePermuted(method, weight, rows, cols, sqNorm, { kind: 'nm', n, m });
      assert.deepEqual(again.weight, result.weight);
    }
  }
});

test('long permutations are reported by hash only; options are validated', () => {
  const rows = 2;
  const cols = 260;
  const scores = channelScores(rows, cols, 60);
  const { report } = chooseMask(scores, rows, cols, { kind: 'nm', n: 2, m: 4 }, 'matrix', {
    blockGroups: 128,
    maxRounds: 1,
  });
  assert.equal(report.permutation, undefined);
  assert.match(String(report.permutationHash), /^[0-9a-f]{8}$/);
  assert.notEqual(permutationHash(Uint32Array.of(0, 1, 2, 3)), permutationHash(Uint32Array.of(1, 0, 2, 3)));

  assert.equal(parsePermutationOptions({}), null);
  assert.equal(parsePermutationOptions({ permute: false, permuteBlock: 4 }), null);
  assert.deepEqual(parsePermutationOptions({ permute: true, permuteBlock: 16, permuteRounds: 2 }), {
    blockGroups: 16,
    maxRounds: 2,
  });
  assert.throws(() => parsePermutationOptions({ permute: true, permuteBlock: 0 }), UsageError);
  assert.throws(() => parsePermutationOptions({ permute: true, permuteRounds: 1.5 }), UsageError);
  assert.throws(
    () => chooseMask(scores, rows, cols, { kind: 'unstructured', sparsity: 0.5 }, 'row', { blockGroups: 8, maxRounds: 1 }),
    /applies only to N:M targets/,
  );
});
