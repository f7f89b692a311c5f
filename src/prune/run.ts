/**
 * `prune` as a library call, for every method: load the model, refuse impossible requests before
 * any work (the request, the method's options, whether the output format can express the result),
 * draw calibration windows, run the one block pipeline with the method's strategy, export the
 * pruned model streamed from the checkpoint, and write topiary.json beside it.
 *
 * The export is a Hugging Face folder when every kept block has the same shapes and no bias was
 * added (a Hugging Face config has neither per-layer sizes nor an o/down-only bias), otherwise
 * DIR/model.gguf, which llama.cpp runs (see src/export/gguf-writer.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_CALIBRATION, parseCalibrationSource, prepareCalibration, type CalibrationRequest, type PreparedCalibration } from '../data/calibration.js';
import { resolveDataDir } from '../data/datadir.js';
import { exportGguf, ggufUnsupported } from '../export/gguf-writer.js';
import { exportHfFolder, type ExportDtype, type SparseExport } from '../export/hf-folder.js';
import { CausalLM } from '../model/causal-lm.js';
import { parseHubId } from '../model/hub.js';
import { loadModel } from '../model/load.js';
import type { ModelSource } from '../model/sources.js';
import { UsageError } from '../util/errors.js';
import { environmentInfo, peakRssMb } from '../util/run-info.js';
import { CHECKPOINT_DIR, runFingerprint } from './checkpoint.js';
import { OutputFolder } from './output-folder.js';
import type { SparsityTarget } from './method.js';
import { findMethod } from './methods/index.js';
import type { RecipeSource } from './recipe.js';
import { selectLinears, type Selection } from './selection.js';
import { prunePipeline, type MethodOptions, type PipelineEvent, type PruneStrategy } from './pipeline.js';
import { RUN_RECORD_VERSION, writeRunRecord, type RunRecord, type RunSummary } from './record.js';
import { projectionRole, PROJECTIONS, structureOf } from './structured/geometry.js';
import type { StructuredMethod } from './structured/method.js';
import { structuredStrategy } from './structured/strategy.js';
import { findProfile, type SparsityProfileName } from './budgets.js';
import { findRefiner } from './refine.js';
import { isDataFree, unstructuredStrategy, validateUnstructured } from './unstructured.js';

export type SaveFormat = 'dense' | 'sparse';

/** What to remove: a sparsity or N:M pattern in every selected matrix, or a share of the decoder's parameters as whole units. */
export type PruneTarget = SparsityTarget | { kind: 'structured'; ratio: number };

export interface PruneSettings {
  model: string;
  method: string;
  target: PruneTarget;
  methodOptions: MethodOptions;
  /** Roles of the linear layers to prune in each block (unstructured; default: all). */
  roles?: readonly string[];
  /** llm-compressor-style names, `re:` patterns or class names of what to prune and what to leave (./selection.ts). */
  targets?: readonly string[];
  ignore?: readonly string[];
  /** Sparsity of each block, from a recipe's per-layer list (unstructured; `target` then holds their mean). */
  layerSparsity?: readonly number[];
  /** The recipe the method, target and selections came from, for the record. */
  recipe?: RecipeSource;
  calibration: CalibrationRequest;
  dataDir?: string;
  out: string;
  /** Continue from DIR/.topiary-checkpoint (made with the same settings) instead of starting afresh. */
  resume: boolean;
  /** Write into an --out folder that holds files other than an earlier Topiary run's. */
  overwrite?: boolean;
  /** Windows per forward chunk (activation memory); default 4. */
  batchWindows?: number;
  /**
   * Calibration windows on which each matrix's output error is measured (unstructured: two extra
   * GEMMs per matrix and window); default one in 16 windows, at least 1 and at most 8.
   */
  errorWindows?: number;
  /** Stored dtype of the exported weights; default F32 (GGUF takes BF16 as F16). */
  dtype?: ExportDtype;
  /**
   * 'sparse' stores the pruned matrices compressed (compressed-tensors sparse-bitmask, or
   * sparse-24-bitmask for 2:4); unstructured and N:M only. Default 'dense'.
   */
  saveFormat?: SaveFormat;
  /** Bytes of tensor data per safetensors shard of a Hugging Face export (default 5·10⁹, transformers' "5GB"). */
  maxShardSize?: number;
  onEvent?: (event: PipelineEvent | { kind: 'calibration'; windows: number; notes: string[] } | { kind: 'export-warning'; message: string }) => void;
  /** How an unstructured sparsity is spread over the layers (default uniform; see ./budgets.ts). */
  sparsityProfile?: SparsityProfileName;
  /** Mask refinement after an unstructured or N:M method ('dsnot'). */
  refine?: string;
}

