/**
 * Structured pruning as a pipeline strategy, for every family (the family declares its units, see
 * geometry.ts). Per block, statistics are gathered on the inputs of the attention's and the MLP's
 * output projections ('o' and 'down' here, whatever the family calls them), the method scores the
 * block's units, the strategy decides how many go, slices them out, and the method compensates the
 * output projections.
 *
 * Three schedules (the method's `allocation` and `layerShare`):
 * - global (FLAP AL-AM): a pass over the dense model gathers every block's statistics and scores;
 *   all units then compete for the budget; the pruning pass measures each block's output error on
 *   the dense activations (every block is scored and measured on the dense model).
 * - uniform (UL-UM, wanda-sp, magnitude-sp): each block is scored on the inputs produced by the
 *   already-pruned blocks before it and loses the same share.
 * - layer removal first (COMP): a dense pass ranks whole blocks by 1 − cos(h_in, h_out); the least
 *   important go whole, and the rest are pruned uniformly to meet the remaining budget.
 *
 * For every pruned output projection the error ‖Y − Ŷ‖² / ‖Y‖² on the block's calibration inputs
 * is measured three ways: columns dropped with no compensation, with FLAP's bias compensation, and
 * as the method left it — the evidence that compensation helps. A data-free method (magnitude-sp)
 * measures nothing: the errors would cost every forward pass of the run.
 */
import type { Block, CausalLM, Linear } from '../../model/causal-lm.js';
import type { LinearStats, StatKind } from '../method.js';
import type { BlockDecision, BlockMeter, MethodOptions, PruneStrategy, StatRequest } from '../pipeline.js';
import type { MatrixReport, StructureReport } from '../record.js';
import { biasCompensation } from './compensation.js';
import {
  geometryOf,
  keptAttentionChannels,
  layerGeometry,
  linearParams,
  projectionRole,
  PROJECTIONS,
  selectColumns,
  shrinkLayer,
  structureOf,
  type KeptUnits,
  type LayerGeometry,
  type Projection,
} from './geometry.js';
import type { Compensated, LayerContext, StructuredMethod, UnitScores } from './method.js';
import { selectGlobal, selectUniform } from './select.js';

/** Every parameter of block `layer` as stored in the source (no weights read). */
function sourceBlockParams(model: CausalLM, layer: number): number {
  const prefix = model.family.layerPrefix(layer);
  return model.source
    .tensorNames()
    .filter((name) => name.startsWith(prefix))
    .reduce((sum, name) => sum + model.source.shape(name).reduce((a, b) => a * b, 1), 0);
}

/** A block's geometry from the source's tensor shapes (no weights read). */
export function sourceGeometry(model: CausalLM, layer: number): LayerGeometry {
  const name = (role: string) => model.linearName(layer, role);
  return geometryOf(structureOf(model.family), (role) => model.source.shape(`${name(role)}.weight`), (role) => model.source.has(`${name(role)}.bias`), model.config.headDim, `layer ${layer}`);
}

function gatherColumns(x: Float32Array, rows: number, cols: number, kept: readonly number[]): Float32Array {
  const out = new Float32Array(rows * kept.length);
  for (let r = 0; r < rows; r++) kept.forEach((c, i) => (out[r * kept.length + i] = x[r * cols + c]!));
  return out;
}

/** Accumulates ‖Y − Ŷ‖² for several variants of one projection, and ‖Y‖². */
class ErrorMeter {
  dense = 0;
  readonly errors: number[];
  constructor(
    private readonly lin: Linear,
    private readonly kept: readonly number[],
    private readonly variants: readonly Linear[],
  ) {
    this.errors = variants.map(() => 0);
  }

  async add(model: CausalLM, x: Float32Array, rows: number): Promise<void> {
    const { lin } = this;
    const y = new Float32Array(rows * lin.outFeatures);
    await model.backend.gemm(x, lin.weight, y, { m: rows, n: lin.outFeatures, k: lin.inFeatures, transB: true });
    for (const v of y) this.dense += v * v;
    const xk = gatherColumns(x, rows, lin.inFeatures, this.kept);
    const approx = new Float32Array(rows * lin.outFeatures);
    for (const [i, variant] of this.variants.entries()) {
      await model.backend.gemm(xk, variant.weight, approx, { m: rows, n: lin.outFeatures, k: this.kept.length, transB: true });
      let error = 0;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < lin.outFeatures; c++) {
          const diff = y[r * lin.outFeatures + c]! - approx[r * lin.outFeatures + c]! - (variant.bias?.[c] ?? 0) + (lin.bias?.[c] ?? 0);
          error += diff * diff;
        }
      }
      this.errors[i] += error;
    }
  }

  relative(): number[] {
    return this.errors.map((e) => e / Math.max(this.dense, Number.MIN_VALUE));
  }
}

