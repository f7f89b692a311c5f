/**
 * wanda-sp, the structured Wanda baseline of the FLAP paper: an input channel j of o_proj or
 * down_proj scores Σ_i |W_ij|·‖X_j‖₂ (the sum of its column's Wanda scores); a kv group scores the
 * sum over its channels. Every layer loses the same share, each layer scored on the inputs of the
 * already-pruned layers before it (as the paper's code does); no compensation.
 */
import { selectColumns, type Projection } from './geometry.js';
import type { LayerContext, StructuredMethod } from './method.js';
import { columnSums, groupScores } from './scores.js';

/** Σ_i |W_ij|·‖X_j‖ per column of o_proj or down_proj. */
export function wandaColumnScores(context: LayerContext, projection: Projection): Float64Array {
  const lin = context.projections[projection];
  const sqNorm = (projection === 'o' ? context.attention : context.mlp).sqNorm!;
  return columnSums(lin.weight, lin.outFeatures, lin.inFeatures).map((s, j) => s * Math.sqrt(sqNorm[j]!));
}

export const wandaSp: StructuredMethod = {
  name: 'wanda-sp',
  description: 'structured Wanda: removes the kv groups and MLP channels with the smallest Σ|W|·‖X‖',
  addsBias: false,
  options: {},
  needs: () => ['sqNorm'],
  allocation: () => 'uniform',
  layerShare: () => 0,
  invalidOptions: () => null,
  async score(context) {
    return { groups: groupScores(context.geometry, wandaColumnScores(context, 'o'), 'sum'), channels: wandaColumnScores(context, 'down') };
  },
  async compensate({ projections }, projection, kept) {
    return { linear: selectColumns(projections[projection], kept), report: {} };
  },
};