export function describeTarget(target: PruneTarget): string {
  switch (target.kind) {
    case 'nm':
      return `${target.n}:${target.m}`;
    case 'unstructured':
      return `${(target.sparsity * 100).toFixed(1)}% unstructured`;
    case 'structured':
      return `ratio ${target.ratio} structured`;
  }
}

/**
 * Refuses, before any work, a structured run whose result no format Topiary writes can hold. A
 * Hugging Face config has one head count and MLP width for all layers, so the uneven layers of a
 * global allocation need GGUF, whose per-layer shapes llama.cpp loads only for the LLaMA block (as
 * `deci`); biases added to output projections that have none need GGUF too.
 */
function checkStructuredOutput(model: CausalLM, method: StructuredMethod, options: MethodOptions): void {
  const { family } = model;
  const structure = structureOf(family);
  const outputRoles = PROJECTIONS.map((projection) => projectionRole(structure, projection));
  const outputsLackBias = outputRoles.some((role) => !model.source.has(`${model.linearName(0, role)}.bias`));
  const addedBiasRoles = method.addsBias ? outputRoles : [];
  const unsupported = method.addsBias && outputsLackBias ? ggufUnsupported(model, { addedBiasRoles }) : undefined;
  if (unsupported) {
    throw new UsageError(`${method.name} adds biases to output projections that have none in a ${model.config.modelType} config, so it writes GGUF, and ${unsupported}; wanda-sp and magnitude-sp write Hugging Face folders`);
  }
  if (method.allocation(options) === 'global') {
    const why = family.gguf?.architectures.deci ? ggufUnsupported(model, { unevenLayers: true, addedBiasRoles }) : `llama.cpp loads per-layer shapes only for the LLaMA block (as deci), not ${family.name}`;
    const instead = method.uniformOption ? `; --option ${method.uniformOption} removes the same share from every layer and writes a Hugging Face folder` : '';
    if (why) throw new UsageError(`${method.name} gives each layer its own sizes, which a Hugging Face config cannot hold (one size for all layers), and ${why}${instead}`);
  }
}

/**
 * The method's strategy for this model, once every check that can fail has passed: whether it
 * reads calibration data at all, and the strategy itself, built once the windows' length is known
 * (DSnoT's threshold is on the scale of one window's sum).
 */
function strategyFor(model: CausalLM, settings: PruneSettings, errorWindows: number): { dataFree: boolean; build: (windowLength: number) => PruneStrategy; selection?: Selection } {
  const found = findMethod(settings.method);
  const { target, methodOptions } = settings;
  if (found.kind === 'structured') {
    const method = found.method;
    if (target.kind !== 'structured') throw new UsageError(`${method.name} is structured: give --ratio R, not --sparsity/--pattern`);
    if (!(target.ratio >= 0 && target.ratio < 1)) throw new UsageError(`--ratio must be a number in [0, 1), got ${target.ratio}`);
    if (settings.roles || settings.targets || settings.ignore || settings.layerSparsity) throw new UsageError('--layers, --targets, --ignore and per-layer sparsities are for unstructured and N:M pruning');
    if (settings.sparsityProfile || settings.refine) throw new UsageError(`--sparsity-profile and --refine are for the unstructured and N:M methods, not ${method.name}`);
    const unknown = Object.keys(methodOptions).filter((key) => !Object.hasOwn(method.options, key));
    if (unknown.length > 0) {
      const accepted = Object.keys(method.options).length > 0 ? `it accepts ${Object.keys(method.options).join(', ')}` : 'it takes no options';
      throw new UsageError(`${method.name} does not understand ${unknown.map((key) => `"${key}"`).join(', ')} (${accepted})`);
    }
    const reason = method.invalidOptions(methodOptions);
    if (reason) throw new UsageError(`${method.name}: ${reason}`);
    checkStructuredOutput(model, method, methodOptions);
    const strategy = structuredStrategy(model, method, target.ratio, methodOptions);
    return { dataFree: strategy.dataFree === true, build: () => strategy };
  }
  const method = found.method;
  if (target.kind === 'structured') throw new UsageError(`--ratio is for the structured methods; ${method.name} takes --sparsity P or --pattern N:M`);
  const selection = selectLinears(model, settings);
  const refiner = settings.refine ? findRefiner(settings.refine) : undefined;
  const request = {
    method,
    target,
    methodOptions,
    roles: selection.roles,
    layerRoles: selection.layerRoles,
    ...(settings.layerSparsity ? { layerSparsity: settings.layerSparsity } : {}),
    ...(settings.sparsityProfile ? { profile: findProfile(settings.sparsityProfile) } : {}),
  };
  const withRefiner = (windowLength: number) => ({ ...request, ...(refiner ? { refine: { refiner, windowLength } } : {}) });
  validateUnstructured(model, withRefiner(0));
  return { dataFree: isDataFree(withRefiner(0)), build: (windowLength) => unstructuredStrategy(model, { ...withRefiner(windowLength), errorWindows }), selection };
}

