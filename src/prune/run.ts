/**
 * `prune` as a library call: load the model, refuse impossible requests, draw calibration windows,
 * run the layer-wise pipeline, export the pruned model and write topiary.json beside it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkCalibrationFits, describeCalibration, drawCalibration } from '../data/calibration.js';
import { describeCorpus, parseCorpusSpec, type CorpusSpec } from '../data/corpora.js';
import { resolveDataDir } from '../data/datadir.js';
import { exportHfFolder, type ExportDtype } from '../export/hf-folder.js';
import { LINEAR_ROLES, type LinearRole } from '../model/architectures/index.js';
import { loadModel } from '../model/load.js';
import { openSafetensors } from '../formats/safetensors.js';
import { writeFileContentAtomic } from '../util/atomic.js';
import { UsageError } from '../util/errors.js';
import { environmentInfo, peakRssMb } from '../util/run-info.js';
import { CHECKPOINT_DIR, runFingerprint } from './checkpoint.js';
import { OutputFolder } from './output-folder.js';
import type { SparsityTarget, UnstructuredMethod } from './method.js';
import { methodByName } from './methods/index.js';
import { checkpointFile, pruneLayerwise, validateRequest, type LayerReport, type MethodOptions, type PipelineEvent } from './pipeline.js';

export interface PruneSettings {
  model: string;
  method: string;
  target: SparsityTarget;
  methodOptions: MethodOptions;
  /** Linear layers to prune in each decoder layer (default: all). */
  roles?: readonly LinearRole[];
  calibration: { corpus: string; nsamples: number; seqlen?: number; seed: number };
  dataDir?: string;
  out: string;
  resume: boolean;
  /** Write into an --out folder that holds files other than an earlier Topiary run's. */
  overwrite?: boolean;
  /** Windows per forward chunk (activation memory); default 4. */
  batchWindows?: number;
  /**
   * Calibration windows on which each matrix's output error is measured (two extra GEMMs per
   * matrix and window); default one in 16 windows, at least 1 and at most 8.
   */
  errorWindows?: number;
  /** Stored dtype of the exported weights; default F32. */
  dtype?: ExportDtype;
  onEvent?: (event: PipelineEvent | { kind: 'calibration'; windows: number; notes: string[] } | { kind: 'export-warning'; message: string }) => void;
}

export interface PruneSummary {
  method: string;
  target: string;
  /** Fraction of zeros over all pruned matrices. */
  sparsity: number;
  seconds: number;
  peak_rss_mb: number;
  out: string;
  layers: number;
}

export function describeTarget(target: SparsityTarget): string {
  return target.kind === 'nm' ? `${target.n}:${target.m}` : `${(target.sparsity * 100).toFixed(1)}% unstructured`;
}

export async function pruneModel(settings: PruneSettings): Promise<PruneSummary> {
  const started = performance.now();
  const method = methodByName(settings.method);
  const roles = settings.roles ?? LINEAR_ROLES;
  const unknownRole = roles.find((role) => !LINEAR_ROLES.includes(role));
  if (unknownRole) throw new UsageError(`unknown layer "${unknownRole}" (choose from ${LINEAR_ROLES.join(', ')})`);
  const repeatedRole = roles.find((role, i) => roles.indexOf(role) !== i);
  if (repeatedRole) throw new UsageError(`layer "${repeatedRole}" is named twice in --layers`);
  const corpus = parseCorpusSpec(settings.calibration.corpus);
  // The output folder is checked and locked before any work.
  const output = OutputFolder.claim(settings.out, { overwrite: settings.overwrite ?? false });
  try {
    return await pruneInto(output, settings, { method, roles, corpus }, started);
  } finally {
    output.release();
  }
}

