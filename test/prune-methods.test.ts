import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../src/backend/reference.js';
import { checkNmPattern, selectNm, selectPerRow, selectUnstructured } from '../src/prune/masks.js';
import type { LinearPruneResult, LinearStats, SparsityTarget, UnstructuredMethod } from '../src/prune/method.js';
import { magnitude, magnitudeScores } from '../src/prune/methods/magnitude.js';
import { ria, riaScores } from '../src/prune/methods/ria.js';
import { wanda } from '../src/prune/methods/wanda.js';
import { TopiaryError, UsageError } from '../src/util/errors.js';
import { createRng } from '../src/util/random.js';

const backend = new ReferenceBackend();
const methods = [magnitude, wanda, ria];

function runMethod(
  method: UnstructuredMethod,
  weight: Float32Array,
  rows: number,
  cols: number,
  target: SparsityTarget,
  options: Record<string, number | boolean | string> = {},
  stats: LinearStats = { rows: 16, sqNorm: new Float64Array(cols).fill(1) },
): Promise<LinearPruneResult> {
  return method.prune({ name: 'layers.0.test', weight: weight.slice(), rows, cols, stats, target, backend, options });
}

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: rows * cols }, () => rng.normal());
}

function randomSqNorm(cols: number, seed: number): Float64Array {
  const rng = createRng(seed);
  return Float64Array.from({ length: cols }, () => 0.01 + 50 * rng.next() ** 4);
}

/** The zero pattern of a pruned weight as a mask (1 = nonzero). */
function keptOf(weight: Float32Array): Uint8Array {
  return Uint8Array.from(weight, (value) => (value === 0 ? 0 : 1));
}

function zerosIn(weight: Float32Array, start = 0, end = weight.length): number {
  let zeros = 0;
  for (let i = start; i < end; i++) if (weight[i] === 0) zeros++;
  return zeros;
}

/** f32-exact-friendly values: row 0 large, row 1 small, one tie (|0.05|) and no zeros. */
// prettier-ignore
const handWeight = new Float32Array([
  3, -1, 0.5, 2, -4, 0.8, -6, 1.5,
  -0.2, 0.9, -0.1, 0.05, 0.4, -0.7, 0.6, -0.25,
]);

test('magnitude on a hand-made 2×8 matrix: one threshold for the matrix, and 2:4', async () => {
  // The 8 smallest |W| are all of row 1 but 0.9, plus 0.5 in row 0.
  const unstructured = await runMethod(magnitude, handWeight, 2, 8, { kind: 'unstructured', sparsity: 0.5 });
  assert.deepEqual(Array.from(unstructured.weight), Array.from(new Float32Array([
    3, -1, 0, 2, -4, 0.8, -6, 1.5,
    0, 0.9, 0, 0, 0, 0, 0, 0,
  ])));
  const nm = await runMethod(magnitude, handWeight, 2, 8, { kind: 'nm', n: 2, m: 4 });
  assert.deepEqual(Array.from(nm.weight), Array.from(new Float32Array([
    3, 0, 0, 2, -4, 0, -6, 0,
    -0.2, 0.9, 0, 0, 0, -0.7, 0.6, 0,
  ])));
  assert.equal(nm.report.sparsity, 0.5);
});

test('wanda on a hand-made 2×8 matrix: |W|·‖X_j‖ compared per row, and 2:4', async () => {
  // ‖X_j‖ = [1, 2, 10, 1, 1, 0.1, 1, 2]. Row 0 scores [3, 2, 5, 2, 4, 0.08, 6, 3]: prune 0.08, the
  // two 2s and the first 3. Row 1 scores [0.2, 1.8, 1, 0.05, 0.4, 0.07, 0.6, 0.5]: prune 0.05,
  // 0.07, 0.2, 0.4.
  const stats = { rows: 4, sqNorm: new Float64Array([1, 4, 100, 1, 1, 0.01, 1, 4]) };
  const perRow = await runMethod(wanda, handWeight, 2, 8, { kind: 'unstructured', sparsity: 0.5 }, {}, stats);
  assert.deepEqual(Array.from(perRow.weight), Array.from(new Float32Array([
    0, 0, 0.5, 0, -4, 0, -6, 1.5,
    0, 0.9, -0.1, 0, 0, 0, 0.6, -0.25,
  ])));
  const nm = await runMethod(wanda, handWeight, 2, 8, { kind: 'nm', n: 2, m: 4 }, {}, stats);
  assert.deepEqual(Array.from(nm.weight), Array.from(new Float32Array([
    3, 0, 0.5, 0, -4, 0, -6, 0,
    0, 0.9, -0.1, 0, 0, 0, 0.6, -0.25,
  ])));
});

