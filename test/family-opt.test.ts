/**
 * The OPT family beyond logit parity (test/family-parity.test.ts): incremental decoding with the KV
 * cache on the pre-norm and the post-norm/projected variant; unstructured and 2:4 pruning with
 * magnitude, Wanda and SparseGPT through `pruneModel`, whose exported folders transformers loads
 * with Topiary's logits; one-line refusals of bad configs and of structured pruning.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { openSafetensors, writeSafetensors } from '../src/formats/safetensors.js';
import { KvCache, type CausalLM } from '../src/model/causal-lm.js';
import { opt } from '../src/model/families/opt.js';
import { loadModel } from '../src/model/load.js';
import { checkNmPattern, prunedCount } from '../src/prune/masks.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { pruneModel } from '../src/prune/run.js';
import { byteTokenizerJson, familyModels, readReference } from './family-models.js';
import { assertTopiaryError, runCli, tempDir, testDataDir } from './helpers.js';
import { PARITY_TOLERANCE, transformersLogits } from './parity.js';

const { dir: modelsDir } = await familyModels();
const modelDir = (name: string) => path.join(modelsDir, name);

/** max |a − b| / max |b|. */
function relativeDifference(ours: Float32Array, reference: Float32Array): number {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < reference.length; i++) {
    scale = Math.max(scale, Math.abs(reference[i]!));
    worst = Math.max(worst, Math.abs(ours[i]! - reference[i]!));
  }
  return worst / scale;
}

/** A prefill, then one token per call: each call's logits are the full pass's row for its last position. */
async function assertCachedEqualsFull(model: CausalLM, tokens: number[], prefill: number): Promise<void> {
  const vocab = model.config.vocabSize;
  const full = await model.logits([tokens]);
  const cache = new KvCache();
  for (const call of [tokens.slice(0, prefill), ...tokens.slice(prefill).map((token) => [token])]) {
    const logits = await model.forwardCached(call, cache);
    const position = cache.length - 1;
    const difference = relativeDifference(logits, full.subarray(position * vocab, (position + 1) * vocab));
    assert.ok(difference <= PARITY_TOLERANCE, `position ${position}: relative difference ${difference}`);
  }
}

for (const name of ['opt-prenorm', 'opt-postnorm-proj']) {
  test(`${name}: a prefill and single-token steps through the KV cache give the full pass's logits`, async () => {
    const model = await loadModel(modelDir(name), { backend: getBackend() });
    const tokens = readReference(modelsDir, name).inputIds[0]!;
    assert.ok(tokens.length > 6);
    await assertCachedEqualsFull(model, tokens, 5);
  });
}

test('a checkpoint saved from OPTModel (tensors without the model. prefix, as facebook/opt-350m) runs as the prefixed one', async () => {
  const prefixed = modelDir('opt-postnorm-proj');
  const unprefixed = tempDir('topiary-opt-');
  fs.copyFileSync(path.join(prefixed, 'config.json'), path.join(unprefixed, 'config.json'));
  const store = openSafetensors(prefixed);
  const renamed = store.list().map((info) => ({ name: info.name.replace(/^model\./, ''), shape: info.shape, data: store.read(info.name) }));
  store.close();
  assert.ok(renamed.every((tensor) => tensor.name.startsWith('decoder.')));
  writeSafetensors(path.join(unprefixed, 'model.safetensors'), renamed);
  const windows = readReference(modelsDir, 'opt-postnorm-proj').inputIds;
  const [ours, reference] = await Promise.all([unprefixed, prefixed].map(async (dir) => (await loadModel(dir, { backend: getBackend() })).logits(windows)));
  assert.deepEqual(ours, reference);
});

/**
 * The fixture model with a byte-level tokenizer whose ids are the bytes (the fixture's vocabulary
 * has 256 entries and no tokenizer), so that `pruneModel` can draw calibration windows from text.
 */
function withByteTokenizer(name: string): string {
  const out = tempDir('topiary-opt-');
  fs.copyFileSync(path.join(modelDir(name), 'model.safetensors'), path.join(out, 'model.safetensors'));
  // As a half-precision checkpoint saved by transformers 5 says (the weights stay F32).
  const config = { ...JSON.parse(fs.readFileSync(path.join(modelDir(name), 'config.json'), 'utf8')), dtype: 'float16' };
  fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(config));
  fs.writeFileSync(path.join(out, 'tokenizer.json'), JSON.stringify(byteTokenizerJson()));
  return out;
}

