/**
 * The gpt_neox and gpt2 families beyond logit parity (test/family-parity.test.ts): incremental
 * decoding; one-line refusals of bad or unsupported configs and of structured pruning; GPT-2's
 * causal-mask buffers; unstructured and 2:4 pruning whose exported folders transformers reloads
 * with Topiary's logits; GGUF input as llama.cpp's converter writes these families.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { getBackend } from '../src/backend/index.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { exportHfFolder } from '../src/export/hf-folder.js';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { openModelSource } from '../src/model/sources.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { pruneModel } from '../src/prune/run.js';
import { assertExactSparsity, familyCalibration, familyModels, readReference, withByteTokenizer } from './family-models.js';
import { assertTopiaryError, repoRoot, runCli, tempDir } from './helpers.js';
import { checkAgainstFullPass } from './kv-cache-check.js';
import { assertExportsMatchTransformers, assertLogitParity, transformersLogits, type PrunedExport } from './parity.js';

const { dir: modelsDir } = await familyModels();
const MODELS = ['gpt_neox-parallel', 'gpt_neox-sequential', 'gpt2', 'gpt2-default-inner'];
/** One model per family to prune: the Pythia layout, and GPT-2 as openai-community ships it (no `transformer.` prefix). */
const PRUNED_MODELS = ['gpt_neox-parallel', 'gpt2-default-inner'];

const backends: [string, () => Backend][] = [
  ['native or auto', () => getBackend()],
  ['reference', () => new ReferenceBackend()],
];

for (const name of MODELS) {
  for (const [backendName, backend] of backends) {
    test(`${name} (${backendName} backend): prefill, chunk and decode steps match the full forward pass`, async () => {
      const model = await loadModel(path.join(modelsDir, name), { backend: backend() });
      await checkAgainstFullPass(model, readReference(modelsDir, name).inputIds[0]!, 9, 5, name);
    });
  }
}

