/**
 * The one block loop every pruning method runs in (METHODS.md), unstructured, N:M and structured:
 * embed the calibration windows once; for each block, (1) run the dense block on its inputs while
 * accumulating the statistics the method asked for on each linear group's input, (2) let the
 * method decide (new weights, fewer units, or the whole block removed), (3) run the block again to
 * produce the next block's inputs while the method's meter measures the output error, and (4)
 * checkpoint the block so an interrupted run resumes where it stopped. Memory holds one block's
 * weights and one block's activations; pruned blocks live in the checkpoint, from which export
 * streams them (`PipelineResult.source`).
 *
 * Methods come as strategies (./unstructured.ts, ./structured/strategy.ts): what statistics they
 * need, optionally a first pass over the dense model whose per-block results make a plan for the
 * whole model (FLAP's global ranking, COMP's layer removal), and the decision for one block. The
 * pipeline knows no method's math and no family's layout.
 */
import { openSafetensors, writeSafetensors } from '../formats/safetensors.js';
import type { Block, CausalLM, InputObserver } from '../model/causal-lm.js';
import type { ModelSource } from '../model/sources.js';
import { requireFiniteNumber } from '../util/finite.js';
import { finishedLayers, layerFile, openCheckpoint, readJson, writeJson } from './checkpoint.js';
import type { LinearStats, StatKind } from './method.js';
import { prunedSource } from './pruned-source.js';
import type { BlockReport } from './record.js';
import { StatsAccumulator } from './stats.js';

export type MethodOptions = Readonly<Record<string, number | boolean | string>>;

/** Statistics of the inputs of these roles' linear layers (roles sharing an input share one). */
export interface StatRequest {
  roles: ReadonlySet<string>;
  kinds: ReadonlySet<StatKind>;
}

export type StatsByRole = ReadonlyMap<string, LinearStats>;

/** Measures a decision's output error while the pipeline runs a block over the calibration windows. */
export interface BlockMeter {
  /** The block it watches: the dense one (inputs as the dense model sees them) or the pruned one. */
  on: 'dense' | 'pruned';
  /** Only the first `windows` calibration windows (all when absent). */
  windows?: number;
  observe: InputObserver;
  /** Called once the pass is over: writes the measured errors into the decision's report. */
  finish(): void;
}

export interface BlockDecision {
  /** The pruned block, or null when the block is removed whole. */
  block: Block | null;
  report: Pick<BlockReport, 'matrices'> & Partial<Pick<BlockReport, 'structure' | 'budget'>>;
  meter?: BlockMeter;
}

/** A pass over the dense model, before any pruning, whose results plan the whole run. */
export interface DensePass<Plan> {
  statistics?: StatRequest;
  /** Also measure 1 − cos(input, output) of each block, summed over every token (COMP). */
  cosine?: boolean;
  /** One block's result from what the pass saw (checkpointed as JSON, so a resumed run skips it). */
  score(layer: number, dense: Block, seen: { stats: StatsByRole; cosineSum: number; tokens: number }): Promise<unknown>;
  plan(results: unknown[]): Plan;
  /** Whether later blocks see the dense model's activations (FLAP) rather than the pruned blocks'. */
  advanceDense: boolean;
}

export interface PruneStrategy<Plan = unknown> {
  /** Statistics the decision for each block needs from its dense inputs (no roles: no statistics pass). */
  statistics: StatRequest;
  /**
   * The decisions read the weights alone (magnitude): no statistics, no dense pass, no meter. The
   * pipeline then embeds no window and runs no forward pass: the activations would go unused.
   */
  dataFree?: boolean;
  densePass?: DensePass<Plan>;
  decide(input: { layer: number; dense: Block; stats: StatsByRole; plan: Plan | undefined }): Promise<BlockDecision>;
}

export type PipelineEvent =
  /** `layers` finished blocks and the dense pass of `scored` blocks came from the checkpoint. */
  | { kind: 'resumed'; layers: number; scored: number }
  | { kind: 'stage'; layer: number; layers: number; stage: 'dense pass' | 'statistics' | 'prune' | 'forward' | 'replay'; done: number; total: number }
  | { kind: 'layer-done'; layers: number; report: BlockReport };

