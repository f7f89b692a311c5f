/**
 * SparseGPT (Frantar & Alistarh, 2023), following the reference `fasterprune` of
 * github.com/IST-DASLab/sparsegpt step for step:
 * - U = upper Cholesky factor of H⁻¹ (see ../hessian.ts);
 * - columns are processed left to right in blocks of B (default 128). Unstructured: the block's
 *   mask is chosen once, at the start of the block, over the whole d_out × B block jointly (not per
 *   row) by the score w² / U_jj². N:M: each row's group of M is chosen when the group's first column
 *   is reached, on the weights as already updated by the earlier columns of the block;
 * - column by column inside the block: err = (w − ŵ) / U_jj, and the block's later columns get
 *   −err ⊗ U[j, j:] (a rank-1 update, cheap);
 * - after the block, all later columns get −Err · U[block, later] in one GEMM through the backend.
 *
 * One deliberate difference: the reference thresholds with `score <= sorted[floor(p·numel)]`, which
 * prunes floor(p·numel) + 1 weights per block; here exactly floor(p·numel) are pruned (lowest
 * scores, ties to the lower flat index), so the requested sparsity holds exactly.
 * scripts/sparsegpt_reference.py is the PyTorch port the tests compare against.
 *
 * The reported `loss` is the reference's Σ Losses = Σ err² / 2 = ½ Σ_rows ΔW H ΔWᵀ with the damped H.
 */
import type { FloatArray } from '../../backend/backend.js';
import { TopiaryError } from '../../util/errors.js';
import { hessianOptionsFrom, inverseHessian, zeroDeadColumns, type InverseHessian } from '../hessian.js';
import { measureSparsity, numberOption, prunedInSlices, selectNm, selectUnstructured, validateTarget, type Mask } from '../masks.js';
import type { LinearPruneInput, SparsityTarget, UnstructuredMethod } from '../method.js';

export const DEFAULT_BLOCK_SIZE = 128;

type MethodOptions = Readonly<Record<string, number | boolean | string>>;

export const sparsegpt: UnstructuredMethod = {
  name: 'sparsegpt',
  options: {
    blocksize: `${DEFAULT_BLOCK_SIZE}: columns pruned and compensated together`,
  damp: '0.01: dampening, a fraction of the mean Hessian diagonal',
  fp64: 'false: factorise the Hessian in fp64',
  },
  description: 'SparseGPT: remove weights column by column, compensating through the inverse Hessian',
  needs: ['gram'],
  unsupported: secondOrderUnsupported,
  async prune(input) {
    const setup = await prepareSecondOrder(input);
    const loss = await runSparseGpt(setup);
    return setup.finish({ loss });
  },
};

/** Null if SparseGPT/APT can produce the target with these options, else why not. */
export function secondOrderUnsupported(target: SparsityTarget, options: MethodOptions): string | null {
  try {
    validateTarget(target);
    readBlockSize(options);
    hessianOptionsFrom(options);
    return null;
  } catch (error) {
    if (error instanceof TopiaryError) return error.message;
    throw error;
  }
}

function readBlockSize(options: MethodOptions): number {
  return numberOption(options, 'blocksize', DEFAULT_BLOCK_SIZE, { min: 1, integer: true });
}

/** Everything both SparseGPT and APT start from: a working copy of W with dead inputs zeroed, and U. */
export interface SecondOrderSetup {
  input: LinearPruneInput;
  /** Working weights (fp32, or fp64 with the fp64 option), d_out × d_in. */
  weight: FloatArray;
  hessian: InverseHessian;
  blockSize: number;
  /** Writes the working weights back into the caller's array and builds the result. */
  finish(methodReport: Record<string, number>): { weight: Float32Array; report: Record<string, number> };
}

export async function prepareSecondOrder(input: LinearPruneInput): Promise<SecondOrderSetup> {
  const { name, rows, cols, target } = input;
  validateTarget(target, cols, name);
  if (input.weight.length !== rows * cols) {
    throw new TopiaryError(`${name}: weight has ${input.weight.length} values, expected ${rows}×${cols}`);
  }
  const gram = input.stats.gram;
  if (!gram) throw new TopiaryError(`${name}: the Gram matrix XᵀX of the layer input was not collected`);
  const hessianOptions = hessianOptionsFrom(input.options);
  const hessian = await inverseHessian(gram, input.stats.rows, cols, input.backend, hessianOptions, name);
  const weight = hessianOptions.fp64 ? Float64Array.from(input.weight) : input.weight;
  zeroDeadColumns(weight, rows, cols, hessian.deadInputs);
  let blockSize = readBlockSize(input.options);
  // An N:M group must never straddle two blocks.
  if (target.kind === 'nm') blockSize = Math.max(target.m, blockSize - (blockSize % target.m));
  return {
    input,
    weight,
    hessian,
    blockSize,
    finish(methodReport) {
      if (weight !== input.weight) input.weight.set(weight);
      const report = {
        ...methodReport,
        sparsity: measureSparsity(input.weight),
        damp: hessian.dampFraction,
        lambda: hessian.lambda,
        dampEscalations: hessian.escalations,
        deadInputs: hessian.deadInputs.length,
        blockSize,
      };
      return { weight: input.weight, report };
    },
  };
}

