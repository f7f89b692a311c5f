/**
 * A pruned model written by Topiary loads in Hugging Face transformers and computes the same
 * logits as Topiary does on it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as path from 'node:path';
import { getBackend } from '../src/backend/index.js';
import { runCli, stories260K, tempDir, testDataDir } from './helpers.js';
import { assertExportsMatchTransformers } from './parity.js';

test('a pruned stories260K (llama2.c source, RIA 2:4 permuted) loads in transformers with matching logits', async () => {
  const out = tempDir();
  const calib = `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`;
  const result = runCli(['prune', '--model', stories260K, '--method', 'ria', '--pattern', '2:4', '--permute', '--calib', calib, '--nsamples', '4', '--seqlen', '128', '--out', out]);
  assert.equal(result.status, 0, result.stderr);
  const windows = [
    [1, 403, 407, 261, 378, 414, 267, 261, 422, 268, 300, 301],
    [1, 9, 100, 200, 300, 400, 500, 42, 7, 77, 111, 222],
  ];
  // Also checks that the pruned model is not the dense one.
  await assertExportsMatchTransformers([{ label: 'stories260K ria 2:4', out, dense: stories260K }], windows, getBackend());
});
