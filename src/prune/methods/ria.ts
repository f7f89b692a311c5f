/**
 * RIA — Relative Importance and Activations (Zhang et al., ICLR 2024):
 * S_ij = (|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · (‖X_j‖₂)^a, the first sum over the
 * weight's column (all outputs fed by input j), the second over its row.
 *
 * Options: `a` (≥ 0, default 0.5; a = 0 is "RI" and needs no statistics), `perRow` (unstructured
 * targets compare within each row instead of one threshold over the matrix), `permute` (N:M only,
 * see ../permutation.ts). A row or column of zeros contributes a zero relative term, not 0/0.
 */
import { applyMask, booleanOption, measureSparsity, numberOption, validateTarget } from '../masks.js';
import type { UnstructuredMethod } from '../method.js';
import { chooseMaskOn, parsePermutationOptions, permutationUnsupported, PERMUTATION_OPTIONS } from '../permutation.js';
import { UsageError } from '../../util/errors.js';
import { requireSqNorm } from './wanda.js';

type MethodOptions = Readonly<Record<string, number | boolean | string>>;

function riaOptions(options: MethodOptions): { a: number; perRow: boolean } {
  return { a: numberOption(options, 'a', 0.5, { min: 0 }), perRow: booleanOption(options, 'perRow', false) };
}

/** RIA scores; `sqNorm` (Σ x_j²) may be omitted only when a = 0. */
export function riaScores(
  weight: Float32Array,
  rows: number,
  cols: number,
  a: number,
  sqNorm?: Float64Array,
): Float32Array {
  const rowSum = new Float64Array(rows);
  const columnSum = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const rowStart = r * cols;
    let sum = 0;
    for (let c = 0; c < cols; c++) {
      const magnitude = Math.abs(weight[rowStart + c]);
      sum += magnitude;
      columnSum[c] += magnitude;
    }
    rowSum[r] = sum;
  }
  // (‖X_j‖₂)^a = (Σ x_j²)^(a/2); with a = 0 the factor is 1 for every input.
  const activation = new Float64Array(cols).fill(1);
  if (a !== 0) {
    if (!sqNorm) throw new Error('riaScores: sqNorm is required when a ≠ 0');
    for (let c = 0; c < cols; c++) activation[c] = Math.pow(sqNorm[c], a / 2);
  }
  const inverseColumnSum = columnSum.map((sum) => (sum > 0 ? 1 / sum : 0));
  const scores = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const rowStart = r * cols;
    const inverseRowSum = rowSum[r] > 0 ? 1 / rowSum[r] : 0;
    for (let c = 0; c < cols; c++) {
      const magnitude = Math.abs(weight[rowStart + c]);
      scores[rowStart + c] = magnitude * (inverseColumnSum[c] + inverseRowSum) * activation[c];
    }
  }
  return scores;
}

export const ria: UnstructuredMethod = {
  name: 'ria',
  options: {
    a: '0.5: exponent of the input activation norm (0: relative importance alone, no statistics)',
    perRow: 'false: unstructured threshold per output row instead of per matrix',
    ...PERMUTATION_OPTIONS,
  },
  description: 'relative importance × activation^a (a=0.5; options perRow, permute for N:M)',
  needs: ['sqNorm'],
  unsupported(target, options) {
    try {
      riaOptions(options);
    } catch (error) {
      if (error instanceof UsageError) return error.message;
      throw error;
    }
    return permutationUnsupported(target, options);
  },
  async prune({ name, weight, rows, cols, stats, target, options, backend }) {
    validateTarget(target, cols, name);
    const { a, perRow } = riaOptions(options);
    const permutation = parsePermutationOptions(options);
    const sqNorm = a === 0 ? undefined : requireSqNorm(stats, cols, 'ria', name);
    const scores = riaScores(weight, rows, cols, a, sqNorm);
    const { mask, report } = await chooseMaskOn(backend, scores, rows, cols, target, perRow ? 'row' : 'matrix', permutation);
    applyMask(weight, mask);
    return { weight, report: { sparsity: measureSparsity(weight), a, ...report } };
  },
};
