/**
 * Layer budgets: how a global unstructured sparsity p is spread over the decoder layers
 * (METHODS.md, "Layer budgets"). A profile scores every layer on the dense model, maps the scores
 * linearly onto per-layer sparsities around p, and the plan turns those into an exact number of
 * weights to prune in each matrix.
 *
 * - OWL (Yin et al., 2023): the layer's outlier ratio D_ℓ = 100 · the share of the Wanda scores
 *   |W_ij|·‖X_j‖ of all its pruned matrices, taken together, above M times their mean (M = owlM;
 *   the mean is over the layer's scores together, as the OWL code's check_outlier_mean does).
 *   Densities (D_ℓ − min D)/(max D − min D) · 2λ, shifted so that their mean is 1 − p; the
 *   sparsity is one minus that. More outliers, denser layer.
 * - AlphaPruning (Lu et al., 2024): per matrix, the eigenvalues λ of WᵀW (computed as the Gram of
 *   the smaller side, which has the same nonzero spectrum), and the Hill estimate of the power-law
 *   exponent of their tail, α = 1 + n / Σ_{k≥i} ln(λ_k / λ_i) for the tail λ_i ≤ … ≤ λ_N of
 *   n = N − i eigenvalues. The tail's start λ_i ("fix-fingers, xmin_peak"): the ESD's peak is the
 *   left edge of the fullest of 100 equal bins of log10 λ; among the eigenvalues in
 *   [0.95 · peak, 1.5 · peak] the one whose fit has the smallest Kolmogorov–Smirnov distance
 *   max_k |1 − (λ_k/λ_i)^(1−α) − k/n| wins. (The AlphaPruning code compares the eigenvalues with
 *   log10(0.95 · peak) rather than 0.95 · peak, which leaves the lower bound inactive; we apply
 *   the bound as the rule states it.) The layer's score is the mean α of its matrices; scores map
 *   onto ratios in [1 − ε, 1 + ε] (heavier tail, smaller α, pruned less) and the ratios are scaled
 *   so the parameter-weighted mean is p.
 *
 * Exactness. The per-layer sparsities s_ℓ are shifted (OWL) or scaled (AlphaPruning) so that
 * Σ_ℓ s_ℓ·n_ℓ = p·N over the pruned matrices (n_ℓ their weights in layer ℓ, N in all). Counts are
 * then whole numbers by one rounding rule: the run prunes Z = floor(p·N) weights in all; with the
 * matrices in run order (layer by layer, roles in the family's order) and C_k the running sum of
 * s_ℓ·size over the first k matrices, matrix k prunes floor(C_k) − floor(C_{k−1}) (the last one
 * takes Z − floor(C_{K−1})); inside a matrix the rows or column blocks share its count by the
 * same cumulative floor rule (masks.ts, prunedInSlices). The zeros add up to exactly Z.
 */
import type { Backend } from '../backend/backend.js';
import type { Block } from '../model/causal-lm.js';
import { UsageError } from '../util/errors.js';
import { numberOption, prunedCount } from './masks.js';
import type { MethodOptions, StatsByRole } from './pipeline.js';
import type { LayerBudget } from './record.js';
import { requireSqNorm, wandaScores } from './methods/wanda.js';

export type SparsityProfileName = 'uniform' | 'owl' | 'alphapruning';
/** The profiles that plan a budget (uniform needs no plan). */
export type BudgetProfileName = Exclude<SparsityProfileName, 'uniform'>;

export interface SparsityProfile {
  name: SparsityProfileName;
  description: string;
  /** Options (`--option KEY=VALUE`) with their default and meaning, for `--help`. */
  options: Readonly<Record<string, string>>;
  /** Whether the layer scores need the calibration activations (OWL) or only the weights. */
  needsActivations: boolean;
}

export const SPARSITY_PROFILES: readonly SparsityProfile[] = [
  { name: 'uniform', description: 'every matrix pruned to the same sparsity (default)', options: {}, needsActivations: false },
  {
    name: 'owl',
    description: 'OWL: denser layers where more Wanda scores are outliers (one extra pass over the calibration data)',
    options: { owlM: '5: a score is an outlier above M times the layer mean', owlLambda: '0.08: layer sparsities span p ± λ' },
    needsActivations: true,
  },
  {
    name: 'alphapruning',
    description: 'AlphaPruning: heavier-tailed weight spectra (smaller Hill α of WᵀW) pruned less; data-free',
    options: { alphaEpsilon: '0.3: layer sparsities span p·[1 − ε, 1 + ε] before rescaling' },
    needsActivations: false,
  },
];

/** The profiles' options with their defaults; a bad value is refused (called before any work, and when used). */
export function profileOptions(options: MethodOptions): { owlM: number; owlLambda: number; alphaEpsilon: number } {
  return {
    owlM: numberOption(options, 'owlM', 5, { min: 0 }),
    owlLambda: numberOption(options, 'owlLambda', 0.08, { min: 0 }),
    alphaEpsilon: numberOption(options, 'alphaEpsilon', 0.3, { min: 0 }),
  };
}

