/**
 * The Qwen3 and Gemma (2, 3) families beyond logit parity (test/family-parity.test.ts): bad
 * configs give one-line errors, decoding with a KV cache equals full recomputation (past the
 * sliding window), unstructured and 2:4 pruning give exact sparsity and export folders that
 * transformers reloads with Topiary's logits, and wanda-sp structured pruning does too, while
 * FLAP (whose result needs GGUF) is refused before any work; GGUF files written as llama.cpp
 * converts these models load with the same logits. Also YaRN rope scaling (llama family): its
 * config errors and its pruned export.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { familyFor } from '../src/model/families/index.js';
import { loadModel } from '../src/model/load.js';
import { pruneModel } from '../src/prune/run.js';
import { UsageError } from '../src/util/errors.js';
import { assertExactSparsity, familyCalibration, familyModels, readReference, withByteTokenizer } from './family-models.js';
import { assertTopiaryError, tempDir } from './helpers.js';
import { checkAgainstFullPass } from './kv-cache-check.js';
import { PARITY_TOLERANCE, relativeDifference, transformersLogitsPerFolder } from './parity.js';

const { dir: modelsDir } = await familyModels();
/** A few KB of WikiText-2: the byte tokenizer makes one token per byte, and the whole file would be slow to tokenize. */
const CALIBRATION = familyCalibration(8192);

test('bad configs are refused in one line naming config.json and the field', () => {
  const file = '/models/x/config.json';
  const config = (name: string) => JSON.parse(fs.readFileSync(path.join(modelsDir, name, 'config.json'), 'utf8')) as Record<string, unknown>;
  const parse = (json: Record<string, unknown>) => () => familyFor(String(json.model_type), file).parseConfig(json, file);
  const { intermediate_size: _, ...qwen3 } = config('qwen3-mqa');
  assertTopiaryError(parse(qwen3), file, /missing required field "intermediate_size"/);
  assertTopiaryError(parse({ ...config('gemma2-softcap'), query_pre_attn_scalar: 'big' }), file, /field "query_pre_attn_scalar" should be a number/);
  assertTopiaryError(parse({ ...config('gemma2-softcap'), hidden_activation: 'tanh' }), file, /unsupported activation "tanh" in "hidden_activation"/);
  assertTopiaryError(parse({ ...config('gemma3-legacy-linear'), rope_scaling: { rope_type: 'dynamic', factor: 2 } }), file, /unsupported rope_scaling type "dynamic"/);
  assertTopiaryError(parse({ ...config('gemma3-gqa'), layer_types: ['full_attention'] }), file, /"layer_types" should list 3 layers/);
  const yarn = config('llama-yarn');
  const { original_max_position_embeddings: __, ...yarnParameters } = yarn.rope_parameters as Record<string, unknown>;
  assertTopiaryError(parse({ ...yarn, rope_parameters: yarnParameters }), file, /missing required field "original_max_position_embeddings"/);
  assertTopiaryError(parse({ ...yarn, rope_parameters: { ...yarnParameters, rope_type: 'longrope' } }), file, /unsupported rope_scaling type "longrope" \(supported: default, linear, llama3, yarn\)/);
});

test('Gemma 3 without layer_types: every sliding_window_pattern-th layer is full, local RoPE from rope_local_base_freq', () => {
  const file = 'config.json';
  const json = JSON.parse(fs.readFileSync(path.join(modelsDir, 'gemma3-legacy-linear', 'config.json'), 'utf8')) as Record<string, unknown>;
  const config = familyFor('gemma3_text', file).parseConfig({ ...json, num_hidden_layers: 7, sliding_window_pattern: undefined }, file);
  assert.deepEqual(config.attention.layerTypes, ['sliding', 'sliding', 'sliding', 'sliding', 'sliding', 'full', 'sliding']);
  assert.deepEqual(config.rope, { theta: 1e6, scaling: { type: 'linear', factor: 8 }, localTheta: 1e4, localScaling: { type: 'none' }, rotaryDim: 16, layout: 'half' });
});

test('Qwen3 without layer_types slides from layer max_window_layers up when use_sliding_window is set', () => {
  const file = 'config.json';
  const json = JSON.parse(fs.readFileSync(path.join(modelsDir, 'qwen3-mqa', 'config.json'), 'utf8')) as Record<string, unknown>;
  const parse = (overrides: Record<string, unknown>) => familyFor('qwen3', file).parseConfig({ ...json, sliding_window: 8, max_window_layers: 1, ...overrides }, file).attention;
  assert.deepEqual(parse({ use_sliding_window: true }), { scale: 0.25, layerTypes: ['full', 'sliding', 'sliding'], slidingWindow: 8 });
  assert.deepEqual(parse({ use_sliding_window: false }), { scale: 0.25 });
});

