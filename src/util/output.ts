/**
 * Where commands write is checked before any work starts, so that a bad --out fails in a second
 * rather than after an hour of work (prune's output folder: src/prune/output-folder.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TopiaryError } from './errors.js';
import { describeFsError } from './safe-fs.js';

/** Exit status for a bad output location: a bad request, like a usage error. */
export const BAD_REQUEST = 2;

export function checkWritableFolder(dir: string): void {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (error) {
    throw new TopiaryError(`cannot write here: ${describeFsError(error, 'not writable')}`, dir, BAD_REQUEST);
  }
}

/**
 * Checks that `file` can be written: its folder exists and is writable, and `file` is not a folder.
 * Called before any work, so that the result is not lost at the end.
 */
export function checkOutputFile(file: string): void {
  const dir = path.dirname(path.resolve(file));
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (error) {
    throw new TopiaryError(`the folder to write in: ${describeFsError(error, 'cannot open')} (create it first)`, dir, BAD_REQUEST);
  }
  if (!stat.isDirectory()) throw new TopiaryError('is not a folder, so nothing can be written in it', dir, BAD_REQUEST);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new TopiaryError('is a folder; give a file name to write', file, BAD_REQUEST);
  checkWritableFolder(dir);
}
