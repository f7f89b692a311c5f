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
import { booleanOption, selectUnstructured } from '../masks.js';
import type { EliminationPlan } from '../../backend/backend.js';
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
    const removals = target.kind === 'unstructured' ? removalsPerRow(block, rows, count, gamma, target.sparsity) : undefined;

    const plan: EliminationPlan = removals ? { kind: 'counts', removals } : { kind: 'nm', n: (target as { n: number }).n, m: (target as { m: number }).m, exact: exactSubsets };
    const losses = new Float64Array(rows);
    if (!(await backend.eliminateRows(gamma, block, rows, count, plan, losses))) {
      throw new TopiaryError('the inverse Hessian of a column block is numerically singular; raise the damping (option damp)');
    }
    for (const rowLoss of losses) loss += rowLoss;

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
 * How many weights each row loses in a block: the lowest floor(p · rows · count) single-removal
 * costs w_i² / Γ_ii over the whole block, counted per row.
 */
function removalsPerRow(block: Float64Array, rows: number, count: number, gamma: Float64Array, sparsity: number): Uint32Array {
  const scores = new Float32Array(rows * count);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < count; i++) scores[r * count + i] = block[r * count + i] ** 2 / gamma[i * count + i];
  }
  const keep = selectUnstructured(scores, sparsity);
  const removals = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) for (let i = 0; i < count; i++) if (!keep[r * count + i]) removals[r]++;
  return removals;
}

function binomial(m: number, n: number): number {
  let value = 1;
  for (let k = 1; k <= n; k++) value = (value * (m - n + k)) / k;
  return Math.round(value);
}
