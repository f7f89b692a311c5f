/**
 * The tiny random models of every decoder family made by scripts/make_family_models.py, with
 * transformers' logits for them. They are too many to commit, so they are generated once into a
 * cache folder outside git, keyed by the script's hash: editing the script makes a new set.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { checkNmPattern, prunedCount } from '../src/prune/masks.js';
import type { SparsityTarget } from '../src/prune/method.js';
import type { PruneSettings } from '../src/prune/run.js';
import { cacheDir, repoRoot, tempDir, testDataDir } from './helpers.js';

const SCRIPT = path.join(repoRoot, 'scripts', 'make_family_models.py');

export interface FamilyModel {
  name: string;
  /** Hugging Face model_type, e.g. 'gemma3_text'. */
  modelType: string;
  /** What the configuration exercises. */
  description: string;
}

export interface FamilyModels {
  /** The folder holding one sub-folder per model. */
  dir: string;
  models: FamilyModel[];
}

export interface FamilyReference {
  /** Windows of token ids, each run independently. */
  inputIds: number[][];
  /** transformers' logits, [windows × tokens × vocab]. */
  logits: Float32Array;
}

interface Manifest {
  models: { name: string; model_type: string; description: string }[];
}

function readManifest(dir: string): FamilyModel[] {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  return manifest.models.map((model) => ({ name: model.name, modelType: model.model_type, description: model.description }));
}

/**
 * Runs the script into a temporary folder beside `dir` and renames it into place, so an
 * interrupted run leaves no half-written set and concurrent runs do not see each other's files.
 */
async function generate(dir: string): Promise<void> {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const staging = fs.mkdtempSync(`${dir}.partial-`);
  try {
    await promisify(execFile)('python3', [SCRIPT, '--out', staging], { cwd: repoRoot, maxBuffer: 16 << 20 });
    fs.renameSync(staging, dir);
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true });
    // Another process finished first: its set is the same, since the script is deterministic.
    if (fs.existsSync(path.join(dir, 'manifest.json'))) return;
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`${path.relative(repoRoot, SCRIPT)} failed: ${stderr.trim().split('\n').slice(-5).join('\n') || String(error)}`);
  }
}

let cached: Promise<FamilyModels> | undefined;

/** The family models, generated on first use (a few seconds) into the cache folder. */
export function familyModels(): Promise<FamilyModels> {
  cached ??= (async () => {
    const hash = createHash('sha256').update(fs.readFileSync(SCRIPT)).digest('hex').slice(0, 12);
    const dir = path.join(cacheDir, `family-models-${hash}`);
    if (!fs.existsSync(path.join(dir, 'manifest.json'))) await generate(dir);
    return { dir, models: readManifest(dir) };
  })();
  return cached;
}

/** The windows and transformers' logits for one model of the set. */
export function readReference(dir: string, name: string): FamilyReference {
  const modelDir = path.join(dir, name);
  const reference = JSON.parse(fs.readFileSync(path.join(modelDir, 'reference.json'), 'utf8')) as {
    input_ids: number[][];
    logits_file: string;
  };
  const bytes = fs.readFileSync(path.join(modelDir, reference.logits_file));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const logits = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < logits.length; i++) logits[i] = view.getFloat32(i * 4, true);
  return { inputIds: reference.input_ids, logits };
}

/** GPT-2's printable stand-ins for the 256 bytes, in byte order (its bytes_to_unicode). */
function byteLevelAlphabet(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let unprintable = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : 256 + unprintable++));
}

/**
 * A tokenizer.json for the models' 256-entry vocabulary (they come without one): byte-level BPE
 * without merges, each byte its own id, so that `pruneModel` can draw calibration windows from text.
 */
export function byteTokenizerJson(): object {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const vocab = Object.fromEntries(byteLevelAlphabet().map((char, id) => [char, id]));
  return { version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel, model: { type: 'BPE', vocab, merges: [] } };
}

/**
 * A copy of model `name` of the set in `dir` (weights, and config.json with `configChanges` merged
 * in) with the byte tokenizer, in a fresh folder: the models come without one, and pruning needs it
 * to draw calibration windows from text.
 */
export function withByteTokenizer(dir: string, name: string, configChanges: Record<string, unknown> = {}): string {
  const copy = tempDir();
  fs.copyFileSync(path.join(dir, name, 'model.safetensors'), path.join(copy, 'model.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(dir, name, 'config.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(copy, 'config.json'), JSON.stringify({ ...config, ...configChanges }));
  fs.writeFileSync(path.join(copy, 'tokenizer.json'), JSON.stringify(byteTokenizerJson()));
  return copy;
}

/**
 * The calibration the family tests prune with: 4 windows of 32 tokens from the first `chars`
 * characters of WikiText-2's validation text (with one token per byte, the whole file would take
 * long to tokenize).
 */
export function familyCalibration(chars: number): PruneSettings['calibration'] {
  const file = path.join(tempDir(), 'calibration.txt');
  fs.writeFileSync(file, fs.readFileSync(path.join(testDataDir, 'wikitext2', 'wiki.valid.raw'), 'utf8').slice(0, chars));
  return { corpus: `text:${file}`, nsamples: 4, seqlen: 32, seed: 0 };
}

/**
 * Asserts that pruning to `target` left `weight` [rows, cols] exactly as sparse as it should:
 * n of every m inputs zero and no more, or half the weights for 50% unstructured — floor(p·cols)
 * per row for per-row methods, floor(p·size) for whole-matrix ones.
 */
export function assertExactSparsity(weight: Float32Array, rows: number, cols: number, target: SparsityTarget, where: string): void {
  const zeros = weight.filter((value) => value === 0).length;
  if (target.kind === 'nm') {
    assert.ok(checkNmPattern(weight, rows, cols, target.n, target.m), `${where}: breaks ${target.n}:${target.m}`);
    assert.equal(zeros, (rows * cols * target.n) / target.m, `${where}: zero count`);
  } else {
    assert.ok([rows * prunedCount(target.sparsity, cols), prunedCount(target.sparsity, rows * cols)].includes(zeros), `${where}: ${zeros} zeros of ${rows * cols}`);
  }
}
