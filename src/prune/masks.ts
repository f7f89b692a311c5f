/**
 * Selection primitives shared by every score-based pruning method: turn a d_out × d_in score
 * matrix into a keep/prune mask (whole-matrix, per-row or N:M), apply it, and check the result.
 *
 * Conventions, identical everywhere so that methods agree with each other:
 * - A mask is a Uint8Array of the weight's size: 1 = keep, 0 = prune.
 * - Lower score = pruned first. Scores are ordered as float32 values, with -0 equal to +0 and NaN
 *   ranked above every number (a NaN score is never chosen before a real one).
 * - Ties are broken by position: among equal scores the one with the lower index in the range
 *   being selected (flat row-major index for the whole matrix, column for a row, position in the
 *   group for N:M) is pruned first. The same input therefore always gives the same mask bytes.
 * - Unstructured counts are exact: a range of `size` entries at sparsity p loses
 *   floor(p · size) entries (see `prunedCount`); a target with an exact `zeros` budget (layer
 *   budgets) spreads it over the ranges by the cumulative floor rule (see `prunedInSlices`).
 *
 * Selection is a radix select on the float bits (three passes of 11/11/10 bits plus one marking
 * pass): O(size) per range with no per-element allocation, so a 4096 × 11008 matrix costs a few
 * linear scans rather than a comparator sort.
 */
import type { SparsityTarget } from './method.js';
import { TopiaryError, UsageError } from '../util/errors.js';

/** 1 = keep, 0 = prune; same length as the weight. */
export type Mask = Uint8Array;

/** How an unstructured target is spread: one threshold over the matrix, or the same count per row. */
export type UnstructuredScope = 'matrix' | 'row';

/**
 * Number of entries pruned from a range of `size` entries at sparsity p: floor(p · size).
 * The factor (1 + 1e-12) absorbs the rounding of p · size (0.29 · 100 = 28.999999999999996 must
 * count as 29) without moving any count that is genuinely below an integer.
 */
export function prunedCount(sparsity: number, size: number): number {
  return Math.min(size, Math.floor(sparsity * size * (1 + 1e-12)));
}

export type UnstructuredTarget = Extract<SparsityTarget, { kind: 'unstructured' }>;

/**
 * Entries to prune in the slices [start, end) of a matrix cut into `slices` equal slices of
 * `sliceSize` entries (rows of a row-wise method, column blocks of SparseGPT and APT, the whole
 * matrix as one slice): floor(p · size of the part) for a plain sparsity; for an exact budget of
 * `zeros`, the cumulative floor rule floor(zeros · end / slices) − floor(zeros · start / slices),
 * so the parts add up to exactly `zeros` and differ from an even split by less than one.
 */
export function prunedInSlices(target: number | UnstructuredTarget, start: number, end: number, slices: number, sliceSize: number): number {
  if (typeof target === 'number') return prunedCount(target, (end - start) * sliceSize);
  if (target.zeros === undefined) return prunedCount(target.sparsity, (end - start) * sliceSize);
  return Math.floor((target.zeros * end) / slices) - Math.floor((target.zeros * start) / slices);
}

/**
 * Checks a sparsity target before any work starts. Without `cols` only the target itself is
 * checked (usable when parsing the command line); with `cols` the N:M group size must also divide
 * the layer's input width.
 */
