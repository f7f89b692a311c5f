/**
 * The one rule for reading files Topiary did not write itself (model folders, tokenizers,
 * calibration and task text, run folders), used by every reader:
 *
 * - only regular files are read: a FIFO or a device (`/dev/zero`) would hang or never end;
 * - a file named inside a folder (a model's config.json, shards, tokenizer files) must really lie
 *   in that folder once symbolic links are resolved, so a planted link cannot pull in, or copy
 *   out, a file from elsewhere (the Hugging Face cache layout, `snapshots/REV/*` linking to
 *   `../../blobs/*`, is the one place outside the folder that is accepted);
 * - whole-file reads have a size limit, for formats whose size nothing else bounds;
 * - errors name the file and the problem, never the file's contents (JSON.parse messages quote
 *   the text they choke on, so they are replaced).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readExactly } from '../formats/binary.js';
import { TopiaryError } from './errors.js';

export const MiB = 2 ** 20;

/** Limits on whole-file reads (the largest real files are far below them). */
export const READ_LIMITS = {
  /** config.json, tokenizer_config.json, shard indexes, run records and the like. */
  json: 64 * MiB,
  /** tokenizer.json (real ones reach about 35 MiB). */
  tokenizerJson: 256 * MiB,
  /** tokenizer.model, tokenizer.bin (a few MiB at most). */
  tokenizerBinary: 64 * MiB,
  /** Calibration and evaluation text (`text:FILE`) and task files; also near V8's longest string. */
  text: 256 * MiB,
} as const;

export interface ReadOptions {
  /** The folder the file must really lie in, after resolving symbolic links (e.g. the model folder). */
  within?: string;
}

export function describeFsError(error: unknown, action: string): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return 'no such file or folder';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a folder, not a file';
  if (code === 'ENOTDIR') return 'a part of the path is not a folder';
  if (code === 'EROFS') return 'read-only file system';
  if (code === 'ENOSPC') return 'no space left on the device';
  if (code === 'ELOOP') return 'is a symbolic link, which is not followed here';
  return `${action}: ${(error as Error)?.message ?? String(error)}`;
}

function fileKind(stat: fs.Stats): string {
  if (stat.isDirectory()) return 'a folder';
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  if (stat.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** The folders a file named inside `folder` may really lie in. */
function allowedRoots(folder: string): string[] {
  const real = fs.realpathSync(folder);
  const snapshots = path.dirname(real);
  const repo = path.dirname(snapshots);
  // Hugging Face hub cache: models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/HASH.
  if (path.basename(snapshots) === 'snapshots' && path.basename(repo).startsWith('models--')) return [real, path.join(repo, 'blobs')];
  return [real];
}

function isInside(file: string, folder: string): boolean {
  const relative = path.relative(folder, file);
  return relative !== '' && relative !== '..' && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative);
}

/**
 * Opens `file` for reading if it is a regular file (and, with `within`, really lies in that
 * folder); the caller closes the descriptor.
 */
export function openRegularFile(file: string, options: ReadOptions = {}): { fd: number; size: number } {
  let fd: number;
  try {
    // Non-blocking, because opening a FIFO for reading otherwise waits for a writer forever;
    // it changes nothing for reads of regular files.
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (error) {
    throw new TopiaryError(describeFsError(error, 'cannot open'), file);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new TopiaryError(`${fileKind(stat)}; only regular files are read`, file);
    if (options.within !== undefined) {
      // Resolve the path, check it lies inside, and check the opened file is that very file
      // (not one swapped in between the open and the check).
      const real = fs.realpathSync(file);
      const resolved = fs.statSync(real);
      if (!allowedRoots(options.within).some((root) => isInside(real, root)) || resolved.ino !== stat.ino || resolved.dev !== stat.dev) {
        throw new TopiaryError(`is a link to a file outside ${options.within}; only files inside the folder are read`, file);
      }
    }
    return { fd, size: stat.size };
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

/** The whole of a regular file of at most `maxBytes` bytes (see `openRegularFile`). */
export function readRegularFile(file: string, maxBytes: number, options: ReadOptions = {}): Buffer {
  const { fd, size } = openRegularFile(file, options);
  try {
    if (size > maxBytes) throw new TopiaryError(`${(size / MiB).toFixed(1)} MiB is over the ${maxBytes / MiB} MiB limit for this file`, file);
    const data = Buffer.alloc(size);
    readExactly(fd, data, 0, file);
    return data;
  } finally {
    fs.closeSync(fd);
  }
}

/** A UTF-8 text file (see `readRegularFile`). */
export function readTextFile(file: string, maxBytes: number = READ_LIMITS.text, options: ReadOptions = {}): string {
  return readRegularFile(file, maxBytes, options).toString('utf8');
}

/**
 * What is wrong with some JSON, without quoting it: V8's messages embed the text around the
 * error ("Unexpected token 'x', "...secret..." is not valid JSON").
 */
export function describeJsonError(error: unknown): string {
  const message = error instanceof Error ? error.message : '';
  const position = /at position (\d+)/.exec(message);
  if (position) return `invalid JSON at position ${position[1]}`;
  if (/Unexpected end of JSON input/.test(message)) return 'invalid JSON: the text ends too early';
  return 'invalid JSON';
}

/** JSON.parse whose error names `file` and the problem, not the content. */
export function parseJson(text: string, file: string, reviver?: (key: string, value: unknown) => unknown): unknown {
  try {
    return JSON.parse(text, reviver);
  } catch (error) {
    throw new TopiaryError(describeJsonError(error), file);
  }
}

/** A JSON file of at most `maxBytes` (default READ_LIMITS.json) bytes that must hold an object. */
export function readJsonObject(file: string, options: ReadOptions & { maxBytes?: number } = {}): Record<string, unknown> {
  const value = parseJson(readTextFile(file, options.maxBytes ?? READ_LIMITS.json, options), file);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TopiaryError('not a JSON object', file);
  return value as Record<string, unknown>;
}
