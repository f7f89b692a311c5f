/**
 * APT — optimal multi-weight pruning (Zhao et al., 2024). The code of the paper is not public; this
 * is our formulation, inside SparseGPT's column-block framework.
 *
 * Problem. For one row w of W (the rows are independent), removing a set q of its weights and
 * re-fitting all the others to minimise ½ (w − w′) H (w − w′)ᵀ gives, with G = H⁻¹,
 *     δw = −w_q (G_qq)⁻¹ G_q,:      loss = ½ w_q (G_qq)⁻¹ w_qᵀ.
 *
 * Blocks. Like SparseGPT we walk the columns left to right in blocks b = [s, s+B); when block b is
 * reached, the columns before s are frozen and the free columns are F = [s, d). The inverse
 * Hessian of the sub-problem on F is not G_FF but (H_FF)⁻¹, and with U the upper Cholesky factor of
 * H⁻¹ (G = UᵀU) it is U[F,F]ᵀ U[F,F]: writing V = U⁻¹ (upper), H = V Vᵀ, so H_FF = V_FF V_FFᵀ (V's
 * rows in F are zero left of F) and (H_FF)⁻¹ = (V_FF)⁻ᵀ (V_FF)⁻¹ = U_FFᵀ U_FF.
 * Because U is upper triangular, the block's columns of U_FF are non-zero only in the block's rows,
 * so with A = U[b, b] (B×B upper) and R = U[b, F] (B×|F|, R = [A | U[b, later]]):
 *     (H_FF)⁻¹[b, F] = Aᵀ R,      (H_FF)⁻¹[b, b] = AᵀA =: Γ.
 * Removing q ⊆ b jointly with compensation in every free column (the block's unpruned columns and
 * all later ones) is therefore
 *     δw_F = −w_q (Γ_qq)⁻¹ A_qᵀ R = −eᵀ R   with   e = A_q (Γ_qq)⁻¹ w_qᵀ   (a B-vector),
 *     loss = ½ w_q (Γ_qq)⁻¹ w_qᵀ = ½ ‖e‖².
 * So the whole correction is carried by e: inside the block δw_b = −eᵀA, and the later columns get
 * −eᵀ U[b, later] — for all rows at once the same GEMM as SparseGPT's Err · U[b, later]. Since A is
 * invertible, e is recovered from the block's own change: eᵀ = (w_b − w′_b) A⁻¹, one more GEMM.
 * The per-block losses add up exactly to ½ ΔW H ΔWᵀ: each step's δ is H-orthogonal to everything
 * later steps may change (the gradient of an optimal step vanishes on its free columns).
 * With B = 1, q = {j}: e = w_j / U_jj, the SparseGPT update, so SparseGPT is the B = 1 case.
 *
 * Choosing q (per row, inside a block), all in fp64 on the B×B matrix Γ:
 * - The row's state after removing a set is the Schur complement Γ′ = Γ − Γ_:q Γ_qq⁻¹ Γ_q: and the
 *   re-fitted w′_b. Removing one more weight i costs exactly ½ w′_i² / Γ′_ii more (joint loss of
 *   q ∪ {i}), and removing a set one weight after another in any order gives the joint result.
 *   Γ′ is kept as Γ minus a partial pivoted Cholesky factor (one vector per removed weight), so a
 *   removal costs O(|q|·B) and no B×B matrix is updated.
 * - Unstructured: how many weights each row loses in the block is decided as SparseGPT decides its
 *   block mask, jointly over the whole d_out × B block, but with APT's own single-removal cost
 *   w_i² / Γ_ii (compensation in all free columns, not only later ones). Which weights a row loses
 *   is then chosen greedily by the exact joint loss: repeatedly remove the weight whose removal
 *   raises the row's joint loss least (forward selection; no swap refinement).
 * - N:M: groups are taken left to right; for each group all C(M, N) subsets are scored by their
 *   exact joint loss ½ w′_s (Γ′_ss)⁻¹ w′_sᵀ given the removals already made in the block, and the
 *   best is removed (6 subsets for 2:4, 70 for 4:8). Option exact=false removes the N one at a time
 *   instead (greedy, as above, restricted to the group).
 *
 * Options: blocksize (default 128), exact (N:M subset enumeration, default true), damp, fp64.
 * Report: loss = Σ ½ ‖e‖² = ½ Σ_rows ΔW H ΔWᵀ with the damped H (same scale as SparseGPT's loss).
 */
import { TopiaryError } from '../../util/errors.js';
import { booleanOption, prunedInSlices, selectUnstructured, type UnstructuredTarget } from '../masks.js';
import type { SparsityTarget, UnstructuredMethod } from '../method.js';
import { copyColumns, prepareSecondOrder, propagateToLaterColumns, secondOrderUnsupported, type SecondOrderSetup } from './sparsegpt.js';

/** More subsets per group than this would make exact enumeration slow; use exact=false. */
const MAX_EXACT_SUBSETS = 5000;

