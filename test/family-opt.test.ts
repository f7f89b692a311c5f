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
import { opt } from '../src/model/families/opt.js';
import { loadModel } from '../src/model/load.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { pruneModel } from '../src/prune/run.js';
import { assertExactSparsity, familyCalibration, familyModels, readReference, withByteTokenizer } from './family-models.js';
import { assertTopiaryError, runCli, tempDir } from './helpers.js';
import { checkAgainstFullPass } from './kv-cache-check.js';
import { assertExportsMatchTransformers, type PrunedExport } from './parity.js';

const { dir: modelsDir } = await familyModels();
const modelDir = (name: string) => path.join(modelsDir, name);

for (const name of ['opt-prenorm', 'opt-postnorm-proj']) {
  test(`${name}: a prefill and single-token steps through the KV cache give the full pass's logits`, async () => {
    const model = await loadModel(modelDir(name), { backend: getBackend() });
    const tokens = readReference(modelsDir, name).inputIds[0]!;
    assert.ok(tokens.length > 6);
    // A prefill, then single tokens (a chunk of one is one more).
    await checkAgainstFullPass(model, tokens, 5, 1, name);
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

test('opt-postnorm-proj: magnitude, Wanda and SparseGPT at 50% and 2:4 give exact sparsity, and transformers loads the result with our logits', async () => {
  // As a half-precision checkpoint saved by transformers 5 says (the weights stay F32).
  const source = withByteTokenizer(modelsDir, 'opt-postnorm-proj', { dtype: 'float16' });
  const calibration = familyCalibration(20_000);
  const targets: SparsityTarget[] = [
    { kind: 'unstructured', sparsity: 0.5 },
    { kind: 'nm', n: 2, m: 4 },
  ];
  const { num_hidden_layers: numLayers } = JSON.parse(fs.readFileSync(path.join(source, 'config.json'), 'utf8')) as { num_hidden_layers: number };
  const outputs: PrunedExport[] = [];
  for (const method of ['magnitude', 'wanda', 'sparsegpt']) {
    for (const target of targets) {
      const out = tempDir('topiary-opt-pruned-');
      await pruneModel({ model: source, method, target, methodOptions: {}, calibration, out, resume: false });
      const what = `${method} ${target.kind === 'nm' ? '2:4' : '50%'}`;
      const store = openSafetensors(path.join(out, 'model.safetensors'));
      for (let layer = 0; layer < numLayers; layer++) {
        for (const spec of opt.linears) {
          const name = `${opt.layerPrefix(layer)}${spec.name}.weight`;
          const [rows, cols] = store.info(name).shape as [number, number];
          assertExactSparsity(store.read(name), rows, cols, target, `${what}: ${name}`);
        }
      }
      store.close();
      const exportedConfig = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(exportedConfig.dtype ?? exportedConfig.torch_dtype, 'float32', 'transformers loads the F32 weights as F32');
      outputs.push({ label: what, out, dense: source });
    }
  }

  await assertExportsMatchTransformers(outputs, readReference(modelsDir, 'opt-postnorm-proj').inputIds, getBackend());
});

test('OPT configs: a missing size names its field, LayerNorms without weights are refused', () => {
  const config = JSON.parse(fs.readFileSync(path.join(modelDir('opt-prenorm'), 'config.json'), 'utf8')) as Record<string, unknown>;
  const { ffn_dim: _, ...withoutFfn } = config;
  assertTopiaryError(() => opt.parseConfig(withoutFfn, 'config.json'), 'config.json', /missing required field "ffn_dim"/);
  assertTopiaryError(() => opt.parseConfig({ ...config, layer_norm_elementwise_affine: false }, 'config.json'), 'config.json', /layer_norm_elementwise_affine/);
  assertTopiaryError(() => opt.parseConfig({ ...config, num_attention_heads: 5 }, 'config.json'), 'config.json', /not a multiple of num_attention_heads/);
});

test("FLAP's uneven layers are refused on OPT in one line before any work", () => {
  const out = tempDir();
  const result = runCli(['prune', '--model', modelDir('opt-prenorm'), '--method', 'flap', '--ratio', '0.2', '--calib', 'text:/nonexistent', '--out', out]);
  assert.equal(result.status, 2);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  assert.match(result.stderr, /^topiary: flap gives each layer its own sizes, .* not opt; --option structure=ul-um removes the same share from every layer/);
});
