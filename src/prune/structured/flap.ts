/**
 * FLAP (An et al., AAAI 2024): fluctuation-based scores, standardised per layer and module so that
 * all layers compete in one ranking (adaptive structure), and bias compensation.
 *
 * Metrics for an input channel j of o_proj / down_proj, with X_j its calibration activations:
 * - wifv (default): Var(X_j) · ‖W_:,j‖²;   - ifv: Var(X_j);   - wifn: mean_i |W_ij| · ‖X_j‖₂.
 * As in the authors' code, channel scores are standardised within each layer and module, then a kv
 * group takes the mean of its channels' standardised scores. structure=al-am (default) removes the
 * lowest units of the whole model, each weighted by its parameter count, until the target is met;
 * ul-um removes the same share from every layer. The statistics come from one pass of the dense
 * model (as in the authors' code), and each removed channel's mean is folded into the bias.
 * Variance is the unbiased sample variance over all calibration tokens.
 */
import { biasCompensation } from './compensation.js';
import type { Projection } from './geometry.js';
import type { LayerContext, StructuredMethod } from './method.js';
import { columnSums, groupScores, standardize } from './scores.js';

const METRICS = ['wifv', 'ifv', 'wifn'] as const;
const STRUCTURES = ['al-am', 'ul-um'] as const;

function channelMetric(context: LayerContext, projection: Projection, metric: string): Float64Array {
  const lin = context.projections[projection];
  const stats = projection === 'o' ? context.attention : context.mlp;
  const n = stats.rows;
  const sum = stats.sum!;
  const sqNorm = stats.sqNorm!;
  const variance = (j: number) => Math.max(0, (sqNorm[j]! - (sum[j]! * sum[j]!) / n) / Math.max(1, n - 1));
  switch (metric) {
    case 'ifv':
      return Float64Array.from({ length: lin.inFeatures }, (_, j) => variance(j));
    case 'wifn':
      return columnSums(lin.weight, lin.outFeatures, lin.inFeatures).map((s, j) => (s / lin.outFeatures) * Math.sqrt(sqNorm[j]!));
    default: {
      const squares = columnSums(lin.weight, lin.outFeatures, lin.inFeatures, true);
      return squares.map((s, j) => s * variance(j));
    }
  }
}

const option = (options: Readonly<Record<string, unknown>>, key: string, fallback: string) => String(options[key] ?? fallback).toLowerCase();

export const flap: StructuredMethod = {
  name: 'flap',
  description: 'FLAP: fluctuation metric, adaptive global structure, bias compensation',
  addsBias: true,
  options: {
    metric: 'wifv: channel score (wifv, ifv or wifn)',
    structure: 'al-am: adaptive global structure (al-am) or uniform per layer (ul-um)',
  },
  needs: () => [],
  allocation: (options) => (option(options, 'structure', 'al-am') === 'ul-um' ? 'uniform' : 'global'),
  uniformOption: 'structure=ul-um',
  layerShare: () => 0,
  invalidOptions(options) {
    const metric = option(options, 'metric', 'wifv');
    const structure = option(options, 'structure', 'al-am');
    if (!(METRICS as readonly string[]).includes(metric)) return `metric must be one of ${METRICS.join(', ')}, got "${metric}"`;
    if (!(STRUCTURES as readonly string[]).includes(structure)) return `structure must be one of ${STRUCTURES.join(', ')}, got "${structure}"`;
    return null;
  },
  async score(context) {
    const metric = option(context.options, 'metric', 'wifv');
    const attention = standardize(channelMetric(context, 'o', metric));
    return { groups: groupScores(context.geometry, attention, 'mean'), channels: standardize(channelMetric(context, 'down', metric)) };
  },
  async compensate(context, projection, kept) {
    const stats = projection === 'o' ? context.attention : context.mlp;
    const { linear, biasNorm } = biasCompensation(context.projections[projection], kept, stats);
    return { linear, report: { biasNorm } };
  },
};
