/**
 * Topiary as a library: the functions the `topiary` commands are made of, typed.
 *
 *     import { loadModel, prune, datasetPerplexity } from 'topiary';
 *
 * Errors about input or requests are `TopiaryError`s (`UsageError` for a bad request) whose message
 * is one line naming the file and the problem, as the CLI prints them.
 */
import { pruneModel, type PruneSettings } from './prune/run.js';
import type { RunSummary } from './prune/record.js';

export { loadModel, type LoadOptions } from './model/load.js';
export { resolveModelPath, hubCacheDir, type HubOptions } from './model/hub.js';
export type { CausalLM } from './model/causal-lm.js';
export type { ModelConfig } from './model/config.js';
export type { Tokenizer } from './tokenizers/tokenizer.js';
export { generate, type GenerateOptions } from './model/generate.js';
export { supportedModelTypes } from './model/families/index.js';

export { perplexity, datasetPerplexity, type PerplexityOptions, type PerplexityResult, type DatasetPerplexityOptions, type DatasetPerplexity } from './eval/perplexity.js';
export { evaluateTask, type TaskResult, type EvaluateTaskOptions } from './eval/zeroshot.js';
export { TASKS, parseTaskList, type TaskDefinition } from './eval/tasks/index.js';

export { METHODS } from './prune/methods/index.js';
export { STRUCTURED_METHODS } from './prune/structured/index.js';
export { pruneModel, type PruneSettings, type PruneTarget, type SaveFormat } from './prune/run.js';
export type { SparseStorage } from './formats/tensors.js';
export type { RunRecord, RunSummary } from './prune/record.js';
export type { SparsityTarget } from './prune/method.js';

export { getBackend, describeBackend, type BackendKind } from './backend/index.js';
export { TopiaryError, UsageError } from './util/errors.js';

/** `pruneModel`'s settings with the CLI's defaults filled in: only model, method, target and out are required. */
export type PruneRequest = Pick<PruneSettings, 'model' | 'method' | 'target' | 'out'> &
  Partial<Omit<PruneSettings, 'model' | 'method' | 'target' | 'out' | 'calibration'>> & {
    /** Default: C4, 128 windows of min(2048, context) tokens, seed 0 (as `topiary prune`). */
    calibration?: Partial<PruneSettings['calibration']>;
  };

/**
 * Prunes `model` into the folder `out` as `topiary prune` does (the same checks, checkpoint,
 * topiary.json and output files) and returns the run's summary.
 */
export function prune(request: PruneRequest): Promise<RunSummary> {
  const { calibration, ...rest } = request;
  return pruneModel({
    methodOptions: {},
    resume: false,
    ...rest,
    // Corpus and window count left unset take prepareCalibration's defaults (c4, 128), as the CLI's do.
    calibration: { seed: 0, ...calibration },
  });
}
