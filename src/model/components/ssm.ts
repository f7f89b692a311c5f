/**
 * The selective state-space mixer of Mamba (Gu & Dao, 2023; transformers' MambaMixer), from the
 * normed input to the output projection, for pre-norm blocks that add it to the residual stream:
 *
 *   [x, z] = in_proj(u)                          (2·d_inner outputs: x first, then the gate z)
 *   x' = act(causal depthwise conv1d(x) + bias)  (kernel K per channel, config.activation: SiLU)
 *   [δ_raw, B, C] = x_proj(x')                   (dt_rank, d_state, d_state outputs, in that order)
 *   δ = softplus(dt_proj(δ_raw))                  (dt_proj carries a bias; softplus in the scan)
 *   y = selective scan(x', δ, A = −exp(A_log), B, C, D)
 *   out_proj(y ⊙ SiLU(z))
 *
 * Sizes come from the weights (d_inner from in_proj, d_state from A_log, K from conv1d, dt_rank
 * from dt_proj), so the config needs none of them. With a cache (generation) the conv history
 * (the last K − 1 inputs x) and the scan state of each layer carry over from call to call; without
 * one every window starts from zeros, as transformers' full-sequence path does.
 */
import { TopiaryError } from '../../util/errors.js';
import type { Block, BlockContext } from '../families/family.js';
import { columns, linear } from './linear.js';

/** Roles of the four linear layers, in forward order. */
export const SSM_ROLES = { input: 'in_proj', selection: 'x_proj', timeStep: 'dt_proj', output: 'out_proj' } as const;

/** Tensor names (under the mixer's prefix) of the dense parameters. */
export interface SsmTensorNames {
  convWeight: string;
  convBias: string;
  aLog: string;
  d: string;
}

/** The recurrent state one sequence carries per layer. */
interface SsmState {
  /** The inputs x of the last K − 1 positions [K − 1, d_inner], oldest first. */
  conv: Float32Array;
  /** The scan state [d_inner, d_state]. */
  scan: Float32Array;
}

/** A = −exp(A_log), computed once per block and kept beside its weights. */
const negativeA = new WeakMap<Float32Array, Float32Array>();

function aMatrix(aLog: Float32Array): Float32Array {
  let a = negativeA.get(aLog);
  if (!a) {
    a = aLog.map((value) => -Math.exp(value));
    negativeA.set(aLog, a);
  }
  return a;
}

/** The mixer's output [rows, hidden] (scratch 'residual') for the normed input u [rows, hidden]. */
export async function selectiveSsm(ctx: BlockContext, block: Block, u: Float32Array, names: SsmTensorNames): Promise<Float32Array> {
  const { backend, rows, seqLen, layer } = ctx;
  const inProj = block.linears[SSM_ROLES.input]!;
  const xProj = block.linears[SSM_ROLES.selection]!;
  const dtProj = block.linears[SSM_ROLES.timeStep]!;
  const outProj = block.linears[SSM_ROLES.output]!;
  const tensor = (name: string) => {
    const value = block.tensors[name];
    if (!value) throw new TopiaryError(`layer ${layer}: the weights lack "${name}"`);
    return value;
  };
  const aLog = tensor(names.aLog);
  const d = tensor(names.d);
  const convWeight = tensor(names.convWeight);
  const convBias = block.tensors[names.convBias];
  const inner = inProj.outFeatures / 2;
  const stateSize = aLog.length / inner;
  const kernel = convWeight.length / inner;
  const rank = dtProj.inFeatures;
  const consistent =
    Number.isInteger(inner) && Number.isInteger(stateSize) && Number.isInteger(kernel) && kernel >= 1 && d.length === inner && (convBias?.length ?? inner) === inner &&
    xProj.inFeatures === inner && xProj.outFeatures === rank + 2 * stateSize && dtProj.outFeatures === inner && outProj.inFeatures === inner;
  if (!consistent) {
    throw new TopiaryError(
      `layer ${layer}: Mamba shapes disagree (in_proj ${inProj.outFeatures} outputs, A_log ${aLog.length}, conv1d ${convWeight.length}, D ${d.length}, x_proj [${xProj.outFeatures}, ${xProj.inFeatures}], dt_proj [${dtProj.outFeatures}, ${rank}], out_proj [${outProj.outFeatures}, ${outProj.inFeatures}])`,
    );
  }
  const windows = rows / seqLen;
  const sequence = { windows, seqLen, channels: inner };

  await ctx.observe?.([SSM_ROLES.input], u, rows, inProj.inFeatures);
  const projected = await linear(ctx, u, inProj, 'ssm_in');
  const x = columns(ctx, projected, 2 * inner, 0, inner, 'ssm_x');
  const gate = columns(ctx, projected, 2 * inner, inner, inner, 'ssm_gate');

  const state = ctx.cache?.recurrentState<SsmState>(layer, () => ({ conv: new Float32Array((kernel - 1) * inner), scan: new Float32Array(inner * stateSize) }));
  const history = state?.conv ?? ctx.scratch('ssm_history', windows * (kernel - 1) * inner).fill(0);
  const convolved = ctx.scratch('ssm_conv', rows * inner);
  await backend.causalConv1d(x, convWeight, convBias, history, convolved, sequence);
  if (state) state.conv = lastInputs(history, x, kernel - 1, inner);
  await backend.activation(ctx.config.activation, convolved, convolved);

  await ctx.observe?.([SSM_ROLES.selection], convolved, rows, inner);
  const selection = await linear(ctx, convolved, xProj, 'ssm_selection');
  const width = xProj.outFeatures;
  const rawStep = columns(ctx, selection, width, 0, rank, 'ssm_dt_raw');
  const b = columns(ctx, selection, width, rank, stateSize, 'ssm_b');
  const c = columns(ctx, selection, width, rank + stateSize, stateSize, 'ssm_c');
  await ctx.observe?.([SSM_ROLES.timeStep], rawStep, rows, rank);
  const step = await linear(ctx, rawStep, dtProj, 'ssm_dt');

  const scanState = state?.scan ?? ctx.scratch('ssm_state', windows * inner * stateSize).fill(0);
  await backend.selectiveScan({ x: convolved, delta: step, a: aMatrix(aLog), b, cmat: c, d, state: scanState }, convolved, { ...sequence, stateSize });
  // The gate: y ⊙ SiLU(z), written over z.
  await backend.gatedActivation('silu', gate, convolved, gate);
  await ctx.observe?.([SSM_ROLES.output], gate, rows, inner);
  return linear(ctx, gate, outProj, 'residual');
}

/** The last `count` rows [count, width] of the rows of `history` followed by those of `x`. */
function lastInputs(history: Float32Array, x: Float32Array, count: number, width: number): Float32Array {
  const all = new Float32Array(history.length + x.length);
  all.set(history);
  all.set(x, history.length);
  return all.slice(all.length - count * width);
}