export function validateTarget(target: SparsityTarget, cols?: number, layerName?: string): void {
  if (target.kind === 'unstructured') {
    const { sparsity } = target;
    if (typeof sparsity !== 'number' || !Number.isFinite(sparsity) || sparsity < 0 || sparsity >= 1) {
      throw new UsageError(`sparsity must be a number in [0, 1), got ${String(sparsity)}`);
    }
    return;
  }
  const { n, m } = target;
  if (!Number.isInteger(n) || !Number.isInteger(m) || n <= 0 || n >= m) {
    throw new UsageError(`N:M pattern needs integers with 0 < N < M, got ${String(n)}:${String(m)}`);
  }
  if (cols !== undefined && cols % m !== 0) {
    const where = layerName ? `${layerName}: ` : '';
    throw new TopiaryError(
      `${where}N:M ${n}:${m} needs the input width to be a multiple of ${m}, but it is ${cols}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Ordering of float32 scores as unsigned 32-bit keys

/**
 * Maps float32 bits to an unsigned key whose integer order is the float order: negative floats
 * have all bits flipped, non-negative ones get the sign bit set. -0 maps like +0; NaN maps to the
 * largest key.
 */
function sortableKey(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return 0xffffffff;
  if (bits === (0x80000000 | 0)) return 0x80000000;
  return bits < 0 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
}

function floatBits(scores: Float32Array): Int32Array {
  return new Int32Array(scores.buffer, scores.byteOffset, scores.length);
}

/** Radix digits, most significant first: [shift, width]. */
const DIGITS: readonly (readonly [number, number])[] = [
  [21, 11],
  [10, 11],
  [0, 10],
];
/** Scratch histogram shared by all selections (JS is single-threaded here). */
const histogram = new Uint32Array(1 << 11);

/**
 * Marks as pruned (mask = 0) the `count` lowest-scoring entries of bits[start, end), ties going
 * to the lower index. Entries outside the range and the rest of the range are left untouched.
 */
function pruneLowestInRange(bits: Int32Array, start: number, end: number, count: number, mask: Mask): void {
  if (count <= 0) return;
  if (count >= end - start) {
    mask.fill(0, start, end);
    return;
  }
  // Find the key of the count-th smallest entry digit by digit; `rank` ends as the number of
  // entries equal to that key that still have to go.
  let prefix = 0;
  let prefixMask = 0;
  let rank = count;
  for (const [shift, width] of DIGITS) {
    const binMask = (1 << width) - 1;
    histogram.fill(0, 0, binMask + 1);
    for (let i = start; i < end; i++) {
      const key = sortableKey(bits[i]);
      if ((key & prefixMask) >>> 0 === prefix) histogram[(key >>> shift) & binMask]++;
    }
    let bin = 0;
    while (rank > histogram[bin]) rank -= histogram[bin++];
    prefix = (prefix | (bin << shift)) >>> 0;
    prefixMask = (prefixMask | (binMask << shift)) >>> 0;
  }
  const threshold = prefix;
  for (let i = start; i < end; i++) {
    const key = sortableKey(bits[i]);
    if (key < threshold) {
      mask[i] = 0;
    } else if (key === threshold && rank > 0) {
      mask[i] = 0;
      rank--;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Mask selection

/**
 * Prunes the lowest scores of the whole matrix (one global threshold): floor(p · size) of them, or
 * exactly the target's `zeros`.
 */
export function selectUnstructured(scores: Float32Array, target: number | UnstructuredTarget): Mask {
  const mask = new Uint8Array(scores.length).fill(1);
  pruneLowestInRange(floatBits(scores), 0, scores.length, prunedInSlices(target, 0, 1, 1, scores.length), mask);
  return mask;
}

/** Prunes floor(p · cols) lowest scores of every row, or the row's share of the target's `zeros` (see `prunedInSlices`). */
export function selectPerRow(scores: Float32Array, rows: number, cols: number, target: number | UnstructuredTarget): Mask {
  const mask = new Uint8Array(rows * cols).fill(1);
  const bits = floatBits(scores);
  for (let r = 0; r < rows; r++) pruneLowestInRange(bits, r * cols, (r + 1) * cols, prunedInSlices(target, r, r + 1, rows, cols), mask);
  return mask;
}

/**
 * In every row, in every group of m columns, prunes the n lowest scores. Groups are consecutive
 * columns, or, with `columnOrder` (position → column, a permutation of 0..cols-1), the columns at
 * consecutive positions of that order; ties go to the earlier position.
 */
export function selectNm(
  scores: Float32Array,
  rows: number,
  cols: number,
  n: number,
  m: number,
  columnOrder?: Uint32Array,
): Mask {
  const mask = new Uint8Array(rows * cols).fill(1);
  const bits = floatBits(scores);
  const groupKeys = new Uint32Array(m);
  const groupCols = new Uint32Array(m);
  for (let r = 0; r < rows; r++) {
    const rowStart = r * cols;
    for (let g = 0; g < cols; g += m) {
      for (let j = 0; j < m; j++) {
        const col = columnOrder ? columnOrder[g + j] : g + j;
        groupCols[j] = col;
        groupKeys[j] = sortableKey(bits[rowStart + col]);
      }
      // An entry is pruned when fewer than n entries of its group come before it in the order
      // (score, position); m is small (4, 8), so counting is cheaper than sorting.
      for (let j = 0; j < m; j++) {
        const key = groupKeys[j];
        let before = 0;
        for (let i = 0; i < m; i++) {
          if (groupKeys[i] < key || (groupKeys[i] === key && i < j)) before++;
        }
        if (before < n) mask[rowStart + groupCols[j]] = 0;
      }
    }
  }
  return mask;
}

/**
 * The mask for a target: N:M per group, or unstructured over the matrix or per row. The target
 * must already be validated (see `validateTarget`).
 */
export function selectMask(
  scores: Float32Array,
  rows: number,
  cols: number,
  target: SparsityTarget,
  scope: UnstructuredScope,
): Mask {
  if (target.kind === 'nm') return selectNm(scores, rows, cols, target.n, target.m);
  return scope === 'matrix'
    ? selectUnstructured(scores, target)
    : selectPerRow(scores, rows, cols, target);
}

// ---------------------------------------------------------------------------------------------
// Applying and checking

/** Zeroes the weight where the mask is 0, in place; returns the weight. */
export function applyMask(weight: Float32Array, mask: Mask): Float32Array {
  if (weight.length !== mask.length) {
    throw new Error(`mask has ${mask.length} entries for a weight of ${weight.length}`);
  }
  for (let i = 0; i < weight.length; i++) if (mask[i] === 0) weight[i] = 0;
  return weight;
}

/** Fraction of entries that are exactly zero. */
export function measureSparsity(weight: Float32Array): number {
  let zeros = 0;
  for (let i = 0; i < weight.length; i++) if (weight[i] === 0) zeros++;
  return weight.length === 0 ? 0 : zeros / weight.length;
}

/** True if every group of m consecutive columns of every row holds at least n zeros. */
export function checkNmPattern(weight: Float32Array, rows: number, cols: number, n: number, m: number): boolean {
  if (cols % m !== 0) return false;
  for (let r = 0; r < rows; r++) {
    for (let g = r * cols; g < (r + 1) * cols; g += m) {
      let zeros = 0;
      for (let j = g; j < g + m; j++) if (weight[j] === 0) zeros++;
      if (zeros < n) return false;
    }
  }
  return true;
}

/** Sum of the scores the mask keeps (fp64). */
export function keptScore(scores: Float32Array, mask: Mask): number {
  let total = 0;
  for (let i = 0; i < scores.length; i++) if (mask[i] !== 0) total += scores[i];
  return total;
}

// ---------------------------------------------------------------------------------------------
// Method options (as parsed from the command line) shared by the score-based methods

type MethodOptions = Readonly<Record<string, number | boolean | string>>;

/** Reads a boolean option given as true/false, 1/0 or 'true'/'false'. */
export function booleanOption(options: MethodOptions, key: string, fallback: boolean): boolean {
  const value = options[key];
  if (value === undefined) return fallback;
  if (value === true || value === 1 || value === 'true') return true;
  if (value === false || value === 0 || value === 'false') return false;
  throw new UsageError(`option ${key} must be true or false, got ${String(value)}`);
}

/** Reads a finite number option (numbers given as strings are accepted) no smaller than `min`. */
export function numberOption(
  options: MethodOptions,
  key: string,
  fallback: number,
  limits: { min?: number; integer?: boolean } = {},
): number {
  const raw = options[key];
  if (raw === undefined) return fallback;
  const value = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (limits.min === undefined || value >= limits.min) &&
    (!limits.integer || Number.isInteger(value));
  if (!ok) {
    const kind = limits.integer ? 'an integer' : 'a number';
    const bound = limits.min === undefined ? '' : ` ≥ ${limits.min}`;
    throw new UsageError(`option ${key} must be ${kind}${bound}, got ${String(raw)}`);
  }
  return value;
}
