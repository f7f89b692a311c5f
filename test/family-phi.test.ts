/**
 * The Phi families beyond logit parity (test/family-parity.test.ts): Phi-2 ('phi') and Phi-3 /
 * Phi-4-mini ('phi3') on the generated tiny models. Cached decoding equals the full pass (through
 * Phi-3's sliding window); malformed or unsupported configs are refused in one line naming
 * config.json; unstructured and 2:4 pruning keep the fused projections' exact patterns and the
 * exported folders load in transformers with Topiary's logits; structured pruning is refused before
 * any work. GGUF files written as llama.cpp's converter writes them (Phi-2 also with the older fused
 * attn_qkv) give transformers' logits. Two models transformers makes here cover LongRoPE (within
 * and beyond the original context, from config.json and GGUF) and Phi's qk_layernorm.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { exportHfFolder } from '../src/export/hf-folder.js';
import { openSafetensors } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { openModelSource } from '../src/model/sources.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { pruneModel } from '../src/prune/run.js';
import { assertExactSparsity, familyCalibration, familyModels, readReference, withByteTokenizer } from './family-models.js';
import { checkAgainstFullPass } from './kv-cache-check.js';
import { assertTopiaryError, repoRoot, runCli, tempDir } from './helpers.js';
import { assertExportsMatchTransformers, assertLogitParity, type PrunedExport } from './parity.js';

const { dir: modelsDir } = await familyModels();
const modelDir = (name: string) => path.join(modelsDir, name);

for (const name of ['phi3-mha-sliding', 'phi-mha']) {
  test(`${name}: prefill, chunk and decode steps match the full forward pass`, async () => {
    const model = await loadModel(modelDir(name), { backend: getBackend() });
    const [tokens] = readReference(modelsDir, name).inputIds;
    // A prefill longer than phi3-mha-sliding's window of 8, so cached keys leave the window too.
    await checkAgainstFullPass(model, tokens!, 9, 5, name);
  });
}

/** Fixture `name` written as an F32 GGUF the way llama.cpp's converter lays it out (`options`: see the script). */
function asGguf(name: string, ...options: string[]): string {
  const file = path.join(tempDir(), `${name}.gguf`);
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'tiny_hf_to_gguf.py'), ...options, modelDir(name), file], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return file;
}

// phi-mha's MLP width is not the 4·hidden llama.cpp's phi2 metadata states. (llama.cpp runs every
// phi2 GGUF with the tanh GELU, so phi-gqa-legacy's exact GELU would not match transformers.)
for (const name of ['phi3-gqa-partial', 'phi3-mha-sliding', 'phi-mha']) {
  test(`${name} as an F32 GGUF (llama.cpp's layout) gives transformers' logits`, async () => {
    await assertLogitParity(name, asGguf(name), readReference(modelsDir, name), getBackend());
  });
}

test('phi-mha as a GGUF with a fused attn_qkv (older Phi-2 conversions) gives transformers\' logits', async () => {
  const file = asGguf('phi-mha', '--fuse-qkv');
  const model = await loadModel(file, { backend: getBackend() });
  assert.deepEqual(model.source.shape('model.layers.1.self_attn.k_proj.weight'), [64, 64]);
  assert.deepEqual(model.source.shape('model.layers.1.self_attn.v_proj.bias'), [64]);
  await assertLogitParity('phi-mha fused', file, readReference(modelsDir, 'phi-mha'), getBackend());
});

/**
 * Two tiny models for features the shared fixtures lack, made by transformers in one process with
 * its logits for one window within 16 tokens and one of 40:
 * - longrope: Phi-3 with LongRoPE, original context 16 of 64 (so an attention factor above 1),
 *   partial rotary 0.75 (6 factors per set): the short window uses the short factors, the long
 *   window the long ones, each its own forward pass;
 * - qk-layernorm: Phi with qk_layernorm, its per-head LayerNorm weights and biases randomised.
 */