async function pruneInto(
  output: OutputFolder,
  settings: PruneSettings,
  { method, roles, corpus }: { method: UnstructuredMethod; roles: readonly LinearRole[]; corpus: CorpusSpec },
  started: number,
): Promise<PruneSummary> {
  const model = await loadModel(settings.model);
  validateRequest(model, { method, target: settings.target, methodOptions: settings.methodOptions, roles });
  const seqlen = settings.calibration.seqlen ?? Math.min(2048, model.config.maxPositionEmbeddings);
  if (seqlen > model.config.maxPositionEmbeddings) {
    throw new UsageError(`--seqlen ${seqlen} exceeds the model's context (${model.config.maxPositionEmbeddings})`);
  }
  checkCalibrationFits(settings.calibration.nsamples, seqlen, model.config.hiddenSize);
  const dataDir = corpus.kind === 'text' ? '' : resolveDataDir(settings.dataDir);
  const out = output.dir;
  const checkpointDir = path.join(out, CHECKPOINT_DIR);
  const calibrationSettings = { corpus: describeCorpus(corpus), nsamples: settings.calibration.nsamples, seqlen, seed: settings.calibration.seed };
  const batchWindows = settings.batchWindows ?? 4;
  const errorWindows = settings.errorWindows ?? Math.max(1, Math.min(8, Math.round(settings.calibration.nsamples / 16)));
  const fingerprint = runFingerprint(settings.model, {
    method: method.name,
    target: settings.target,
    options: settings.methodOptions,
    roles,
    calibration: calibrationSettings,
    batchWindows,
  });

  const calibration = drawCalibration(model.tokenizer, { ...calibrationSettings, corpus }, dataDir);
  settings.onEvent?.({ kind: 'calibration', windows: calibration.windows.length, notes: calibration.notes });

  const layers: LayerReport[] = await pruneLayerwise(model, calibration.windows, {
    method,
    target: settings.target,
    methodOptions: settings.methodOptions,
    roles,
    batchWindows,
    checkpointDir,
    fingerprint,
    resume: settings.resume,
    errorWindows,
    ...(settings.onEvent ? { onEvent: settings.onEvent } : {}),
  });

  const pruned = new Map<string, number>();
  for (let layer = 0; layer < model.numLayers; layer++) {
    for (const role of roles) pruned.set(`${model.linearName(layer, role)}.weight`, layer);
  }
  const staging = output.stage();
  const exported = exportHfFolder(model, staging, {
    dtype: settings.dtype ?? 'F32',
    override(name) {
      const layer = pruned.get(name);
      if (layer === undefined) return undefined;
      return () => {
        const store = openSafetensors(checkpointFile(checkpointDir, layer));
        try {
          return store.read(name);
        } finally {
          store.close();
        }
      };
    },
  });
  for (const message of exported.warnings) settings.onEvent?.({ kind: 'export-warning', message });

  let zeros = 0;
  let total = 0;
  for (const layer of layers) {
    for (const matrix of layer.matrices) {
      zeros += matrix.sparsity * matrix.rows * matrix.cols;
      total += matrix.rows * matrix.cols;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const summary: PruneSummary = {
    method: method.name,
    target: describeTarget(settings.target),
    sparsity: zeros / total,
    seconds,
    peak_rss_mb: peakRssMb(),
    out,
    layers: layers.length,
  };
  const record = {
    command: 'prune',
    summary,
    settings: {
      model: path.resolve(settings.model),
      method: method.name,
      target: settings.target,
      methodOptions: settings.methodOptions,
      roles,
      calibration: calibrationSettings,
      batchWindows,
      errorWindows,
      dtype: settings.dtype ?? 'F32',
      resumed: settings.resume,
    },
    calibration: describeCalibration(calibration),
    environment: environmentInfo(model.backend),
    output: { files: exported.files.map((file) => path.basename(file)), bytes: exported.bytes, warnings: exported.warnings },
    layers,
  };
  writeFileContentAtomic(path.join(staging, 'topiary.json'), JSON.stringify(record, null, 1) + '\n');
  output.publish(staging);
  fs.rmSync(checkpointDir, { recursive: true, force: true });
  model.source.close();
  return summary;
}
