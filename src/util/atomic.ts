import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes a file so that readers never see a half-written one: data goes to a temporary name in
 * the same folder, then an atomic rename puts it in place. On failure the temporary file is removed.
 */
export function writeFileAtomic(file: string, write: (tmpPath: string) => void): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    write(tmp);
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw error;
  }
}
