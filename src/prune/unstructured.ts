/**
 * Unstructured and N:M pruning as a pipeline strategy: the statistics the method asks for on each
 * pruned linear layer's input, then the method on every selected weight of the block, and a meter
 * that measures each pruned matrix's relative output error ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² on the inputs
 * the pruned block actually sees, over the first `errorWindows` windows (two extra GEMMs per
 * matrix and window: on every window they would cost more than the forward pass itself).
 *
 * A method that needs no statistics (magnitude) makes the strategy data-free: the error meter is
 * the only other reader of the activations, and measuring it would cost every forward pass of
 * the run, so the error is recorded as not measured (null) and no calibration data is read.
 */
import type { CausalLM, InputObserver, Linear } from '../model/causal-lm.js';
import { UsageError } from '../util/errors.js';
import { validateTarget } from './masks.js';
import type { SparsityTarget, UnstructuredMethod } from './method.js';
import type { MethodOptions, PruneStrategy } from './pipeline.js';
import type { MatrixReport } from './record.js';

export interface UnstructuredRequest {
  method: UnstructuredMethod;
  target: SparsityTarget;
  methodOptions: MethodOptions;
  /** Roles of the linear layers to prune in every block. */
  roles: readonly string[];
  /** Roles pruned in each block when --targets/--ignore select differently per block (each a subset of `roles`). */
  layerRoles?: readonly (readonly string[])[];
  /** Sparsity of each block (a recipe's per-layer list), instead of the target's one sparsity. */
  layerSparsity?: readonly number[];
  /** Windows on which each pruned matrix's output error is measured (the first ones). */
  errorWindows: number;
}

/** The roles pruned in block `layer` and the target they are pruned to. */
function blockPlan(request: Omit<UnstructuredRequest, 'errorWindows'>, layer: number): { roles: readonly string[]; target: SparsityTarget } {
  const sparsity = request.layerSparsity?.[layer];
  return {
    roles: request.layerRoles?.[layer] ?? request.roles,
    target: sparsity === undefined ? request.target : { kind: 'unstructured', sparsity },
  };
}

/** Refuses impossible requests before any work: bad targets, widths N:M can't divide, unsupported combinations. */
export function validateUnstructured(model: CausalLM, request: Omit<UnstructuredRequest, 'errorWindows'>): void {
  const { method, target, methodOptions, roles } = request;
  validateTarget(target);
  if (request.layerSparsity && target.kind !== 'unstructured') throw new UsageError('per-layer sparsities are for unstructured targets, not N:M');
  if (request.layerSparsity && request.layerSparsity.length !== model.numLayers) {
    throw new UsageError(`${request.layerSparsity.length} per-layer sparsities given for a model of ${model.numLayers} layers`);
  }
  const unknown = Object.keys(methodOptions).filter((key) => !Object.hasOwn(method.options, key));
  if (unknown.length > 0) {
    const accepted = Object.keys(method.options).length > 0 ? `it accepts ${Object.keys(method.options).join(', ')}` : 'it takes no options';
    throw new UsageError(`${method.name} does not understand ${unknown.map((key) => `"${key}"`).join(', ')} (${accepted})`);
  }
  const reason = method.unsupported(target, methodOptions);
  if (reason) throw new UsageError(`${method.name}: ${reason}`);
  if (roles.length === 0) throw new UsageError('no linear layers selected for pruning');
  for (let layer = 0; layer < model.numLayers; layer++) {
    const plan = blockPlan(request, layer);
    validateTarget(plan.target);
    for (const role of plan.roles) {
      const [, cols] = model.source.shape(`${model.linearName(layer, role)}.weight`) as [number, number];
      validateTarget(plan.target, cols, model.linearName(layer, role));
    }
  }
}

/** Squared Frobenius norm of x·wᵀ over the rows of x, by GEMM. */
async function outputEnergy(model: CausalLM, x: Float32Array, rows: number, weight: Float32Array, lin: Linear): Promise<number> {
  const y = new Float32Array(rows * lin.outFeatures);
  await model.backend.gemm(x, weight, y, { m: rows, n: lin.outFeatures, k: lin.inFeatures, transB: true });
  let sum = 0;
  for (let i = 0; i < y.length; i++) sum += y[i]! * y[i]!;
  return sum;
}

function subtract(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! - b[i]!;
  return out;
}

export function unstructuredStrategy(model: CausalLM, request: UnstructuredRequest): PruneStrategy {
  const { method, methodOptions } = request;
  const dataFree = method.needs.length === 0;
  return {
    statistics: { roles: dataFree ? new Set() : new Set(request.roles), kinds: new Set(method.needs) },
    dataFree,

    async decide({ layer, dense, stats }) {
      const { roles, target } = blockPlan(request, layer);
      const pruned = new Set(roles);
      const linears = { ...dense.linears };
      const matrices: MatrixReport[] = [];
      for (const role of roles) {
        const lin = dense.linears[role]!;
        const name = model.linearName(layer, role);
        const started = performance.now();
        const result = await method.prune({
          name,
          weight: lin.weight.slice(),
          rows: lin.outFeatures,
          cols: lin.inFeatures,
          stats: stats.get(role) ?? { rows: 0 },
          target,
          backend: model.backend,
          options: methodOptions,
        });
        // A new weight, so not the compressed form of the old one (Linear.sparse).
        linears[role] = { weight: result.weight, outFeatures: lin.outFeatures, inFeatures: lin.inFeatures, ...(lin.bias ? { bias: lin.bias } : {}) };
        let zeros = 0;
        for (const value of result.weight) if (value === 0) zeros++;
        matrices.push({
          name,
          role,
          rows: lin.outFeatures,
          cols: lin.inFeatures,
          sparsity: zeros / result.weight.length,
          relativeError: dataFree ? null : 0,
          seconds: (performance.now() - started) / 1000,
          method: result.report,
        });
      }

      if (dataFree) return { block: { ...dense, linears }, report: { matrices } };
      const errorEnergy = new Map<string, number>();
      const denseEnergy = new Map<string, number>();
      const observe: InputObserver = async (group, input, rows) => {
        for (const role of group) {
          if (!pruned.has(role)) continue;
          const lin = dense.linears[role]!;
          const delta = subtract(lin.weight, linears[role]!.weight);
          errorEnergy.set(role, (errorEnergy.get(role) ?? 0) + (await outputEnergy(model, input, rows, delta, lin)));
          denseEnergy.set(role, (denseEnergy.get(role) ?? 0) + (await outputEnergy(model, input, rows, lin.weight, lin)));
        }
      };
      const finish = () => {
        for (const matrix of matrices) matrix.relativeError = errorEnergy.get(matrix.role)! / Math.max(denseEnergy.get(matrix.role)!, Number.MIN_VALUE);
      };
      return { block: { ...dense, linears }, report: { matrices }, meter: { on: 'pruned', windows: request.errorWindows, observe, finish } };
    },
  };
}