function zeros(data: Float32Array): number {
  return data.reduce((count, value) => count + (value === 0 ? 1 : 0), 0);
}

test('opt-postnorm-proj: magnitude, Wanda and SparseGPT at 50% and 2:4 give exact sparsity, and transformers loads the result with our logits', async () => {
  const source = withByteTokenizer('opt-postnorm-proj');
  const calibrationText = path.join(source, 'calibration.txt');
  fs.writeFileSync(calibrationText, fs.readFileSync(path.join(testDataDir, 'wikitext2', 'wiki.valid.raw'), 'utf8').slice(0, 20_000));
  const targets: SparsityTarget[] = [
    { kind: 'unstructured', sparsity: 0.5 },
    { kind: 'nm', n: 2, m: 4 },
  ];
  const { num_hidden_layers: numLayers } = JSON.parse(fs.readFileSync(path.join(source, 'config.json'), 'utf8')) as { num_hidden_layers: number };
  const outputs: string[] = [];
  for (const method of ['magnitude', 'wanda', 'sparsegpt']) {
    for (const target of targets) {
      const out = tempDir('topiary-opt-pruned-');
      await pruneModel({
        model: source,
        method,
        target,
        methodOptions: {},
        calibration: { corpus: `text:${calibrationText}`, nsamples: 4, seqlen: 32, seed: 0 },
        out,
        resume: false,
      });
      const what = `${method} ${target.kind === 'nm' ? '2:4' : '50%'}`;
      const store = openSafetensors(path.join(out, 'model.safetensors'));
      for (let layer = 0; layer < numLayers; layer++) {
        for (const spec of opt.linears) {
          const name = `${opt.layerPrefix(layer)}${spec.name}.weight`;
          const [rows, cols] = store.info(name).shape as [number, number];
          const weight = store.read(name);
          if (target.kind === 'nm') {
            assert.ok(checkNmPattern(weight, rows, cols, 2, 4), `${what}: ${name} breaks 2:4`);
          } else {
            // Per-row methods prune floor(p·cols) per row, magnitude floor(p·size) of the matrix.
            assert.ok([rows * prunedCount(0.5, cols), prunedCount(0.5, rows * cols)].includes(zeros(weight)), `${what}: ${name} has ${zeros(weight)} zeros`);
          }
        }
      }
      store.close();
      const exportedConfig = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(exportedConfig.dtype ?? exportedConfig.torch_dtype, 'float32', 'transformers loads the F32 weights as F32');
      outputs.push(out);
    }
  }

  const windows = readReference(modelsDir, 'opt-postnorm-proj').inputIds;
  const dense = await (await loadModel(source, { backend: getBackend() })).logits(windows);
  const references = transformersLogits(outputs, windows);
  for (const [i, out] of outputs.entries()) {
    const ours = await (await loadModel(out, { backend: getBackend() })).logits(windows);
    const difference = relativeDifference(ours, references[i]!);
    assert.ok(difference <= PARITY_TOLERANCE, `${out}: relative difference ${difference} from transformers`);
    assert.ok(relativeDifference(dense, references[i]!) > 1e-2, `${out}: pruning changed nothing`);
  }
});

test('OPT configs: a missing size names its field, LayerNorms without weights are refused', () => {
  const config = JSON.parse(fs.readFileSync(path.join(modelDir('opt-prenorm'), 'config.json'), 'utf8')) as Record<string, unknown>;
  const { ffn_dim: _, ...withoutFfn } = config;
  assertTopiaryError(() => opt.parseConfig(withoutFfn, 'config.json'), 'config.json', /missing required field "ffn_dim"/);
  assertTopiaryError(() => opt.parseConfig({ ...config, layer_norm_elementwise_affine: false }, 'config.json'), 'config.json', /layer_norm_elementwise_affine/);
  assertTopiaryError(() => opt.parseConfig({ ...config, num_attention_heads: 5 }, 'config.json'), 'config.json', /not a multiple of num_attention_heads/);
});

test('structured pruning refuses OPT in one line before any work', () => {
  const out = tempDir();
  const result = runCli(['prune', '--model', modelDir('opt-prenorm'), '--method', 'flap', '--ratio', '0.2', '--calib', 'text:/nonexistent', '--out', out]);
  assert.equal(result.status, 2);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  assert.match(result.stderr, /structured pruning needs .* gated MLP; the opt family has q, k, v, o, fc1, fc2/);
});
