/**
 * `topiary speed` through the real command line on tiny models: the JSON fields are positive
 * finite numbers, and the prompt and decoded token counts are the ones asked for (the KV cache ends
 * at prompt + new tokens). Speed itself is measured in bench/, never asserted here.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { exportGguf } from '../src/export/gguf-writer.js';
import { loadModel } from '../src/model/load.js';
import { repoRoot, runCli, stories260K, tempDir } from './helpers.js';
import { nodeLlamaCpp } from './llama-cpp.js';

const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');

function speedJson(args: string[]): Record<string, unknown> {
  const result = runCli(['speed', ...args, '--prompt-tokens', '16', '--new-tokens', '4', '--runs', '2', '--threads', '1', '--json']);
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

function assertReport(report: Record<string, unknown>, engine: string): void {
  for (const field of ['prefill_tokens_per_s', 'decode_tokens_per_s']) {
    const value = report[field];
    assert.ok(typeof value === 'number' && Number.isFinite(value) && value > 0, `${field} = ${String(value)}`);
  }
  assert.equal(report.engine, engine);
  assert.equal(report.threads, 1);
  assert.equal(report.prompt_tokens, 16);
  assert.equal(report.new_tokens, 4);
  assert.equal(report.positions, 20);
  assert.equal(report.runs, 2);
  assert.ok(typeof report.kernel === 'string' && report.kernel.length > 0);
  const load = report.load_average_1min as { before: number; after: number };
  assert.ok(Number.isFinite(load.before) && Number.isFinite(load.after));
}

test('topiary speed on the tiny model: positive finite rates, the asked token counts', () => {
  const report = speedJson(['--model', tinyModel]);
  assertReport(report, 'topiary');
  assert.match(String(report.kernel), /^OpenBLAS /);
});

test('topiary speed --engine llama.cpp refuses a model that is not GGUF in one line', () => {
  const result = runCli(['speed', '--model', tinyModel, '--engine', 'llama.cpp']);
  assert.notEqual(result.status, 0);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  assert.match(result.stderr, /^topiary: .*llama-gqa: llama\.cpp runs GGUF files only; this model is safetensors/);
});

test('topiary speed --engine llama.cpp on stories260K as GGUF', async (t) => {
  if (!(await nodeLlamaCpp())) return t.skip('node-llama-cpp is not installed');
  // llama.cpp needs a vocabulary in the file: the llama2.c model's tokenizer.bin goes along.
  const file = path.join(tempDir(), 'stories.gguf');
  const model = await loadModel(stories260K, { backend: getBackend() });
  exportGguf(model, file, { dtype: 'F32' });
  model.source.close();
  assertReport(speedJson(['--model', file, '--engine', 'llama.cpp']), 'llama.cpp');
});
