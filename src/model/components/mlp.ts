/** The two MLP shapes: gated (act(gate)·up → down: LLaMA, Gemma, Qwen, Phi-3 fused) and plain (act(up) → down: OPT, GPT-2, Phi, NeoX). */
import type { Activation } from '../../backend/backend.js';
import type { Block, BlockContext } from '../families/family.js';
import { TopiaryError } from '../../util/errors.js';
import { columns, linear } from './linear.js';

/** Roles 'gate', 'up', 'down': from the normed input x to the MLP's output (scratch 'residual'). */
export async function gatedMlp(ctx: BlockContext, block: Block, x: Float32Array, activation: Activation): Promise<Float32Array> {
  const { gate, up, down } = block.linears as Record<'gate' | 'up' | 'down', Block['linears'][string]>;
  await ctx.observe?.(['gate', 'up'], x, ctx.rows, gate.inFeatures);
  const gated = await linear(ctx, x, gate, 'gate');
  const upOut = await linear(ctx, x, up, 'up');
  await ctx.backend.gatedActivation(activation, gated, upOut, gated);
  await ctx.observe?.(['down'], gated, ctx.rows, down.inFeatures);
  return linear(ctx, gated, down, 'residual');
}

/**
 * A gated MLP whose gate and up projections are one fused linear with output columns [gate | up]
 * (Phi-3's gate_up_proj): act(gate)·up → down.
 */
export async function fusedGatedMlp(ctx: BlockContext, block: Block, x: Float32Array, activation: Activation, roles: { gateUp: string; down: string }): Promise<Float32Array> {
  const gateUp = block.linears[roles.gateUp]!;
  const down = block.linears[roles.down]!;
  await ctx.observe?.([roles.gateUp], x, ctx.rows, gateUp.inFeatures);
  const fused = await linear(ctx, x, gateUp, 'gate_up');
  const width = down.inFeatures;
  if (gateUp.outFeatures !== 2 * width) throw new TopiaryError(`layer ${ctx.layer}: the fused ${roles.gateUp} projection has ${gateUp.outFeatures} outputs, expected 2 × ${width} (gate and up)`);
  const gated = columns(ctx, fused, gateUp.outFeatures, 0, width, 'gate');
  await ctx.backend.gatedActivation(activation, gated, columns(ctx, fused, gateUp.outFeatures, width, width, 'up'), gated);
  await ctx.observe?.([roles.down], gated, ctx.rows, down.inFeatures);
  return linear(ctx, gated, down, 'residual');
}

/** Roles `up` then `down` (e.g. 'fc1', 'fc2'): act(x·upᵀ + b)·downᵀ + b. */
export async function plainMlp(ctx: BlockContext, block: Block, x: Float32Array, activation: Activation, roles: { up: string; down: string }): Promise<Float32Array> {
  const up = block.linears[roles.up]!;
  const down = block.linears[roles.down]!;
  await ctx.observe?.([roles.up], x, ctx.rows, up.inFeatures);
  const hidden = await linear(ctx, x, up, 'up');
  await ctx.backend.activation(activation, hidden, hidden);
  await ctx.observe?.([roles.down], hidden, ctx.rows, down.inFeatures);
  return linear(ctx, hidden, down, 'residual');
}