for (const name of ['qwen3-gqa-tied', 'gemma2-softcap', 'gemma3-gqa', 'gemma3-legacy-linear']) {
  test(`${name}: decoding with a KV cache equals full recomputation (past the sliding window if any)`, async () => {
    const model = await loadModel(path.join(modelsDir, name), { backend: getBackend() });
    const tokens = readReference(modelsDir, name).inputIds[0]!;
    assert.ok(tokens.length > (model.config.attention.slidingWindow ?? 0) + 4);
    await checkAgainstFullPass(model, tokens, 5, 4, name);
  });
}

const PRUNED_MODELS = ['qwen3-gqa-tied', 'gemma2-softcap', 'gemma3-legacy-linear'];
const TARGETS = [
  { label: '50%', target: { kind: 'unstructured', sparsity: 0.5 } as const },
  { label: '2:4', target: { kind: 'nm', n: 2, m: 4 } as const },
];

/** Exported folders with Topiary's logits on them, checked against transformers in one Python run at the end. */
const exports: { dir: string; windows: number[][]; ours: Float32Array; what: string }[] = [];

test('magnitude, wanda and sparsegpt at 50% and 2:4 on Qwen3, Gemma 2 and Gemma 3 give exact sparsity', async () => {
  for (const name of PRUNED_MODELS) {
    const source = withByteTokenizer(modelsDir, name);
    const windows = readReference(modelsDir, name).inputIds;
    for (const method of ['magnitude', 'wanda', 'sparsegpt']) {
      for (const { label, target } of TARGETS) {
        const what = `${name} ${method} ${label}`;
        const out = tempDir();
        await pruneModel({ model: source, method, target, methodOptions: {}, calibration: CALIBRATION, out, resume: false });
        const pruned = await loadModel(out, { backend: getBackend() });
        for (let layer = 0; layer < pruned.numLayers; layer++) {
          for (const [role, { weight, outFeatures, inFeatures }] of Object.entries(pruned.layer(layer).linears)) {
            assertExactSparsity(weight, outFeatures, inFeatures, target, `${what}: layer ${layer} ${role}`);
          }
        }
        // The export does not depend on the method: reloading SparseGPT's (which also updates weights) suffices.
        if (method === 'sparsegpt') exports.push({ dir: out, windows, ours: await pruned.logits(windows), what });
      }
    }
  }
});

test('wanda-sp at ratio 0.25 on Qwen3 and Gemma 3 writes a smaller Hugging Face folder', async () => {
  for (const name of ['qwen3-gqa-tied', 'gemma3-gqa']) {
    const out = tempDir();
    const summary = await pruneModel({ model: withByteTokenizer(modelsDir, name), method: 'wanda-sp', target: { kind: 'structured', ratio: 0.25 }, methodOptions: {}, calibration: CALIBRATION, out, resume: false });
    assert.equal(summary.format, 'safetensors');
    assert.ok(summary.paramsAfter < summary.paramsBefore, `${name}: ${summary.paramsAfter} of ${summary.paramsBefore} parameters kept`);
    const windows = readReference(modelsDir, name).inputIds;
    const pruned = await loadModel(out, { backend: getBackend() });
    const dense = await loadModel(path.join(modelsDir, name), { backend: getBackend() });
    assert.ok(pruned.config.intermediateSize < dense.config.intermediateSize, `${name}: the MLP did not shrink`);
    exports.push({ dir: out, windows, ours: await pruned.logits(windows), what: `${name} wanda-sp 0.25` });
  }
});

test('wanda at 50% on Llama with YaRN writes its rope scaling back', async () => {
  const out = tempDir();
  await pruneModel({ model: withByteTokenizer(modelsDir, 'llama-yarn'), method: 'wanda', target: TARGETS[0]!.target, methodOptions: {}, calibration: CALIBRATION, out, resume: false });
  const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as { rope_scaling: Record<string, unknown> };
  assert.deepEqual(config.rope_scaling, { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32, beta_fast: 32, beta_slow: 1, truncate: true, attention_factor: 0.1 * Math.log(4) + 1 });
  const windows = readReference(modelsDir, 'llama-yarn').inputIds;
  exports.push({ dir: out, windows, ours: await (await loadModel(out, { backend: getBackend() })).logits(windows), what: 'llama-yarn wanda 50%' });
});

for (const name of ['mistral-sliding', 'qwen2-sliding']) {
  test(`wanda at 50% on ${name} writes its sliding window back`, async () => {
    const out = tempDir();
    await pruneModel({ model: withByteTokenizer(modelsDir, name), method: 'wanda', target: TARGETS[0]!.target, methodOptions: {}, calibration: CALIBRATION, out, resume: false });
    const pruned = await loadModel(out, { backend: getBackend() });
    assert.deepEqual(pruned.config.attention, (await loadModel(path.join(modelsDir, name), { backend: getBackend() })).config.attention);
    const windows = readReference(modelsDir, name).inputIds;
    exports.push({ dir: out, windows, ours: await pruned.logits(windows), what: `${name} wanda 50%` });
  });
}

