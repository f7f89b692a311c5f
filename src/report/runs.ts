/**
 * Reading run folders for `topiary report` and `topiary compare`. A run folder holds any of:
 * - topiary.json, written by `topiary prune` (method, target, settings, per-layer reports);
 * - eval*.json files: the JSON of `topiary eval --json` — perplexity ({dataset, perplexity, …}) or
 *   zero-shot ({kind: 'zero-shot', tasks: […]}, what `eval --tasks … --out RUN/eval-tasks.json` writes).
 * A folder with eval results but no topiary.json is a dense model: the baseline.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TaskResult } from '../eval/zeroshot.js';
import { parseRunRecord, type BlockReport } from '../prune/record.js';
import { TopiaryError } from '../util/errors.js';
import { readJsonObject } from '../util/safe-fs.js';

export interface PruneRecord {
  method: string;
  target: string;
  sparsity: number;
  seconds: number;
  peakRssMb: number | undefined;
  settings: Record<string, unknown>;
  environment: Record<string, unknown>;
  /** The blocks that remain (removed ones have no matrices to show). */
  layers: BlockReport[];
}

export interface PerplexityRecord {
  dataset: string;
  perplexity: number;
  seqlen?: number;
  windows?: number;
  seconds?: number;
}

export interface Run {
  dir: string;
  label: string;
  baseline: boolean;
  prune?: PruneRecord;
  perplexities: PerplexityRecord[];
  tasks: TaskResult[];
  /** Files the results came from (for the report's settings section). */
  files: string[];
}

type Json = Record<string, unknown>;

function readJson(file: string): Json {
  return readJsonObject(file, { within: path.dirname(file) });
}

function list(json: Json, key: string, file: string): Json[] {
  const value = json[key];
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'object' || v === null)) throw new TopiaryError(`field "${key}" should be an array of objects`, file);
  return value as Json[];
}

function parsePruneRecord(file: string): PruneRecord {
  const record = parseRunRecord(readJson(file), file);
  const { summary } = record;
  return {
    method: summary.method,
    target: summary.target,
    sparsity: summary.sparsity,
    seconds: summary.seconds,
    peakRssMb: summary.peak_rss_mb,
    settings: record.settings,
    environment: record.environment,
    layers: record.layers.filter((layer) => !layer.removed),
  };
}

function parseTaskResults(json: Json, file: string): TaskResult[] {
  return list(json, 'tasks', file).map((task) => {
    if (typeof task.task !== 'string' || typeof task.n !== 'number' || typeof task.metrics !== 'object' || task.metrics === null) {
      throw new TopiaryError('a zero-shot task result lacks task, n or metrics', file);
    }
    return task as unknown as TaskResult;
  });
}

/** Reads one run folder; `baseline` marks it the dense reference. */
export function readRun(dir: string, baseline = false): Run {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new TopiaryError('run folder not found', dir);
  const pruneFile = path.join(dir, 'topiary.json');
  const prune = fs.existsSync(pruneFile) ? parsePruneRecord(pruneFile) : undefined;
  const evalFiles = fs
    .readdirSync(dir)
    .filter((name) => /^eval.*\.json$/.test(name))
    .sort()
    .map((name) => path.join(dir, name));
  const perplexities: PerplexityRecord[] = [];
  const tasks: TaskResult[] = [];
  for (const file of evalFiles) {
    const json = readJson(file);
    if (json.kind === 'zero-shot') {
      tasks.push(...parseTaskResults(json, file));
    } else if (typeof json.dataset === 'string' && typeof json.perplexity === 'number') {
      perplexities.push({
        dataset: json.dataset,
        perplexity: json.perplexity,
        ...(typeof json.seqlen === 'number' ? { seqlen: json.seqlen } : {}),
        ...(typeof json.windows === 'number' ? { windows: json.windows } : {}),
        ...(typeof json.seconds === 'number' ? { seconds: json.seconds } : {}),
      });
    } else {
      throw new TopiaryError('not a topiary eval result (expected the JSON of `topiary eval --json`, perplexity or --tasks)', file);
    }
  }
  if (!prune && evalFiles.length === 0) throw new TopiaryError('holds neither topiary.json nor eval*.json results', dir);
  const label = prune ? `${prune.method} ${prune.target}` : 'dense';
  return { dir, label, baseline: baseline || !prune, prune, perplexities, tasks, files: [...(prune ? [pruneFile] : []), ...evalFiles] };
}

/**
 * Reads the run folders, the baseline first: `--baseline DIR` if given, else the first folder
 * without topiary.json. Labels are made unique by adding the folder name where two runs share one.
 */
export function readRuns(dirs: readonly string[], baselineDir?: string): Run[] {
  if (dirs.length === 0 && !baselineDir) throw new TopiaryError('give at least one run folder');
  const runs = dirs.map((dir) => readRun(dir));
  if (baselineDir) {
    runs.forEach((run) => (run.baseline = false));
    runs.unshift(readRun(baselineDir, true));
  } else {
    const first = runs.findIndex((run) => run.baseline);
    runs.forEach((run, i) => (run.baseline = i === first));
    if (first > 0) runs.unshift(...runs.splice(first, 1));
  }
  const shared = new Set(runs.map((run) => run.label).filter((label, i, all) => all.indexOf(label) !== i));
  for (const run of runs) if (shared.has(run.label)) run.label = `${run.label} (${path.basename(path.resolve(run.dir))})`;
  return runs;
}
