/**
 * Self-attention as every family here computes it, from the projected q, k and v on: per-head
 * q/k norm (Qwen3 and Gemma 3 RMSNorm, Phi LayerNorm), RoPE (when the model has it), the KV
 * cache, and causal attention with grouped-query sharing, an optional sliding window and score
 * soft-capping.
 */
import type { BlockContext, Block } from '../families/family.js';
import { TopiaryError } from '../../util/errors.js';
import { linear } from './linear.js';
import { norm } from './norm.js';

export interface AttentionInputs {
  /** [rows, numHeads·headDim] */
  q: Float32Array;
  /** [rows, numKvHeads·headDim] */
  k: Float32Array;
  v: Float32Array;
  numHeads: number;
  numKvHeads: number;
  /** Per-head norm weights [headDim] applied to q and k before RoPE (the model's norm kind). */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  /** Their biases, for LayerNorm. */
  qNormBias?: Float32Array;
  kNormBias?: Float32Array;
}

/** Attention output [rows, numHeads·headDim], in the context's scratch buffer 'attention'. */
export async function attend(ctx: BlockContext, inputs: AttentionInputs): Promise<Float32Array> {
  const { backend, config, rows, seqLen, pastLength, cache } = ctx;
  const { q, k, v, numHeads, numKvHeads } = inputs;
  const headDim = config.headDim;
  if (inputs.qNorm && inputs.kNorm) {
    await norm(backend, config.norm, inputs.qNorm, inputs.qNormBias, q, q);
    await norm(backend, config.norm, inputs.kNorm, inputs.kNormBias, k, k);
  }
  if (config.rope && ctx.rope) {
    const common = { rows, headDim, rotaryDim: config.rope.rotaryDim, seqLen, firstPosition: pastLength, layout: config.rope.layout };
    await backend.rope(q, ctx.rope.cos, ctx.rope.sin, { ...common, heads: numHeads });
    await backend.rope(k, ctx.rope.cos, ctx.rope.sin, { ...common, heads: numKvHeads });
  }
  const width = numKvHeads * headDim;
  const { keys, values } = cache ? cache.append(ctx.layer, k, v, rows, width) : { keys: k, values: v };
  const out = ctx.scratch('attention', rows * numHeads * headDim);
  const sliding = config.attention.layerTypes?.[ctx.layer] === 'sliding' ? config.attention.slidingWindow : undefined;
  await backend.causalAttention(q, keys, values, out, {
    windows: rows / seqLen,
    seqLen,
    pastLength,
    numHeads,
    numKvHeads,
    headDim,
    scale: config.attention.scale,
    ...(sliding !== undefined ? { slidingWindow: sliding } : {}),
    ...(config.attention.softCap !== undefined ? { softCap: config.attention.softCap } : {}),
  });
  return out;
}

/**
 * Attention with separate q, k, v and o projections (roles 'q', 'k', 'v', 'o'), from the normed
 * input x [rows, hidden] to the output projection's result [rows, hidden] (scratch 'residual').
 * Head counts come from the weights, so structurally pruned layers need nothing special.
 */
export async function separateProjectionAttention(ctx: BlockContext, block: Block, x: Float32Array, qkNorm?: { q: Float32Array; k: Float32Array; qBias?: Float32Array; kBias?: Float32Array }): Promise<Float32Array> {
  const { q: qProj, k: kProj, v: vProj, o: oProj } = block.linears as Record<'q' | 'k' | 'v' | 'o', Block['linears'][string]>;
  await ctx.observe?.(['q', 'k', 'v'], x, ctx.rows, qProj.inFeatures);
  const q = await linear(ctx, x, qProj, 'q');
  const k = await linear(ctx, x, kProj, 'k');
  const v = await linear(ctx, x, vProj, 'v');
  const headDim = ctx.config.headDim;
  const out = await attend(ctx, {
    q,
    k,
    v,
    numHeads: qProj.outFeatures / headDim,
    numKvHeads: kProj.outFeatures / headDim,
    ...(qkNorm ? { qNorm: qkNorm.q, kNorm: qkNorm.k } : {}),
    ...(qkNorm?.qBias && qkNorm.kBias ? { qNormBias: qkNorm.qBias, kNormBias: qkNorm.kBias } : {}),
  });
  await ctx.observe?.(['o'], out, ctx.rows, oProj.inFeatures);
  return linear(ctx, out, oProj, 'residual');
}

/**
 * Unpacks a fused projection's output [rows, (heads + 2·kvHeads)·headDim] into q [rows,
 * heads·headDim], k and v [rows, kvHeads·headDim].
 */
export type FusedQkvSplit = (qkv: Float32Array, heads: number, kvHeads: number) => { q: Float32Array; k: Float32Array; v: Float32Array };

/**
 * Attention with one fused q/k/v projection (GPT-2's c_attn, GPT-NeoX's query_key_value, Phi-3's
 * qkv_proj), pruned as stored, and an output projection: from the normed input x
 * [rows, hidden] to the output projection's result (scratch 'residual'). `split` knows how the
 * family lays out the fused rows.
 */
export async function fusedProjectionAttention(ctx: BlockContext, block: Block, x: Float32Array, roles: { qkv: string; output: string }, split: FusedQkvSplit): Promise<Float32Array> {
  const qkvProj = block.linears[roles.qkv]!;
  const outProj = block.linears[roles.output]!;
  // Head counts from the projection, in the config's proportion of query to key/value heads.
  const { headDim, numHeads, numKvHeads } = ctx.config;
  const group = numHeads / numKvHeads;
  const kvHeads = qkvProj.outFeatures / ((group + 2) * headDim);
  if (!Number.isInteger(kvHeads)) {
    const proportion = group > 1 ? ` (${group} query heads per key/value head)` : '';
    throw new TopiaryError(`layer ${ctx.layer}: the fused ${roles.qkv} projection has ${qkvProj.outFeatures} outputs, not three sets of whole heads of ${headDim}${proportion}`);
  }
  const heads = kvHeads * group;
  await ctx.observe?.([roles.qkv], x, ctx.rows, qkvProj.inFeatures);
  const qkv = await linear(ctx, x, qkvProj, 'qkv');
  const out = await attend(ctx, { ...split(qkv, heads, kvHeads), numHeads: heads, numKvHeads: kvHeads });
  await ctx.observe?.([roles.output], out, ctx.rows, outProj.inFeatures);
  return linear(ctx, out, outProj, 'residual');
}
