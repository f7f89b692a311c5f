/**
 * APT's per-row removals inside one column block, the kernel of src/prune/methods/apt.ts (whose
 * header derives it): for each row of the block, weights are removed one at a time or by the best
 * N-subset of each group, re-fitting the row's free weights in the block after each removal, with
 * the joint loss of what was removed accumulated. The native backend runs the same steps in C, in
 * the same order (test/backend.test.ts checks them against this one).
 */
import type { EliminationPlan } from './backend.js';

/**
 * Runs `plan` on every row of `block` [rows, size] (fp64, edited in place to the re-fitted weights)
 * with Γ = `gamma` [size, size]; `losses[r]` receives row r's added loss. False if a pivot was not
 * positive (a numerically singular block).
 */
export function eliminateRowsReference(gamma: Float64Array, block: Float64Array, rows: number, size: number, plan: EliminationPlan, losses: Float64Array): boolean {
  const subsets = plan.kind === 'nm' && plan.exact ? combinations(plan.m, plan.n) : [];
  const row = new RowElimination(gamma, size);
  try {
    for (let r = 0; r < rows; r++) {
      row.reset(block.subarray(r * size, (r + 1) * size));
      let loss = 0;
      if (plan.kind === 'counts') {
        for (let k = 0; k < plan.removals[r]!; k++) loss += row.remove(row.cheapest(0, size));
      } else {
        for (let group = 0; group < size; group += plan.m) {
          if (plan.exact) {
            loss += row.removeBestSubset(group, plan.m, subsets);
          } else {
            for (let k = 0; k < plan.n; k++) loss += row.remove(row.cheapest(group, group + plan.m));
          }
        }
      }
      losses[r] = loss;
    }
  } catch (error) {
    if (error instanceof SingularBlock) return false;
    throw error;
  }
  return true;
}

class SingularBlock extends Error {}

/**
 * One row's removals inside a block: the re-fitted weights w′ (edited in place) and the Schur
 * complement Γ′ of Γ on the removed set, held as Γ − Σ_t f_t f_tᵀ with one factor vector f_t per
 * removal (a partial pivoted Cholesky factor of Γ).
 */
class RowElimination {
  private readonly factors: Float64Array;
  private removedCount = 0;
  private readonly residualDiagonal: Float64Array;
  private readonly removed: Uint8Array;
  private readonly schurRow: Float64Array;
  private weights: Float64Array = new Float64Array(0);

  constructor(
    private readonly gamma: Float64Array,
    private readonly size: number,
  ) {
    this.factors = new Float64Array(size * size);
    this.residualDiagonal = new Float64Array(size);
    this.removed = new Uint8Array(size);
    this.schurRow = new Float64Array(size);
  }

  reset(weights: Float64Array): void {
    this.weights = weights;
    this.removedCount = 0;
    this.removed.fill(0);
    for (let i = 0; i < this.size; i++) this.residualDiagonal[i] = this.gamma[i * this.size + i];
  }

  /** The not-yet-removed index in [from, to) whose removal raises the joint loss least. */
  cheapest(from: number, to: number): number {
    let best = -1;
    let bestCost = Infinity;
    for (let i = from; i < to; i++) {
      if (this.removed[i]) continue;
      const cost = this.weights[i] ** 2 / this.residualDiagonal[i];
      if (best < 0 || cost < bestCost) {
        best = i;
        bestCost = cost;
      }
    }
    return best;
  }

  /** Removes weight i, re-fitting the free ones; returns the joint loss it adds, ½ w′_i² / Γ′_ii. */
  remove(i: number): number {
    const { size, factors, weights, schurRow, removed, residualDiagonal } = this;
    schurRow.set(this.gamma.subarray(i * size, (i + 1) * size));
    for (let offset = 0; offset < this.removedCount * size; offset += size) {
      const coefficient = factors[offset + i];
      if (coefficient === 0) continue;
      for (let j = 0; j < size; j++) schurRow[j] -= coefficient * factors[offset + j];
    }
    const pivot = schurRow[i];
    if (!(pivot > 0)) {
      throw new SingularBlock();
    }
    const ratio = weights[i] / pivot;
    const added = 0.5 * weights[i] * ratio;
    const scale = 1 / Math.sqrt(pivot);
    const factorOffset = this.removedCount * size;
    removed[i] = 1;
    for (let j = 0; j < size; j++) {
      // Removed weights stay exactly zero: their Schur entries are zero up to round-off.
      if (removed[j]) {
        weights[j] = 0;
        factors[factorOffset + j] = 0;
        continue;
      }
      const value = schurRow[j];
      weights[j] -= ratio * value;
      const factor = value * scale;
      factors[factorOffset + j] = factor;
      residualDiagonal[j] -= factor * factor;
    }
    this.removedCount++;
    return added;
  }

  /**
   * Scores every subset (indices relative to `group`) by its exact joint loss ½ w′_s (Γ′_ss)⁻¹ w′_sᵀ,
   * removes the best one (the first on ties) and returns the loss it added.
   */
  removeBestSubset(group: number, width: number, subsets: readonly Uint8Array[]): number {
    const { size, factors, weights } = this;
    const schur = new Float64Array(width * width);
    for (let a = 0; a < width; a++) {
      for (let b = a; b < width; b++) {
        let value = this.gamma[(group + a) * size + group + b];
        for (let t = 0; t < this.removedCount; t++) value -= factors[t * size + group + a] * factors[t * size + group + b];
        schur[a * width + b] = value;
        schur[b * width + a] = value;
      }
    }
    let best = subsets[0];
    let bestLoss = Infinity;
    for (const subset of subsets) {
      const subsetLoss = 0.5 * inverseQuadraticForm(schur, width, subset, (k) => weights[group + subset[k]]);
      if (subsetLoss < bestLoss) {
        best = subset;
        bestLoss = subsetLoss;
      }
    }
    let added = 0;
    for (const index of best) added += this.remove(group + index);
    return added;
  }
}

/**
 * vᵀ M_ss⁻¹ v for the principal submatrix of the width×width matrix M on the indices `subset`, by a
 * small Cholesky factorisation; Infinity if that submatrix is not positive definite.
 */
function inverseQuadraticForm(matrix: Float64Array, width: number, subset: Uint8Array, vector: (k: number) => number): number {
  const n = subset.length;
  const lower = new Float64Array(n * n);
  let total = 0;
  const solved = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = matrix[subset[i] * width + subset[j]];
      for (let k = 0; k < j; k++) sum -= lower[i * n + k] * lower[j * n + k];
      if (i === j) {
        if (!(sum > 0)) return Infinity;
        lower[i * n + i] = Math.sqrt(sum);
      } else {
        lower[i * n + j] = sum / lower[j * n + j];
      }
    }
    // Forward substitution L y = v, one entry per row as L fills in: vᵀ M⁻¹ v = ‖y‖².
    let y = vector(i);
    for (let k = 0; k < i; k++) y -= lower[i * n + k] * solved[k];
    solved[i] = y / lower[i * n + i];
    total += solved[i] * solved[i];
  }
  return total;
}

/** All n-element subsets of 0..m−1, in lexicographic order. */
function combinations(m: number, n: number): Uint8Array[] {
  const result: Uint8Array[] = [];
  const current: number[] = [];
  const extend = (next: number): void => {
    if (current.length === n) {
      result.push(Uint8Array.from(current));
      return;
    }
    for (let i = next; i <= m - (n - current.length); i++) {
      current.push(i);
      extend(i + 1);
      current.pop();
    }
  };
  extend(0);
  return result;
}
