/**
 * What a structured method can remove from one decoder layer, and the slicing that removes it.
 *
 * Units: an attention unit is a whole kv group — one key/value head with every query head that
 * reads it (the q rows and o columns of those query heads, the k and v rows of the kv head). Removing
 * whole groups keeps llama.cpp's and our q→kv mapping (query head h reads kv head ⌊h / groupSize⌋)
 * valid with the same group size in every layer; for models without GQA a group is one head. An MLP
 * unit is one intermediate channel (a row of gate and up, a column of down).
 */
import type { Block, Linear } from '../../model/causal-lm.js';

export interface LayerGeometry {
  hidden: number;
  headDim: number;
  /** Query heads per kv head. */
  groupSize: number;
  groups: number;
  channels: number;
}

/**
 * The linear layers structured pruning slices: separate q, k, v, o projections and a gated MLP.
 * Families with fused projections (GPT-2, GPT-NeoX, Phi-3) or a plain MLP are refused before any work.
 */
export const STRUCTURED_ROLES = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;

export function layerGeometry(layer: Block, headDim: number): LayerGeometry {
  const { q, k, gate } = layer.linears as Record<'q' | 'k' | 'gate', Linear>;
  const groups = k.outFeatures / headDim;
  return { hidden: q.inFeatures, headDim, groupSize: q.outFeatures / headDim / groups, groups, channels: gate.outFeatures };
}

/** Weights of one kv group: q rows + o columns of its query heads, k and v rows of its kv head. */
export const groupParams = (g: LayerGeometry): number => (2 * g.groupSize + 2) * g.headDim * g.hidden;
/** Weights of one MLP channel: a row of gate and of up, a column of down. */
export const channelParams = (g: LayerGeometry): number => 3 * g.hidden;
export const linearParams = (g: LayerGeometry): number => g.groups * groupParams(g) + g.channels * channelParams(g);

/** The o_proj input channels (= q rows) of a kv group. */
export function groupChannels(g: LayerGeometry, group: number): number[] {
  const width = g.groupSize * g.headDim;
  return Array.from({ length: width }, (_, i) => group * width + i);
}

/** The columns of the attention output (o_proj inputs) kept when `keptGroups` remain. */
export function keptAttentionChannels(g: LayerGeometry, keptGroups: readonly number[]): number[] {
  return keptGroups.flatMap((group) => groupChannels(g, group));
}

export function selectRows(lin: Linear, rows: readonly number[]): Linear {
  const cols = lin.inFeatures;
  const weight = new Float32Array(rows.length * cols);
  rows.forEach((r, i) => weight.set(lin.weight.subarray(r * cols, (r + 1) * cols), i * cols));
  return {
    weight,
    outFeatures: rows.length,
    inFeatures: cols,
    ...(lin.bias ? { bias: Float32Array.from(rows, (r) => lin.bias![r]!) } : {}),
  };
}

export function selectColumns(lin: Linear, cols: readonly number[]): Linear {
  const rows = lin.outFeatures;
  const weight = new Float32Array(rows * cols.length);
  for (let r = 0; r < rows; r++) {
    const from = r * lin.inFeatures;
    const to = r * cols.length;
    cols.forEach((c, i) => (weight[to + i] = lin.weight[from + c]!));
  }
  return { weight, outFeatures: rows, inFeatures: cols.length, ...(lin.bias ? { bias: lin.bias } : {}) };
}

/** Which units of a layer stay (sorted ascending). */
export interface KeptUnits {
  groups: number[];
  channels: number[];
}

/** The output projections after compensation (already restricted to the kept input columns). */
export interface CompensatedOutputs {
  o: Linear;
  down: Linear;
}

/** The layer with only `kept` units; `outputs` replaces o_proj and down_proj. */
export function shrinkLayer(layer: Block, g: LayerGeometry, kept: KeptUnits, outputs: CompensatedOutputs): Block {
  const qRows = keptAttentionChannels(g, kept.groups);
  const kvRows = kept.groups.flatMap((group) => Array.from({ length: g.headDim }, (_, i) => group * g.headDim + i));
  const { q, k, v, gate, up } = layer.linears as Record<'q' | 'k' | 'v' | 'gate' | 'up', Linear>;
  return {
    tensors: layer.tensors,
    linears: {
      q: selectRows(q, qRows),
      k: selectRows(k, kvRows),
      v: selectRows(v, kvRows),
      o: outputs.o,
      gate: selectRows(gate, kept.channels),
      up: selectRows(up, kept.channels),
      down: outputs.down,
    },
  };
}

/** Indices 0..n-1 not in `removed`, ascending. */
export function complement(n: number, removed: Iterable<number>): number[] {
  const gone = new Set(removed);
  return Array.from({ length: n }, (_, i) => i).filter((i) => !gone.has(i));
}