/** Runs the reference algorithm on the setup's working weights in place; returns Σ err² / 2. */
async function runSparseGpt(setup: SecondOrderSetup): Promise<number> {
  const { weight, hessian, blockSize } = setup;
  const { rows, cols, target } = setup.input;
  const upper = hessian.upperCholeskyOfInverse;
  const makeArray = (length: number): FloatArray =>
    weight instanceof Float64Array ? new Float64Array(length) : new Float32Array(length);
  let loss = 0;
  for (let start = 0; start < cols; start += blockSize) {
    const count = Math.min(blockSize, cols - start);
    const block = makeArray(rows * count);
    copyColumns(weight, cols, start, block, count, rows, 'out');
    const errors = makeArray(rows * count);
    const pivots = new Float64Array(count);
    for (let i = 0; i < count; i++) pivots[i] = upper[(start + i) * cols + start + i];
    // The reference's score w² / U_jj², over columns [from, from + width) of the block as it is now.
    const scores = (from: number, width: number): Float32Array => {
      const out = new Float32Array(rows * width);
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < width; g++) out[r * width + g] = (block[r * count + from + g] / pivots[from + g]) ** 2;
      }
      return out;
    };

    // 1 = keep, 0 = prune. Unstructured: decided for the whole block now; N:M: group by group below.
    const keep: Mask =
      target.kind === 'unstructured'
        ? selectUnstructured(scores(0, count), { ...target, zeros: prunedInSlices(target, start, start + count, cols, rows) })
        : new Uint8Array(rows * count).fill(1);
    for (let i = 0; i < count; i++) {
      if (target.kind === 'nm' && i % target.m === 0) {
        const groupKeep = selectNm(scores(i, target.m), rows, target.m, target.n, target.m);
        for (let r = 0; r < rows; r++) keep.set(groupKeep.subarray(r * target.m, (r + 1) * target.m), r * count + i);
      }
      const pivot = pivots[i];
      const uRow = (start + i) * cols + start;
      for (let r = 0; r < rows; r++) {
        const at = r * count + i;
        if (keep[at]) continue;
        const err = block[at] / pivot;
        loss += (err * err) / 2;
        errors[at] = err;
        block[at] = 0;
        for (let k = i + 1; k < count; k++) block[r * count + k] -= err * upper[uRow + k];
      }
    }

    copyColumns(weight, cols, start, block, count, rows, 'in');
    await propagateToLaterColumns(setup, errors, start, count);
  }
  return loss;
}

/**
 * W[:, after:] −= Err · U[block, after:] for the block of `count` columns at `start`: the one
 * GEMM of each block, through the backend. `errors` is rows × count in the working precision.
 */
export async function propagateToLaterColumns(setup: SecondOrderSetup, errors: FloatArray, start: number, count: number): Promise<void> {
  const { weight } = setup;
  const { rows, cols, backend } = setup.input;
  const after = start + count;
  if (after >= cols) return;
  await backend.gemm(errors, setup.hessian.upperCholeskyOfInverse.subarray(start * cols + after), weight.subarray(after), {
    m: rows,
    n: cols - after,
    k: count,
    alpha: -1,
    beta: 1,
    lda: count,
    ldb: cols,
    ldc: cols,
  });
}

/** Copies columns [start, start+count) of a rows×cols matrix out to / back in from a packed rows×count block. */
export function copyColumns(
  matrix: FloatArray,
  cols: number,
  start: number,
  block: FloatArray,
  count: number,
  rows: number,
  direction: 'out' | 'in',
): void {
  for (let r = 0; r < rows; r++) {
    const rowView = matrix.subarray(r * cols + start, r * cols + start + count);
    if (direction === 'out') block.set(rowView, r * count);
    else rowView.set(block.subarray(r * count, r * count + count));
  }
}
