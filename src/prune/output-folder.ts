/**
 * prune's output folder: claimed by one run at a time, checked before any work, and replaced as a
 * whole, so that it never mixes files of two models.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAll } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
import { BAD_REQUEST, checkWritableFolder } from '../util/output.js';
import { describeFsError } from '../util/safe-fs.js';
import { CHECKPOINT_DIR, checkCheckpointFolder } from './checkpoint.js';

/** Files an export writes (and a later export into the same folder replaces or removes). */
const OUTPUT_FILE = /^(model.*\.safetensors|model\.safetensors\.index\.json|model\.gguf|config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|tokenizer\.model|tokenizer\.bin|topiary\.json)$/;
/** Evaluation results kept in a run folder (`eval --out RUN_DIR/eval-….json`, read by `report`). */
const RESULT_FILE = /^eval.*\.json$/;
/** Written last: a folder holding it holds a complete run. */
const RECORD_FILE = 'topiary.json';
const LOCK_FILE = '.topiary.lock';
const STAGING_PREFIX = '.topiary-staging-';

/** Folders whose lock this process holds (a lock naming this process but not listed is stale: a reused pid). */
const lockedHere = new Set<string>();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The output folder of one prune run:
 *
 * - `claim` checks it before any work: it must be (or become) a writable folder, and unless
 *   `overwrite` is given it must be empty or hold an earlier Topiary run (its topiary.json, or a
 *   checkpoint for --resume); a folder of other files (such as the source model) is refused, and
 *   so is an earlier run with evaluation results, which would not match the new model;
 * - a lock file (`.topiary.lock`, created exclusively, holding the process id) keeps a second run
 *   out while this one works; a lock whose process is gone is stale and taken over;
 * - the export is written into a staging folder inside it, then `publish` removes the previous
 *   run's files (topiary.json first) and moves the new ones in, topiary.json last. A kill during
 *   `publish` leaves no topiary.json (an unfinished folder, and the checkpoint for --resume), and
 *   never new weights beside an old config.json or a stale shard index.
 */
export class OutputFolder {
  private released = false;
  private readonly releaseOnExit = () => this.release();

  private constructor(
    readonly dir: string,
    /** The outermost folder `claim` created, if it created any: removed again if left empty. */
    private readonly created: string | undefined,
  ) {
    process.on('exit', this.releaseOnExit);
  }

  static claim(dir: string, options: { overwrite: boolean }): OutputFolder {
    const out = path.resolve(dir);
    if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new TopiaryError('exists and is not a folder', out, BAD_REQUEST);
    let created: string | undefined;
    try {
      created = fs.mkdirSync(out, { recursive: true });
    } catch (error) {
      throw new TopiaryError(`cannot create the output folder: ${describeFsError(error, 'failed')}`, out, BAD_REQUEST);
    }
    try {
      checkWritableFolder(out);
      takeLock(out);
    } catch (error) {
      removeIfEmpty(out, created);
      throw error;
    }
    const folder = new OutputFolder(out, created);
    try {
      const entries = fs.readdirSync(out).filter((name) => name !== LOCK_FILE);
      const earlierRun = entries.some((name) => name === RECORD_FILE || name === CHECKPOINT_DIR || name.startsWith(STAGING_PREFIX));
      if (!options.overwrite && !earlierRun && entries.length > 0) {
        const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', …' : '');
        throw new TopiaryError(
          `holds files that are not a Topiary run (${shown}); choose a new or empty folder, or give --overwrite to replace Topiary's files in it`,
          out,
          BAD_REQUEST,
        );
      }
      const results = entries.filter((name) => RESULT_FILE.test(name));
      if (!options.overwrite && results.length > 0) {
        throw new TopiaryError(
          `holds evaluation results (${results.join(', ')}) of the model there, which would not match the new one; choose a new folder, or give --overwrite to replace the model and remove them`,
          out,
          BAD_REQUEST,
        );
      }
      if (entries.includes(CHECKPOINT_DIR)) checkCheckpointFolder(path.join(out, CHECKPOINT_DIR));
      // Staging folders left by a killed run (no other run can be using them: we hold the lock).
      for (const name of entries) if (name.startsWith(STAGING_PREFIX)) fs.rmSync(path.join(out, name), { recursive: true, force: true });
    } catch (error) {
      folder.release();
      throw error;
    }
    return folder;
  }

  /** A new empty folder (inside the output folder, so moves are renames) to write the export into. */
  stage(): string {
    return fs.mkdtempSync(path.join(this.dir, STAGING_PREFIX));
  }

  /** Replaces the previous run's files with the staged ones; returns the new files' paths. */
  publish(staging: string): string[] {
    const names = fs.readdirSync(staging);
    const previous = fs.readdirSync(this.dir).filter((name) => OUTPUT_FILE.test(name) || RESULT_FILE.test(name));
    fs.rmSync(path.join(this.dir, RECORD_FILE), { force: true });
    for (const name of previous) fs.rmSync(path.join(this.dir, name), { force: true });
    // Weights, then config.json and the rest, topiary.json last: each step leaves a folder that
    // is either unfinished (no topiary.json) or complete.
    const rank = (name: string) => (name === RECORD_FILE ? 2 : name === 'config.json' ? 1 : 0);
    const ordered = [...names].sort((a, b) => rank(a) - rank(b));
    for (const name of ordered) fs.renameSync(path.join(staging, name), path.join(this.dir, name));
    fs.rmdirSync(staging);
    return ordered.map((name) => path.join(this.dir, name));
  }

  /**
   * Removes the lock (also done when the process exits), and the folder if this run created it
   * and wrote nothing (a request refused after the claim leaves no trace); idempotent.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    process.off('exit', this.releaseOnExit);
    fs.rmSync(path.join(this.dir, LOCK_FILE), { force: true });
    lockedHere.delete(this.dir);
    removeIfEmpty(this.dir, this.created);
  }
}

/** Removes `dir` and its parents up to `created` (the outermost folder a claim made) while they are empty. */
function removeIfEmpty(dir: string, created: string | undefined): void {
  if (created === undefined) return;
  for (let current = dir; ; current = path.dirname(current)) {
    try {
      fs.rmdirSync(current);
    } catch {
      return; // not empty (or gone): keep it and everything above
    }
    if (current === created) return;
  }
}

function takeLock(dir: string): void {
  const lockFile = path.join(dir, LOCK_FILE);
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number | undefined;
    try {
      fd = fs.openSync(lockFile, O_WRONLY | O_CREAT | O_EXCL | (O_NOFOLLOW ?? 0), 0o644);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw new TopiaryError(describeFsError(error, 'cannot create the lock'), lockFile);
    }
    if (fd !== undefined) {
      try {
        writeAll(fd, Buffer.from(`${process.pid}\n`));
      } finally {
        fs.closeSync(fd);
      }
      lockedHere.add(dir);
      return;
    }
    let holder = NaN;
    try {
      const stat = fs.lstatSync(lockFile);
      if (stat.isFile() && stat.size < 64) holder = Number.parseInt(fs.readFileSync(lockFile, 'latin1'), 10);
    } catch {
      continue; // removed meanwhile: try again
    }
    const stale = holder === process.pid ? !lockedHere.has(dir) : !(Number.isInteger(holder) && holder > 0 && isAlive(holder));
    if (!stale) {
      throw new TopiaryError(`another Topiary run (process ${holder}) is writing to this folder (if there is none, remove ${LOCK_FILE})`, dir);
    }
    fs.rmSync(lockFile, { force: true }); // stale: its process is gone
  }
  throw new TopiaryError(`could not take the lock ${LOCK_FILE}`, dir);
}
