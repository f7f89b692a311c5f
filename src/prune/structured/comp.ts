/**
 * COMP (seed 002; only the abstract is public), as interpreted in METHODS.md. Choices made where
 * the abstract is silent are marked "choice".
 *
 * 1. Coarse: whole decoder layers are ranked by 1 − mean_t cos(h_in,t, h_out,t) on the dense model
 *    and the least important are removed, for `layers` (default 0.25 — choice) of the target
 *    parameter ratio, rounded down to whole layers, never the last remaining layer.
 * 2. Fine: the rest of the budget is spread evenly over the remaining layers (choice: uniform, as
 *    the condition-metric scores are output errors in each layer's own units). Inside a layer the
 *    attention and the MLP lose the same share as in the other uniform methods. With A the inputs
 *    of down_proj / o_proj on the inputs the already-pruned earlier layers produce, and
 *    G = AᵀA + λI (λ = damp·mean diag, damp 0.01 — choice, as SparseGPT), an MLP channel j scores
 *    s_j = ‖W_:,j‖² / (G⁻¹)_jj: the output error left if j is removed and the other inputs are refit
 *    optimally. A kv group S scores the exact joint version tr(W_S [(G⁻¹)_SS]⁻¹ W_Sᵀ) (choice: the
 *    group's channels are removed together, so their joint error is the right measure).
 * 3. Mask tuning (tune=scales, default): per-kept-input scales by a |K|×|K| solve, with a bias for
 *    the means; tune=refit: the full least-squares refit of the kept columns; tune=none: FLAP's bias
 *    compensation only. See compensation.ts.
 */
import { biasCompensation, maskTuning, type TuningMode } from './compensation.js';
import { groupChannels, type Projection } from './geometry.js';
import type { Compensated, LayerContext, StructuredMethod } from './method.js';
import { columnSums } from './scores.js';

const TUNINGS = ['scales', 'refit', 'none'] as const;

const numberOption = (options: Readonly<Record<string, unknown>>, key: string, fallback: number) =>
  options[key] === undefined ? fallback : Number(options[key]);

/** (AᵀA + λI)⁻¹ in fp64 for one projection's input. */
async function dampedInverseGram(context: LayerContext, projection: Projection): Promise<Float64Array> {
  const stats = projection === 'o' ? context.attention : context.mlp;
  const d = context.projections[projection].inFeatures;
  const g = Float64Array.from(stats.gram!);
  let trace = 0;
  for (let i = 0; i < d; i++) trace += g[i * d + i]!;
  const damp = numberOption(context.options, 'damp', 0.01);
  for (let attempt = 0; ; attempt++) {
    const lambda = damp * 10 ** attempt * Math.max(trace / d, Number.MIN_VALUE);
    const a = g.slice();
    for (let i = 0; i < d; i++) a[i * d + i] += lambda;
    if (await context.backend.invertSpd(a, d)) return a;
    if (attempt >= 4) throw new Error('internal: damped Gram matrix is not positive definite');
  }
}

export const comp: StructuredMethod = {
  name: 'comp',
  description: 'COMP: layer removal by importance, condition-metric neuron pruning, mask tuning',
  addsBias: true,
  options: {
    layers: '0.25: share of the target removed as whole layers',
    damp: '0.01: dampening of the Gram matrix in the scores',
    tune: 'scales: mask tuning of the output projections (scales, refit or none)',
    tuneDamp: '1e-6: dampening of the tuning solve',
  },
  needs: () => ['gram'],
  allocation: () => 'uniform',
  layerShare: (options) => numberOption(options, 'layers', 0.25),
  invalidOptions(options) {
    const share = numberOption(options, 'layers', 0.25);
    if (!(share >= 0 && share <= 1)) return `layers (the share of the target removed as whole layers) must be in [0, 1], got ${String(options.layers)}`;
    const damp = numberOption(options, 'damp', 0.01);
    if (!(damp > 0)) return `damp must be a positive number, got ${String(options.damp)}`;
    const tuneDamp = numberOption(options, 'tuneDamp', 1e-6);
    if (!(tuneDamp >= 0)) return `tuneDamp must be ≥ 0, got ${String(options.tuneDamp)}`;
    const tune = String(options.tune ?? 'scales');
    if (!(TUNINGS as readonly string[]).includes(tune)) return `tune must be one of ${TUNINGS.join(', ')}, got "${tune}"`;
    return null;
  },
  async score(context) {
    const { geometry: g, projections, backend } = context;
    const down = projections.down;
    const downInverse = await dampedInverseGram(context, 'down');
    const columnEnergy = columnSums(down.weight, down.outFeatures, down.inFeatures, true);
    const channels = columnEnergy.map((e, j) => e / downInverse[j * g.channels + j]!);

    const o = projections.o;
    const d = o.inFeatures;
    const oInverse = await dampedInverseGram(context, 'o');
    const groups = new Float64Array(g.groups);
    for (let group = 0; group < g.groups; group++) {
      const s = groupChannels(g, group);
      const n = s.length;
      const block = new Float64Array(n * n);
      s.forEach((i, a) => s.forEach((j, b) => (block[a * n + b] = oInverse[i * d + j]!)));
      if (!(await backend.invertSpd(block, n))) throw new Error('internal: a principal block of an SPD inverse is not SPD');
      // W_S [(G⁻¹)_SS]⁻¹ W_Sᵀ, traced: Σ_rows w_S·B·w_Sᵀ.
      const ws = new Float64Array(o.outFeatures * n);
      for (let r = 0; r < o.outFeatures; r++) s.forEach((c, a) => (ws[r * n + a] = o.weight[r * d + c]!));
      const wsB = new Float64Array(o.outFeatures * n);
      await backend.gemm(ws, block, wsB, { m: o.outFeatures, n, k: n });
      let trace = 0;
      for (let i = 0; i < ws.length; i++) trace += ws[i]! * wsB[i]!;
      groups[group] = trace;
    }
    return { groups, channels };
  },
  async compensate(context, projection, kept): Promise<Compensated> {
    const lin = context.projections[projection];
    const stats = projection === 'o' ? context.attention : context.mlp;
    const tune = String(context.options.tune ?? 'scales');
    if (tune === 'none') {
      const { linear, biasNorm } = biasCompensation(lin, kept, stats);
      return { linear, report: { tuning: 'none', biasNorm } };
    }
    const { linear, report } = await maskTuning(context.backend, lin, kept, stats, tune as TuningMode, numberOption(context.options, 'tuneDamp', 1e-6));
    return { linear, report: { tuning: tune, ...report } };
  },
};
