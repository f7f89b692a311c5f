/**
 * The layer Hessian shared by SparseGPT and APT: from the calibration Gram matrix XᵀX (summed over
 * n token rows) to H = (2/n)·XᵀX + λI, its inverse G = H⁻¹ and the upper Cholesky factor U of H⁻¹
 * (G = UᵀU). The factor is what makes column-by-column pruning cheap: the inverse Hessian of the
 * trailing columns j… is U[j:, j:]ᵀ U[j:, j:], so row j of U carries everything needed to remove
 * column j and compensate in later columns.
 *
 * Conventions follow the SparseGPT reference: inputs that never fire (H_jj = 0) get H_jj = 1 (so H
 * stays invertible) and the weights they feed are zeroed by the caller (they cannot change the
 * output); λ = percdamp · mean(diag H). When a factorisation fails (fp32 round-off on an
 * ill-conditioned H, or an indefinite Gram) the damping is raised ×10 and everything is retried.
 */
import type { Backend, FloatArray } from '../backend/backend.js';
import { TopiaryError } from '../util/errors.js';
import { booleanOption, numberOption } from './masks.js';

export interface HessianOptions {
  /** λ as a fraction of mean(diag H); SparseGPT's percdamp. Default 0.01. */
  damp?: number;
  /** Factorise in fp64 instead of fp32 (slower, more accurate). */
  fp64?: boolean;
  /** How many times the damping may be raised ×10 after a failed factorisation. Default 4. */
  maxEscalations?: number;
}

export interface InverseHessian {
  /** Input dimension d. */
  size: number;
  /** G = H⁻¹ (damped), d×d full symmetric, in the working precision. */
  inverse: FloatArray;
  /** Upper Cholesky factor U of H⁻¹ (G = UᵀU), d×d, lower triangle zero. */
  upperCholeskyOfInverse: FloatArray;
  /** Indices j with H_jj = 0: no calibration signal; the weights they feed must be zeroed. */
  deadInputs: number[];
  /** The damping fraction actually used (damp × 10^escalations). */
  dampFraction: number;
  /** The absolute λ added to the diagonal. */
  lambda: number;
  /** How many times the damping was raised. */
  escalations: number;
}

export const DEFAULT_DAMP = 0.01;
const DEFAULT_MAX_ESCALATIONS = 4;

/**
 * Builds H from the Gram matrix and returns G = H⁻¹ and U = chol(H⁻¹, upper), escalating the
 * damping on failure. `layerName` only serves the error message.
 */
export async function inverseHessian(
  gram: Float32Array,
  rows: number,
  size: number,
  backend: Backend,
  options: HessianOptions = {},
  layerName = 'linear layer',
): Promise<InverseHessian> {
  const damp = options.damp ?? DEFAULT_DAMP;
  const maxEscalations = options.maxEscalations ?? DEFAULT_MAX_ESCALATIONS;
  if (gram.length !== size * size) {
    throw new TopiaryError(`${layerName}: Gram matrix has ${gram.length} entries, expected ${size}×${size}`);
  }
  if (!(rows > 0)) throw new TopiaryError(`${layerName}: no calibration rows were accumulated for the Hessian`);
  if (!(damp >= 0) || !Number.isFinite(damp)) throw new TopiaryError(`damping must be a finite number ≥ 0, got ${damp}`);

  const hessian = new Float64Array(size * size);
  const scale = 2 / rows;
  for (let i = 0; i < hessian.length; i++) hessian[i] = scale * gram[i];
  const deadInputs: number[] = [];
  let diagonalSum = 0;
  for (let j = 0; j < size; j++) {
    if (hessian[j * size + j] === 0) {
      deadInputs.push(j);
      hessian[j * size + j] = 1;
    }
    diagonalSum += hessian[j * size + j];
  }
  if (!Number.isFinite(diagonalSum)) {
    throw new TopiaryError(`${layerName}: the calibration Gram matrix contains NaN or infinite values`);
  }
  const meanDiagonal = diagonalSum / size;

  const makeArray = (length: number): FloatArray => (options.fp64 ? new Float64Array(length) : new Float32Array(length));
  let dampFraction = damp;
  for (let escalations = 0; escalations <= maxEscalations; escalations++) {
    // A zero request still needs some damping to recover from a failure: start escalating at 1e-6.
    if (escalations > 0) dampFraction = dampFraction > 0 ? dampFraction * 10 : 1e-6;
    const lambda = dampFraction * meanDiagonal;
    const inverse = makeArray(size * size);
    inverse.set(hessian);
    for (let j = 0; j < size; j++) inverse[j * size + j] += lambda;
    if (!(await backend.invertSpd(inverse, size))) continue;
    const upper = makeArray(size * size);
    upper.set(inverse);
    if (!(await backend.cholesky(upper, size, 'upper'))) continue;
    if (!isFiniteArray(upper)) continue;
    return { size, inverse, upperCholeskyOfInverse: upper, deadInputs, dampFraction, lambda, escalations };
  }
  throw new TopiaryError(
    `${layerName}: the Hessian is not positive definite even with damping ${dampFraction} × mean(diag H) ` +
      `(after ${maxEscalations} ×10 escalations from ${damp}); the calibration statistics look degenerate`,
  );
}

/** Zeroes the weight columns of dead inputs in a rows×cols row-major matrix. */
export function zeroDeadColumns(weight: FloatArray, rows: number, cols: number, deadInputs: readonly number[]): void {
  for (const j of deadInputs) for (let r = 0; r < rows; r++) weight[r * cols + j] = 0;
}

function isFiniteArray(values: FloatArray): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return false;
  return true;
}

/** The Hessian options every second-order method accepts: damp (percdamp, ≥ 0) and fp64. */
export function hessianOptionsFrom(options: Readonly<Record<string, number | boolean | string>>): HessianOptions {
  return { damp: numberOption(options, 'damp', DEFAULT_DAMP, { min: 0 }), fp64: booleanOption(options, 'fp64', false) };
}
