/**
 * The layer-wise pruning loop shared by every unstructured and N:M method (METHODS.md): embed the
 * calibration windows once; for each decoder layer, (1) run it on its inputs while accumulating
 * the statistics the method needs on each linear group's input, (2) prune every selected linear
 * layer, (3) run the pruned layer again to produce the next layer's inputs, measuring each pruned
 * matrix's output error on the way, and (4) checkpoint the layer so an interrupted run resumes.
 * Memory holds one decoder layer and one layer's activations. The pipeline knows no method's math.
 */
import { openSafetensors, writeSafetensors } from '../formats/safetensors.js';
import { INPUT_GROUPS, type LinearRole } from '../model/architectures/index.js';
import type { CausalLM, DecoderLayer, InputObserver, Linear } from '../model/decoder.js';
import { UsageError } from '../util/errors.js';
import { requireFiniteNumber } from '../util/finite.js';
import { finishedLayers, layerFile, openCheckpoint, readJson, writeJson } from './checkpoint.js';
import { validateTarget } from './masks.js';
import type { SparsityTarget, StatKind, UnstructuredMethod } from './method.js';
import { StatsAccumulator } from './stats.js';

export type MethodOptions = Readonly<Record<string, number | boolean | string>>;

export interface MatrixReport {
  name: string;
  rows: number;
  cols: number;
  /** Fraction of exact zeros after pruning. */
  sparsity: number;
  /** ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² on the inputs the pruned layer sees, over the first `errorWindows` calibration windows. */
  relativeError: number;
  seconds: number;
  method: Record<string, number | string | boolean | number[]>;
}

export interface LayerReport {
  layer: number;
  seconds: number;
  statisticsSeconds: number;
  pruneSeconds: number;
  forwardSeconds: number;
  matrices: MatrixReport[];
}

export type PipelineEvent =
  | { kind: 'resumed'; layers: number }
  | { kind: 'stage'; layer: number; layers: number; stage: 'statistics' | 'prune' | 'forward' | 'replay'; done: number; total: number }
  | { kind: 'layer-done'; layers: number; report: LayerReport };

export interface PipelineOptions {
  method: UnstructuredMethod;
  target: SparsityTarget;
  methodOptions: MethodOptions;
  /** Linear layers to prune in every decoder layer (default: all seven). */
  roles: readonly LinearRole[];
  /** Windows per forward chunk: bounds activation memory. */
  batchWindows: number;
  /** Folder for per-layer checkpoints; a run with the same `fingerprint` resumes from it. */
  checkpointDir: string;
  /** Identifies the run's settings; a checkpoint made with other settings is refused on resume. */
  fingerprint: string;
  resume: boolean;
  /** Windows on which each pruned matrix's output error is measured (the first ones). */
  errorWindows: number;
  onEvent?: (event: PipelineEvent) => void;
}

/** Refuses impossible requests before any work: bad targets, widths N:M can't divide, unsupported combinations. */
export function validateRequest(model: CausalLM, options: Pick<PipelineOptions, 'method' | 'target' | 'methodOptions' | 'roles'>): void {
  validateTarget(options.target);
  const unknown = Object.keys(options.methodOptions).filter((key) => !options.method.optionNames.includes(key));
  if (unknown.length > 0) {
    const accepted = options.method.optionNames.length > 0 ? `it accepts ${options.method.optionNames.join(', ')}` : 'it takes no options';
    throw new UsageError(`${options.method.name} does not understand ${unknown.map((key) => `"${key}"`).join(', ')} (${accepted})`);
  }
  const reason = options.method.unsupported(options.target, options.methodOptions);
  if (reason) throw new UsageError(`${options.method.name}: ${reason}`);
  if (options.roles.length === 0) throw new UsageError('no linear layers selected for pruning');
  for (let layer = 0; layer < model.numLayers; layer++) {
    for (const role of options.roles) {
      const [, cols] = model.source.shape(`${model.linearName(layer, role)}.weight`) as [number, number];
      validateTarget(options.target, cols, model.linearName(layer, role));
    }
  }
}

/** Where a finished layer's pruned weights are saved. */
export const checkpointFile = (dir: string, layer: number): string => layerFile(dir, layer, 'safetensors');
const reportFile = (dir: string, layer: number) => layerFile(dir, layer, 'json');

