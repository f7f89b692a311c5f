import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TopiaryError } from './errors.js';
import { describeFsError } from './safe-fs.js';

/**
 * Writes a file so that readers never see a half-written one: data goes to a temporary file in
 * the same folder, then an atomic rename puts it in place. On failure the temporary file is removed.
 *
 * The temporary name has a random part and is created exclusively without following links, so a
 * link or file planted under a guessable name cannot redirect the write; the rename replaces a
 * link at `file` itself rather than writing through it.
 */
export function writeFileAtomic(file: string, write: (fd: number) => void): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${randomBytes(8).toString('hex')}`);
  let fd: number;
  try {
    const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | (O_NOFOLLOW ?? 0), 0o666);
  } catch (error) {
    throw new TopiaryError(describeFsError(error, 'cannot write'), file);
  }
  try {
    try {
      write(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    if (error instanceof TopiaryError) throw error;
    throw new TopiaryError(describeFsError(error, 'cannot write'), file);
  }
}

/** `writeFileAtomic` for content already in memory. */
export function writeFileContentAtomic(file: string, content: string | Uint8Array): void {
  writeFileAtomic(file, (fd) => writeAll(fd, typeof content === 'string' ? Buffer.from(content, 'utf8') : content));
}

/** Writes every byte (a single write may take fewer). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}
