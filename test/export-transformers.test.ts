/**
 * A pruned model written by Topiary loads in Hugging Face transformers and computes the same
 * logits as Topiary does on it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';
import { repoRoot, runCli, stories260K, tempDir, testDataDir } from './helpers.js';

function transformersLogits(modelDir: string, windows: number[][]): Float32Array {
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'hf_logits.py'), modelDir, JSON.stringify(windows)], {
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  assert.equal(result.status, 0, `transformers failed to load ${modelDir}:\n${result.stderr}`);
  return Float32Array.from((JSON.parse(result.stdout) as { logits: number[] }).logits);
}

function maxRelativeDifference(ours: Float32Array, reference: Float32Array): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < ours.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(ours[i]! - reference[i]!));
    maxRef = Math.max(maxRef, Math.abs(reference[i]!));
  }
  return maxDiff / maxRef;
}

test('a pruned stories260K (llama2.c source, RIA 2:4 permuted) loads in transformers with matching logits', async () => {
  const out = tempDir();
  const calib = `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`;
  const result = runCli(['prune', '--model', stories260K, '--method', 'ria', '--pattern', '2:4', '--permute', '--calib', calib, '--nsamples', '4', '--seqlen', '128', '--out', out]);
  assert.equal(result.status, 0, result.stderr);
  const windows = [
    [1, 403, 407, 261, 378, 414, 267, 261, 422, 268, 300, 301],
    [1, 9, 100, 200, 300, 400, 500, 42, 7, 77, 111, 222],
  ];
  const model = await loadModel(out, { backend: getBackend() });
  const ours = await model.logits(windows);
  const reference = transformersLogits(out, windows);
  assert.equal(ours.length, reference.length);
  const difference = maxRelativeDifference(ours, reference);
  assert.ok(difference < 1e-4, `max relative logit difference ${difference}`);
  // And the pruned model is not the dense one.
  const dense = await (await loadModel(stories260K, { backend: getBackend() })).logits(windows);
  assert.ok(maxRelativeDifference(dense, reference) > 1e-2, 'pruning changed nothing');
});