test('ria on a hand-made 2×4 matrix keeps what the relative importance says, not the magnitude', async () => {
  // |W| row sums 8, 5; column sums 5, 2, 4, 2; (‖X_j‖)^0.5 = sqNorm^0.25 = [1, 2, 1, 3].
  // Row 0: (4/5 + 4/8, 1/2 + 1/8, 2/4 + 2/8, 1/2 + 1/8) · f = [1.3, 1.25, 0.75, 1.875]
  // Row 1: (1/5 + 1/5, 1/2 + 1/5, 2/4 + 2/5, 1/2 + 1/5) · f = [0.4, 1.4, 0.9, 2.1]
  // The 4 lowest over the matrix: 0.4, 0.75, 0.9, 1.25.
  const weight = new Float32Array([4, -1, 2, 1, -1, 1, -2, 1]);
  const stats = { rows: 4, sqNorm: new Float64Array([1, 16, 1, 81]) };
  const scores = riaScores(weight, 2, 4, 0.5, stats.sqNorm);
  const expectedScores = [1.3, 1.25, 0.75, 1.875, 0.4, 1.4, 0.9, 2.1];
  expectedScores.forEach((value, i) => assert.ok(Math.abs(scores[i] - value) < 1e-6, `score ${i}`));
  const result = await runMethod(ria, weight, 2, 4, { kind: 'unstructured', sparsity: 0.5 }, {}, stats);
  assert.deepEqual(Array.from(result.weight), [4, 0, 0, 1, 0, 1, 0, 1]);
  const byMagnitude = await runMethod(magnitude, weight, 2, 4, { kind: 'unstructured', sparsity: 0.5 });
  assert.deepEqual(Array.from(byMagnitude.weight), [4, 0, 2, 0, 0, 0, -2, 1]);
  assert.equal(result.report.a, 0.5);
});

test('every method hits the exact sparsity: per matrix, per row, and exactly N zeros per N:M group', async () => {
  const rows = 48;
  const cols = 64;
  const weight = randomMatrix(rows, cols, 11);
  const stats = { rows: 16, sqNorm: randomSqNorm(cols, 12) };
  for (const method of methods) {
    for (const sparsity of [0.3, 0.5, 0.8]) {
      const result = await runMethod(method, weight, rows, cols, { kind: 'unstructured', sparsity }, {}, stats);
      // Wanda compares within rows, so it prunes floor(p·cols) per row rather than floor(p·size).
      const expected = method === wanda ? rows * Math.floor(sparsity * cols) : Math.floor(sparsity * rows * cols);
      assert.equal(zerosIn(result.weight), expected, `${method.name} ${sparsity}`);
      assert.equal(result.report.sparsity, expected / (rows * cols));
    }
    for (const [n, m] of [[2, 4], [4, 8]]) {
      const result = await runMethod(method, weight, rows, cols, { kind: 'nm', n, m }, {}, stats);
      for (let start = 0; start < rows * cols; start += m) {
        assert.equal(zerosIn(result.weight, start, start + m), n, `${method.name} ${n}:${m}`);
      }
    }
  }
  for (const [method, options] of [[wanda, {}], [ria, { perRow: true }]] as const) {
    const result = await runMethod(method, weight, rows, cols, { kind: 'unstructured', sparsity: 0.6 }, options, stats);
    for (let r = 0; r < rows; r++) {
      assert.equal(zerosIn(result.weight, r * cols, (r + 1) * cols), Math.floor(0.6 * cols), `${method.name} row ${r}`);
    }
  }
});

test('kept weights are untouched and the same input gives the same output bytes', async () => {
  const rows = 40;
  const cols = 72;
  // Quantised weights: many ties, so determinism rests on the tie rule.
  const weight = randomMatrix(rows, cols, 13).map((value) => Math.round(value * 2) / 2);
  const stats = { rows: 16, sqNorm: randomSqNorm(cols, 14) };
  for (const method of methods) {
    for (const target of [{ kind: 'unstructured', sparsity: 0.5 }, { kind: 'nm', n: 2, m: 4 }] as const) {
      const first = await runMethod(method, weight, rows, cols, target, {}, stats);
      const second = await runMethod(method, weight, rows, cols, target, {}, stats);
      assert.deepEqual(new Uint8Array(first.weight.buffer), new Uint8Array(second.weight.buffer));
      first.weight.forEach((value, i) => assert.ok(value === 0 || value === weight[i]));
    }
  }
});

test('wanda equals magnitude (per row) when all input norms are equal', async () => {
  const rows = 32;
  const cols = 96;
  const weight = randomMatrix(rows, cols, 15);
  const stats = { rows: 16, sqNorm: new Float64Array(cols).fill(7.3) };
  const perRow = await runMethod(wanda, weight, rows, cols, { kind: 'unstructured', sparsity: 0.55 }, {}, stats);
  assert.deepEqual(keptOf(perRow.weight), selectPerRow(magnitudeScores(weight), rows, cols, 0.55));
  for (const [n, m] of [[2, 4], [4, 8]]) {
    const wandaNm = await runMethod(wanda, weight, rows, cols, { kind: 'nm', n, m }, {}, stats);
    const magnitudeNm = await runMethod(magnitude, weight, rows, cols, { kind: 'nm', n, m });
    assert.deepEqual(wandaNm.weight, magnitudeNm.weight);
  }
});