const GENERATE_SCRIPT = `
import json, os, sys, torch
from transformers import Phi3Config, Phi3ForCausalLM, PhiConfig, PhiForCausalLM
out = sys.argv[1]
small = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    initializer_range=0.2, pad_token_id=0, eos_token_id=2)
models = {
    "longrope": Phi3ForCausalLM(Phi3Config(**small, num_key_value_heads=2, max_position_embeddings=64,
        original_max_position_embeddings=16, rope_scaling={"type": "longrope", "rope_theta": 10000.0,
        "partial_rotary_factor": 0.75, "short_factor": [1.0, 1.3, 1.9, 2.6, 3.8, 5.1],
        "long_factor": [1.1, 2.0, 4.5, 9.0, 17.0, 30.0]})),
    "qk-layernorm": PhiForCausalLM(PhiConfig(**small, qk_layernorm=True, max_position_embeddings=64)),
}
windows = [torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(n)) for n in (12, 40)]
references = {}
for name, model in models.items():
    torch.manual_seed(0)
    model.apply(model._init_weights)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "_layernorm." in param_name:
                param.normal_(1.0 if param_name.endswith("weight") else 0.0, 0.3)
    model.eval().save_pretrained(os.path.join(out, name))
    with torch.no_grad():
        references[name] = [{"tokens": w[0].tolist(), "logits": model(w).logits.flatten().tolist()} for w in windows]
json.dump(references, sys.stdout)
`;

interface Generated {
  dir: string;
  references: Record<'longrope' | 'qk-layernorm', { tokens: number[]; logits: number[] }[]>;
}

let generated: Generated | undefined;
function generatedModels(): Generated {
  if (!generated) {
    const dir = tempDir();
    const result = spawnSync('python3', ['-c', GENERATE_SCRIPT, dir], { encoding: 'utf8', maxBuffer: 1 << 26 });
    assert.equal(result.status, 0, result.stderr);
    generated = { dir, references: JSON.parse(result.stdout) as Generated['references'] };
  }
  return generated;
}

test('Phi-3 LongRoPE, from config.json and from GGUF: short factors within the original context, long ones beyond, as transformers', async () => {
  const { dir, references } = generatedModels();
  const model = path.join(dir, 'longrope');
  // As GGUF, the factors are tensors (rope_factors_short/long) and the attention factor metadata.
  const gguf = path.join(tempDir(), 'longrope.gguf');
  const converted = spawnSync('python3', [path.join(repoRoot, 'scripts', 'tiny_hf_to_gguf.py'), model, gguf], { encoding: 'utf8' });
  assert.equal(converted.status, 0, converted.stderr);
  for (const source of [model, gguf]) {
    for (const reference of references.longrope) {
      await assertLogitParity(`longrope ${path.basename(source)}, ${reference.tokens.length} tokens`, source, { inputIds: [reference.tokens], logits: reference.logits }, getBackend());
    }
  }
});

test('Phi with qk_layernorm: per-head LayerNorm on q and k before RoPE, as transformers', async () => {
  const { dir, references } = generatedModels();
  for (const reference of references['qk-layernorm']) {
    await assertLogitParity(`qk-layernorm, ${reference.tokens.length} tokens`, path.join(dir, 'qk-layernorm'), { inputIds: [reference.tokens], logits: reference.logits }, getBackend());
  }
});

/** A copy of fixture `name`'s config.json with `changes` (undefined deletes a field), in a fresh folder. */
function editedConfig(name: string, changes: Record<string, unknown>): { dir: string; configFile: string } {
  const dir = tempDir();
  const config = JSON.parse(fs.readFileSync(path.join(modelDir(name), 'config.json'), 'utf8')) as Record<string, unknown>;
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined) delete config[key];
    else config[key] = value;
  }
  const configFile = path.join(dir, 'config.json');
  fs.writeFileSync(configFile, JSON.stringify(config));
  return { dir, configFile };
}