/** The pruned weights of one layer as saved in its checkpoint. */
function loadCheckpoint(model: CausalLM, dir: string, layer: number, roles: readonly LinearRole[]): DecoderLayer {
  const store = openSafetensors(checkpointFile(dir, layer));
  try {
    const dense = model.layer(layer);
    const linears = { ...dense.linears };
    for (const role of roles) linears[role] = { ...dense.linears[role], weight: store.read(model.linearName(layer, role) + '.weight') };
    return { ...dense, linears };
  } finally {
    store.close();
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

/**
 * Prunes `model` in place, layer by layer, on the calibration windows. Each finished layer is
 * written to `checkpointDir`; returns one report per layer (including resumed ones).
 */
export async function pruneLayerwise(model: CausalLM, windows: readonly (readonly number[])[], options: PipelineOptions): Promise<LayerReport[]> {
  const { method, target, methodOptions, roles, batchWindows, checkpointDir } = options;
  const seqLen = windows[0]!.length;
  const d = model.config.hiddenSize;
  const emit = options.onEvent ?? (() => {});
  const statKinds = new Set<StatKind>(method.needs);
  const pruned = new Set(roles);

  openCheckpoint(checkpointDir, options.fingerprint, options.resume);

  // Calibration activations for every window, advanced one layer at a time.
  const hidden = windows.map((w) => model.embed([w]));
  const chunks: number[][] = [];
  for (let start = 0; start < windows.length; start += batchWindows) {
    chunks.push(Array.from({ length: Math.min(batchWindows, windows.length - start) }, (_, i) => start + i));
  }
  /** Runs layer `layer` over every chunk of windows, advancing `hidden` in place. */
  const forward = async (layer: number, stage: 'statistics' | 'forward' | 'replay', observe?: (chunk: readonly number[]) => InputObserver | undefined) => {
    const batch = new Float32Array(Math.min(batchWindows, windows.length) * seqLen * d);
    for (const [done, chunk] of chunks.entries()) {
      chunk.forEach((w, i) => batch.set(hidden[w]!, i * seqLen * d));
      await model.runLayer(layer, batch.subarray(0, chunk.length * seqLen * d), seqLen, observe?.(chunk));
      if (stage !== 'statistics') chunk.forEach((w, i) => hidden[w]!.set(batch.subarray(i * seqLen * d, (i + 1) * seqLen * d)));
      emit({ kind: 'stage', layer, layers: model.numLayers, stage, done: done + 1, total: chunks.length });
    }
  };

  const reports: LayerReport[] = [];
  let layer = 0;
  if (options.resume) {
    const finished = finishedLayers(model.numLayers, (l) => reportFile(checkpointDir, l));
    for (; layer < finished; layer++) {
      model.setLayer(layer, loadCheckpoint(model, checkpointDir, layer, roles));
      await forward(layer, 'replay');
      model.releaseLayer(layer);
      reports.push(readJson<LayerReport>(reportFile(checkpointDir, layer)));
    }
    if (layer > 0) emit({ kind: 'resumed', layers: layer });
  }

  for (; layer < model.numLayers; layer++) {
    const layerStart = performance.now();
    const dense = model.layer(layer);

    // 1. Statistics on each pruned group's input, with the dense layer.
    const accumulators = new Map<LinearRole, StatsAccumulator>();
    if (statKinds.size > 0) {
      for (const group of INPUT_GROUPS) {
        const selected = group.filter((role) => pruned.has(role));
        if (selected.length === 0) continue;
        const shared = new StatsAccumulator(dense.linears[selected[0]!].inFeatures, statKinds, model.backend);
        for (const role of selected) accumulators.set(role, shared);
      }
      await forward(layer, 'statistics', () => async (group, input, rows) => {
        const accumulator = accumulators.get(group.find((role) => pruned.has(role))!);
        await accumulator?.add(input, rows);
      });
    }
    const statisticsSeconds = (performance.now() - layerStart) / 1000;

    // 2. Prune each selected linear layer.
    const pruneStart = performance.now();
    const linears = { ...dense.linears };
    const matrices: MatrixReport[] = [];
    for (const [index, role] of roles.entries()) {
      const lin = dense.linears[role];
      const name = model.linearName(layer, role);
      const started = performance.now();
      const result = await method.prune({
        name,
        weight: lin.weight.slice(),
        rows: lin.outFeatures,
        cols: lin.inFeatures,
        stats: accumulators.get(role)?.result() ?? { rows: 0 },
        target,
        backend: model.backend,
        options: methodOptions,
      });
      linears[role] = { ...lin, weight: result.weight };
      let zeros = 0;
      for (const value of result.weight) if (value === 0) zeros++;
      matrices.push({
        name,
        rows: lin.outFeatures,
        cols: lin.inFeatures,
        sparsity: zeros / result.weight.length,
        relativeError: 0,
        seconds: (performance.now() - started) / 1000,
        method: result.report,
      });
      emit({ kind: 'stage', layer, layers: model.numLayers, stage: 'prune', done: index + 1, total: roles.length });
    }
    const pruneSeconds = (performance.now() - pruneStart) / 1000;

    // 3. The pruned layer produces the next layer's inputs; each pruned matrix's output error is
    //    measured on the inputs it now sees, in the first `errorWindows` windows (two extra GEMMs
    //    per matrix: on every window they would cost more than the forward pass itself).
    const forwardStart = performance.now();
    const errorEnergy = new Map<LinearRole, number>();
    const denseEnergy = new Map<LinearRole, number>();
    model.setLayer(layer, { ...dense, linears });
    await forward(layer, 'forward', (chunk) => chunk[0]! >= options.errorWindows ? undefined : async (group, input, rows) => {
      for (const role of group) {
        if (!pruned.has(role)) continue;
        const lin = dense.linears[role];
        const delta = subtract(lin.weight, linears[role].weight);
        errorEnergy.set(role, (errorEnergy.get(role) ?? 0) + (await outputEnergy(model, input, rows, delta, lin)));
        denseEnergy.set(role, (denseEnergy.get(role) ?? 0) + (await outputEnergy(model, input, rows, lin.weight, lin)));
      }
    });
    roles.forEach((role, i) => {
      const relativeError = errorEnergy.get(role)! / Math.max(denseEnergy.get(role)!, Number.MIN_VALUE);
      matrices[i]!.relativeError = requireFiniteNumber(relativeError, `the output error of ${matrices[i]!.name}`, model.source.path);
    });
    const forwardSeconds = (performance.now() - forwardStart) / 1000;

    // 4. Checkpoint: weights first, then the report that marks the layer finished.
    writeSafetensors(
      checkpointFile(checkpointDir, layer),
      roles.map((role) => ({ name: model.linearName(layer, role) + '.weight', shape: [linears[role].outFeatures, linears[role].inFeatures], data: linears[role].weight })),
    );
    const report: LayerReport = {
      layer,
      seconds: (performance.now() - layerStart) / 1000,
      statisticsSeconds,
      pruneSeconds,
      forwardSeconds,
      matrices,
    };
    writeJson(reportFile(checkpointDir, layer), report);
    model.releaseLayer(layer);
    reports.push(report);
    emit({ kind: 'layer-done', layers: model.numLayers, report });
  }
  return reports;
}
