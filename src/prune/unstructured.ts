/**
 * Unstructured and N:M pruning as a pipeline strategy: the statistics the method asks for on each
 * pruned linear layer's input, then the method on every selected weight of the block, and a meter
 * that measures each pruned matrix's relative output error ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² on the inputs
 * the pruned block actually sees, over the first `errorWindows` windows (two extra GEMMs per
 * matrix and window: on every window they would cost more than the forward pass itself).
 *
 * A method that needs no statistics (magnitude), with no refinement and no profile that reads
 * activations, makes the strategy data-free: the error meter is the only other reader of the
 * activations, and measuring it would cost every forward pass of the run, so the error is recorded
 * as not measured (null) and no calibration data is read.
 */
import type { CausalLM, InputObserver, Linear } from '../model/causal-lm.js';
import { UsageError } from '../util/errors.js';
import { planBudgets, profileOptions, scoreLayer, type BudgetPlan, type BudgetProfileName, type LayerScore, type SparsityProfile } from './budgets.js';
import { validateTarget } from './masks.js';
import type { SparsityTarget, StatKind, UnstructuredMethod } from './method.js';
import type { DensePass, MethodOptions, PruneStrategy } from './pipeline.js';
import type { MatrixReport } from './record.js';
import type { Refiner } from './refine.js';

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
  /** How the sparsity is spread over the layers (absent: uniform). */
  profile?: SparsityProfile;
  /** Mask refinement after the method (DSnoT), with the tokens per calibration window (its statistics' scale). */
  refine?: { refiner: Refiner; windowLength: number };
}

/** The roles pruned in block `layer` and the target they are pruned to. */
function blockPlan(request: Omit<UnstructuredRequest, 'errorWindows'>, layer: number): { roles: readonly string[]; target: SparsityTarget } {
  const sparsity = request.layerSparsity?.[layer];
  return {
    roles: request.layerRoles?.[layer] ?? request.roles,
    target: sparsity === undefined ? request.target : { kind: 'unstructured', sparsity },
  };
}

const nonUniform = (profile: SparsityProfile | undefined): boolean => profile !== undefined && profile.name !== 'uniform';

/** Whether the run reads no activations at all: no statistics for the method, a refiner or the profile. */
export function isDataFree(request: Omit<UnstructuredRequest, 'errorWindows'>): boolean {
  return request.method.needs.length === 0 && !request.refine && !(nonUniform(request.profile) && request.profile!.needsActivations);
}

