/**
 * The run record, `topiary.json`: one versioned type written by `prune` (unstructured, N:M and
 * structured alike) and read by `report`, `compare` and resume. Per-block reports are also what a
 * checkpoint keeps for each finished block, so a resumed run records exactly what an
 * uninterrupted one would.
 */
import type { SparseExport } from '../export/hf-folder.js';
import { writeFileContentAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';

export const RUN_RECORD_VERSION = 2;

/** One pruned matrix. */
export interface MatrixReport {
  /** Full tensor name without `.weight`, e.g. 'model.layers.3.mlp.down_proj'. */
  name: string;
  /** The family's role for it ('q', 'down', 'qkv', …). */
  role: string;
  /** Shape before pruning. */
  rows: number;
  cols: number;
  /** Share of the original weights that are now zero or removed. */
  sparsity: number;
  /**
   * ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² on the calibration inputs the method's meter saw; null when not measured
   * (data-free methods such as magnitude run no forward pass, so there are no inputs X).
   */
  relativeError: number | null;
  seconds: number;
  method: Record<string, number | string | boolean | number[]>;
}

/** What structured pruning did to one block (absent for unstructured runs). */
export interface StructureReport {
  /** 1 − mean cos(h_in, h_out) on the dense model, when whole-block removal was considered (COMP). */
  importance?: number;
  attention?: { groupsBefore: number; headsPerGroup: number; keptGroups: number[]; removedGroups: { group: number; score: number }[] };
  mlp?: { channelsBefore: number; channelsKept: number; removedChannels: number[]; removedScores: number[] };
  compensation?: Record<string, Record<string, number | string>>;
  /** Relative output error of each output projection: columns dropped, with bias compensation, as the method left it. */
  errors?: Record<string, { none: number; bias: number; final: number }>;
}

/** A layer's share of a non-uniform sparsity budget (`--sparsity-profile`, see ../prune/budgets.ts). */
export interface LayerBudget {
  profile: string;
  /** The score the budget was mapped from: OWL's outlier ratio (percent), AlphaPruning's mean Hill α. */
  score: number;
  /** The layer's target sparsity before rounding to whole weights. */
  sparsity: number;
  /** Weights to prune in the layer's pruned matrices (whole numbers; over the run they add up to floor(p·N)). */
  zeros: number;
  /** What the score was made of (AlphaPruning: `alpha.ROLE` of each matrix). */
  details: Record<string, number>;
}

export interface BlockReport {
  layer: number;
  /** The whole block was removed (COMP's coarse stage). */
  removed: boolean;
  seconds: number;
  statisticsSeconds: number;
  pruneSeconds: number;
  forwardSeconds: number;
  paramsBefore: number;
  paramsAfter: number;
  matrices: MatrixReport[];
  structure?: StructureReport;
  /** Present when the run spread its sparsity over the layers with a profile other than uniform. */
  budget?: LayerBudget;
}

export interface RunSummary {
  method: string;
  /** '50.0% unstructured', '2:4', 'ratio 0.2 structured'. */
  target: string;
  kind: 'unstructured' | 'structured';
  /** Unstructured: share of zeros over the pruned matrices. Structured: share of the decoder's parameters removed. */
  sparsity: number;
  paramsBefore: number;
  paramsAfter: number;
  layersRemoved: number;
  format: 'safetensors' | 'gguf';
  seconds: number;
  peak_rss_mb: number;
  out: string;
  layers: number;
}

export interface RunRecord {
  command: 'prune';
  version: typeof RUN_RECORD_VERSION;
  summary: RunSummary;
  settings: Record<string, unknown>;
  calibration: Record<string, unknown>;
  environment: Record<string, unknown>;
  /** `sparse`: how the pruned matrices were stored compressed (prune --save-format sparse). */
  output: { format: 'safetensors' | 'gguf'; files: string[]; bytes: number; warnings: string[]; sparse?: SparseExport };
  layers: BlockReport[];
}

export function writeRunRecord(file: string, record: RunRecord): void {
  writeFileContentAtomic(file, JSON.stringify(record, null, 1) + '\n');
}

type Json = Record<string, unknown>;

/** Checks the fields readers rely on; anything else is passed through as written. */
export function parseRunRecord(value: unknown, file: string): RunRecord {
  const fail = (what: string): never => {
    throw new TopiaryError(what, file);
  };
  const object = (v: unknown, what: string): Json => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : fail(`${what} should be an object`));
  const number = (json: Json, key: string): number => {
    const v = json[key];
    return typeof v === 'number' && Number.isFinite(v) ? v : fail(`field "${key}" should be a number, found ${JSON.stringify(v)}`);
  };
  const array = (json: Json, key: string): Json[] => {
    const v = json[key];
    return Array.isArray(v) ? v.map((item) => object(item, `an entry of "${key}"`)) : fail(`field "${key}" should be an array`);
  };
  const json = object(value, 'topiary.json');
  if (json.command !== 'prune') fail('is not a topiary prune record (command should be "prune")');
  if (json.version !== RUN_RECORD_VERSION) fail(`is a version ${JSON.stringify(json.version ?? 1)} run record; this Topiary reads version ${RUN_RECORD_VERSION} (re-run the prune)`);
  const summary = object(json.summary, 'field "summary"');
  for (const key of ['sparsity', 'seconds', 'paramsBefore', 'paramsAfter', 'layersRemoved', 'layers']) number(summary, key);
  if (typeof summary.method !== 'string' || typeof summary.target !== 'string') fail('the summary lacks method or target');
  if (summary.kind !== 'unstructured' && summary.kind !== 'structured') fail('field "kind" should be "unstructured" or "structured"');
  object(json.settings, 'field "settings"');
  for (const layer of array(json, 'layers')) {
    for (const key of ['layer', 'seconds', 'statisticsSeconds', 'pruneSeconds', 'forwardSeconds', 'paramsBefore', 'paramsAfter']) number(layer, key);
    if (layer.budget !== undefined) {
      const budget = object(layer.budget, 'field "budget"');
      for (const key of ['score', 'sparsity', 'zeros']) number(budget, key);
      if (typeof budget.profile !== 'string') fail('a layer budget lacks its profile');
      for (const key of Object.keys(object(budget.details, 'field "details"'))) number(budget.details as Json, key);
    }
    for (const matrix of array(layer, 'matrices')) {
      for (const key of ['rows', 'cols', 'sparsity', 'seconds']) number(matrix, key);
      if (matrix.relativeError !== null) number(matrix, 'relativeError');
      if (typeof matrix.role !== 'string') fail('a matrix report lacks its role');
    }
  }
  return json as unknown as RunRecord;
}