/** The statistics of one block's two output-projection inputs. */
interface BlockStats {
  attention: LinearStats;
  mlp: LinearStats;
}

type Plan =
  | { kind: 'global'; candidates: { stats: BlockStats; scores: UnitScores }[]; selection: Map<number, KeptUnits> }
  | { kind: 'uniform'; dropped: ReadonlySet<number>; importance: number[]; layerRatio: number };

export function structuredStrategy(model: CausalLM, method: StructuredMethod, ratio: number, options: MethodOptions): PruneStrategy<Plan> {
  const numLayers = model.numLayers;
  const kinds = new Set<StatKind>(['moments', ...method.needs(options)]);
  const structure = structureOf(model.family);
  const roleOf = (projection: Projection) => projectionRole(structure, projection);
  const outputInputs: StatRequest = { roles: new Set(PROJECTIONS.map(roleOf)), kinds };
  const paramsPerLayer = Array.from({ length: numLayers }, (_, layer) => sourceBlockParams(model, layer));
  const paramsBefore = paramsPerLayer.reduce((a, b) => a + b, 0);
  const dataFree = method.dataFree === true;
  if (dataFree && (method.allocation(options) !== 'uniform' || method.layerShare(options) !== 0)) throw new Error(`internal: ${method.name} is data-free but plans over the dense model`);
  const noStats: LinearStats = { rows: 0 };
  const blockStats = (stats: ReadonlyMap<string, LinearStats>): BlockStats => ({ attention: stats.get(roleOf('o')) ?? noStats, mlp: stats.get(roleOf('down')) ?? noStats });

  const contextFor = (layer: number, dense: Block, stats: BlockStats): LayerContext => ({
    layer,
    weights: dense,
    projections: { o: dense.linears[roleOf('o')]!, down: dense.linears[roleOf('down')]! },
    geometry: layerGeometry(dense, structure, model.config.headDim),
    ...stats,
    backend: model.backend,
    options,
  });

  /** Slices and compensates one block; its meter measures the three errors of both output projections on the dense block's inputs. */
  const shrink = async (context: LayerContext, scores: UnitScores, kept: KeptUnits): Promise<BlockDecision> => {
    const { weights: dense, projections, geometry: g } = context;
    const keptColumns = { o: keptAttentionChannels(g, kept.groups), down: kept.channels };
    const outputs = {} as Record<Projection, Linear>;
    const compensation: Record<string, Compensated['report']> = {};
    const meters = {} as Record<Projection, ErrorMeter>;
    for (const projection of PROJECTIONS) {
      const lin = projections[projection];
      const cols = keptColumns[projection];
      if (cols.length === lin.inFeatures) {
        outputs[projection] = lin;
      } else {
        const result = await method.compensate(context, projection, cols);
        outputs[projection] = result.linear;
        compensation[projection] = result.report;
      }
      const stats = projection === 'o' ? context.attention : context.mlp;
      if (!dataFree) meters[projection] = new ErrorMeter(lin, cols, [selectColumns(lin, cols), biasCompensation(lin, cols, stats).linear, outputs[projection]]);
    }
    const removedGroups = [...scores.groups.keys()].filter((i) => !kept.groups.includes(i));
    const keptChannels = new Set(kept.channels);
    const removedChannels = [...scores.channels.keys()].filter((i) => !keptChannels.has(i));
    const structure: StructureReport = {
      attention: {
        groupsBefore: g.groups,
        headsPerGroup: g.groupSize,
        keptGroups: kept.groups,
        removedGroups: removedGroups.map((group) => ({ group, score: scores.groups[group]! })),
      },
      mlp: { channelsBefore: g.channels, channelsKept: kept.channels.length, removedChannels, removedScores: removedChannels.map((c) => scores.channels[c]!) },
      compensation,
    };
    const matrices: MatrixReport[] = PROJECTIONS.map((projection) => {
      const lin = projections[projection];
      return {
        name: model.linearName(context.layer, roleOf(projection)),
        role: roleOf(projection),
        rows: lin.outFeatures,
        cols: lin.inFeatures,
        sparsity: 1 - keptColumns[projection].length / lin.inFeatures,
        relativeError: dataFree ? null : 0,
        seconds: 0,
        method: {},
      };
    });
    const meter: BlockMeter = {
      on: 'dense',
      observe: async (group, input, rows) => {
        const projection = PROJECTIONS.find((p) => group[0] === roleOf(p));
        if (projection) await meters[projection].add(model, input, rows);
      },
      finish() {
        const errors: NonNullable<StructureReport['errors']> = {};
        for (const [i, projection] of PROJECTIONS.entries()) {
          const [none, bias, final] = meters[projection].relative() as [number, number, number];
          errors[projection] = { none, bias, final };
          matrices[i]!.relativeError = final;
        }
        structure.errors = errors;
      },
    };
    return { block: shrinkLayer(dense, g, kept, outputs), report: { matrices, structure }, ...(dataFree ? {} : { meter }) };
  };

  if (method.allocation(options) === 'global') {
    return {
      statistics: { roles: new Set(), kinds },
      densePass: {
        statistics: outputInputs,
        advanceDense: true,
        async score(layer, dense, { stats }) {
          const blockStatistics = blockStats(stats);
          return { stats: blockStatistics, scores: await method.score(contextFor(layer, dense, blockStatistics)) };
        },
        plan(results) {
          const candidates = results as { stats: BlockStats; scores: UnitScores }[];
          const selection = selectGlobal(
            candidates.map(({ scores }, layer) => ({ layer, scores, geometry: sourceGeometry(model, layer) })),
            ratio * paramsBefore,
          );
          return { kind: 'global', candidates, selection };
        },
      },
      async decide({ layer, dense, plan }) {
        if (plan?.kind !== 'global') throw new Error('internal: the global schedule needs its plan');
        const { stats, scores } = plan.candidates[layer]!;
        return shrink(contextFor(layer, dense, stats), scores, plan.selection.get(layer)!);
      },
    };
  }

  /** Uniform share of the kept blocks' projection weights that meets the target after `dropped` blocks are gone. */
  const uniformPlan = (dropped: ReadonlySet<number>, importance: number[]): Plan => {
    const droppedParams = [...dropped].reduce((sum, layer) => sum + paramsPerLayer[layer]!, 0);
    let keptLinear = 0;
    for (let layer = 0; layer < numLayers; layer++) if (!dropped.has(layer)) keptLinear += linearParams(sourceGeometry(model, layer));
    const layerRatio = Math.min(0.999, Math.max(0, (ratio * paramsBefore - droppedParams) / Math.max(keptLinear, 1)));
    return { kind: 'uniform', dropped, importance, layerRatio };
  };
  const share = method.layerShare(options);
  const withoutRemoval = share === 0 ? uniformPlan(new Set(), []) : undefined;
  const strategy: PruneStrategy<Plan> = {
    statistics: dataFree ? { roles: new Set(), kinds } : outputInputs,
    dataFree,
    async decide({ layer, dense, stats, plan }) {
      const uniform = plan ?? withoutRemoval;
      if (uniform?.kind !== 'uniform') throw new Error('internal: the uniform schedule needs its plan');
      const importance = uniform.importance[layer];
      if (uniform.dropped.has(layer)) return { block: null, report: { matrices: [], structure: { importance: importance! } } };
      const context = contextFor(layer, dense, blockStats(stats));
      const scores = await method.score(context);
      const decision = await shrink(context, scores, selectUniform(context.geometry, scores, uniform.layerRatio));
      if (importance !== undefined) decision.report.structure!.importance = importance;
      return decision;
    },
  };
  if (share === 0) return strategy;
  return {
    ...strategy,
    densePass: {
      cosine: true,
      advanceDense: false,
      score: async (_layer, _dense, { cosineSum, tokens }) => 1 - cosineSum / tokens,
      plan(results) {
        // Coarse stage: drop whole blocks, least important first, within the share of the budget.
        const importance = results as number[];
        const order = [...importance.keys()].sort((a, b) => importance[a]! - importance[b]! || a - b);
        const dropped = new Set<number>();
        let removedParams = 0;
        for (const layer of order) {
          if (dropped.size + 1 >= numLayers || removedParams + paramsPerLayer[layer]! > share * ratio * paramsBefore) break;
          dropped.add(layer);
          removedParams += paramsPerLayer[layer]!;
        }
        return uniformPlan(dropped, importance);
      },
    },
  };
}
