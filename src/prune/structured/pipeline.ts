/**
 * The structured pruning loop: calibration activations advance through the model layer by layer
 * (one layer's weights and one layer's activations live at a time, plus the pruned layers kept for
 * export). Per layer, statistics are gathered on the inputs of o_proj and down_proj, the method
 * scores the layer's units, the pipeline decides how many go, slices them out, and the method
 * compensates the output projections.
 *
 * Two schedules (the method's `allocation`):
 * - global (FLAP AL-AM): one pass of the dense model gathers every layer's statistics and scores;
 *   all units then compete for the budget; a second dense pass measures each layer's output error.
 * - uniform (UL-UM, wanda-sp, magnitude-sp, COMP): each layer is scored on the inputs produced by
 *   the already-pruned layers before it, loses the same share, and the pruned layer produces the
 *   next layer's inputs. COMP first drops whole layers ranked by 1 − cos(h_in, h_out) on a dense pass.
 *
 * Checkpoints (with `checkpoint`, in DIR/.topiary-checkpoint as for unstructured pruning): a dense
 * pass leaves `dense-NNNN.json` per layer (FLAP's statistics and scores, COMP's importance), the
 * pruning pass `layer-NNNN.safetensors` (the pruned layer, added biases included) and then
 * `layer-NNNN.json` (its LayerOutcome, which marks it finished; whole removed layers have only
 * this). On resume, restored dense-pass layers are replayed densely to rebuild the activations of
 * the first layer not done; restored pruned layers are replayed as pruned (uniform) or dense
 * (global), so every later layer sees exactly the inputs an uninterrupted run gives it.
 *
 * For every pruned projection the error ‖Y − Ŷ‖² / ‖Y‖² on the layer's calibration inputs is
 * measured three ways: columns dropped with no compensation, with FLAP's bias compensation, and as
 * the method left it — the evidence that compensation helps.
 */
import { openSafetensors, writeSafetensors } from '../../formats/safetensors.js';
import { LINEAR_ROLES } from '../../model/architectures/index.js';
import type { CausalLM, DecoderLayer, Linear } from '../../model/decoder.js';
import { requireFinite } from '../../util/finite.js';
import { finishedLayers, layerFile, openCheckpoint, readJson, writeJson } from '../checkpoint.js';
import { StatsAccumulator } from '../stats.js';
import type { LinearStats, StatKind } from '../method.js';
import type { MethodOptions } from '../pipeline.js';
import { biasCompensation } from './compensation.js';
import { keptAttentionChannels, layerGeometry, layerParams, linearParams, selectColumns, shrinkLayer, type KeptUnits, type LayerGeometry } from './geometry.js';
import type { Compensated, LayerContext, StructuredMethod, UnitScores } from './method.js';
import { selectGlobal, selectUniform } from './select.js';

export interface StructuredOptions {
  method: StructuredMethod;
  /** Fraction of decoder-layer parameters to remove. */
  ratio: number;
  methodOptions: MethodOptions;
  /** Windows per forward chunk: bounds activation memory. */
  batchWindows: number;
  /** Per-layer checkpoints in `dir`; a run with the same `fingerprint` resumes from them. Without, nothing is saved. */
  checkpoint?: { dir: string; fingerprint: string; resume: boolean };
  onEvent?: (event: StructuredEvent) => void;
}

export type StructuredEvent =
  /** `layers` pruned layers and the dense pass of `scored` layers came from the checkpoint. */
  | { kind: 'resumed'; layers: number; scored: number }
  | { kind: 'stage'; stage: 'importance' | 'statistics' | 'prune' | 'measure' | 'replay'; layer: number; layers: number };

/** Relative output errors of one projection on the layer's calibration inputs. */
export interface ProjectionErrors {
  none: number;
  bias: number;
  final: number;
}

