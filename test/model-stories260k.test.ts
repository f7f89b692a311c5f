import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { generate } from '../src/model/generate.js';
import { loadModel } from '../src/model/load.js';
import { stories260K, testDataDir } from './helpers.js';

const GOLDEN_START =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.';

test('stories260K: greedy generation from BOS reproduces the published sample', async () => {
  const model = await loadModel(stories260K, { backend: getBackend() });
  const bos = model.config.bosTokenId!;
  const tokens = await generate(model, [bos], { maxNewTokens: 256, temperature: 0 });
  const text = model.tokenizer.decode(tokens);
  assert.ok(text.startsWith(GOLDEN_START), `generated text differs from the sample:\n${text.slice(0, 300)}`);
});

test('stories260K: legacy and version-1 checkpoints give identical logits', async () => {
  const legacy = await loadModel(stories260K, { backend: getBackend() });
  const v1 = await loadModel(path.join(testDataDir, 'models', 'stories260K', 'checkpoint_v1.bin'), { backend: getBackend() });
  const windows = [[1, 403, 407, 261, 378, 414, 267, 261, 422, 268]];
  const a = await legacy.logits(windows);
  const b = await v1.logits(windows);
  assert.equal(a.length, 10 * 512);
  assert.deepEqual(a, b);
});