test('ria with a = 0 (RI) matches its formula and needs no statistics', async () => {
  const rows = 24;
  const cols = 40;
  const weight = randomMatrix(rows, cols, 16);
  const rowSum = new Float64Array(rows);
  const columnSum = new Float64Array(cols);
  weight.forEach((value, i) => {
    rowSum[Math.floor(i / cols)] += Math.abs(value);
    columnSum[i % cols] += Math.abs(value);
  });
  const formula = Float32Array.from(weight, (value, i) => {
    const magnitudeOf = Math.abs(value);
    return magnitudeOf / columnSum[i % cols] + magnitudeOf / rowSum[Math.floor(i / cols)];
  });
  const scores = riaScores(weight, rows, cols, 0);
  scores.forEach((value, i) => assert.ok(Math.abs(value - formula[i]) <= 1e-6 * formula[i], `score ${i}`));

  const noStats = { rows: 16 };
  const whole = await runMethod(ria, weight, rows, cols, { kind: 'unstructured', sparsity: 0.5 }, { a: 0 }, noStats);
  assert.deepEqual(keptOf(whole.weight), selectUnstructured(formula, 0.5));
  const perRow = await runMethod(ria, weight, rows, cols, { kind: 'unstructured', sparsity: 0.5 }, { a: 0, perRow: true }, noStats);
  assert.deepEqual(keptOf(perRow.weight), selectPerRow(formula, rows, cols, 0.5));
  const nm = await runMethod(ria, weight, rows, cols, { kind: 'nm', n: 2, m: 4 }, { a: 0 }, noStats);
  assert.deepEqual(keptOf(nm.weight), selectNm(formula, rows, cols, 2, 4));
  assert.ok(checkNmPattern(nm.weight, rows, cols, 2, 4));
});

test('ria with the activation factor differs from RI exactly by (‖X_j‖)^a', () => {
  const rows = 8;
  const cols = 12;
  const weight = randomMatrix(rows, cols, 17);
  const sqNorm = randomSqNorm(cols, 18);
  const relative = riaScores(weight, rows, cols, 0);
  const withActivation = riaScores(weight, rows, cols, 1.5, sqNorm);
  withActivation.forEach((value, i) => {
    const expected = relative[i] * Math.sqrt(sqNorm[i % cols]) ** 1.5;
    assert.ok(Math.abs(value - expected) <= 1e-5 * expected, `score ${i}`);
  });
});

test('bad targets and options are rejected with clear errors', async () => {
  const weight = randomMatrix(4, 8, 19);
  for (const method of methods) {
    for (const sparsity of [1, -0.5]) {
      await assert.rejects(runMethod(method, weight, 4, 8, { kind: 'unstructured', sparsity }), UsageError);
    }
    await assert.rejects(runMethod(method, weight, 4, 8, { kind: 'nm', n: 4, m: 4 }), UsageError);
    await assert.rejects(runMethod(method, weight, 4, 8, { kind: 'nm', n: 2, m: 3 }), (error: unknown) => {
      assert.ok(error instanceof TopiaryError);
      assert.match(error.message, /^layers\.0\.test: N:M 2:3 needs the input width to be a multiple of 3, but it is 8$/);
      return true;
    });
  }
  const unstructured = { kind: 'unstructured', sparsity: 0.5 } as const;
  const twoFour = { kind: 'nm', n: 2, m: 4 } as const;
  assert.equal(wanda.unsupported(twoFour, { permute: true }), null);
  assert.equal(ria.unsupported(twoFour, { permute: true }), null);
  assert.match(wanda.unsupported(unstructured, { permute: true }) ?? '', /applies only to N:M/);
  assert.match(ria.unsupported(unstructured, { permute: true }) ?? '', /applies only to N:M/);
  assert.match(magnitude.unsupported(twoFour, { permute: true }) ?? '', /magnitude does not support channel permutation/);
  assert.equal(magnitude.unsupported(twoFour, { permute: false }), null);
  assert.match(ria.unsupported(twoFour, { a: -1 }) ?? '', /option a must be a number ≥ 0/);
  assert.match(wanda.unsupported(twoFour, { permute: true, permuteBlock: 0 }) ?? '', /permuteBlock/);
  await assert.rejects(runMethod(wanda, weight, 4, 8, unstructured, { permute: true }), /applies only to N:M/);
  await assert.rejects(
    runMethod(wanda, weight, 4, 8, unstructured, {}, { rows: 16 }),
    (error: unknown) => error instanceof TopiaryError && /layers\.0\.test: wanda needs the input's squared norms/.test(error.message),
  );
  await assert.rejects(runMethod(ria, weight, 4, 8, unstructured, {}, { rows: 16, sqNorm: new Float64Array(7) }), TopiaryError);
});
