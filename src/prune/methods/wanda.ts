/**
 * Wanda (Sun et al., 2023): score |W_ij| · ‖X_j‖₂, compared within each output row (unstructured:
 * the lowest floor(p · d_in) of every row; N:M: the lowest N of each group). No weight update.
 * Option `permute` (N:M only) reorders input channels first, see ../permutation.ts.
 */
import { TopiaryError } from '../../util/errors.js';
import { applyMask, measureSparsity, validateTarget } from '../masks.js';
import type { LinearStats, UnstructuredMethod } from '../method.js';
import { chooseMaskOn, parsePermutationOptions, permutationUnsupported, PERMUTATION_OPTIONS } from '../permutation.js';

/** The input's Σ x_j² per feature, checked against the layer width. */
export function requireSqNorm(stats: LinearStats, cols: number, method: string, layer: string): Float64Array {
  const { sqNorm } = stats;
  if (!sqNorm || sqNorm.length !== cols) {
    throw new TopiaryError(
      `${layer}: ${method} needs the input's squared norms (${cols} features), ` +
        `got ${sqNorm ? `${sqNorm.length} features` : 'none'}`,
    );
  }
  return sqNorm;
}

/** S_ij = |W_ij| · sqrt(sqNorm_j). */
export function wandaScores(weight: Float32Array, rows: number, cols: number, sqNorm: Float64Array): Float32Array {
  const inputNorm = sqNorm.map(Math.sqrt);
  const scores = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const rowStart = r * cols;
    for (let c = 0; c < cols; c++) scores[rowStart + c] = Math.abs(weight[rowStart + c]) * inputNorm[c];
  }
  return scores;
}

export const wanda: UnstructuredMethod = {
  name: 'wanda',
  options: PERMUTATION_OPTIONS,
  description: 'prune the smallest |W|·‖X‖ per output row (N:M per group; option permute for N:M)',
  needs: ['sqNorm'],
  unsupported: permutationUnsupported,
  async prune({ name, weight, rows, cols, stats, target, options, backend }) {
    validateTarget(target, cols, name);
    const permutation = parsePermutationOptions(options);
    const scores = wandaScores(weight, rows, cols, requireSqNorm(stats, cols, 'wanda', name));
    const { mask, report } = await chooseMaskOn(backend, scores, rows, cols, target, 'row', permutation);
    applyMask(weight, mask);
    return { weight, report: { sparsity: measureSparsity(weight), ...report } };
  },
};
