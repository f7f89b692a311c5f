/**
 * What a structured method can remove from one decoder block, and the slicing that removes it, for
 * every family alike: the family declares where its units live (`Family.structure`: separate or
 * fused q/k/v, gated, fused-gated or plain MLP), and this file turns that into rows and columns.
 *
 * Units: an attention unit is a whole kv group — one key/value head with every query head that
 * reads it (their q, k and v rows, wherever the family keeps them, and the output projection's
 * columns of the query heads). Removing whole groups keeps llama.cpp's and our q→kv mapping (query
 * head h reads kv head ⌊h / groupSize⌋) valid with the same group size in every layer; without GQA
 * a group is one head. An MLP unit is one intermediate channel (its row of gate and of up — the two
 * halves of a fused gate_up — or of a plain MLP's up, and its column of down). Biases follow their
 * rows; the output projections' biases belong to no unit.
 */
import type { Block, Linear } from '../../model/causal-lm.js';
import { blockSizes, type BlockStructure, type Family } from '../../model/families/family.js';
import { UsageError } from '../../util/errors.js';

export interface LayerGeometry {
  structure: BlockStructure;
  hidden: number;
  headDim: number;
  /** Query heads per kv head. */
  groupSize: number;
  groups: number;
  channels: number;
  /** Parameters (weights and biases) one kv group owns. */
  groupParams: number;
  /** Parameters one MLP channel owns: 3·hidden in a bias-free gated MLP, 2·hidden + 1 in a plain one with biases. */
  channelParams: number;
  /** No kv group may be removed (the family's config ties the attention width to the hidden size). */
  fixedGroups: boolean;
}

/** The output projections by the pipeline's names for them. */
export type Projection = 'o' | 'down';
export const PROJECTIONS: readonly Projection[] = ['o', 'down'];

/**
 * Where the family's heads and channels live: the refusal of structured pruning, before any work,
 * for a family whose blocks have neither (Mamba).
 */
export function structureOf(family: Family): BlockStructure {
  if (!family.structure) {
    throw new UsageError(`structured pruning removes attention heads and MLP channels; the ${family.name} family has neither (its linear layers: ${family.linears.map((spec) => spec.role).join(', ')})`);
  }
  return family.structure;
}

/** The family's role of the attention ('o') or MLP ('down') output projection. */
export function projectionRole(structure: BlockStructure, projection: Projection): string {
  return projection === 'o' ? structure.attention.output : structure.mlp.output;
}

/** Some rows of the linear layer with role `role`. */
export interface OwnedRows {
  role: string;
  rows: number[];
}

const range = (from: number, length: number) => Array.from({ length }, (_, i) => from + i);

/** The rows of the q/k/v projection(s) that kv group `group` owns. */
export function groupRows(g: LayerGeometry, group: number): OwnedRows[] {
  const inputs = g.structure.attention.inputs;
  const { headDim: hd } = g;
  const qWidth = g.groupSize * hd;
  if ('q' in inputs) {
    return [
      { role: inputs.q, rows: range(group * qWidth, qWidth) },
      { role: inputs.k, rows: range(group * hd, hd) },
      { role: inputs.v, rows: range(group * hd, hd) },
    ];
  }
  // Per head [q_h | k_h | v_h] (one kv head per query head, as the family's sizes check).
  if (inputs.layout === 'per-head') return [{ role: inputs.qkv, rows: range(group * 3 * hd, 3 * hd) }];
  const qRows = g.groups * qWidth;
  const kvRows = g.groups * hd;
  return [{ role: inputs.qkv, rows: [...range(group * qWidth, qWidth), ...range(qRows + group * hd, hd), ...range(qRows + kvRows + group * hd, hd)] }];
}

/** The rows of the MLP's input projection(s) that channel `channel` owns. */
export function channelRows(g: LayerGeometry, channel: number): OwnedRows[] {
  const inputs = g.structure.mlp.inputs;
  if ('gate' in inputs) return [{ role: inputs.gate, rows: [channel] }, { role: inputs.up, rows: [channel] }];
  if ('gateUp' in inputs) return [{ role: inputs.gateUp, rows: [channel, g.channels + channel] }];
  return [{ role: inputs.up, rows: [channel] }];
}

/**
 * A block's geometry from its linear layers' shapes ([out, in] by role) and which have biases;
 * `where` names the block for the internal error on shapes the model check should have refused.
 */
export function geometryOf(structure: BlockStructure, shape: (role: string) => readonly number[], hasBias: (role: string) => boolean, headDim: number, where: string): LayerGeometry {
  const sizes = blockSizes(structure, shape, headDim);
  if ('problem' in sizes) throw new Error(`internal: ${where}: ${sizes.problem}`);
  const hidden = shape(structure.mlp.output)[0]!;
  const base = {
    structure,
    hidden,
    headDim,
    groupSize: sizes.heads / sizes.kvHeads,
    groups: sizes.kvHeads,
    channels: sizes.channels,
    fixedGroups: structure.attention.fixedHeads !== undefined,
  };
  const owned = (rows: OwnedRows[]) => rows.reduce((sum, { role, rows: r }) => sum + r.length * (shape(role)[1]! + (hasBias(role) ? 1 : 0)), 0);
  const partial = { ...base, groupParams: 0, channelParams: 0 };
  return {
    ...base,
    // Plus the output projection's columns: the group's query heads', one channel's.
    groupParams: owned(groupRows(partial, 0)) + base.groupSize * headDim * hidden,
    channelParams: owned(channelRows(partial, 0)) + hidden,
  };
}

/** The geometry of a block in memory. */
export function layerGeometry(layer: Block, structure: BlockStructure, headDim: number): LayerGeometry {
  const linear = (role: string) => layer.linears[role]!;
  return geometryOf(structure, (role) => [linear(role).outFeatures, linear(role).inFeatures], (role) => linear(role).bias !== undefined, headDim, 'a block');
}

/** Parameters of the units a layer may lose: its kv groups (unless fixed) and MLP channels. */
export const linearParams = (g: LayerGeometry): number => (g.fixedGroups ? 0 : g.groups * g.groupParams) + g.channels * g.channelParams;

/** The output projection's input channels (= the query heads' features) of a kv group. */
export function groupChannels(g: LayerGeometry, group: number): number[] {
  const width = g.groupSize * g.headDim;
  return range(group * width, width);
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

/** The layer with only `kept` units; `outputs` (already restricted to the kept input columns) replaces the output projections. */
export function shrinkLayer(layer: Block, g: LayerGeometry, kept: KeptUnits, outputs: Record<Projection, Linear>): Block {
  const keptRows = new Map<string, number[]>();
  const owned = [...kept.groups.flatMap((group) => groupRows(g, group)), ...kept.channels.flatMap((channel) => channelRows(g, channel))];
  for (const { role, rows } of owned) keptRows.set(role, [...(keptRows.get(role) ?? []), ...rows]);
  const linears: Record<string, Linear> = { ...layer.linears };
  // Ascending rows keep a fused projection's layout: [q | k | v] blocks, per-head triples, [gate | up].
  for (const [role, rows] of keptRows) linears[role] = selectRows(layer.linears[role]!, rows.sort((a, b) => a - b));
  for (const projection of PROJECTIONS) linears[projectionRole(g.structure, projection)] = outputs[projection];
  return { tensors: layer.tensors, linears };
}

/** Indices 0..n-1 not in `removed`, ascending. */
export function complement(n: number, removed: Iterable<number>): number[] {
  const gone = new Set(removed);
  return Array.from({ length: n }, (_, i) => i).filter((i) => !gone.has(i));
}