export interface LayerOutcome {
  layer: number;
  /** The whole layer was removed (COMP's coarse stage). */
  removed: boolean;
  /** 1 − mean cos(h_in, h_out), when layer removal was considered. */
  importance?: number;
  attention?: { groupsBefore: number; headsPerGroup: number; keptGroups: number[]; removedGroups: { group: number; score: number }[] };
  mlp?: { channelsBefore: number; channelsKept: number; removedChannels: number[]; removedScores: number[] };
  compensation?: { o?: Compensated['report']; down?: Compensated['report'] };
  errors?: { o: ProjectionErrors; down: ProjectionErrors };
  paramsBefore: number;
  paramsAfter: number;
}

export interface StructuredResult {
  outcomes: LayerOutcome[];
  /** Pruned layers by their original index, for the kept layers only. */
  pruned: Map<number, DecoderLayer>;
  keptLayers: number[];
  paramsBefore: number;
  paramsAfter: number;
  achievedRatio: number;
}

/** Every parameter of decoder layer `layer` as stored in the source (no weights read). */
function sourceLayerParams(model: CausalLM, layer: number): number {
  const prefix = model.spec.layerPrefix(layer);
  return model.source
    .tensorNames()
    .filter((name) => name.startsWith(prefix))
    .reduce((sum, name) => sum + model.source.shape(name).reduce((a, b) => a * b, 1), 0);
}

/** A layer's geometry from the source's tensor shapes (no weights read). */
function sourceGeometry(model: CausalLM, layer: number): LayerGeometry {
  const rows = (role: 'q' | 'k' | 'gate') => model.source.shape(`${model.linearName(layer, role)}.weight`)[0]!;
  const { hiddenSize: hidden, headDim } = model.config;
  return { hidden, headDim, groups: rows('k') / headDim, groupSize: rows('q') / rows('k'), channels: rows('gate') };
}

function cosineRows(a: Float32Array, b: Float32Array, rows: number, cols: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let c = r * cols; c < (r + 1) * cols; c++) {
      dot += a[c]! * b[c]!;
      na += a[c]! * a[c]!;
      nb += b[c]! * b[c]!;
    }
    total += dot / Math.max(Math.sqrt(na * nb), Number.MIN_VALUE);
  }
  return total;
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

/** A pruned layer's tensors (norms, weights, biases) for its checkpoint. */
function saveLayer(file: string, layer: DecoderLayer): void {
  writeSafetensors(file, [
    { name: 'attention_norm', shape: [layer.attentionNorm.length], data: layer.attentionNorm },
    { name: 'mlp_norm', shape: [layer.mlpNorm.length], data: layer.mlpNorm },
    ...LINEAR_ROLES.flatMap((role) => {
      const { weight, bias, outFeatures, inFeatures } = layer.linears[role];
      return [{ name: `${role}.weight`, shape: [outFeatures, inFeatures], data: weight }, ...(bias ? [{ name: `${role}.bias`, shape: [outFeatures], data: bias }] : [])];
    }),
  ]);
}

function loadLayer(file: string): DecoderLayer {
  const store = openSafetensors(file);
  try {
    const linears = {} as DecoderLayer['linears'];
    for (const role of LINEAR_ROLES) {
      const [outFeatures, inFeatures] = store.info(`${role}.weight`).shape as [number, number];
      linears[role] = { weight: store.read(`${role}.weight`), outFeatures, inFeatures, ...(store.has(`${role}.bias`) ? { bias: store.read(`${role}.bias`) } : {}) };
    }
    return { attentionNorm: store.read('attention_norm'), mlpNorm: store.read('mlp_norm'), linears };
  } finally {
    store.close();
  }
}

