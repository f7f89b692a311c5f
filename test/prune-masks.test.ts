import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyMask,
  booleanOption,
  checkNmPattern,
  keptScore,
  measureSparsity,
  numberOption,
  prunedCount,
  selectMask,
  selectNm,
  selectPerRow,
  selectUnstructured,
  validateTarget,
} from '../src/prune/masks.js';
import type { Mask } from '../src/prune/masks.js';
import { TopiaryError, UsageError } from '../src/util/errors.js';
import { createRng } from '../src/util/random.js';

/** Gaussian scores; with `levels`, rounded to that many distinct values so ties are frequent. */
function randomScores(size: number, seed: number, levels?: number): Float32Array {
  const rng = createRng(seed);
  const scores = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const value = rng.normal();
    scores[i] = levels ? Math.round(value * (levels / 6)) : value;
  }
  return scores;
}

/** The documented order, by brute force: by value (-0 = +0, NaN last), then by index. */
function compareEntries(scores: Float32Array, a: number, b: number): number {
  const x = scores[a];
  const y = scores[b];
  const xNaN = Number.isNaN(x);
  const yNaN = Number.isNaN(y);
  if (xNaN !== yNaN) return xNaN ? 1 : -1;
  if (!xNaN && x !== y) return x < y ? -1 : 1;
  return a - b;
}

/** Reference: prune the `count` lowest of the given flat indices. */
function referencePrune(scores: Float32Array, indices: number[], count: number, mask: Mask): void {
  const sorted = [...indices].sort((a, b) => compareEntries(scores, a, b));
  for (const index of sorted.slice(0, count)) mask[index] = 0;
}

function countZeros(mask: Mask): number {
  return mask.reduce((zeros, value) => zeros + (value === 0 ? 1 : 0), 0);
}

const range = (start: number, end: number): number[] => Array.from({ length: end - start }, (_, i) => start + i);

test('prunedCount is floor(p · size), robust to the rounding of p · size', () => {
  assert.equal(prunedCount(0.29, 100), 29);
  assert.equal(prunedCount(0.5, 7), 3);
  assert.equal(prunedCount(0.7, 10), 7);
  assert.equal(prunedCount(0, 10), 0);
  assert.equal(prunedCount(0.999, 10), 9);
  assert.equal(prunedCount(0.5, 1536 * 576), 442368);
});

test('whole-matrix selection prunes exactly floor(p·size) and matches a brute-force sort, ties included', () => {
  const rows = 37;
  const cols = 53;
  for (const [seed, levels] of [[1, undefined], [2, 7], [3, 2]] as const) {
    const scores = randomScores(rows * cols, seed, levels);
    for (const sparsity of [0, 0.1, 0.5, 0.73, 0.999]) {
      const mask = selectUnstructured(scores, sparsity);
      const count = Math.floor(sparsity * rows * cols);
      assert.equal(countZeros(mask), count, `seed ${seed} p ${sparsity}`);
      const expected = new Uint8Array(rows * cols).fill(1);
      referencePrune(scores, range(0, rows * cols), count, expected);
      assert.deepEqual(mask, expected, `seed ${seed} levels ${levels} p ${sparsity}`);
    }
  }
});

