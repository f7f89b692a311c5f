/**
 * Per-layer checkpoints, shared by the unstructured and the structured pipeline: the folder
 * (`DIR/.topiary-checkpoint`), the fingerprint that ties it to one run's settings, the layer file
 * names, and exact JSON for what a finished layer leaves behind. A file written last marks a layer
 * finished, and every file is written atomically, so a killed run leaves only whole layers.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileContentAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
import { describeFsError, parseJson, READ_LIMITS, readTextFile } from '../util/safe-fs.js';

/** The checkpoint folder's name inside a run's output folder; removed after a successful export. */
export const CHECKPOINT_DIR = '.topiary-checkpoint';

/** The model file (path, size, mtime) and the settings that shape the result, as one string. */
export function runFingerprint(model: string, settings: Readonly<Record<string, unknown>>): string {
  const stat = fs.statSync(model);
  return JSON.stringify({ model: path.resolve(model), modelSize: stat.size, modelMtime: stat.mtimeMs, ...settings });
}

/**
 * Refuses an existing checkpoint path that is a symbolic link or not a folder: its files are
 * deleted and written, and through a planted link to another folder those would be.
 */
export function checkCheckpointFolder(dir: string): void {
  const stat = fs.lstatSync(dir);
  if (stat.isSymbolicLink() || !stat.isDirectory()) {
    throw new TopiaryError('is a symbolic link or not a folder; the checkpoint must be a real folder inside the output folder (remove it)', dir);
  }
}

/**
 * Prepares `dir` for a run: with `resume`, an existing checkpoint must carry the same fingerprint
 * (one made with other settings is refused); otherwise any old checkpoint is cleared and the
 * fingerprint recorded.
 */
export function openCheckpoint(dir: string, fingerprint: string, resume: boolean): void {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  try {
    fs.mkdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new TopiaryError(describeFsError(error, 'cannot create'), dir);
  }
  checkCheckpointFolder(dir);
  const stateFile = path.join(dir, 'state.json');
  if (resume && fs.existsSync(stateFile)) {
    const state = readJson<{ fingerprint: string }>(stateFile);
    if (state.fingerprint !== fingerprint) {
      throw new TopiaryError('cannot resume: the checkpoint was made with different settings (remove it or repeat the original command)', dir);
    }
  } else {
    for (const entry of fs.readdirSync(dir)) fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
    writeFileContentAtomic(stateFile, JSON.stringify({ fingerprint }) + '\n');
  }
}

/** `DIR/layer-0004.json` and the like. */
export const layerFile = (dir: string, layer: number, ext: 'json' | 'safetensors', kind = 'layer'): string =>
  path.join(dir, `${kind}-${String(layer).padStart(4, '0')}.${ext}`);

/** How many leading layers (0, 1, …) have their `file` in the checkpoint. */
export function finishedLayers(layers: number, file: (layer: number) => string): number {
  let done = 0;
  while (done < layers && fs.existsSync(file(done))) done++;
  return done;
}

// Typed arrays are tagged, so that they come back as the same typed arrays with the same values.
const TYPED = { float64: Float64Array, float32: Float32Array } as const;

/** Writes `value` as JSON atomically; Float64Array and Float32Array values survive `readJson` exactly. */
export function writeJson(file: string, value: unknown): void {
  const text = JSON.stringify(
    value,
    (_key, v: unknown) => (v instanceof Float64Array ? { float64: [...v] } : v instanceof Float32Array ? { float32: [...v] } : v),
    1,
  );
  writeFileContentAtomic(file, text + '\n');
}

export function readJson<T>(file: string): T {
  return parseJson(readTextFile(file, READ_LIMITS.json, { within: path.dirname(file) }), file, (_key, v: unknown) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const keys = Object.keys(v);
    const tag = keys[0] as keyof typeof TYPED;
    const values = (v as Record<string, unknown>)[tag];
    return keys.length === 1 && Object.hasOwn(TYPED, tag) && Array.isArray(values) ? TYPED[tag].from(values as number[]) : v;
  }) as T;
}
