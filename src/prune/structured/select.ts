/**
 * How many units each layer loses, and which. Every layer keeps at least one kv group and one MLP
 * channel (a layer with nothing left would need attention-free / MLP-free layers, which the
 * engine does not model; whole-layer removal is COMP's separate coarse stage).
 */
import { complement, linearParams, type KeptUnits, type LayerGeometry } from './geometry.js';
import type { UnitScores } from './method.js';

/** Indices of the `count` lowest scores (ties: lower index first). */
function lowest(scores: Float64Array, count: number): number[] {
  return [...scores.keys()].sort((a, b) => scores[a]! - scores[b]! || a - b).slice(0, count);
}

/**
 * Removes about `ratio` of the layer's projection weights: round(ratio·groups) kv groups (fewer if
 * they alone would exceed the budget), then MLP channels for the rest of the budget — FLAP's
 * uniform UL-UM split, with kv groups as the attention unit. Where kv groups are fixed, the MLP
 * channels carry the whole budget.
 */
export function selectUniform(g: LayerGeometry, scores: UnitScores, ratio: number): KeptUnits {
  const budget = ratio * linearParams(g);
  let groups = g.fixedGroups ? 0 : Math.min(g.groups - 1, Math.round(ratio * g.groups));
  while (groups > 0 && groups * g.groupParams > budget) groups--;
  const channels = Math.max(0, Math.min(g.channels - 1, Math.round((budget - groups * g.groupParams) / g.channelParams)));
  return {
    groups: complement(g.groups, lowest(scores.groups, groups)),
    channels: complement(g.channels, lowest(scores.channels, channels)),
  };
}

export interface LayerCandidates {
  layer: number;
  geometry: LayerGeometry;
  scores: UnitScores;
}

/**
 * FLAP's adaptive structure: all units of all layers in one ranking (their scores must compare
 * across layers), removed from the lowest up, each counting its parameters, until `targetParams`
 * are gone (stopping at whichever side of the target is nearer).
 */
export function selectGlobal(layers: readonly LayerCandidates[], targetParams: number): Map<number, KeptUnits> {
  const units = layers.flatMap(({ layer, geometry, scores }) => [
    ...(geometry.fixedGroups ? [] : [...scores.groups].map((score, index) => ({ layer, kind: 'group' as const, index, score, params: geometry.groupParams }))),
    ...[...scores.channels].map((score, index) => ({ layer, kind: 'channel' as const, index, score, params: geometry.channelParams })),
  ]);
  units.sort((a, b) => a.score - b.score || a.layer - b.layer || a.index - b.index);
  const removed = new Map(layers.map(({ layer }) => [layer, { groups: [] as number[], channels: [] as number[] }]));
  const sizes = new Map(layers.map(({ layer, geometry }) => [layer, geometry]));
  let total = 0;
  for (const unit of units) {
    if (total >= targetParams) break;
    const gone = removed.get(unit.layer)!;
    const g = sizes.get(unit.layer)!;
    const list = unit.kind === 'group' ? gone.groups : gone.channels;
    if (list.length + 1 >= (unit.kind === 'group' ? g.groups : g.channels)) continue;
    if (total + unit.params > targetParams && total + unit.params - targetParams > targetParams - total) break;
    list.push(unit.index);
    total += unit.params;
  }
  return new Map(
    layers.map(({ layer, geometry }) => {
      const gone = removed.get(layer)!;
      return [layer, { groups: complement(geometry.groups, gone.groups), channels: complement(geometry.channels, gone.channels) }];
    }),
  );
}
