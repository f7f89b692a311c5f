/** Logit parity with transformers, shared by the parity tests of the committed and generated models. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { Backend } from '../src/backend/backend.js';
import { getBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';
import { repoRoot } from './helpers.js';

/** max |ours − transformers| / max |transformers|. */
export const PARITY_TOLERANCE = 1e-4;

export interface LogitsReference {
  inputIds: number[][];
  /** transformers' logits, [windows × tokens × vocab]. */
  logits: ArrayLike<number>;
}

interface WorstDifference {
  relative: number;
  index: number;
}

/** The largest |actual − expected| relative to max |expected|; NaN or Infinity counts as infinitely wrong. */
export function relativeDifference(actual: Float32Array, expected: ArrayLike<number>): number {
  return worstRelativeDifference(actual, expected).relative;
}

/** relativeDifference, with where the worst element is, for the failure message. */
function worstRelativeDifference(actual: Float32Array, expected: ArrayLike<number>): WorstDifference {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  let worst: WorstDifference = { relative: 0, index: -1 };
  for (let i = 0; i < expected.length; i++) {
    const difference = Math.abs(actual[i]! - expected[i]!);
    const relative = Number.isFinite(difference) ? difference / scale : Infinity;
    if (relative > worst.relative) worst = { relative, index: i };
  }
  return worst;
}

/** Loads the model in `dir` on `backend` and asserts its logits for the reference windows match. */
export async function assertLogitParity(name: string, dir: string, reference: LogitsReference, backend: Backend): Promise<void> {
  const model = await loadModel(dir, { backend });
  const logits = await model.logits(reference.inputIds);

  assert.equal(logits.length, reference.logits.length, `${name}: logits length`);
  const windowTokens = reference.inputIds[0]!.length;
  const vocab = reference.logits.length / (reference.inputIds.length * windowTokens);
  const { relative, index } = worstRelativeDifference(logits, reference.logits);
  const row = Math.floor(index / vocab);
  assert.ok(
    relative <= PARITY_TOLERANCE,
    `${name} on ${backend.info.name}: worst relative difference ${relative.toExponential(3)} > ${PARITY_TOLERANCE} ` +
      `(window ${Math.floor(row / windowTokens)}, position ${row % windowTokens}, token ${index % vocab}: ` +
      `ours ${logits[index]}, transformers ${reference.logits[index]})`,
  );
}

/** The native backend, or why it is unavailable (the addon has not been built). */
export function nativeBackend(): Backend | string {
  try {
    return getBackend('native');
  } catch (error) {
    return (error as Error).message;
  }
}

/** transformers' logits for each Hugging Face folder on the same windows, from one Python process (its start costs seconds). */
export function transformersLogits(dirs: string[], windows: number[][]): Float32Array[] {
  return transformersLogitsPerFolder(dirs.map((dir) => ({ dir, windows })));
}

/** transformers' logits for each folder on its own windows, from one Python process. */
export function transformersLogitsPerFolder(runs: { dir: string; windows: number[][] }[]): Float32Array[] {
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'hf_logits.py'), '-'], { input: JSON.stringify(runs), encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(result.status, 0, `transformers failed:\n${result.stderr}`);
  return result.stdout
    .trim()
    .split('\n')
    .map((line) => Float32Array.from((JSON.parse(line) as { logits: number[] }).logits));
}

/** A folder a test pruned: `dense`, when given, is the model it was pruned from. */
export interface PrunedExport {
  label: string;
  out: string;
  dense?: string;
}

/**
 * transformers loads each pruned export with Topiary's logits on `windows` (one Python run for all),
 * and pruning moved the logits away from the dense model's: the export is not a copy of its source.
 */
export async function assertExportsMatchTransformers(runs: PrunedExport[], windows: number[][], backend: Backend): Promise<void> {
  const reference = transformersLogits(runs.map((run) => run.out), windows);
  const denseLogits = new Map<string, Float32Array>();
  for (const [i, run] of runs.entries()) {
    await assertLogitParity(run.label, run.out, { inputIds: windows, logits: reference[i]! }, backend);
    if (run.dense === undefined) continue;
    if (!denseLogits.has(run.dense)) denseLogits.set(run.dense, await (await loadModel(run.dense, { backend })).logits(windows));
    const moved = relativeDifference(denseLogits.get(run.dense)!, reference[i]!);
    assert.ok(moved > 1e-2, `${run.label}: pruning changed nothing (the dense model's logits differ by ${moved.toExponential(3)})`);
  }
}
