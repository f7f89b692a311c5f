/**
 * Magnitude pruning: score |W_ij|; unstructured with one threshold over the whole matrix, N:M
 * per group. Needs no calibration statistics.
 */
import { applyMask, measureSparsity, selectMask, validateTarget } from '../masks.js';
import type { UnstructuredMethod } from '../method.js';
import { permutationUnsupported } from '../permutation.js';

/** |W| as a score matrix. */
export function magnitudeScores(weight: Float32Array): Float32Array {
  const scores = new Float32Array(weight.length);
  for (let i = 0; i < weight.length; i++) scores[i] = Math.abs(weight[i]);
  return scores;
}

export const magnitude: UnstructuredMethod = {
  name: 'magnitude',
  options: {},
  description: 'prune the smallest |W| (one threshold per matrix; N:M per group)',
  needs: [],
  unsupported: (target, options) => permutationUnsupported(target, options, 'magnitude'),
  async prune({ name, weight, rows, cols, target }) {
    validateTarget(target, cols, name);
    const mask = selectMask(magnitudeScores(weight), rows, cols, target, 'matrix');
    applyMask(weight, mask);
    return { weight, report: { sparsity: measureSparsity(weight) } };
  },
};