type MethodOptions = Readonly<Record<string, number | boolean | string>>;

export const apt: UnstructuredMethod = {
  name: 'apt',
  options: {
    blocksize: '128: columns removed and compensated jointly',
    exact: 'true: exhaustive search of every N:M subset (false: greedy)',
  damp: '0.01: dampening, a fraction of the mean Hessian diagonal',
  fp64: 'false: factorise the Hessian in fp64',
  },
  description: 'APT: remove each block\'s weights jointly by their exact joint loss, compensating in all free columns',
  needs: ['gram'],
  unsupported(target, options) {
    return secondOrderUnsupported(target, options) ?? exactSubsetProblem(target, options);
  },
  async prune(input) {
    const problem = exactSubsetProblem(input.target, input.options);
    if (problem) throw new TopiaryError(`${input.name}: ${problem}`);
    const setup = await prepareSecondOrder(input);
    const loss = await runApt(setup, booleanOption(input.options, 'exact', true));
    return setup.finish({ loss });
  },
};

function exactSubsetProblem(target: SparsityTarget, options: MethodOptions): string | null {
  if (target.kind !== 'nm' || !booleanOption(options, 'exact', true)) return null;
  const subsets = binomial(target.m, target.n);
  return subsets <= MAX_EXACT_SUBSETS
    ? null
    : `exact ${target.n}:${target.m} enumeration would score ${subsets} subsets per group; use exact=false`;
}

async function runApt(setup: SecondOrderSetup, exactSubsets: boolean): Promise<number> {
  const { weight, blockSize } = setup;
  const { rows, cols, target, backend } = setup.input;
  const upper = setup.hessian.upperCholeskyOfInverse;
  const subsets = target.kind === 'nm' && exactSubsets ? combinations(target.m, target.n) : [];
  let loss = 0;
  for (let start = 0; start < cols; start += blockSize) {
    const count = Math.min(blockSize, cols - start);
    const blockFactor = new Float64Array(count * count); // A = U[b, b]
    copyColumns(upper.subarray(start * cols), cols, start, blockFactor, count, count, 'out');
    const gamma = new Float64Array(count * count); // Γ = AᵀA
    await backend.gemm(blockFactor, blockFactor, gamma, { m: count, n: count, k: count, transA: true });

    const block = new Float64Array(rows * count);
    copyColumns(weight, cols, start, block, count, rows, 'out');
    const original = Float64Array.from(block);
    const removals = target.kind === 'unstructured' ? removalsPerRow(block, rows, count, gamma, { ...target, zeros: prunedInSlices(target, start, start + count, cols, rows) }) : undefined;

    const row = new RowElimination(gamma, count);
    for (let r = 0; r < rows; r++) {
      row.reset(block.subarray(r * count, (r + 1) * count));
      if (removals) {
        for (let k = 0; k < removals[r]; k++) loss += row.remove(row.cheapest(0, count));
      } else if (target.kind === 'nm') {
        for (let group = 0; group < count; group += target.m) {
          if (exactSubsets) {
            loss += row.removeBestSubset(group, target.m, subsets);
          } else {
            for (let k = 0; k < target.n; k++) loss += row.remove(row.cheapest(group, group + target.m));
          }
        }
      }
    }

    // eᵀ = (w_b − w′_b) A⁻¹ for every row, then the later columns get −E · U[b, later].
    const change = original.map((value, i) => value - block[i]);
    const factorInverse = new Float64Array(count * count);
    for (let i = 0; i < count; i++) factorInverse[i * count + i] = 1;
    await backend.triangularSolve(blockFactor, factorInverse, count, count, 'upper', false);
    const errors = new Float64Array(rows * count);
    await backend.gemm(change, factorInverse, errors, { m: rows, n: count, k: count });
    copyColumns(weight, cols, start, block, count, rows, 'in');
    await propagateToLaterColumns(setup, weight instanceof Float64Array ? errors : Float32Array.from(errors), start, count);
  }
  return loss;
}

/**
 * How many weights each row loses in a block: the lowest `target.zeros` single-removal costs (the
 * block's share of the matrix's budget, see prunedInSlices) w_i² / Γ_ii over the whole block, counted per row.
 */
function removalsPerRow(block: Float64Array, rows: number, count: number, gamma: Float64Array, target: UnstructuredTarget): Uint32Array {
  const scores = new Float32Array(rows * count);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < count; i++) scores[r * count + i] = block[r * count + i] ** 2 / gamma[i * count + i];
  }
  const keep = selectUnstructured(scores, target);
  const removals = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) for (let i = 0; i < count; i++) if (!keep[r * count + i]) removals[r]++;
  return removals;
}

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
      throw new TopiaryError('the inverse Hessian of a column block is numerically singular; raise the damping (option damp)');
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

function binomial(m: number, n: number): number {
  let value = 1;
  for (let k = 1; k <= n; k++) value = (value * (m - n + k)) / k;
  return Math.round(value);
}
