/**
 * SmolLM2-135M (Q4_1 GGUF): Topiary's perplexity on the first WikiText-2 window equals what
 * Hugging Face transformers computes on the same tokens (the GGUF dequantized to fp32 by both).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { wikitext2Text } from '../src/data/corpora.js';
import { perplexity } from '../src/eval/perplexity.js';
import { generate } from '../src/model/generate.js';
import { loadModel } from '../src/model/load.js';
import { repoRoot, smolLM2Path, tempDir, testDataDir } from './helpers.js';

test('SmolLM2-135M: WikiText-2 perplexity of the first 2048-token window matches transformers within 0.5%', async (t) => {
  const file = smolLM2Path();
  if (!file) return t.skip('SmolLM2-135M not fetched (scripts/fetch-smollm2.sh)');
  const model = await loadModel(file, { backend: getBackend() });
  const tokens = model.tokenizer.encode(wikitext2Text(testDataDir, 'test'));
  const ours = await perplexity(model, tokens, { seqlen: 2048, maxWindows: 1 });
  const tokenFile = path.join(tempDir(), 'tokens.json');
  fs.writeFileSync(tokenFile, JSON.stringify(tokens.slice(0, 2048)));
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'reference_ppl.py'), file, '--seqlen', '2048', '--max-windows', '1', '--tokens', tokenFile], {
    encoding: 'utf8',
    env: { ...process.env, TOPIARY_DATA_DIR: testDataDir },
  });
  assert.equal(result.status, 0, result.stderr);
  const reference = JSON.parse(result.stdout) as { perplexity: number; tokens: number };
  assert.equal(ours.tokens, reference.tokens);
  const relative = Math.abs(ours.perplexity - reference.perplexity) / reference.perplexity;
  assert.ok(relative < 0.005, `topiary ${ours.perplexity} vs transformers ${reference.perplexity} (${(relative * 100).toFixed(3)}%)`);
});

test('SmolLM2-135M: greedy generation is coherent English', async (t) => {
  const file = smolLM2Path();
  if (!file) return t.skip('SmolLM2-135M not fetched (scripts/fetch-smollm2.sh)');
  const model = await loadModel(file, { backend: getBackend() });
  const prompt = model.tokenizer.encode('The capital of France is');
  const text = model.tokenizer.decode(await generate(model, prompt, { maxNewTokens: 4, temperature: 0 }));
  assert.match(text, /Paris/);
});
