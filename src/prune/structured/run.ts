/**
 * Structured `prune` as a library call: load the model, refuse impossible requests, draw the
 * calibration windows, run the structured pipeline, export the smaller model and write
 * topiary.json. The export is a Hugging Face folder when every layer keeps the same shapes and no
 * bias was added (transformers' LlamaConfig has neither per-layer sizes nor an o/down-only bias),
 * otherwise DIR/model.gguf, which llama.cpp runs (see src/export/gguf-writer.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkCalibrationFits, describeCalibration, drawCalibration } from '../../data/calibration.js';
import { describeCorpus, parseCorpusSpec, type CorpusSpec } from '../../data/corpora.js';
import { resolveDataDir } from '../../data/datadir.js';
import { exportGguf } from '../../export/gguf-writer.js';
import { exportHfFolder, type ExportDtype } from '../../export/hf-folder.js';
import { CausalLM } from '../../model/decoder.js';
import { loadModel } from '../../model/load.js';
import { writeFileContentAtomic } from '../../util/atomic.js';
import { UsageError } from '../../util/errors.js';
import { environmentInfo, peakRssMb } from '../../util/run-info.js';
import { CHECKPOINT_DIR, runFingerprint } from '../checkpoint.js';
import { OutputFolder } from '../output-folder.js';
import type { MethodOptions } from '../pipeline.js';
import { structuredMethodByName } from './index.js';
import type { StructuredMethod } from './method.js';
import { pruneStructured, type StructuredEvent } from './pipeline.js';
import { prunedSource } from './pruned-source.js';

export interface StructuredPruneSettings {
  model: string;
  method: string;
  ratio: number;
  methodOptions: MethodOptions;
  calibration: { corpus: string; nsamples: number; seqlen?: number; seed: number };
  dataDir?: string;
  out: string;
  /** Continue from DIR/.topiary-checkpoint (made with the same settings) instead of starting afresh. */
  resume: boolean;
  /** Write into an --out folder that holds files other than an earlier Topiary run's. */
  overwrite?: boolean;
  batchWindows?: number;
  /** F32 (default) or F16 weights; BF16 is written as F16 in GGUF. */
  dtype?: ExportDtype;
  onEvent?: (event: StructuredEvent | { kind: 'calibration'; windows: number; notes: string[] } | { kind: 'export-warning'; message: string }) => void;
}

export interface StructuredSummary {
  method: string;
  ratio: number;
  achievedRatio: number;
  paramsBefore: number;
  paramsAfter: number;
  layersRemoved: number;
  format: 'safetensors' | 'gguf';
  seconds: number;
  peak_rss_mb: number;
  out: string;
  bytes: number;
}

export function validateStructuredRequest(methodName: string, ratio: number, options: MethodOptions): void {
  const method = structuredMethodByName(methodName);
  if (!(ratio >= 0 && ratio < 1)) throw new UsageError(`--ratio must be a number in [0, 1), got ${ratio}`);
  const unknown = Object.keys(options).filter((key) => !method.optionNames.includes(key));
  if (unknown.length > 0) {
    const accepted = method.optionNames.length > 0 ? `it accepts ${method.optionNames.join(', ')}` : 'it takes no options';
    throw new UsageError(`${method.name} does not understand ${unknown.map((key) => `"${key}"`).join(', ')} (${accepted})`);
  }
  const reason = method.invalidOptions(options);
  if (reason) throw new UsageError(`${method.name}: ${reason}`);
}

export async function pruneModelStructured(settings: StructuredPruneSettings): Promise<StructuredSummary> {
  const started = performance.now();
  validateStructuredRequest(settings.method, settings.ratio, settings.methodOptions);
  const method = structuredMethodByName(settings.method);
  const corpus = parseCorpusSpec(settings.calibration.corpus);
  // The output folder is checked and locked before any work.
  const output = OutputFolder.claim(settings.out, { overwrite: settings.overwrite ?? false });
  try {
    return await pruneStructuredInto(output, settings, { method, corpus }, started);
  } finally {
    output.release();
  }
}