export interface PipelineOptions {
  /** Windows per forward chunk: bounds activation memory. */
  batchWindows: number;
  /** Per-block checkpoints; a run with the same `fingerprint` resumes from them. */
  checkpoint: { dir: string; fingerprint: string; resume: boolean };
  onEvent?: (event: PipelineEvent) => void;
}

export interface PipelineResult {
  reports: BlockReport[];
  /** Original indices of the blocks that remain. */
  keptLayers: number[];
  /** A kept block's pruned weights, read from the checkpoint. */
  block(layer: number): Block;
  /** The pruned model: untouched tensors from the original source, blocks streamed from the checkpoint. */
  source(): ModelSource;
}

/** Every parameter of a block. */
export function blockParams(block: Block): number {
  let total = Object.values(block.tensors).reduce((sum, tensor) => sum + tensor.length, 0);
  for (const lin of Object.values(block.linears)) total += lin.weight.length + (lin.bias?.length ?? 0);
  return total;
}

/** A block's tensors for its checkpoint: linear layers as `linear.ROLE.weight|bias`, the rest as `tensor.NAME`. */
function saveBlock(file: string, block: Block): void {
  writeSafetensors(file, [
    ...Object.entries(block.tensors).map(([name, data]) => ({ name: `tensor.${name}`, shape: [data.length], data })),
    ...Object.entries(block.linears).flatMap(([role, { weight, bias, outFeatures, inFeatures }]) => [
      { name: `linear.${role}.weight`, shape: [outFeatures, inFeatures], data: weight },
      ...(bias ? [{ name: `linear.${role}.bias`, shape: [outFeatures], data: bias }] : []),
    ]),
  ]);
}

