/**
 * Mask refinement without training, after any unstructured or N:M method (`--refine dsnot`).
 *
 * DSnoT (Zhang et al., ICLR 2024): for output row i the pruning changes the row's expected output
 * by e_i = Σ_j (W_ij − Ŵ_ij)·x̄_j, with x̄_j the input's mean (W dense, Ŵ the method's result; for
 * the methods that only mask, the sum runs over the pruned weights). Each cycle swaps one pruned
 * weight back in (restored to its dense value, e falls by W_ij·x̄_j) and one kept weight out (e
 * grows by Ŵ_ik·x̄_k), so the count of zeros never changes:
 * - grow: among the pruned weights ordered by W_ij·x̄_j / Var(x_j)^γ (γ = dsnotVarPower), the
 *   largest when e > 0, the smallest (most negative) otherwise, walking inwards cycle by cycle;
 * - prune (unstructured): among the kept weights of opposite contribution sign to e, the one of
 *   least Wanda importance |Ŵ_ik|·‖X_k‖; (N:M) the least important kept weight of the grown
 *   weight's own group, so every group keeps its count of zeros;
 * - the swap is taken only while |e| > dsnotThreshold and e keeps its initial sign; a row stops
 *   at its first refused swap or after dsnotCycles cycles. We also refuse a swap that would not
 *   shrink |e| (the reference can take one once a pointer runs past the useful candidates).
 *
 * Scale: the DSnoT code accumulates x̄ as the sum over a window's tokens averaged over windows,
 * and its threshold 0.1 is on that scale; `windowLength` (tokens per calibration window) restores
 * it from the per-token mean. The variance is over all calibration tokens (the code averages the
 * per-window variances; the two differ only by the spread of the window means).
 */
import { UsageError } from '../util/errors.js';
import { numberOption } from './masks.js';
import type { LinearStats, SparsityTarget, StatKind } from './method.js';
import type { MethodOptions } from './pipeline.js';

export interface RefineInput {
  name: string;
  dense: Float32Array;
  /** The method's result; refined in place. */
  pruned: Float32Array;
  rows: number;
  cols: number;
  stats: LinearStats;
  target: SparsityTarget;
  options: MethodOptions;
  /** Tokens per calibration window (see the header on scale). */
  windowLength: number;
}

export interface Refiner {
  name: string;
  description: string;
  options: Readonly<Record<string, string>>;
  needs: readonly StatKind[];
  /** Refuses bad option values (called before any work). */
  checkOptions(options: MethodOptions): void;
  refine(input: RefineInput): Record<string, number>;
}

function dsnotOptions(options: MethodOptions): { cycles: number; threshold: number; varPower: number } {
  return {
    cycles: numberOption(options, 'dsnotCycles', 50, { min: 0, integer: true }),
    threshold: numberOption(options, 'dsnotThreshold', 0.1, { min: 0 }),
    varPower: numberOption(options, 'dsnotVarPower', 1, { min: 0 }),
  };
}

/** Stable ascending order of `indices` by `key`. */
function orderBy(indices: number[], key: (index: number) => number): number[] {
  return indices.map((index) => ({ index, value: key(index) })).sort((a, b) => a.value - b.value || a.index - b.index).map(({ index }) => index);
}

export const dsnot: Refiner = {
  name: 'dsnot',
  description: 'DSnoT: swap pruned and kept weights within each row (N:M: within each group) to cancel the expected output change',
  options: {
    dsnotCycles: '50: most swaps per row',
    dsnotThreshold: '0.1: stop a row once |expected output change| is below this',
    dsnotVarPower: '1: growth order divides by Var(x_j) to this power',
  },
  needs: ['moments'],
  checkOptions: dsnotOptions,
  refine({ name, dense, pruned, rows, cols, stats, target, options, windowLength }) {
    const { cycles, threshold, varPower } = dsnotOptions(options);
    const { sum, sqNorm } = stats;
    if (!sum || !sqNorm || sum.length !== cols || stats.rows === 0) throw new UsageError(`${name}: dsnot needs the input's means and squared norms`);
    const windows = stats.rows / windowLength;
    const mean = Float64Array.from(sum, (s) => s / windows);
    const variance = Float64Array.from(sum, (s, j) => Math.max(sqNorm[j]! / stats.rows - (s / stats.rows) ** 2, Number.MIN_VALUE));
    const varianceScale = variance.map((v) => v ** varPower);
    const inputNorm = sqNorm.map(Math.sqrt);
    const groupSize = target.kind === 'nm' ? target.m : 0;
    let swaps = 0;
    let errorBefore = 0;
    let errorAfter = 0;
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      const prunedCols: number[] = [];
      const keptCols: number[] = [];
      let error = 0;
      for (let j = 0; j < cols; j++) {
        error += (dense[base + j]! - pruned[base + j]!) * mean[j]!;
        // A weight that was zero before pruning cannot be grown back (it would add a zero).
        if (pruned[base + j] !== 0) keptCols.push(j);
        else if (dense[base + j] !== 0) prunedCols.push(j);
      }
      errorBefore += error * error;
      const initialSign = Math.sign(error);
      const gain = (j: number) => dense[base + j]! * mean[j]!;
      const loss = (j: number) => pruned[base + j]! * mean[j]!;
      const importance = (j: number) => Math.abs(pruned[base + j]!) * inputNorm[j]!;
      const grow = orderBy(prunedCols, (j) => gain(j) / varianceScale[j]!);
      let growLow = 0;
      let growHigh = grow.length - 1;
      // Unstructured: negative contributions first (least important first), then positive ones (most important first).
      const byImportance = groupSize ? [] : orderBy(keptCols, importance);
      const shrink = [...byImportance.filter((j) => loss(j) < 0), ...byImportance.filter((j) => loss(j) >= 0).reverse()];
      let shrinkLow = 0;
      let shrinkHigh = shrink.length - 1;
      const grown = new Uint8Array(groupSize ? cols : 0);
      for (let cycle = 0; cycle < cycles && growLow <= growHigh && Math.abs(error) > threshold; cycle++) {
        const regrow = error > 0 ? grow[growHigh--]! : grow[growLow++]!;
        let remove = -1;
        if (groupSize) {
          const start = regrow - (regrow % groupSize);
          for (let j = start; j < start + groupSize; j++) {
            if (pruned[base + j] !== 0 && !grown[j]) {
              if (remove < 0 || importance(j) < importance(remove)) remove = j;
            }
          }
        } else if (shrinkLow <= shrinkHigh) {
          remove = error < 0 ? shrink[shrinkHigh--]! : shrink[shrinkLow++]!;
        }
        if (remove < 0) break;
        const after = error - gain(regrow) + loss(remove);
        if (Math.sign(after) !== initialSign || Math.abs(after) >= Math.abs(error)) break;
        pruned[base + regrow] = dense[base + regrow]!;
        pruned[base + remove] = 0;
        if (groupSize) grown[regrow] = 1;
        error = after;
        swaps++;
      }
      errorAfter += error * error;
    }
    return { dsnotSwaps: swaps, dsnotMeanErrorBefore: errorBefore, dsnotMeanErrorAfter: errorAfter };
  },
};

export const REFINERS: readonly Refiner[] = [dsnot];

export function findRefiner(name: string): Refiner {
  const found = REFINERS.find((refiner) => refiner.name === name);
  if (!found) throw new UsageError(`unknown --refine "${name}" (choose from ${REFINERS.map((r) => r.name).join(', ')})`);
  return found;
}
