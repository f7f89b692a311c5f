/**
 * The ways an output projection (o_proj, down_proj) makes up for removed inputs, shared by the
 * methods: plain removal, FLAP's bias compensation, and COMP's mask tuning (least squares on the
 * calibration activations, with an intercept so that it is never worse than bias compensation).
 */
import type { Backend } from '../../backend/backend.js';
import type { Linear } from '../../model/causal-lm.js';
import { TopiaryError } from '../../util/errors.js';
import type { LinearStats } from '../method.js';
import { complement, selectColumns } from './geometry.js';

/** Mean of each input feature over the calibration tokens. */
export function featureMeans(stats: LinearStats): Float64Array {
  if (!stats.sum || stats.rows === 0) throw new TopiaryError('internal: feature means need the moments statistics');
  return stats.sum.map((s) => s / stats.rows);
}

function l2(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]! * values[i]!;
  return Math.sqrt(sum);
}

/**
 * FLAP: the removed inputs are replaced by their calibration means, which is a constant the bias
 * absorbs: b += W[:, removed] · mean(X_removed).
 */
export function biasCompensation(lin: Linear, kept: readonly number[], stats: LinearStats): { linear: Linear; biasNorm: number } {
  const mean = featureMeans(stats);
  const removed = complement(lin.inFeatures, kept);
  const bias = lin.bias ? Float32Array.from(lin.bias) : new Float32Array(lin.outFeatures);
  const added = new Float64Array(lin.outFeatures);
  for (let r = 0; r < lin.outFeatures; r++) {
    const row = r * lin.inFeatures;
    let sum = 0;
    for (const c of removed) sum += lin.weight[row + c]! * mean[c]!;
    added[r] = sum;
    bias[r] = bias[r]! + sum;
  }
  return { linear: { ...selectColumns(lin, kept), bias }, biasNorm: l2(added) };
}

/** Covariance of the inputs, C = XᵀX/n − μμᵀ (fp64), from the Gram and the sums. */
function covariance(stats: LinearStats): Float64Array {
  const { gram, rows } = stats;
  if (!gram) throw new TopiaryError('internal: mask tuning needs the Gram statistics');
  const mean = featureMeans(stats);
  const d = mean.length;
  const c = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) c[i * d + j] = gram[i * d + j]! / rows - mean[i]! * mean[j]!;
  return c;
}

/**
 * Adds λ = `relative`·mean(diag) to the diagonal, so a singular system (dead or collinear inputs)
 * still solves; returns λ. Callers add the matching λ·(original value) to the right-hand side, so
 * the damping pulls the solution toward the untuned weights rather than toward zero.
 */
function damp(a: Float64Array, n: number, relative: number): number {
  let trace = 0;
  for (let i = 0; i < n; i++) trace += a[i * n + i]!;
  const lambda = relative * Math.max(trace / n, Number.MIN_VALUE);
  for (let i = 0; i < n; i++) a[i * n + i] += lambda;
  return lambda;
}

async function invert(backend: Backend, a: Float64Array, n: number, what: string): Promise<Float64Array> {
  const copy = a.slice();
  if (await backend.invertSpd(copy, n)) return copy;
  throw new TopiaryError(`mask tuning: the ${what} system is not positive definite; raise the damping (--option damp=...)`);
}

export type TuningMode = 'scales' | 'refit';

/**
 * COMP's mask tuning: with C the input covariance, refit the kept columns so that the projection's
 * output on the calibration activations stays as close as possible (in the least-squares sense) to
 * the dense output, with a bias absorbing the means:
 * - 'scales': one scale per kept input, Ŵ_K = W_K·diag(m); m solves (C ∘ WᵀW)_KK m = ((C ∘ WᵀW)·1)_K,
 *   a |K|×|K| system (the normal equations of ‖X Wᵀ − X_K diag(m) W_Kᵀ‖² on centred inputs);
 * - 'refit': the full least-squares refit Ŵ_K = W C_:,K (C_KK)⁻¹.
 * The bias is then b = W μ − Ŵ_K μ_K. Since m = 1 gives FLAP's bias compensation, the tuned error on
 * the calibration data is never larger than bias compensation's (up to the tiny damping).
 */
export async function maskTuning(
  backend: Backend,
  lin: Linear,
  kept: readonly number[],
  stats: LinearStats,
  mode: TuningMode,
  damping: number,
): Promise<{ linear: Linear; report: Record<string, number> }> {
  const d = lin.inFeatures;
  const out = lin.outFeatures;
  const k = kept.length;
  const cov = covariance(stats);
  const mean = featureMeans(stats);
  const weight = Float64Array.from(lin.weight);
  const tuned = new Float64Array(out * k);
  const report: Record<string, number> = {};
  if (mode === 'scales') {
    // P = WᵀW (d×d); H = C ∘ P.
    const p = new Float64Array(d * d);
    await backend.gemm(weight, weight, p, { m: d, n: d, k: out, transA: true });
    const h = new Float64Array(d * d);
    for (let i = 0; i < h.length; i++) h[i] = cov[i]! * p[i]!;
    const system = new Float64Array(k * k);
    const rhs = new Float64Array(k);
    kept.forEach((ki, a) => {
      let sum = 0;
      for (let j = 0; j < d; j++) sum += h[ki * d + j]!;
      rhs[a] = sum;
      kept.forEach((kj, b) => (system[a * k + b] = h[ki * d + kj]!));
    });
    const lambda = damp(system, k, damping);
    for (let a = 0; a < k; a++) rhs[a] += lambda;
    const inverse = await invert(backend, system, k, 'scales');
    const scales = new Float64Array(k);
    await backend.gemm(inverse, rhs, scales, { m: k, n: 1, k });
    for (let r = 0; r < out; r++) kept.forEach((c, a) => (tuned[r * k + a] = weight[r * d + c]! * scales[a]!));
    report.scaleMin = Math.min(...scales);
    report.scaleMax = Math.max(...scales);
    report.scaleMean = scales.reduce((s, v) => s + v, 0) / k;
  } else {
    // Ŵ_K = (W C_:,K) (C_KK)⁻¹
    const cKK = new Float64Array(k * k);
    const cAllK = new Float64Array(d * k);
    for (let i = 0; i < d; i++) kept.forEach((c, b) => (cAllK[i * k + b] = cov[i * d + c]!));
    kept.forEach((c, a) => kept.forEach((c2, b) => (cKK[a * k + b] = cov[c * d + c2]!)));
    const lambda = damp(cKK, k, damping);
    const inverse = await invert(backend, cKK, k, 'refit');
    const wc = new Float64Array(out * k);
    await backend.gemm(weight, cAllK, wc, { m: out, n: k, k: d });
    for (let r = 0; r < out; r++) kept.forEach((c, b) => (wc[r * k + b] += lambda * weight[r * d + c]!));
    await backend.gemm(wc, inverse, tuned, { m: out, n: k, k });
  }
  const bias = new Float32Array(out);
  const added = new Float64Array(out);
  for (let r = 0; r < out; r++) {
    let dense = 0;
    for (let c = 0; c < d; c++) dense += weight[r * d + c]! * mean[c]!;
    let fromKept = 0;
    kept.forEach((c, a) => (fromKept += tuned[r * k + a]! * mean[c]!));
    added[r] = dense - fromKept;
    bias[r] = (lin.bias?.[r] ?? 0) + added[r]!;
  }
  report.biasNorm = l2(added);
  return { linear: { weight: Float32Array.from(tuned), bias, outFeatures: out, inFeatures: k }, report };
}