function loadBlock(file: string): Block {
  const store = openSafetensors(file);
  try {
    const block: Block = { linears: {}, tensors: {} };
    for (const { name, shape } of store.list()) {
      const [kind, ...rest] = name.split('.');
      if (kind === 'tensor') {
        block.tensors[rest.join('.')] = store.read(name);
      } else if (rest.at(-1) === 'weight') {
        const role = rest.slice(0, -1).join('.');
        const bias = `linear.${role}.bias`;
        block.linears[role] = { weight: store.read(name), outFeatures: shape[0]!, inFeatures: shape[1]!, ...(store.has(bias) ? { bias: store.read(bias) } : {}) };
      }
    }
    return block;
  } finally {
    store.close();
  }
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

/**
 * Prunes `model` block by block on the calibration windows with `strategy`. Every finished block
 * is checkpointed; returns the per-block reports (resumed ones included) and the pruned model.
 */
export async function prunePipeline<Plan>(model: CausalLM, windows: readonly (readonly number[])[], strategy: PruneStrategy<Plan>, options: PipelineOptions): Promise<PipelineResult> {
  const { dir, fingerprint, resume } = options.checkpoint;
  const numLayers = model.numLayers;
  const seqLen = windows[0]?.length ?? 0;
  const d = model.config.hiddenSize;
  const emit = options.onEvent ?? (() => {});
  const file = (kind: 'dense' | 'layer', layer: number, ext: 'json' | 'safetensors' = 'json') => layerFile(dir, layer, ext, kind);

  openCheckpoint(dir, fingerprint, resume);
  const dense = strategy.densePass;
  // A dense pass that asks for no statistics and no cosine scores the weights alone (AlphaPruning): no forward.
  const denseReadsActivations = dense !== undefined && ((dense.statistics?.roles.size ?? 0) > 0 || dense.cosine === true);
  const dataFree = strategy.dataFree === true;
  if (dataFree && (denseReadsActivations || strategy.statistics.roles.size > 0)) throw new Error('internal: a data-free strategy asks for statistics');
  const restorable = (kind: 'dense' | 'layer') => (resume ? finishedLayers(numLayers, (layer) => file(kind, layer)) : 0);
  const scored = dense ? restorable('dense') : 0;
  const finished = restorable('layer');
  if (scored + finished > 0) emit({ kind: 'resumed', layers: finished, scored });

  // Calibration activations for every window, advanced one block at a time.
  let hidden: Float32Array[] = [];
  const embedAll = async () => {
    hidden = [];
    for (const w of windows) hidden.push(await model.embed([w]));
  };
  const chunks: number[][] = [];
  for (let start = 0; start < windows.length; start += options.batchWindows) {
    chunks.push(Array.from({ length: Math.min(options.batchWindows, windows.length - start) }, (_, i) => start + i));
  }

  /**
   * Runs block `layer` (as currently set in the model) over every chunk of windows; with `advance`
   * its outputs become the next block's inputs. `observe` is asked per chunk for an observer.
   */
  const forward = async (
    layer: number,
    stage: Extract<PipelineEvent, { kind: 'stage' }>['stage'],
    advance: boolean,
    observe?: (chunk: readonly number[]) => InputObserver | undefined,
    inspect?: (before: Float32Array, after: Float32Array, rows: number) => void,
  ) => {
    const batch = new Float32Array(Math.min(options.batchWindows, windows.length) * seqLen * d);
    for (const [done, chunk] of chunks.entries()) {
      const rows = chunk.length * seqLen;
      const view = batch.subarray(0, rows * d);
      chunk.forEach((w, i) => batch.set(hidden[w]!, i * seqLen * d));
      const before = inspect ? view.slice() : undefined;
      await model.runLayer(layer, view, seqLen, observe?.(chunk));
      inspect?.(before!, view, rows);
      if (advance) chunk.forEach((w, i) => hidden[w]!.set(batch.subarray(i * seqLen * d, (i + 1) * seqLen * d)));
      emit({ kind: 'stage', layer, layers: numLayers, stage, done: done + 1, total: chunks.length });
    }
  };

  /** Statistics of the dense block's inputs for `request` (nothing is run when no role is asked for). */
  const gatherStats = async (layer: number, block: Block, request: StatRequest | undefined, stage: 'dense pass' | 'statistics', advance: boolean, cosine = false) => {
    const accumulators = new Map<string, StatsAccumulator>();
    for (const group of model.family.inputGroups) {
      const selected = group.filter((role) => request?.roles.has(role));
      if (selected.length === 0) continue;
      const shared = new StatsAccumulator(block.linears[selected[0]!]!.inFeatures, request!.kinds, model.backend);
      for (const role of selected) accumulators.set(role, shared);
    }
    let cosineSum = 0;
    if (accumulators.size > 0 || advance || cosine) {
      await forward(
        layer,
        stage,
        advance,
        () => async (group, input, rows) => {
          const accumulator = accumulators.get(group.find((role) => accumulators.has(role)) ?? '');
          await accumulator?.add(input, rows);
        },
        cosine ? (before, after, rows) => (cosineSum += cosineRows(before, after, rows, d)) : undefined,
      );
    }
    const stats = new Map([...accumulators].map(([role, accumulator]) => [role, accumulator.result()]));
    return { stats: stats as StatsByRole, cosineSum, tokens: windows.length * seqLen };
  };

  /** Moves the activations through block `layer`: `weights` if given, else the dense block. */
  const replay = async (layer: number, weights?: Block) => {
    if (weights) model.setLayer(layer, weights);
    await forward(layer, 'replay', true);
    model.releaseLayer(layer);
  };

  // 1. The dense pass, when the strategy plans over the whole model first.
  let plan: Plan | undefined;
  if (dense) {
    const results = Array.from({ length: scored }, (_, layer) => readJson<unknown>(file('dense', layer)));
    if (scored < numLayers) {
      if (denseReadsActivations) {
        await embedAll();
        for (let layer = 0; layer < scored; layer++) await replay(layer);
      }
      for (let layer = scored; layer < numLayers; layer++) {
        const block = model.layer(layer);
        const seen = denseReadsActivations
          ? await gatherStats(layer, block, dense.statistics, 'dense pass', true, dense.cosine)
          : { stats: new Map() as StatsByRole, cosineSum: 0, tokens: 0 };
        const result = await dense.score(layer, block, seen);
        writeJson(file('dense', layer), result);
        results.push(result);
        model.releaseLayer(layer);
      }
    }
    plan = dense.plan(results);
  }
  const advanceDense = dense?.advanceDense ?? false;

  // 2. The pruning pass: finished blocks come from the checkpoint and are replayed.
  if (!dataFree) await embedAll();
  const reports: BlockReport[] = [];
  for (let layer = 0; layer < finished; layer++) {
    const report = readJson<BlockReport>(file('layer', layer));
    reports.push(report);
    if (report.removed || finished === numLayers || dataFree) continue;
    emit({ kind: 'stage', layer, layers: numLayers, stage: 'replay', done: 0, total: chunks.length });
    await replay(layer, advanceDense ? undefined : loadBlock(file('layer', layer, 'safetensors')));
  }

  /**
   * Prunes block `layer` and checkpoints it. A function of its own so that the block's dense and
   * pruned weights die with its frame: a suspended async function's frame can keep the previous
   * iteration's values alive (V8 did, here: two dead blocks beside the live one at 1B widths).
   */
  const pruneBlock = async (layer: number): Promise<BlockReport> => {
    const layerStart = performance.now();
    const denseBlock = model.layer(layer);

    const { stats } = await gatherStats(layer, denseBlock, strategy.statistics, 'statistics', false);
    const statisticsSeconds = (performance.now() - layerStart) / 1000;

    const pruneStart = performance.now();
    emit({ kind: 'stage', layer, layers: numLayers, stage: 'prune', done: 0, total: 1 });
    const decision = await strategy.decide({ layer, dense: denseBlock, stats, plan });
    const pruneSeconds = (performance.now() - pruneStart) / 1000;

    // The activations move on through the dense or the pruned block (or skip a removed one); the
    // meter watches the block it asked for, in the same pass when that is the one advancing.
    const forwardStart = performance.now();
    const meter = decision.meter;
    if (dataFree && meter) throw new Error('internal: a data-free strategy returned a meter');
    const meterFor = (chunk: readonly number[]) => (meter && (meter.windows === undefined || chunk[0]! < meter.windows) ? meter.observe : undefined);
    const advanceThrough = dataFree ? undefined : advanceDense ? 'dense' : decision.block ? 'pruned' : undefined;
    if (meter && meter.on !== advanceThrough) {
      if (meter.on === 'pruned') model.setLayer(layer, decision.block!);
      await forward(layer, 'forward', false, meterFor);
      model.setLayer(layer, denseBlock);
    }
    if (advanceThrough) {
      if (advanceThrough === 'pruned') model.setLayer(layer, decision.block!);
      await forward(layer, 'forward', true, meter?.on === advanceThrough ? meterFor : undefined);
    }
    meter?.finish();
    for (const matrix of decision.report.matrices) {
      if (matrix.relativeError !== null) matrix.relativeError = requireFiniteNumber(matrix.relativeError, `the output error of ${matrix.name}`, model.source.path);
    }
    const forwardSeconds = (performance.now() - forwardStart) / 1000;

    // Checkpoint: weights first, then the report that marks the block finished.
    if (decision.block) saveBlock(file('layer', layer, 'safetensors'), decision.block);
    const report: BlockReport = {
      layer,
      removed: decision.block === null,
      seconds: (performance.now() - layerStart) / 1000,
      statisticsSeconds,
      pruneSeconds,
      forwardSeconds,
      paramsBefore: blockParams(denseBlock),
      paramsAfter: decision.block ? blockParams(decision.block) : 0,
      ...decision.report,
    };
    writeJson(file('layer', layer), report);
    model.releaseLayer(layer);
    return report;
  };

  for (let layer = finished; layer < numLayers; layer++) {
    const report = await pruneBlock(layer);
    reports.push(report);
    emit({ kind: 'layer-done', layers: numLayers, report });
  }

  const keptLayers = reports.filter((report) => !report.removed).map((report) => report.layer);
  const blockFile = (layer: number) => file('layer', layer, 'safetensors');
  return { reports, keptLayers, block: (layer) => loadBlock(blockFile(layer)), source: () => prunedSource(model.source, keptLayers, blockFile) };
}
