import type { BlockContext, Linear } from '../families/family.js';

/** y = x·Wᵀ + b for x [rows, in], into the context's scratch buffer for `purpose`; W compressed if the layer has it so. */
export async function linear(ctx: BlockContext, x: Float32Array, lin: Linear, purpose: string): Promise<Float32Array> {
  const y = ctx.scratch(purpose, ctx.rows * lin.outFeatures);
  if (lin.sparse) await ctx.backend.sparseMatmul(x, lin.sparse, y, ctx.rows);
  else await ctx.backend.gemm(x, lin.weight, y, { m: ctx.rows, n: lin.outFeatures, k: lin.inFeatures, transB: true });
  if (lin.bias) await ctx.backend.addBias(y, lin.bias);
  return y;
}

/** Columns [from, from + width) of x [rows, cols], packed (splitting a fused projection's output). */
export function columns(ctx: BlockContext, x: Float32Array, cols: number, from: number, width: number, purpose: string): Float32Array {
  const out = ctx.scratch(purpose, ctx.rows * width);
  for (let r = 0; r < ctx.rows; r++) out.set(x.subarray(r * cols + from, r * cols + from + width), r * width);
  return out;
}