/** Whether every kept block has the same shapes and only the biases the original has: what a Hugging Face config can describe. */
function fitsHuggingFace(pruned: ModelSource, original: ModelSource): boolean {
  const { family } = pruned;
  const layers = pruned.config.numLayers;
  for (const spec of family.linears) {
    const shape = (layer: number) => pruned.shape(`${family.layerPrefix(layer)}${spec.name}.weight`).join('x');
    for (let layer = 1; layer < layers; layer++) if (shape(layer) !== shape(0)) return false;
  }
  // A bias the original's linear layer lacks was added by compensation (FLAP, COMP).
  const hasBias = (source: ModelSource, layer: number, name: string) => source.has(`${family.layerPrefix(layer)}${name}.bias`);
  for (const { name } of family.linears) {
    for (let layer = 0; layer < layers; layer++) if (hasBias(pruned, layer, name) && !hasBias(original, 0, name)) return false;
  }
  return true;
}

export async function pruneModel(settings: PruneSettings): Promise<RunSummary> {
  const started = performance.now();
  findMethod(settings.method);
  if (settings.calibration.corpus !== undefined) parseCalibrationSource(settings.calibration.corpus);
  if (settings.saveFormat === 'sparse' && settings.target.kind === 'structured') {
    throw new UsageError('--save-format sparse is for unstructured and N:M pruning (structured pruning removes weights instead of zeroing them)');
  }
  // The output folder is checked and locked before any work.
  const output = OutputFolder.claim(settings.out, { overwrite: settings.overwrite ?? false });
  try {
    return await pruneInto(output, settings, started);
  } finally {
    output.release();
  }
}

/**
 * The run's calibration windows, or none for a data-free strategy (magnitude), which then needs no
 * data folder, no corpus and no tokenizer: flags about calibration are noted as unused.
 */
function calibrationFor(model: CausalLM, settings: PruneSettings, dataFree: boolean): PreparedCalibration {
  const request = settings.calibration;
  if (!dataFree) {
    const facts = { tokenizer: () => model.tokenizer, vocabSize: model.config.vocabSize, maxPositions: model.config.maxPositionEmbeddings, hiddenSize: model.config.hiddenSize };
    return prepareCalibration(facts, request, () => resolveDataDir(settings.dataDir));
  }
  if (request.save) throw new UsageError(`--save-calibration: ${settings.method} uses no calibration windows (it decides from the weights alone)`);
  const given = request.corpus !== undefined || request.nsamples !== undefined || request.seqlen !== undefined;
  const notes = given ? [`${settings.method} decides from the weights alone: the calibration settings were not used`] : [];
  return { windows: [], settings: { used: false }, description: { windows: 0, notes }, notes };
}

/** What topiary.json and the checkpoint fingerprint record about the selection: the request and the roles it came to. */
function selectionRecord(settings: PruneSettings, selection: Selection): Record<string, unknown> {
  return {
    roles: selection.roles,
    ...(settings.targets ? { targets: settings.targets } : {}),
    ...(settings.ignore ? { ignore: settings.ignore } : {}),
    ...(settings.targets || settings.ignore ? { layerRoles: selection.layerRoles } : {}),
    ...(settings.layerSparsity ? { layerSparsity: settings.layerSparsity } : {}),
  };
}