/** Refuses impossible requests before any work: bad targets, widths N:M can't divide, unsupported combinations. */
export function validateUnstructured(model: CausalLM, request: Omit<UnstructuredRequest, 'errorWindows'>): void {
  const { method, target, methodOptions, roles, profile } = request;
  const refiner = request.refine?.refiner;
  validateTarget(target);
  if (request.layerSparsity && target.kind !== 'unstructured') throw new UsageError('per-layer sparsities are for unstructured targets, not N:M');
  if (request.layerSparsity && request.layerSparsity.length !== model.numLayers) {
    throw new UsageError(`${request.layerSparsity.length} per-layer sparsities given for a model of ${model.numLayers} layers`);
  }
  const options = { ...method.options, ...profile?.options, ...refiner?.options };
  const unknown = Object.keys(methodOptions).filter((key) => !Object.hasOwn(options, key));
  if (unknown.length > 0) {
    const accepted = Object.keys(options).length > 0 ? `it accepts ${Object.keys(options).join(', ')}` : 'it takes no options';
    const what = [method.name, ...(profile && profile.name !== 'uniform' ? [`--sparsity-profile ${profile.name}`] : []), ...(refiner ? [`--refine ${refiner.name}`] : [])].join(' with ');
    throw new UsageError(`${what} does not understand ${unknown.map((key) => `"${key}"`).join(', ')} (${accepted})`);
  }
  const reason = method.unsupported(target, methodOptions);
  if (reason) throw new UsageError(`${method.name}: ${reason}`);
  if (profile && profile.name !== 'uniform' && target.kind === 'nm') {
    throw new UsageError(`--sparsity-profile ${profile.name} needs --sparsity P: an N:M pattern fixes every layer's sparsity at N/M`);
  }
  const selectionVaries = request.layerRoles?.some((layerRoles) => layerRoles.join() !== roles.join()) ?? false;
  if (nonUniform(profile) && (request.layerSparsity || selectionVaries)) {
    throw new UsageError(`--sparsity-profile ${profile!.name} spreads one sparsity over the same matrices in every layer; it cannot be combined with per-layer sparsities or selections that differ per layer`);
  }
  profileOptions(methodOptions);
  refiner?.checkOptions(methodOptions);
  if (refiner && methodOptions.permute === true) {
    throw new UsageError(`--refine ${refiner.name} keeps N:M groups of consecutive inputs; it cannot follow permute's channel order`);
  }
  if (roles.length === 0) throw new UsageError('no linear layers selected for pruning');
  for (let layer = 0; layer < model.numLayers; layer++) {
    const planned = blockPlan(request, layer);
    validateTarget(planned.target);
    for (const role of planned.roles) {
      const [, cols] = model.source.shape(`${model.linearName(layer, role)}.weight`) as [number, number];
      validateTarget(planned.target, cols, model.linearName(layer, role));
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

/** The dense pass that scores every layer for a non-uniform profile and plans each matrix's zeros. */
function budgetPass(model: CausalLM, request: UnstructuredRequest, profile: SparsityProfile & { name: BudgetProfileName }): DensePass<BudgetPlan> {
  const { target, methodOptions, roles } = request;
  if (target.kind !== 'unstructured') throw new UsageError(`--sparsity-profile ${profile.name} needs --sparsity P`);
  const name = profile.name;
  return {
    ...(profile.needsActivations ? { statistics: { roles: new Set(roles), kinds: new Set<StatKind>(['sqNorm']) } } : {}),
    score: (layer, block, seen) => scoreLayer(name, block, roles, seen.stats, methodOptions, model.backend, (role) => model.linearName(layer, role)),
    plan: (results) => planBudgets(name, results as LayerScore[], roles, target.sparsity, methodOptions),
    advanceDense: false,
  };
}

export function unstructuredStrategy(model: CausalLM, request: UnstructuredRequest): PruneStrategy<BudgetPlan> {
  const { method, methodOptions, profile, refine } = request;
  const kinds = new Set([...method.needs, ...(refine?.refiner.needs ?? [])]);
  const dataFree = isDataFree(request);
  return {
    statistics: { roles: kinds.size > 0 ? new Set(request.roles) : new Set(), kinds },
    dataFree,
    ...(profile && profile.name !== 'uniform' ? { densePass: budgetPass(model, request, { ...profile, name: profile.name }) } : {}),

    async decide({ layer, dense, stats, plan }) {
      const { roles, target } = blockPlan(request, layer);
      const pruned = new Set(roles);
      const linears = { ...dense.linears };
      const matrices: MatrixReport[] = [];
      const budget = plan?.layers[layer];
      for (const role of roles) {
        const lin = dense.linears[role]!;
        const name = model.linearName(layer, role);
        const started = performance.now();
        const planned = budget?.zeros[role];
        const matrixTarget: SparsityTarget = planned === undefined ? target : { kind: 'unstructured', sparsity: planned / lin.weight.length, zeros: planned };
        const input = { name, rows: lin.outFeatures, cols: lin.inFeatures, stats: stats.get(role) ?? { rows: 0 }, target: matrixTarget, options: methodOptions };
        const result = await method.prune({ ...input, weight: lin.weight.slice(), backend: model.backend });
        if (refine) Object.assign(result.report, refine.refiner.refine({ ...input, dense: lin.weight, pruned: result.weight, windowLength: refine.windowLength }));
        // A new weight, so not the compressed form of the old one (Linear.sparse, Linear.storage).
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

      const report = { matrices, ...(budget ? { budget: budget.budget } : {}) };
      if (dataFree) return { block: { ...dense, linears }, report };
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
      return { block: { ...dense, linears }, report, meter: { on: 'pruned', windows: request.errorWindows, observe, finish } };
    },
  };
}