test('selection orders negative, zero, signed-zero, infinite and NaN scores as documented', () => {
  const scores = new Float32Array([3, -0, NaN, -2, 0, Infinity, -Infinity, 1e-30, -1e-30, 2]);
  for (let count = 0; count <= scores.length; count++) {
    const sparsity = count / scores.length;
    const expected = new Uint8Array(scores.length).fill(1);
    referencePrune(scores, range(0, scores.length), count, expected);
    assert.deepEqual(selectUnstructured(scores, sparsity), expected, `count ${count}`);
  }
  // -Inf, -2, -1e-30, then -0 and +0 tie, so the lower index (1, the -0) goes first.
  assert.deepEqual(Array.from(selectUnstructured(scores, 0.4)), [1, 0, 1, 0, 1, 1, 0, 1, 0, 1]);
  // NaN is pruned last.
  assert.deepEqual(Array.from(selectUnstructured(scores, 0.9)), [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
});

test('per-row selection prunes exactly floor(p·cols) in every row, matching a brute-force sort', () => {
  const rows = 11;
  const cols = 64;
  const scores = randomScores(rows * cols, 4, 5);
  for (const sparsity of [0.25, 0.5, 0.6]) {
    const mask = selectPerRow(scores, rows, cols, sparsity);
    const expected = new Uint8Array(rows * cols).fill(1);
    for (let r = 0; r < rows; r++) {
      const rowMask = mask.subarray(r * cols, (r + 1) * cols);
      assert.equal(countZeros(rowMask), Math.floor(sparsity * cols));
      referencePrune(scores, range(r * cols, (r + 1) * cols), Math.floor(sparsity * cols), expected);
    }
    assert.deepEqual(mask, expected);
    assert.deepEqual(selectMask(scores, rows, cols, { kind: 'unstructured', sparsity }, 'row'), expected);
  }
});

test('N:M selection zeroes exactly N per group (2:4, 4:8, 1:4), lowest first, ties to the earlier column', () => {
  const rows = 9;
  const cols = 32;
  const scores = randomScores(rows * cols, 5, 4);
  for (const [n, m] of [[2, 4], [4, 8], [1, 4], [3, 4]]) {
    const mask = selectNm(scores, rows, cols, n, m);
    const expected = new Uint8Array(rows * cols).fill(1);
    for (let start = 0; start < rows * cols; start += m) {
      assert.equal(countZeros(mask.subarray(start, start + m)), n, `${n}:${m} group at ${start}`);
      referencePrune(scores, range(start, start + m), n, expected);
    }
    assert.deepEqual(mask, expected, `${n}:${m}`);
    assert.deepEqual(selectMask(scores, rows, cols, { kind: 'nm', n, m }, 'matrix'), expected);
  }
});

test('N:M selection in a column order groups the columns at consecutive positions of that order', () => {
  const rows = 3;
  const cols = 8;
  const scores = randomScores(rows * cols, 6);
  const order = new Uint32Array([5, 0, 7, 2, 1, 6, 3, 4]);
  const mask = selectNm(scores, rows, cols, 2, 4, order);
  const expected = new Uint8Array(rows * cols).fill(1);
  for (let r = 0; r < rows; r++) {
    for (const group of [order.subarray(0, 4), order.subarray(4, 8)]) {
      referencePrune(scores, Array.from(group, (c) => r * cols + c), 2, expected);
    }
  }
  assert.deepEqual(mask, expected);
});

test('a hand-made 2×8 case: whole matrix, per row and 2:4', () => {
  // prettier-ignore
  const scores = new Float32Array([
    5, 1, 4, 4, 0, 7, 2, 6,
    3, 3, 8, 1, 9, 2, 2, 5,
  ]);
  // Sorted: 0(4) 1(1) 1(11) 2(6) 2(13) 2(14) 3(8) 3(9) ... half = 8 lowest.
  assert.deepEqual(Array.from(selectUnstructured(scores, 0.5)), [1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1]);
  // Row 0 lowest four: 0, 1, 2, then 4 (col 2, before col 3); row 1: 1, 2, 2, 3 (col 0 before col 1).
  assert.deepEqual(Array.from(selectPerRow(scores, 2, 8, 0.5)), [1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1]);
  // Groups [5 1 4 4] → prune 1 and the first 4; [0 7 2 6] → 0, 2; [3 3 8 1] → 1, first 3; [9 2 2 5] → both 2s.
  assert.deepEqual(Array.from(selectNm(scores, 2, 8, 2, 4)), [1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1]);
});

test('selections are deterministic: the same input gives the same bytes', () => {
  const rows = 64;
  const cols = 96;
  const scores = randomScores(rows * cols, 7, 3);
  const copy = scores.slice();
  assert.deepEqual(selectUnstructured(scores, 0.5), selectUnstructured(copy, 0.5));
  assert.deepEqual(selectPerRow(scores, rows, cols, 0.5), selectPerRow(copy, rows, cols, 0.5));
  assert.deepEqual(selectNm(scores, rows, cols, 2, 4), selectNm(copy, rows, cols, 2, 4));
});

test('selection on a larger matrix still prunes exactly and only below the kept minimum', () => {
  const rows = 512;
  const cols = 576;
  const scores = randomScores(rows * cols, 8).map(Math.abs);
  const mask = selectUnstructured(scores, 0.6);
  assert.equal(countZeros(mask), Math.floor(0.6 * rows * cols));
  let maxPruned = -Infinity;
  let minKept = Infinity;
  for (let i = 0; i < scores.length; i++) {
    if (mask[i] === 0) maxPruned = Math.max(maxPruned, scores[i]);
    else minKept = Math.min(minKept, scores[i]);
  }
  assert.ok(maxPruned <= minKept);
});

test('applyMask, measureSparsity, checkNmPattern and keptScore', () => {
  const weight = new Float32Array([1, -2, 3, -4, 5, -6, 7, -8]);
  const scores = weight.map(Math.abs);
  const mask = selectNm(scores, 1, 8, 2, 4);
  assert.equal(keptScore(scores, mask), 3 + 4 + 7 + 8);
  assert.equal(checkNmPattern(weight, 1, 8, 2, 4), false);
  assert.equal(applyMask(weight, mask), weight);
  assert.deepEqual(Array.from(weight), [0, 0, 3, -4, 0, 0, 7, -8]);
  assert.equal(measureSparsity(weight), 0.5);
  assert.equal(checkNmPattern(weight, 1, 8, 2, 4), true);
  assert.equal(checkNmPattern(weight, 1, 8, 3, 4), false);
  assert.equal(checkNmPattern(weight, 2, 4, 2, 4), true);
  weight[0] = 1;
  assert.equal(checkNmPattern(weight, 1, 8, 2, 4), false);
  assert.equal(checkNmPattern(weight, 1, 8, 2, 3), false, 'M not dividing the width is never a valid pattern');
  assert.throws(() => applyMask(weight, new Uint8Array(3)));
});

test('validateTarget rejects bad targets with clear errors', () => {
  for (const sparsity of [1, 1.5, -0.1, NaN, Infinity]) {
    assert.throws(() => validateTarget({ kind: 'unstructured', sparsity }), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, /sparsity must be a number in \[0, 1\)/);
      return true;
    });
  }
  for (const [n, m] of [[4, 4], [5, 4], [0, 4], [-1, 4], [1.5, 4], [2, 4.5]]) {
    assert.throws(() => validateTarget({ kind: 'nm', n, m }, 8), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.match(error.message, /0 < N < M/);
      return true;
    });
  }
  assert.throws(
    () => validateTarget({ kind: 'nm', n: 2, m: 4 }, 6, 'model.layers.0.mlp.down_proj'),
    (error: unknown) => {
      assert.ok(error instanceof TopiaryError && !(error instanceof UsageError));
      assert.equal(
        error.message,
        'model.layers.0.mlp.down_proj: N:M 2:4 needs the input width to be a multiple of 4, but it is 6',
      );
      return true;
    },
  );
  validateTarget({ kind: 'unstructured', sparsity: 0 });
  validateTarget({ kind: 'unstructured', sparsity: 0.999 });
  validateTarget({ kind: 'nm', n: 2, m: 4 }, 576);
  validateTarget({ kind: 'nm', n: 4, m: 8 });
});

test('option readers accept the documented spellings and reject the rest', () => {
  assert.equal(booleanOption({}, 'perRow', false), false);
  assert.equal(booleanOption({ perRow: true }, 'perRow', false), true);
  assert.equal(booleanOption({ perRow: 'false' }, 'perRow', true), false);
  assert.equal(booleanOption({ perRow: 1 }, 'perRow', false), true);
  assert.throws(() => booleanOption({ perRow: 'yes please' }, 'perRow', false), UsageError);
  assert.equal(numberOption({}, 'a', 0.5), 0.5);
  assert.equal(numberOption({ a: '0.25' }, 'a', 0.5), 0.25);
  assert.equal(numberOption({ a: 2 }, 'a', 0.5, { min: 0 }), 2);
  assert.throws(() => numberOption({ a: -1 }, 'a', 0.5, { min: 0 }), /option a must be a number ≥ 0, got -1/);
  assert.throws(() => numberOption({ a: 'x' }, 'a', 0.5), UsageError);
  assert.throws(() => numberOption({ a: true }, 'a', 0.5), UsageError);
  assert.throws(() => numberOption({ b: 1.5 }, 'b', 1, { integer: true }), /must be an integer/);
});