async function pruneInto(output: OutputFolder, settings: PruneSettings, started: number): Promise<RunSummary> {
  const model = await loadModel(settings.model);
  const nsamples = settings.calibration.nsamples ?? DEFAULT_CALIBRATION.nsamples;
  const errorWindows = settings.errorWindows ?? Math.max(1, Math.min(8, Math.round(nsamples / 16)));
  const { dataFree, build, selection } = strategyFor(model, settings, errorWindows);
  const selectionSettings = selection ? selectionRecord(settings, selection) : {};
  const calibration = calibrationFor(model, settings, dataFree);
  const strategy = build(calibration.windows[0]?.length ?? 0);
  const budgetSettings = {
    ...(settings.sparsityProfile && settings.sparsityProfile !== 'uniform' ? { sparsityProfile: settings.sparsityProfile } : {}),
    ...(settings.refine ? { refine: settings.refine } : {}),
  };
  const out = output.dir;
  const checkpointDir = path.join(out, CHECKPOINT_DIR);
  const calibrationSettings = calibration.settings;
  const batchWindows = settings.batchWindows ?? 4;
  const fingerprint = runFingerprint(model.source.path, {
    method: settings.method,
    target: settings.target,
    options: settings.methodOptions,
    ...selectionSettings,
    ...budgetSettings,
    calibration: calibrationSettings,
    batchWindows,
  });

  settings.onEvent?.({ kind: 'calibration', windows: calibration.windows.length, notes: calibration.notes });

  const result = await prunePipeline(model, calibration.windows, strategy, {
    batchWindows,
    checkpoint: { dir: checkpointDir, fingerprint, resume: settings.resume },
    ...(settings.onEvent ? { onEvent: settings.onEvent } : {}),
  });

  // Export, streamed from the checkpoint into a staging folder that replaces the old contents at once.
  const staging = output.stage();
  const pruned = result.source();
  const smaller = new CausalLM(pruned, model.backend);
  const dtype = settings.dtype ?? 'F32';
  const warnings: string[] = [];
  let format: RunSummary['format'];
  let files: string[];
  let sparse: SparseExport | undefined;
  if (fitsHuggingFace(pruned, model.source)) {
    format = 'safetensors';
    const { target } = settings;
    const exported = exportHfFolder(smaller, staging, {
      dtype,
      override: () => undefined,
      ...(settings.maxShardSize !== undefined ? { maxShardSize: settings.maxShardSize } : {}),
      ...(settings.saveFormat === 'sparse'
        ? {
            sparse: {
              matrices: result.reports.flatMap((report) => report.matrices.map((matrix) => `${matrix.name}.weight`)),
              ...(target.kind === 'nm' ? { pattern: { n: target.n, m: target.m } } : {}),
            },
          }
        : {}),
    });
    files = exported.files;
    sparse = exported.sparse;
    warnings.push(...exported.warnings);
  } else {
    format = 'gguf';
    const file = path.join(staging, 'model.gguf');
    const written = exportGguf(smaller, file, { dtype: dtype === 'F32' ? 'F32' : 'F16', name: `${path.basename(settings.model)} ${settings.method} ${describeTarget(settings.target)}` });
    warnings.push(...written.warnings);
    files = [file];
  }
  for (const message of warnings) settings.onEvent?.({ kind: 'export-warning', message });
  const bytes = files.reduce((sum, file) => sum + fs.statSync(file).size, 0);

  const paramsBefore = result.reports.reduce((sum, report) => sum + report.paramsBefore, 0);
  const paramsAfter = result.reports.reduce((sum, report) => sum + report.paramsAfter, 0);
  const structured = settings.target.kind === 'structured';
  let zeros = 0;
  let total = 0;
  for (const report of result.reports) {
    for (const matrix of report.matrices) {
      zeros += matrix.sparsity * matrix.rows * matrix.cols;
      total += matrix.rows * matrix.cols;
    }
  }
  const summary: RunSummary = {
    method: settings.method,
    target: describeTarget(settings.target),
    kind: structured ? 'structured' : 'unstructured',
    sparsity: structured ? 1 - paramsAfter / paramsBefore : zeros / Math.max(total, 1),
    paramsBefore,
    paramsAfter,
    layersRemoved: model.numLayers - result.keptLayers.length,
    format,
    seconds: (performance.now() - started) / 1000,
    peak_rss_mb: peakRssMb(),
    out,
    layers: result.reports.length,
  };
  const record: RunRecord = {
    command: 'prune',
    version: RUN_RECORD_VERSION,
    summary,
    settings: {
      model: parseHubId(settings.model) ? settings.model : path.resolve(settings.model),
      family: model.family.name,
      method: settings.method,
      target: settings.target,
      ...(structured
        ? { ratioDefinition: 'fraction of the parameters of the decoder blocks (projections, norms, biases) removed; embeddings and head untouched' }
        : {}),
      methodOptions: settings.methodOptions,
      ...selectionSettings,
      ...budgetSettings,
      ...(settings.recipe ? { recipe: settings.recipe } : {}),
      calibration: calibrationSettings,
      batchWindows,
      ...(structured || strategy.dataFree ? {} : { errorWindows }),
      dtype: format === 'gguf' && dtype !== 'F32' ? 'F16' : dtype,
      saveFormat: settings.saveFormat ?? 'dense',
      resumed: settings.resume,
    },
    calibration: calibration.description,
    environment: environmentInfo(model.backend),
    output: { format, files: files.map((file) => path.basename(file)), bytes, warnings, ...(sparse ? { sparse } : {}) },
    layers: result.reports,
  };
  writeRunRecord(path.join(staging, 'topiary.json'), record);
  output.publish(staging);
  fs.rmSync(checkpointDir, { recursive: true, force: true });
  model.source.close();
  return summary;
}