const REFUSED_CONFIGS: { what: string; name: string; changes: Record<string, unknown>; error: RegExp }[] = [
  { what: 'a missing hidden_size', name: 'phi-mha', changes: { hidden_size: undefined }, error: /missing required field "hidden_size"/ },
  { what: 'a rotary part of one feature', name: 'phi-gqa-legacy', changes: { partial_rotary_factor: 0.1 }, error: /"partial_rotary_factor" \(0\.1\) should rotate an even number/ },
  {
    what: 'LongRoPE factors that do not match the rotated frequencies',
    name: 'phi3-mha-sliding',
    changes: { rope_parameters: { rope_type: 'longrope', rope_theta: 10000, short_factor: [1], long_factor: [1] } },
    error: /field "rope_parameters.short_factor" should list 8 positive numbers/,
  },
  { what: 'legacy "su" rope scaling without factors', name: 'phi3-gqa-partial', changes: { rope_scaling: { type: 'su' } }, error: /field "rope_scaling.short_factor" should list 6 positive numbers/ },
  { what: 'linear rope scaling', name: 'phi3-gqa-partial', changes: { rope_scaling: { type: 'linear', factor: 2 } }, error: /rope_scaling type "linear" is not one Phi-3 has \(default, longrope\)/ },
  { what: 'a missing intermediate_size', name: 'phi3-mha-sliding', changes: { intermediate_size: undefined }, error: /missing required field "intermediate_size"/ },
];

for (const { what, name, changes, error } of REFUSED_CONFIGS) {
  test(`${name} with ${what} is refused in one line naming config.json`, () => {
    const { dir, configFile } = editedConfig(name, changes);
    assertTopiaryError(() => openModelSource(dir), configFile, error);
  });
}

test('what no format can hold is refused on the Phi families in one line, before any work', () => {
  const cases = [
    // FLAP's uneven layers on Phi-2; its compensation on Phi-3, whose output projections have no bias.
    ['phi-mha', 'flap gives each layer its own sizes, which a Hugging Face config cannot hold (one size for all layers), and llama.cpp loads per-layer shapes only for the LLaMA block (as deci), not phi'],
    ['phi3-gqa-partial', 'flap adds biases to output projections that have none in a phi3 config, so it writes GGUF'],
  ];
  for (const [name, message] of cases) {
    const out = path.join(tempDir(), 'out');
    const result = runCli(['prune', '--model', modelDir(name), '--method', 'flap', '--ratio', '0.2', '--calib', 'wikitext2', '--out', out]);
    assert.equal(result.status, 2, result.stderr);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.ok(result.stderr.startsWith(`topiary: ${message}`), result.stderr);
    assert.ok(!fs.existsSync(out), 'nothing was written');
  }
});

const TARGETS: { label: string; target: SparsityTarget }[] = [
  { label: '50% unstructured', target: { kind: 'unstructured', sparsity: 0.5 } },
  { label: '2:4', target: { kind: 'nm', n: 2, m: 4 } },
];

test('magnitude, wanda and sparsegpt prune phi and phi3 exactly; the exports, and a GGUF-sourced phi3, load in transformers with Topiary\'s logits', async () => {
  // A few kilobytes: every byte is a token, and encoding the whole WikiText-2 file twelve times would dominate.
  const calibration = familyCalibration(4000);
  const runs: PrunedExport[] = [];
  // Export from GGUF builds config.json from the GGUF metadata alone.
  const fromGguf = await loadModel(asGguf('phi3-gqa-partial'), { backend: getBackend() });
  const ggufExport = tempDir();
  exportHfFolder(fromGguf, ggufExport, { dtype: 'F32', override: () => undefined });
  runs.push({ label: 'phi3-gqa-partial from GGUF', out: ggufExport });
  for (const name of ['phi-mha', 'phi3-gqa-partial']) {
    const source = withByteTokenizer(modelsDir, name);
    const weights = openSafetensors(source);
    const prunable = weights.list().filter((info) => /\.layers\.\d+\..*(proj|fc\d|dense)\.weight$/.test(info.name));
    weights.close();
    for (const method of ['magnitude', 'wanda', 'sparsegpt']) {
      for (const { label, target } of TARGETS) {
        const what = `${name} ${method} ${label}`;
        const out = tempDir();
        await pruneModel({ model: source, method, target, methodOptions: {}, calibration, out, resume: false });
        const store = openSafetensors(out);
        for (const { name: tensor, shape } of prunable) {
          const [rows, cols] = shape as [number, number];
          assertExactSparsity(store.read(tensor), rows, cols, target, `${what}: ${tensor}`);
        }
        store.close();
        runs.push({ label: what, out, dense: source });
      }
    }
  }
  const windows = [
    [1, 40, 41, 26, 37, 41, 26, 26, 42, 26, 30, 31],
    [1, 9, 100, 200, 30, 40, 50, 42, 7, 77, 111, 222],
  ];
  await assertExportsMatchTransformers(runs, windows, getBackend());
});
