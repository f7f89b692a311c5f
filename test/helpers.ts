/** Shared test helpers: where the data and models are, and running the CLI as a user would. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TopiaryError } from '../src/util/errors.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const testDataDir = path.resolve(process.env.TOPIARY_DATA_DIR ?? path.join(repoRoot, '..', 'shared', 'data'));

export const stories260K = path.join(testDataDir, 'models', 'stories260K', 'checkpoint_legacy.bin');

/** Downloaded and generated test models, outside git (as in scripts/fetch-smollm2.sh). */
export const cacheDir = path.resolve(process.env.TOPIARY_CACHE ?? path.join(os.homedir(), '.cache', 'topiary'));

/** SmolLM2-135M (Q4_1 GGUF) as fetched by scripts/fetch-smollm2.sh, or undefined if absent. */
export function smolLM2Path(): string | undefined {
  const file = path.join(cacheDir, 'SmolLM2-135M-Instruct.Q4_1.gguf');
  return fs.existsSync(file) ? file : undefined;
}

export function tempDir(prefix = 'topiary-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface CliResult {
  status: number | null;
  /** The signal that ended the process (SIGTERM when it ran past `timeoutMs`), or null. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `topiary ARGS` from the TypeScript sources (no build step needed). */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 600_000): CliResult {
  const result = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src', 'cli', 'main.ts'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, TOPIARY_DATA_DIR: testDataDir, ...env },
    timeout: timeoutMs,
  });
  return { status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
}

/** Asserts that `fn` throws a TopiaryError whose message starts with `file: ` and matches `pattern`. */
export function assertTopiaryError(fn: () => unknown, file: string, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof TopiaryError, `expected a TopiaryError, got ${String(error)}`);
    assert.ok(error.message.startsWith(`${file}: `), `message names the file: ${error.message}`);
    assert.match(error.message, pattern);
    return true;
  });
}