export async function pruneStructured(model: CausalLM, windows: readonly (readonly number[])[], options: StructuredOptions): Promise<StructuredResult> {
  const { method, ratio, methodOptions } = options;
  const seqLen = windows[0]!.length;
  const d = model.config.hiddenSize;
  const numLayers = model.numLayers;
  const emit = options.onEvent ?? (() => {});
  const kinds = new Set<StatKind>(['moments', ...method.needs(methodOptions)]);
  const chunks: number[][] = [];
  for (let start = 0; start < windows.length; start += options.batchWindows) {
    chunks.push(Array.from({ length: Math.min(options.batchWindows, windows.length - start) }, (_, i) => start + i));
  }
  let hidden: Float32Array[] = [];
  const embedAll = () => (hidden = windows.map((w) => model.embed([w])));

  /** Runs layer `layer` (as currently set in the model) over all windows. */
  const forward = async (
    layer: number,
    advance: boolean,
    observe?: (role: 'o' | 'down', input: Float32Array, rows: number) => Promise<void>,
    inspect?: (before: Float32Array, after: Float32Array, rows: number) => void,
  ) => {
    for (const chunk of chunks) {
      const batch = new Float32Array(chunk.length * seqLen * d);
      chunk.forEach((w, i) => batch.set(hidden[w]!, i * seqLen * d));
      const before = inspect ? batch.slice() : undefined;
      await model.runLayer(layer, batch, seqLen, async (roles, input, rows) => {
        if (roles[0] === 'o' || roles[0] === 'down') await observe?.(roles[0], input, rows);
      });
      inspect?.(before!, batch, chunk.length * seqLen);
      if (advance) chunk.forEach((w, i) => hidden[w]!.set(batch.subarray(i * seqLen * d, (i + 1) * seqLen * d)));
    }
  };

  const gatherStats = async (layer: number, dense: DecoderLayer, advance: boolean): Promise<{ attention: LinearStats; mlp: LinearStats }> => {
    emit({ kind: 'stage', stage: 'statistics', layer, layers: numLayers });
    const attention = new StatsAccumulator(dense.linears.o.inFeatures, kinds, model.backend);
    const mlp = new StatsAccumulator(dense.linears.down.inFeatures, kinds, model.backend);
    await forward(layer, advance, (role, input, rows) => (role === 'o' ? attention : mlp).add(input, rows));
    return { attention: attention.result(), mlp: mlp.result() };
  };

  const contextFor = (layer: number, dense: DecoderLayer, stats: { attention: LinearStats; mlp: LinearStats }): LayerContext => ({
    layer,
    weights: dense,
    geometry: layerGeometry(dense, model.config.headDim),
    ...stats,
    backend: model.backend,
    options: methodOptions,
  });

  /** Slices, compensates and measures one layer; with `advance` the measuring pass also moves the activations on (dense). */
  const finishLayer = async (context: LayerContext, scores: UnitScores, kept: KeptUnits, advanceDense: boolean) => {
    const { layer, weights: dense, geometry: g } = context;
    emit({ kind: 'stage', stage: 'prune', layer, layers: numLayers });
    const keptColumns = { o: keptAttentionChannels(g, kept.groups), down: kept.channels };
    const outputs = {} as Record<'o' | 'down', Linear>;
    const compensation: LayerOutcome['compensation'] = {};
    const meters = {} as Record<'o' | 'down', ErrorMeter>;
    for (const projection of ['o', 'down'] as const) {
      const lin = dense.linears[projection];
      const cols = keptColumns[projection];
      if (cols.length === lin.inFeatures) {
        outputs[projection] = lin;
      } else {
        const result = await method.compensate(context, projection, cols);
        outputs[projection] = result.linear;
        compensation[projection] = result.report;
      }
      const stats = projection === 'o' ? context.attention : context.mlp;
      const variants = [selectColumns(lin, cols), biasCompensation(lin, cols, stats).linear, outputs[projection]];
      meters[projection] = new ErrorMeter(lin, cols, variants);
    }
    const pruned = shrinkLayer(dense, g, kept, outputs);
    emit({ kind: 'stage', stage: 'measure', layer, layers: numLayers });
    await forward(layer, advanceDense, (role, input, rows) => meters[role].add(model, input, rows));
    const errors = Object.fromEntries(
      (['o', 'down'] as const).map((p) => {
        const relative = requireFinite(meters[p].relative(), `layer ${layer}: the output errors of the pruned ${p} projection`, model.source.path);
        const [none, bias, final] = relative as [number, number, number];
        return [p, { none, bias, final }];
      }),
    ) as LayerOutcome['errors'];
    const removedGroups = [...scores.groups.keys()].filter((i) => !kept.groups.includes(i));
    const keptChannels = new Set(kept.channels);
    const removedChannels = [...scores.channels.keys()].filter((i) => !keptChannels.has(i));
    const outcome: LayerOutcome = {
      layer,
      removed: false,
      attention: {
        groupsBefore: g.groups,
        headsPerGroup: g.groupSize,
        keptGroups: kept.groups,
        removedGroups: removedGroups.map((group) => ({ group, score: scores.groups[group]! })),
      },
      mlp: {
        channelsBefore: g.channels,
        channelsKept: kept.channels.length,
        removedChannels,
        removedScores: removedChannels.map((c) => scores.channels[c]!),
      },
      compensation,
      errors,
      paramsBefore: layerParams(dense),
      paramsAfter: layerParams(pruned),
    };
    return { pruned, outcome };
  };

  const paramsPerLayer = Array.from({ length: numLayers }, (_, layer) => sourceLayerParams(model, layer));
  const paramsBefore = paramsPerLayer.reduce((a, b) => a + b, 0);
  const outcomes: LayerOutcome[] = [];
  const pruned = new Map<number, DecoderLayer>();

  const checkpoint = options.checkpoint;
  if (checkpoint) openCheckpoint(checkpoint.dir, checkpoint.fingerprint, checkpoint.resume);
  const file = (kind: 'dense' | 'layer', layer: number, ext: 'json' | 'safetensors' = 'json') => layerFile(checkpoint!.dir, layer, ext, kind);
  const restorable = (kind: 'dense' | 'layer') => (checkpoint?.resume ? finishedLayers(numLayers, (layer) => file(kind, layer)) : 0);
  const scored = restorable('dense');
  const finished = restorable('layer');
  if (scored + finished > 0) emit({ kind: 'resumed', layers: finished, scored });

  /** Moves the activations through layer `layer`: its `weights` if given, else the dense layer. */
  const replay = async (layer: number, weights?: DecoderLayer) => {
    emit({ kind: 'stage', stage: 'replay', layer, layers: numLayers });
    if (weights) model.setLayer(layer, weights);
    await forward(layer, true);
    model.releaseLayer(layer);
  };

  /** A pass of the dense model: `run` handles one layer and advances the activations; its results are checkpointed. */
  const densePass = async <T>(run: (layer: number) => Promise<T>): Promise<T[]> => {
    const results = Array.from({ length: scored }, (_, layer) => readJson<T>(file('dense', layer)));
    if (scored === numLayers) return results;
    embedAll();
    for (let layer = 0; layer < scored; layer++) await replay(layer);
    for (let layer = scored; layer < numLayers; layer++) {
      const result = await run(layer);
      if (checkpoint) writeJson(file('dense', layer), result);
      results.push(result);
    }
    return results;
  };

  /**
   * The pruning pass from freshly embedded activations: `prune` handles one layer and advances the
   * activations; finished layers come from the checkpoint and are replayed, pruned or (`dense`) not.
   */
  const pruningPass = async (replayDense: boolean, prune: (layer: number) => Promise<{ pruned?: DecoderLayer; outcome: LayerOutcome }>) => {
    embedAll();
    for (let layer = 0; layer < finished; layer++) {
      const outcome = readJson<LayerOutcome>(file('layer', layer));
      outcomes.push(outcome);
      if (outcome.removed) continue;
      const weights = loadLayer(file('layer', layer, 'safetensors'));
      pruned.set(layer, weights);
      if (finished < numLayers) await replay(layer, replayDense ? undefined : weights);
    }
    for (let layer = finished; layer < numLayers; layer++) {
      const result = await prune(layer);
      if (result.pruned) {
        pruned.set(layer, result.pruned);
        if (checkpoint) saveLayer(file('layer', layer, 'safetensors'), result.pruned);
      }
      if (checkpoint) writeJson(file('layer', layer), result.outcome);
      outcomes.push(result.outcome);
    }
  };

  if (method.allocation(methodOptions) === 'global') {
    const candidates = await densePass(async (layer) => {
      const dense = model.layer(layer);
      const stats = await gatherStats(layer, dense, true);
      const scores = await method.score(contextFor(layer, dense, stats));
      model.releaseLayer(layer);
      return { stats, scores };
    });
    const selection = selectGlobal(
      candidates.map(({ scores }, layer) => ({ layer, scores, geometry: sourceGeometry(model, layer) })),
      ratio * paramsBefore,
    );
    await pruningPass(true, async (layer) => {
      const { stats, scores } = candidates[layer]!;
      const dense = model.layer(layer);
      const result = await finishLayer(contextFor(layer, dense, stats), scores, selection.get(layer)!, true);
      model.releaseLayer(layer);
      return result;
    });
  } else {
    // Coarse stage: drop whole layers by importance on the dense model.
    const dropped = new Set<number>();
    const share = method.layerShare(methodOptions);
    const importance =
      share > 0
        ? await densePass(async (layer) => {
            emit({ kind: 'stage', stage: 'importance', layer, layers: numLayers });
            let cosine = 0;
            await forward(layer, true, undefined, (before, after, rows) => (cosine += cosineRows(before, after, rows, d)));
            model.releaseLayer(layer);
            return 1 - cosine / (windows.length * seqLen);
          })
        : [];
    if (share > 0) {
      const order = [...importance.keys()].sort((a, b) => importance[a]! - importance[b]! || a - b);
      let removedParams = 0;
      for (const layer of order) {
        if (dropped.size + 1 >= numLayers || removedParams + paramsPerLayer[layer]! > share * ratio * paramsBefore) break;
        dropped.add(layer);
        removedParams += paramsPerLayer[layer]!;
      }
    }
    const droppedParams = [...dropped].reduce((sum, layer) => sum + paramsPerLayer[layer]!, 0);
    let keptLinear = 0;
    for (let layer = 0; layer < numLayers; layer++) if (!dropped.has(layer)) keptLinear += linearParams(sourceGeometry(model, layer));
    const layerRatio = Math.min(0.999, Math.max(0, (ratio * paramsBefore - droppedParams) / Math.max(keptLinear, 1)));
    await pruningPass(false, async (layer) => {
      if (dropped.has(layer)) return { outcome: { layer, removed: true, importance: importance[layer]!, paramsBefore: paramsPerLayer[layer]!, paramsAfter: 0 } };
      const dense = model.layer(layer);
      const context = contextFor(layer, dense, await gatherStats(layer, dense, false));
      const scores = await method.score(context);
      const result = await finishLayer(context, scores, selectUniform(context.geometry, scores, layerRatio), false);
      model.setLayer(layer, result.pruned);
      await forward(layer, true);
      model.releaseLayer(layer);
      return { pruned: result.pruned, outcome: importance.length > 0 ? { ...result.outcome, importance: importance[layer]! } : result.outcome };
    });
  }
  const paramsAfter = [...pruned.values()].reduce((sum, layer) => sum + layerParams(layer), 0);
  return {
    outcomes,
    pruned,
    keptLayers: [...pruned.keys()].sort((a, b) => a - b),
    paramsBefore,
    paramsAfter,
    achievedRatio: 1 - paramsAfter / paramsBefore,
  };
}
