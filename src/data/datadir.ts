import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TopiaryError } from '../util/errors.js';

/** The folder holding package.json (works from src/ under tsx and from dist/src/ when compiled). */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json of topiary not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

/**
 * Where the corpora live: --data-dir, else $TOPIARY_DATA_DIR, else ../shared/data beside the
 * checkout (the layout of the development machines and CI).
 */
export function resolveDataDir(option?: string): string {
  const candidates = [option, process.env.TOPIARY_DATA_DIR].filter((d): d is string => !!d);
  for (const dir of candidates) {
    if (!fs.existsSync(dir)) throw new TopiaryError('data directory not found', dir);
    return path.resolve(dir);
  }
  const beside = path.resolve(packageRoot(), '..', 'shared', 'data');
  if (fs.existsSync(beside)) return beside;
  throw new TopiaryError('no data directory: pass --data-dir DIR or set TOPIARY_DATA_DIR (a folder laid out like shared/data: wikitext2/, c4/, tasks/)');
}

export function dataFile(dataDir: string, ...parts: string[]): string {
  const file = path.join(dataDir, ...parts);
  if (!fs.existsSync(file)) throw new TopiaryError(`missing from the data directory (expected ${parts.join('/')})`, file);
  return file;
}
