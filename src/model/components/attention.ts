/**
 * Self-attention as every family here computes it, from the projected q, k and v on: per-head
 * q/k RMSNorm (Qwen3, Gemma 3), RoPE (when the model has it), the KV cache, and causal attention
 * with grouped-query sharing, an optional sliding window and score soft-capping.
 */
import type { BlockContext, Block } from '../families/family.js';
import { TopiaryError } from '../../util/errors.js';
import { columns, linear } from './linear.js';

export interface AttentionInputs {
  /** [rows, numHeads·headDim] */
  q: Float32Array;
  /** [rows, numKvHeads·headDim] */
  k: Float32Array;
  v: Float32Array;
  numHeads: number;
  numKvHeads: number;
  /** Per-head RMSNorm weights [headDim] applied to q and k before RoPE. */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
}

/** Attention output [rows, numHeads·headDim], in the context's scratch buffer 'attention'. */
export async function attend(ctx: BlockContext, inputs: AttentionInputs): Promise<Float32Array> {
  const { backend, config, rows, seqLen, pastLength, cache } = ctx;
  const { q, k, v, numHeads, numKvHeads } = inputs;
  const headDim = config.headDim;
  if (inputs.qNorm && inputs.kNorm) {
    if (config.norm.kind !== 'rms') throw new Error('q/k norm is an RMSNorm');
    await backend.rmsNorm(q, inputs.qNorm, config.norm.eps, q, config.norm.weightOffset);
    await backend.rmsNorm(k, inputs.kNorm, config.norm.eps, k, config.norm.weightOffset);
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
export async function separateProjectionAttention(ctx: BlockContext, block: Block, x: Float32Array, qkNorm?: { q: Float32Array; k: Float32Array }): Promise<Float32Array> {
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
  });
  await ctx.observe?.(['o'], out, ctx.rows, oProj.inFeatures);
  return linear(ctx, out, oProj, 'residual');
}

/**
 * Attention with one fused projection whose output columns are three blocks [q | k | v]
 * (Phi-3's qkv_proj: numHeads·headDim, then numKvHeads·headDim twice), then the output
 * projection. Pruned as stored, so the head counts are the config's. Per-head interleaved fused
 * layouts (GPT-NeoX) are not this one.
 */
export async function blockFusedAttention(ctx: BlockContext, block: Block, x: Float32Array, roles: { qkv: string; o: string }): Promise<Float32Array> {
  const qkvProj = block.linears[roles.qkv]!;
  const oProj = block.linears[roles.o]!;
  const { headDim, numHeads, numKvHeads } = ctx.config;
  const qWidth = numHeads * headDim;
  const kvWidth = numKvHeads * headDim;
  const width = qWidth + 2 * kvWidth;
  if (qkvProj.outFeatures !== width) {
    throw new TopiaryError(`layer ${ctx.layer}: the fused ${roles.qkv} projection has ${qkvProj.outFeatures} outputs, expected ${width} (${numHeads} query and 2 × ${numKvHeads} key/value heads of ${headDim})`);
  }
  await ctx.observe?.([roles.qkv], x, ctx.rows, qkvProj.inFeatures);
  const qkv = await linear(ctx, x, qkvProj, 'qkv');
  const out = await attend(ctx, {
    q: columns(ctx, qkv, width, 0, qWidth, 'q'),
    k: columns(ctx, qkv, width, qWidth, kvWidth, 'k'),
    v: columns(ctx, qkv, width, qWidth + kvWidth, kvWidth, 'v'),
    numHeads,
    numKvHeads,
  });
  await ctx.observe?.([roles.o], out, ctx.rows, oProj.inFeatures);
  return linear(ctx, out, oProj, 'residual');
}