/** A copy of fixture `name` with its config.json edited by `edit`; returns the config's path. */
function withConfig(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = tempDir();
  fs.copyFileSync(path.join(modelsDir, name, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(modelsDir, name, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(config);
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, JSON.stringify(config));
  return file;
}

test('bad or unsupported configs are refused in one line naming config.json and the field', () => {
  const cases: [string, (config: Record<string, unknown>) => void, RegExp][] = [
    ['gpt2', (c) => delete c.n_embd, /missing required field "n_embd"/],
    ['gpt2', (c) => (c.n_head = 5), /n_embd \(64\) is not a multiple of n_head \(5\)/],
    ['gpt2', (c) => (c.scale_attn_by_inverse_layer_idx = true), /scale_attn_by_inverse_layer_idx true is not supported/],
    ['gpt2', (c) => (c.activation_function = 'swiglu'), /unsupported activation "swiglu" in "activation_function"/],
    ['gpt_neox-parallel', (c) => delete c.intermediate_size, /missing required field "intermediate_size"/],
    ['gpt_neox-parallel', (c) => (c.rope_scaling = { type: 'dynamic', factor: 2 }), /unsupported rope_scaling type "dynamic"/],
    ['gpt_neox-parallel', (c) => (c.rotary_pct = 0.1), /a rotary fraction of 0.1 of the head size 16 gives 1 rotary dimensions/],
    ['gpt_neox-sequential', (c) => (c.use_parallel_residual = 'yes'), /field "use_parallel_residual" should be true or false/],
  ];
  for (const [name, edit, pattern] of cases) {
    const file = withConfig(name, edit);
    assertTopiaryError(() => openModelSource(path.dirname(file)), file, pattern);
  }
});

test("FLAP's uneven layers are refused in one line before any work, naming the uniform option", () => {
  for (const name of PRUNED_MODELS) {
    const out = tempDir();
    const result = runCli(['prune', '--model', path.join(modelsDir, name), '--method', 'flap', '--ratio', '0.2', '--out', out]);
    assert.equal(result.status, 2);
    assert.match(
      result.stderr,
      /^topiary: flap gives each layer its own sizes, which a Hugging Face config cannot hold \(one size for all layers\), and llama\.cpp loads per-layer shapes only for the LLaMA block \(as deci\), not (gpt_neox|gpt2); --option structure=ul-um removes the same share from every layer and writes a Hugging Face folder\n$/,
    );
    assert.deepEqual(fs.readdirSync(out), [], 'nothing written');
  }
});

/** A copy of fixture `name` whose tensors `edit` rewrites (stored names and layouts). */
function withTensors(name: string, edit: (tensors: TensorToWrite[]) => TensorToWrite[]): string {
  const dir = tempDir();
  fs.copyFileSync(path.join(modelsDir, name, 'config.json'), path.join(dir, 'config.json'));
  const store = openSafetensors(path.join(modelsDir, name));
  const tensors = store.list().map((info): TensorToWrite => ({ name: info.name, shape: info.shape, dtype: 'F32', data: store.read(info.name) }));
  store.close();
  writeSafetensors(path.join(dir, 'model.safetensors'), edit(tensors));
  return dir;
}

test('GPT-2 checkpoints with causal-mask buffers (attn.bias, attn.masked_bias) load without them', async () => {
  const name = 'gpt2-default-inner';
  const positions = 64;
  const mask = new Float32Array(positions * positions).map((_, i) => (i % positions <= Math.floor(i / positions) ? 1 : 0));
  const dir = withTensors(name, (tensors) => [
    ...tensors,
    { name: 'h.0.attn.bias', shape: [1, 1, positions, positions], dtype: 'F32', data: mask },
    { name: 'h.0.attn.masked_bias', shape: [1], dtype: 'F32', data: Float32Array.of(-1e4) },
  ]);
  const model = await loadModel(dir, { backend: getBackend() });
  assert.deepEqual(
    model.source.tensorNames().filter((tensor) => tensor.includes('attn.') && !/attn\.c_(attn|proj)\./.test(tensor)),
    [],
  );
  const { inputIds } = readReference(modelsDir, name);
  const plain = await loadModel(path.join(modelsDir, name), { backend: getBackend() });
  assert.deepEqual(await model.logits(inputIds), await plain.logits(inputIds));
});

test('a fused q/k/v projection that does not hold whole heads is refused in one line when the model is opened', async () => {
  // c_attn is stored [in, out]: keep 176 of its 192 output columns (3 × 4 heads of 16).
  const dir = withTensors('gpt2', (tensors) =>
    tensors.map((tensor) => {
      if (tensor.name === 'transformer.h.0.attn.c_attn.bias') return { ...tensor, shape: [176], data: (tensor.data as Float32Array).subarray(0, 176) };
      if (tensor.name !== 'transformer.h.0.attn.c_attn.weight') return tensor;
      const data = tensor.data as Float32Array;
      return { ...tensor, shape: [64, 176], data: Float32Array.from({ length: 64 * 176 }, (_, i) => data[Math.floor(i / 176) * 192 + (i % 176)]!) };
    }),
  );
  await assert.rejects(loadModel(dir, { backend: getBackend() }), {
    name: 'TopiaryError',
    message: `${path.join(dir, 'config.json')}: layer 0: the fused c_attn projection has 176 outputs and c_proj 64 inputs, not q, k and v sets of whole heads of 16`,
  });
});

const TARGETS: [string, SparsityTarget][] = [
  ['50%', { kind: 'unstructured', sparsity: 0.5 }],
  ['2:4', { kind: 'nm', n: 2, m: 4 }],
];

test('magnitude, wanda and sparsegpt at 50% and 2:4 hold their pattern and export folders transformers reloads with our logits', async () => {
  const calibration = familyCalibration(20_000);
  const runs: PrunedExport[] = [];
  for (const name of PRUNED_MODELS) {
    const source = withByteTokenizer(modelsDir, name);
    for (const method of ['magnitude', 'wanda', 'sparsegpt']) {
      for (const [targetName, target] of TARGETS) {
        const label = `${name} ${method} ${targetName}`;
        const out = tempDir();
        await pruneModel({ model: source, method, target, methodOptions: {}, calibration, out, resume: false });
        const model = await loadModel(out, { backend: getBackend() });
        for (let layer = 0; layer < model.numLayers; layer++) {
          for (const [role, { weight, outFeatures, inFeatures }] of Object.entries(model.layer(layer).linears)) {
            assertExactSparsity(weight, outFeatures, inFeatures, target, `${label}: layer ${layer} ${role}`);
          }
        }
        runs.push({ label, out, dense: path.join(modelsDir, name) });
      }
    }
  }

  await assertExportsMatchTransformers(runs, readReference(modelsDir, PRUNED_MODELS[0]!).inputIds, getBackend());
});

test('GGUF files as llama.cpp converts these families give the logits of the Hugging Face folder, and export to folders transformers reloads', async () => {
  // The relu models are left out: GGUF cannot say which activation a model uses.
  const names = ['gpt2', 'gpt_neox-parallel'];
  const out = tempDir();
  const files = names.map((name) => path.join(out, `${name}.gguf`));
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'tiny_hf_to_gguf.py'), ...names.flatMap((name, i) => [path.join(modelsDir, name), files[i]!])], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const { inputIds } = readReference(modelsDir, names[0]!);
  const exported: string[] = [];
  for (const [i, name] of names.entries()) {
    const folder = await loadModel(path.join(modelsDir, name), { backend: getBackend() });
    const gguf = await loadModel(files[i]!, { backend: getBackend() });
    assert.equal(gguf.source.format, 'gguf');
    // gpt2's MLP (n_inner 160) is narrower than the 4·n_embd the converter writes: read from the weights.
    assert.equal(gguf.config.intermediateSize, folder.config.intermediateSize);
    assert.deepEqual(await gguf.logits(inputIds), await folder.logits(inputIds), name);
    // With no config.json to start from, the family writes the whole config.
    const dir = path.join(out, name);
    exportHfFolder(gguf, dir, { dtype: 'F32', override: () => undefined });
    exported.push(dir);
  }
  for (const [i, logits] of transformersLogits(exported, inputIds).entries()) {
    await assertLogitParity(`${names[i]} exported from GGUF`, exported[i]!, { inputIds, logits }, getBackend());
  }
});
