/**
 * Incremental decoding with a KV cache: a prefill, a multi-token chunk and single-token steps give
 * the logits of the full forward pass (within 1e-4 relative) on every tiny parity fixture and on a
 * FLAP-pruned stories260K whose layers have different head and channel counts; greedy generation
 * with the cache picks exactly the tokens of a rerun of the whole sequence per token.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as fs from 'node:fs';
import type { Backend } from '../src/backend/backend.js';
import { getBackend } from '../src/backend/index.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { drawCalibration } from '../src/data/calibration.js';
import { CausalLM, KvCache } from '../src/model/causal-lm.js';
import { generate } from '../src/model/generate.js';
import { loadModel } from '../src/model/load.js';
import { structuredMethodByName } from '../src/prune/structured/index.js';
import { prunePipeline } from '../src/prune/pipeline.js';
import { structuredStrategy } from '../src/prune/structured/strategy.js';
import { TopiaryError } from '../src/util/errors.js';
import { stories260K, tempDir, testDataDir } from './helpers.js';
import { checkAgainstFullPass } from './kv-cache-check.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'tiny');

/** Greedy generation by rerunning the whole sequence for every token: what the cache must reproduce. */
async function greedyWithoutCache(model: CausalLM, prompt: number[], newTokens: number): Promise<number[]> {
  const vocab = model.config.vocabSize;
  const tokens = [...prompt];
  for (let n = 0; n < newTokens; n++) {
    const logits = (await model.logits([tokens])).subarray((tokens.length - 1) * vocab);
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[i]! > logits[best]!) best = i;
    tokens.push(best);
  }
  return tokens.slice(prompt.length);
}

const backends: [string, () => Backend][] = [
  ['native or auto', () => getBackend()],
  ['reference', () => new ReferenceBackend()],
];

for (const name of fs.readdirSync(FIXTURES).sort()) {
  for (const [backendName, backend] of backends) {
    test(`${name} (${backendName} backend): prefill, chunk and decode steps match the full forward pass`, async () => {
      const model = await loadModel(path.join(FIXTURES, name), { backend: backend() });
      const { input_ids: windows } = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'reference.json'), 'utf8')) as { input_ids: number[][] };
      await checkAgainstFullPass(model, windows[0]!, 9, 5, name);
    });
  }
}

test('FLAP-pruned stories260K with uneven layers: cached logits match the full pass, greedy tokens are identical', async () => {
  const model = await loadModel(stories260K, { backend: getBackend() });
  const { windows } = drawCalibration(model.tokenizer, { corpus: { kind: 'wikitext2' }, nsamples: 8, seqlen: 64, seed: 0 }, testDataDir);
  const result = await prunePipeline(model, windows, structuredStrategy(model, structuredMethodByName('flap'), 0.3, {}), {
    batchWindows: 4,
    checkpoint: { dir: tempDir(), fingerprint: 'flap', resume: false },
  });
  const pruned = new CausalLM(result.source(), model.backend);
  const layers = result.keptLayers.map((layer) => result.block(layer));
  const headCounts = new Set(layers.map((layer) => layer.linears.q.outFeatures));
  const channelCounts = new Set(layers.map((layer) => layer.linears.gate.outFeatures));
  assert.ok(headCounts.size > 1 && channelCounts.size > 1, 'the pruned layers differ in heads and MLP channels');

  const prompt = [model.config.bosTokenId!, ...model.tokenizer.encode('Once upon a time, there was a little dog')];
  await checkAgainstFullPass(pruned, [...prompt, ...(await greedyWithoutCache(pruned, prompt, 30))], prompt.length, 7, 'pruned stories260K');
  const cached = await generate(pruned, prompt, { maxNewTokens: 30, temperature: 0, stopTokens: [] });
  assert.deepEqual(cached, await greedyWithoutCache(pruned, prompt, 30));
});

test('stories260K: 200 greedy tokens with the cache are those of full reruns', async () => {
  const model = await loadModel(stories260K, { backend: getBackend() });
  const prompt = [model.config.bosTokenId!];
  const cached = await generate(model, prompt, { maxNewTokens: 200, temperature: 0, stopTokens: [] });
  assert.equal(cached.length, 200);
  assert.deepEqual(cached, await greedyWithoutCache(model, prompt, 200));
});

test('generation stops at the context length and a cached forward needs a token', async () => {
  const model = await loadModel(stories260K, { backend: getBackend() });
  const { maxPositionEmbeddings } = model.config;
  const prompt = Array.from({ length: maxPositionEmbeddings - 3 }, (_, i) => 1 + (i % 100));
  const tokens = await generate(model, prompt, { maxNewTokens: 10, temperature: 0, stopTokens: [] });
  assert.equal(tokens.length, 3);
  await assert.rejects(model.forwardCached([], new KvCache()), TopiaryError);
});