async function pruneStructuredInto(
  output: OutputFolder,
  settings: StructuredPruneSettings,
  { method, corpus }: { method: StructuredMethod; corpus: CorpusSpec },
  started: number,
): Promise<StructuredSummary> {
  const model = await loadModel(settings.model);
  const seqlen = settings.calibration.seqlen ?? Math.min(2048, model.config.maxPositionEmbeddings);
  if (seqlen > model.config.maxPositionEmbeddings) {
    throw new UsageError(`--seqlen ${seqlen} exceeds the model's context (${model.config.maxPositionEmbeddings})`);
  }
  checkCalibrationFits(settings.calibration.nsamples, seqlen, model.config.hiddenSize);
  const dataDir = corpus.kind === 'text' ? '' : resolveDataDir(settings.dataDir);
  const calibrationSettings = { corpus: describeCorpus(corpus), nsamples: settings.calibration.nsamples, seqlen, seed: settings.calibration.seed };
  const calibration = drawCalibration(model.tokenizer, { ...calibrationSettings, corpus }, dataDir);
  settings.onEvent?.({ kind: 'calibration', windows: calibration.windows.length, notes: calibration.notes });
  const batchWindows = settings.batchWindows ?? 4;
  const out = output.dir;
  const checkpointDir = path.join(out, CHECKPOINT_DIR);
  const fingerprint = runFingerprint(settings.model, {
    method: method.name,
    ratio: settings.ratio,
    options: settings.methodOptions,
    calibration: calibrationSettings,
    batchWindows,
  });

  const result = await pruneStructured(model, calibration.windows, {
    method,
    ratio: settings.ratio,
    methodOptions: settings.methodOptions,
    batchWindows,
    checkpoint: { dir: checkpointDir, fingerprint, resume: settings.resume },
    ...(settings.onEvent ? { onEvent: settings.onEvent } : {}),
  });

  const smaller = new CausalLM(prunedSource(model.source, model.spec, result.keptLayers, result.pruned), model.spec, model.backend);
  const layers = [...result.pruned.values()];
  const first = layers[0]!.linears;
  const uniform = layers.every(
    (l) => l.linears.q.outFeatures === first.q.outFeatures && l.linears.k.outFeatures === first.k.outFeatures && l.linears.gate.outFeatures === first.gate.outFeatures,
  );
  const hasAddedBias = layers.some((l) => Object.values(l.linears).some((lin) => lin.bias));
  const dtype = settings.dtype ?? 'F32';
  let format: StructuredSummary['format'];
  let files: string[];
  const exportWarnings: string[] = [];
  const staging = output.stage();
  if (uniform && !hasAddedBias) {
    format = 'safetensors';
    const exported = exportHfFolder(smaller, staging, { dtype, override: () => undefined });
    files = exported.files;
    exportWarnings.push(...exported.warnings);
  } else {
    format = 'gguf';
    const file = path.join(staging, 'model.gguf');
    const written = exportGguf(smaller, file, { dtype: dtype === 'F32' ? 'F32' : 'F16', name: `${path.basename(settings.model)} ${method.name} ${settings.ratio}` });
    exportWarnings.push(...written.warnings);
    files = [file];
  }
  for (const message of exportWarnings) settings.onEvent?.({ kind: 'export-warning', message });
  const bytes = files.reduce((sum, file) => sum + fs.statSync(file).size, 0);

  const summary: StructuredSummary = {
    method: method.name,
    ratio: settings.ratio,
    achievedRatio: result.achievedRatio,
    paramsBefore: result.paramsBefore,
    paramsAfter: result.paramsAfter,
    layersRemoved: model.numLayers - result.keptLayers.length,
    format,
    seconds: (performance.now() - started) / 1000,
    peak_rss_mb: peakRssMb(),
    out,
    bytes,
  };
  const record = {
    command: 'prune',
    structured: true,
    summary,
    settings: {
      model: path.resolve(settings.model),
      method: method.name,
      ratio: settings.ratio,
      ratioDefinition: 'fraction of the parameters of the decoder layers (projections, norms, biases) removed; embeddings and head untouched',
      methodOptions: settings.methodOptions,
      calibration: calibrationSettings,
      batchWindows,
      dtype: format === 'gguf' && dtype !== 'F32' ? 'F16' : dtype,
      resumed: settings.resume,
    },
    calibration: describeCalibration(calibration),
    environment: environmentInfo(model.backend),
    output: { format, files: files.map((file) => path.basename(file)), bytes, warnings: exportWarnings },
    keptLayers: result.keptLayers,
    layers: result.outcomes,
  };
  writeFileContentAtomic(path.join(staging, 'topiary.json'), JSON.stringify(record, null, 1) + '\n');
  output.publish(staging);
  fs.rmSync(checkpointDir, { recursive: true, force: true });
  model.source.close();
  return summary;
}