export function findProfile(name: string): SparsityProfile {
  const found = SPARSITY_PROFILES.find((profile) => profile.name === name);
  if (!found) throw new UsageError(`unknown --sparsity-profile "${name}" (choose from ${SPARSITY_PROFILES.map((p) => p.name).join(', ')})`);
  return found;
}

/** One layer's score from the dense pass, with what the score was made from. */
export interface LayerScore {
  score: number;
  /** Weights of each pruned matrix of the layer, in role order. */
  sizes: number[];
  details: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------
// OWL

/** 100 · share of the scores (all matrices of a layer together) above m times their mean. */
export function outlierRatio(scores: readonly Float32Array[], m: number): number {
  let sum = 0;
  let count = 0;
  for (const matrix of scores) {
    for (const value of matrix) sum += value;
    count += matrix.length;
  }
  const threshold = (sum / Math.max(count, 1)) * m;
  let above = 0;
  for (const matrix of scores) for (const value of matrix) if (value > threshold) above++;
  return (100 * above) / Math.max(count, 1);
}

// ---------------------------------------------------------------------------------------------
// AlphaPruning

/** Hill estimate of the tail exponent of ascending positive eigenvalues, tail start by the ESD peak (see the header). */
export function hillAlpha(eigenvalues: Float64Array): { alpha: number; tailStart: number; ksDistance: number } {
  const values = eigenvalues.filter((value) => value > 0);
  const count = values.length;
  if (count < 2) return { alpha: Number.NaN, tailStart: 0, ksDistance: 1 };
  const logs = values.map(Math.log);
  const log10s = values.map(Math.log10);
  const low = log10s[0]!;
  const high = log10s[count - 1]!;
  const bins = 100;
  const histogram = new Uint32Array(bins);
  for (const value of log10s) histogram[high > low ? Math.min(bins - 1, Math.floor(((value - low) / (high - low)) * bins)) : 0]++;
  let peakBin = 0;
  for (let b = 1; b < bins; b++) if (histogram[b]! > histogram[peakBin]!) peakBin = b;
  const peak = 10 ** (low + ((high - low) * peakBin) / bins);
  let best = { alpha: Number.NaN, tailStart: 0, ksDistance: Number.POSITIVE_INFINITY };
  // Suffix sums of ln λ make every candidate's α O(1); the KS distance is O(n) per candidate.
  const suffix = new Float64Array(count + 1);
  for (let k = count - 1; k >= 0; k--) suffix[k] = suffix[k + 1]! + logs[k]!;
  for (let i = 0; i < count - 1; i++) {
    const xmin = values[i]!;
    if (xmin < 0.95 * peak) continue;
    if (xmin > 1.5 * peak) break;
    const n = count - i;
    const alpha = 1 + n / (suffix[i]! - n * logs[i]!);
    if (!(alpha > 1)) continue;
    let distance = 0;
    for (let k = 0; k < n; k++) distance = Math.max(distance, Math.abs(1 - (values[i + k]! / xmin) ** (1 - alpha) - k / n));
    if (distance < best.ksDistance) best = { alpha, tailStart: xmin, ksDistance: distance };
  }
  return best;
}

/** Eigenvalues (ascending) of WᵀW through the Gram of W's smaller side, in fp64. */
export async function gramEigenvalues(weight: Float32Array, rows: number, cols: number, backend: Backend): Promise<Float64Array> {
  const side = Math.min(rows, cols);
  const gram = new Float64Array(side * side);
  const w = Float64Array.from(weight);
  // rows ≥ cols: WᵀW (cols × cols); else WWᵀ (rows × rows), the same nonzero spectrum.
  await backend.gemm(w, w, gram, rows >= cols ? { m: cols, n: cols, k: rows, transA: true } : { m: rows, n: rows, k: cols, transB: true });
  const eigenvalues = new Float64Array(side);
  if (!(await backend.symmetricEigenvalues(gram, side, eigenvalues))) throw new UsageError('the symmetric eigensolver did not converge on a weight matrix');
  return eigenvalues;
}

// ---------------------------------------------------------------------------------------------
// The plan

export interface BudgetPlan {
  /** Per layer: its budget (for the record) and the zeros of each pruned role. */
  layers: { budget: LayerBudget; zeros: Record<string, number> }[];
}

/** Linear map of scores onto [0, 1] (all equal: every layer at 0.5, i.e. uniform). */
function normalise(scores: readonly number[]): number[] {
  const low = Math.min(...scores);
  const high = Math.max(...scores);
  return scores.map((score) => (high > low ? (score - low) / (high - low) : 0.5));
}

/**
 * Per-layer sparsities for `profile` from the layer scores, with Σ s_ℓ·n_ℓ = p·N (see the header),
 * each checked to lie in [0, 1).
 */
export function layerSparsities(profile: BudgetProfileName, scores: readonly number[], params: readonly number[], sparsity: number, options: MethodOptions): number[] {
  const total = params.reduce((sum, n) => sum + n, 0);
  const weightedMean = (values: readonly number[]) => values.reduce((sum, value, l) => sum + value * params[l]!, 0) / total;
  const { owlLambda, alphaEpsilon } = profileOptions(options);
  let result: number[];
  if (profile === 'owl') {
    const densities = normalise(scores).map((x) => x * 2 * owlLambda);
    const mean = densities.reduce((sum, d) => sum + d, 0) / densities.length;
    const raw = densities.map((d) => 1 - (d - mean + (1 - sparsity)));
    // OWL centres the plain mean; layers of unequal size also need the weighted mean at p.
    const shift = sparsity - weightedMean(raw);
    result = raw.map((s) => s + shift);
  } else {
    const ratios = normalise(scores).map((x) => 1 - alphaEpsilon + x * 2 * alphaEpsilon);
    const scale = sparsity / weightedMean(ratios);
    result = ratios.map((ratio) => ratio * scale);
  }
  result.forEach((s, layer) => {
    if (!(s >= 0 && s < 1)) {
      const knob = profile === 'owl' ? 'owlLambda' : 'alphaEpsilon';
      throw new UsageError(`--sparsity-profile ${profile} at sparsity ${sparsity} would prune layer ${layer} by ${s.toFixed(4)}, outside [0, 1): lower ${knob}`);
    }
  });
  return result;
}

/** Whole zero counts per matrix by the cumulative floor rule (see the header); `sizes[l][k]` in role order. */
export function apportionZeros(sizes: readonly (readonly number[])[], layerSparsity: readonly number[], sparsity: number): number[][] {
  const total = sizes.flat().reduce((sum, n) => sum + n, 0);
  const budget = prunedCount(sparsity, total);
  let cumulative = 0;
  let assigned = 0;
  const last = sizes.length - 1;
  return sizes.map((matrices, layer) =>
    matrices.map((size, k) => {
      cumulative += layerSparsity[layer]! * size;
      const upTo = layer === last && k === matrices.length - 1 ? budget : Math.min(budget, Math.floor(cumulative * (1 + 1e-12)));
      const zeros = Math.max(0, Math.min(size, upTo - assigned));
      assigned += zeros;
      return zeros;
    }),
  );
}

/** The plan from every layer's dense-pass score. */
export function planBudgets(profile: BudgetProfileName, scores: readonly LayerScore[], roles: readonly string[], sparsity: number, options: MethodOptions): BudgetPlan {
  const params = scores.map((layer) => layer.sizes.reduce((sum, n) => sum + n, 0));
  const sparsities = layerSparsities(profile, scores.map((layer) => layer.score), params, sparsity, options);
  const zeros = apportionZeros(scores.map((layer) => layer.sizes), sparsities, sparsity);
  return {
    layers: scores.map((layer, l) => ({
      budget: { profile, score: layer.score, sparsity: sparsities[l]!, zeros: zeros[l]!.reduce((sum, z) => sum + z, 0), details: layer.details },
      zeros: Object.fromEntries(roles.map((role, k) => [role, zeros[l]![k]!])),
    })),
  };
}

/** One layer's score for the dense pass: OWL from the dense inputs' norms, AlphaPruning from the weights alone. */
export async function scoreLayer(profile: BudgetProfileName, block: Block, roles: readonly string[], stats: StatsByRole, options: MethodOptions, backend: Backend, name: (role: string) => string): Promise<LayerScore> {
  const sizes = roles.map((role) => block.linears[role]!.weight.length);
  if (profile === 'owl') {
    const { owlM } = profileOptions(options);
    const scores = roles.map((role) => {
      const { weight, outFeatures, inFeatures } = block.linears[role]!;
      return wandaScores(weight, outFeatures, inFeatures, requireSqNorm(stats.get(role) ?? { rows: 0 }, inFeatures, 'owl', name(role)));
    });
    return { score: outlierRatio(scores, owlM), sizes, details: {} };
  }
  const details: Record<string, number> = {};
  for (const role of roles) {
    const { weight, outFeatures, inFeatures } = block.linears[role]!;
    const { alpha } = hillAlpha(await gramEigenvalues(weight, outFeatures, inFeatures, backend));
    if (!Number.isFinite(alpha)) throw new UsageError(`${name(role)}: no power-law tail could be fitted to the spectrum of WᵀW (AlphaPruning)`);
    details[`alpha.${role}`] = alpha;
  }
  const alphas = Object.values(details);
  return { score: alphas.reduce((sum, a) => sum + a, 0) / alphas.length, sizes, details };
}