test("transformers reloads every pruned folder above with Topiary's logits", () => {
  assert.equal(exports.length, PRUNED_MODELS.length * TARGETS.length + 5, 'a pruning test above failed before exporting');
  const reference = transformersLogitsPerFolder(exports.map(({ dir, windows }) => ({ dir, windows })));
  exports.forEach((run, i) => {
    const difference = relativeDifference(run.ours, reference[i]!);
    assert.ok(difference <= PARITY_TOLERANCE, `${run.what}: transformers' logits differ by ${difference.toExponential(3)}`);
  });
});

test('FLAP on Gemma 2 is refused in one line before any work: its result needs GGUF', async () => {
  const out = tempDir();
  await assert.rejects(
    pruneModel({ model: path.join(modelsDir, 'gemma2-softcap'), method: 'flap', target: { kind: 'structured', ratio: 0.25 }, methodOptions: {}, calibration: CALIBRATION, out, resume: false }),
    (error: unknown) => {
      assert.ok(error instanceof UsageError, String(error));
      assert.doesNotMatch(error.message, /\n/);
      assert.match(error.message, /^flap adds biases to output projections that have none in a gemma2 config, so it writes GGUF/);
      return true;
    },
  );
  assert.deepEqual(fs.readdirSync(out), []);
});

/**
 * Writes Hugging Face folders as GGUF the way llama.cpp's converter does (F32): its metadata keys,
 * its tensor names (gguf's own name map) and, for Gemma, norm weights stored as 1 + w.
 */
const GGUF_WRITER = `
import json, sys, numpy as np, gguf
from safetensors.numpy import load_file
for job in json.load(sys.stdin):
    config = json.load(open(job["dir"] + "/config.json"))
    tensors = load_file(job["dir"] + "/model.safetensors")
    arch = {"qwen3": gguf.MODEL_ARCH.QWEN3, "gemma2": gguf.MODEL_ARCH.GEMMA2, "gemma3": gguf.MODEL_ARCH.GEMMA3}[job["arch"]]
    writer = gguf.GGUFWriter(job["out"], job["arch"])
    layers = config["num_hidden_layers"]
    writer.add_block_count(layers)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    rope = config.get("rope_parameters") or config
    writer.add_rope_freq_base(rope.get("full_attention", rope)["rope_theta"])
    if job["arch"] == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    if job["arch"].startswith("gemma"):
        writer.add_sliding_window(config["sliding_window"])
    if config.get("rope_scaling"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config["rope_scaling"]["factor"])
    names = gguf.get_tensor_name_map(arch, layers)
    for name, data in tensors.items():
        if job["arch"].startswith("gemma") and name.endswith("norm.weight"):
            data = data + np.float32(1)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
`;

/** A copy of fixture `name` with config.json fields replaced. */
function variant(name: string, overrides: Record<string, unknown>): string {
  const copy = path.join(tempDir(), name);
  fs.cpSync(path.join(modelsDir, name), copy, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(copy, 'config.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(copy, 'config.json'), JSON.stringify({ ...config, ...overrides }));
  return copy;
}

test("GGUF files written as llama.cpp converts Qwen3, Gemma 2 and Gemma 3 give the Hugging Face folders' logits", async () => {
  const dir = tempDir();
  // What llama.cpp assumes of Gemma, made true of the Hugging Face side: attention scaled by
  // head_dim^-1/2 (query_pre_attn_scalar = head_dim), and on Gemma 3 every 6th layer full (of 3: none).
  const jobs = [
    { name: 'qwen3-mqa', dir: path.join(modelsDir, 'qwen3-mqa'), arch: 'qwen3' },
    { name: 'gemma2-softcap', dir: variant('gemma2-softcap', { query_pre_attn_scalar: 16 }), arch: 'gemma2' },
    { name: 'gemma3-legacy-linear', dir: variant('gemma3-legacy-linear', { sliding_window_pattern: 6 }), arch: 'gemma3' },
  ].map((job) => ({ ...job, out: path.join(dir, `${job.name}.gguf`) }));
  const result = spawnSync('python3', ['-c', GGUF_WRITER], { input: JSON.stringify(jobs), encoding: 'utf8' });
  assert.equal(result.status, 0, `writing GGUF failed:\n${result.stderr}`);
  for (const job of jobs) {
    const hf = await loadModel(job.dir, { backend: getBackend() });
    const gguf = await loadModel(job.out, { backend: getBackend() });
    assert.equal(gguf.family, hf.family);
    assert.equal(gguf.config.modelType, hf.config.modelType);
    assert.deepEqual(gguf.config.rope, hf.config.rope);
    assert.deepEqual(gguf.config.attention, hf.config.attention);
    assert.equal(gguf.config.finalLogitSoftCap, hf.config.finalLogitSoftCap);
    const windows = readReference(modelsDir, job.name).inputIds;
    const difference = relativeDifference(await gguf.logits(windows), await hf.logits(windows));
    assert.ok(difference <= PARITY_TOLERANCE, `${job.name}: GGUF and Hugging Face logits differ by ${difference.toExponential(3)}`);
  }
});
