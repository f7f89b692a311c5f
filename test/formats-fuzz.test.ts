/**
 * Seeded, bounded fuzzing of everything Topiary reads from a model folder: 12,000 mutated inputs
 * (safetensors, single, sharded and compressed sparse; GGUF structure and metadata values; llama2.c;
 * tokenizer.json),
 * each through the real loader up to the first layer read. Every case must open and read, or
 * throw a one-line TopiaryError naming the input: never another error, never a non-finite tensor,
 * never a case over CASE_MS, never memory past the bounds (test/fuzz-cases.ts). Each family runs in a
 * child process, so that a hang is caught (the process is killed) and reported with its case.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { FAMILIES } from './fuzz-cases.js';
import { repoRoot, tempDir } from './helpers.js';

const CASES_PER_FAMILY = 1500;
/** A family whose cases all take their usual few milliseconds finishes far sooner. */
const FAMILY_TIMEOUT_MS = 45_000;

test(`${FAMILIES.length * CASES_PER_FAMILY} mutated inputs load cleanly or fail with one-line TopiaryErrors, none hanging`, () => {
  // Thousands of small files: use memory-backed /dev/shm where the machine has it.
  const dir = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/topiary-fuzz-') : tempDir();
  const started = Date.now();
  FAMILIES.forEach((family, k) => {
    const scratch = path.join(dir, family);
    fs.mkdirSync(scratch);
    const child = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test', 'fuzz-cases.ts'), family, String(1000 + k), String(CASES_PER_FAMILY), scratch], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: FAMILY_TIMEOUT_MS,
      maxBuffer: 64 * 2 ** 20,
    });
    const lines = child.stdout.trim().split('\n');
    const failure = lines.find((line) => line.startsWith('failure'));
    assert.equal(failure, undefined, failure);
    assert.notEqual(child.status, null, `${family}: killed after ${FAMILY_TIMEOUT_MS} ms in ${lines.at(-1)} (seed ${1000 + k}): a hang`);
    assert.equal(child.status, 0, `${family}: ${child.stderr}`);
    assert.equal(child.stderr, '', `${family}: nothing may be printed besides the errors (library warnings included)`);
    const summary = JSON.parse(lines.at(-1)!.replace(/^summary /, '')) as { opened: number; refused: number };
    // Both outcomes must occur, or the mutations are not exercising the loaders.
    assert.ok(summary.opened > 50 && summary.refused > 50, `${family}: ${summary.opened} opened, ${summary.refused} refused`);
  });
  assert.ok(Date.now() - started < 90_000, `fuzzing took ${Date.now() - started} ms`);
  fs.rmSync(dir, { recursive: true });
});
