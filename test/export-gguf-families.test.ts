/**
 * GGUF export for every family llama.cpp defines, checked in llama.cpp itself (node-llama-cpp's
 * prebuilt CPU binary): the tiny random model of each family (scripts/make_family_models.py, with a
 * byte tokenizer so llama.cpp can load the file) is written as GGUF and llama.cpp's logits and NLL
 * on its reference window agree with Topiary's reading the same file. Configurations llama.cpp runs
 * differently are refused in one line before anything is written; a 256-wide LLaMA exported at every
 * --quant runs in llama.cpp close to Topiary; a FLAP-pruned Qwen2 (per-layer sizes, q/k/v biases and
 * added o/down biases) goes to llama.cpp's deci.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { exportGguf, GGUF_QUANTS, ggufUnsupported } from '../src/export/gguf-writer.js';
import { openGguf } from '../src/formats/gguf.js';
import { writeSafetensors } from '../src/formats/safetensors.js';
import { CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { prunePipeline } from '../src/prune/pipeline.js';
import { structuredMethodByName } from '../src/prune/structured/index.js';
import { structuredStrategy } from '../src/prune/structured/strategy.js';
import { TopiaryError } from '../src/util/errors.js';
import { createRng } from '../src/util/random.js';
import { byteTokenizerJson, familyModels, readReference, withByteTokenizer } from './family-models.js';
import { runCli, tempDir } from './helpers.js';
import { assertLlamaCppAgrees, nodeLlamaCpp } from './llama-cpp.js';

/** Models written as GGUF, with config changes that make a variant llama.cpp runs as Topiary does, and the architecture expected. */
/**
 * `tanhGelu`: the model's exact GELU becomes llama.cpp's tanh approximation (a warning says so), so
 * Topiary reading the file back computes that too and its logits differ slightly from the source's.
 */
const WRITTEN: { name: string; changes?: Record<string, unknown>; arch: string; readsAs?: string; tanhGelu?: boolean }[] = [
  { name: 'llama-yarn', changes: { rope_parameters: { rope_theta: 10000, rope_type: 'default' } }, arch: 'llama' },
  { name: 'mistral-sliding', changes: { sliding_window: null }, arch: 'llama', readsAs: 'llama' },
  { name: 'qwen2-window-disabled', arch: 'qwen2' },
  { name: 'qwen3-gqa-tied', arch: 'qwen3' },
  { name: 'qwen3-mqa', arch: 'qwen3' },
  { name: 'gemma2-softcap', changes: { query_pre_attn_scalar: 16 }, arch: 'gemma2' },
  { name: 'gemma3-gqa', changes: { query_pre_attn_scalar: 16 }, arch: 'gemma3' },
  { name: 'gemma3-legacy-linear', arch: 'gemma3' },
  { name: 'phi3-gqa-partial', arch: 'phi3' },
  { name: 'phi3-mha-sliding', changes: { sliding_window: null }, arch: 'phi3' },
  { name: 'phi-mha', arch: 'phi2' },
  { name: 'phi-gqa-legacy', arch: 'phi2', tanhGelu: true },
  { name: 'gpt_neox-parallel', arch: 'gptneox' },
  { name: 'gpt2', arch: 'gpt2' },
  { name: 'mamba-tied', arch: 'mamba' },
];

/** Models llama.cpp would run differently (or not at all), and the reason given. */
const REFUSED: { name: string; reason: RegExp }[] = [
  { name: 'llama-yarn', reason: /^yarn rope scaling is not written to GGUF yet$/ },
  { name: 'mistral-sliding', reason: /llama architecture has no sliding-window attention/ },
  { name: 'qwen2-sliding', reason: /qwen2 architecture has no sliding-window attention/ },
  { name: 'gemma2-softcap', reason: /scales gemma2 attention by head_dim\^-1\/2, not by this model's query_pre_attn_scalar/ },
  { name: 'gemma2-mqa-legacy', reason: /gemma2 always soft-caps attention scores and logits/ },
  { name: 'phi3-mha-sliding', reason: /phi3 runs without its sliding window/ },
  { name: 'gpt_neox-sequential', reason: /gptneox computes GELU, not this model's relu/ },
  { name: 'opt-prenorm', reason: /llama.cpp has no architecture for opt models/ },
  { name: 'mamba-narrow', reason: /^llama.cpp's mamba builds only an expansion factor of 2 \(d_inner = 2 × hidden\), this model has d_inner 64 for hidden 64$/ },
  { name: 'mamba-biased-untied', reason: /mamba builds only an expansion factor of 2 .* d_inner 192 for hidden 64$/ },
];

test('every family llama.cpp defines: the exported GGUF runs in llama.cpp with Topiary’s logits and NLL', async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const { dir } = await familyModels();
  for (const { name, changes, arch, readsAs, tanhGelu } of WRITTEN) {
    const model = await loadModel(withByteTokenizer(dir, name, changes), { backend: getBackend() });
    const file = path.join(tempDir(), `${name}.gguf`);
    const written = exportGguf(model, file, { dtype: 'F32' });
    assert.equal(written.architecture, arch, name);
    const reread = await loadModel(file, { backend: getBackend() });
    assert.equal(reread.config.modelType, readsAs ?? model.config.modelType, `${name} reads back as its model_type`);
    const tokens = readReference(dir, name).inputIds[0]!;
    if (tanhGelu) assert.match(written.warnings.join('\n'), /computes the tanh approximation of the model's exact GELU/);
    else assert.deepEqual(await reread.logits([tokens]), await model.logits([tokens]), `${name}: Topiary reads its export back with the same logits`);
    await assertLlamaCppAgrees(lib, file, tokens);
  }
});

test('configurations llama.cpp would run differently are refused in one line, before anything is written', async () => {
  const { dir } = await familyModels();
  for (const { name, reason } of REFUSED) {
    const model = await loadModel(path.join(dir, name), { backend: getBackend() });
    const why = ggufUnsupported(model);
    assert.match(why ?? '', reason, name);
    assert.ok(!why!.includes('\n'), `${name}: one line`);
    const file = path.join(tempDir(), 'refused.gguf');
    assert.throws(() => exportGguf(model, file, { dtype: 'F16' }), (error: unknown) => error instanceof TopiaryError && error.message.endsWith(why!));
    assert.ok(!fs.existsSync(file), `${name}: nothing written`);
  }
  // What prune asks before it starts: a qwen3 result with uneven layers or FLAP's o/down biases.
  const qwen3 = await loadModel(path.join(dir, 'qwen3-mqa'), { backend: getBackend() });
  assert.match(ggufUnsupported(qwen3, { unevenLayers: true }) ?? '', /^llama.cpp loads per-layer head counts and MLP widths only for its deci architecture \(the LLaMA block\), so a qwen3 model with uneven layers cannot be written as GGUF$/);
  assert.match(ggufUnsupported(qwen3, { addedBiasRoles: ['o', 'down'] }) ?? '', /^llama.cpp's qwen3 architecture does not load biases on attn_output, ffn_down$/);
  const qwen2 = await loadModel(path.join(dir, 'qwen2-window-disabled'), { backend: getBackend() });
  assert.equal(ggufUnsupported(qwen2, { unevenLayers: true, addedBiasRoles: ['o', 'down'] }), undefined, 'qwen2 results go to deci');
});

/** A random LLaMA whose rows are whole Q4_K super-blocks (256 wide, MLP 512), with the byte tokenizer. */
function wideLlama(): string {
  const dir = tempDir();
  const hidden = 256;
  const ffn = 512;
  const layers = 2;
  const vocab = 256;
  const rng = createRng(5);
  const matrix = (rows: number, cols: number, scale = 1 / Math.sqrt(cols)) => Float32Array.from({ length: rows * cols }, () => rng.normal() * scale);
  const norm = () => Float32Array.from({ length: hidden }, () => 1 + 0.1 * rng.normal());
  const tensors = [
    { name: 'model.embed_tokens.weight', shape: [vocab, hidden], data: matrix(vocab, hidden, 1) },
    { name: 'model.norm.weight', shape: [hidden], data: norm() },
    { name: 'lm_head.weight', shape: [vocab, hidden], data: matrix(vocab, hidden, 2 / Math.sqrt(hidden)) },
  ];
  for (let layer = 0; layer < layers; layer++) {
    const p = `model.layers.${layer}.`;
    tensors.push(
      { name: `${p}input_layernorm.weight`, shape: [hidden], data: norm() },
      { name: `${p}post_attention_layernorm.weight`, shape: [hidden], data: norm() },
      ...['q', 'o'].map((x) => ({ name: `${p}self_attn.${x}_proj.weight`, shape: [hidden, hidden], data: matrix(hidden, hidden) })),
      // 2 key/value heads of 64: 128 rows.
      ...['k', 'v'].map((x) => ({ name: `${p}self_attn.${x}_proj.weight`, shape: [128, hidden], data: matrix(128, hidden) })),
      { name: `${p}mlp.gate_proj.weight`, shape: [ffn, hidden], data: matrix(ffn, hidden) },
      { name: `${p}mlp.up_proj.weight`, shape: [ffn, hidden], data: matrix(ffn, hidden) },
      { name: `${p}mlp.down_proj.weight`, shape: [hidden, ffn], data: matrix(hidden, ffn) },
    );
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: hidden, intermediate_size: ffn, num_hidden_layers: layers,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: vocab, max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: false, hidden_act: 'silu',
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(byteTokenizerJson()));
  return dir;
}

test('every --quant: matrices in that type, 1-D tensors F32, and llama.cpp’s NLL close to Topiary’s on the file', async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const model = await loadModel(wideLlama(), { backend: getBackend() });
  const rng = createRng(8);
  const tokens = Array.from({ length: 48 }, () => Math.floor(rng.next() * 256));
  const dense = (await model.windowNll([tokens])).nll;
  for (const quant of GGUF_QUANTS) {
    const file = path.join(tempDir(), `wide-${quant}.gguf`);
    const written = exportGguf(model, file, { dtype: quant });
    // 2 norms per layer + the final norm stay F32; the 7 matrices per layer, embedding and head take the type.
    assert.deepEqual(written.tensorTypes, quant === 'F32' ? { F32: 21 } : { F32: 5, [quant]: 16 }, quant);
    const store = openGguf(file);
    assert.equal(store.info('blk.0.ffn_down.weight').dtype, quant);
    assert.equal(store.info('blk.0.attn_norm.weight').dtype, 'F32');
    store.close();
    const quantized = quant === 'F32' || quant === 'F16' ? undefined : { logits: 0.25, nll: 5e-3 };
    const { topiaryNll } = await assertLlamaCppAgrees(lib, file, tokens, quantized);
    // The quantization itself costs little on this model (≤ 2% NLL at 4 bits).
    assert.ok(Math.abs(topiaryNll - dense) / dense < 0.02, `${quant}: NLL ${topiaryNll} vs dense ${dense}`);
  }
});

test('a FLAP-pruned Qwen2 (per-layer heads and widths, q/k/v and added o/down biases) is written as deci and runs in llama.cpp', async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const { dir } = await familyModels();
  const model = await loadModel(withByteTokenizer(dir, 'qwen2-window-disabled'), { backend: getBackend() });
  const rng = createRng(2);
  const windows = Array.from({ length: 4 }, () => Array.from({ length: 32 }, () => Math.floor(rng.next() * 256)));
  const result = await prunePipeline(model, windows, structuredStrategy(model, structuredMethodByName('flap'), 0.3, {}), {
    batchWindows: 4,
    checkpoint: { dir: tempDir(), fingerprint: 'flap', resume: false },
  });
  const smaller = new CausalLM(result.source(), model.backend);
  const file = path.join(tempDir(), 'qwen2-flap.gguf');
  assert.equal(exportGguf(smaller, file, { dtype: 'F32' }).architecture, 'deci');
  const store = openGguf(file);
  const heads = store.metadata['deci.attention.head_count'] as number[];
  const widths = store.metadata['deci.feed_forward_length'] as number[];
  const layers = heads.map((_, layer) => layer);
  assert.ok(layers.every((layer) => store.has(`blk.${layer}.attn_q.bias`)), 'q/k/v biases kept');
  assert.ok(layers.some((layer) => store.has(`blk.${layer}.attn_output.bias`) || store.has(`blk.${layer}.ffn_down.bias`)), 'compensation biases written');
  store.close();
  assert.ok(new Set(heads).size > 1 || new Set(widths).size > 1, `uneven: heads ${heads}, widths ${widths}`);
  await assertLlamaCppAgrees(lib, file, readReference(dir, 'qwen2-window-disabled').inputIds[0]!);
});

test('cli: export refuses an unknown --quant, --to other than gguf, and an --out inside the model, each in one line', async () => {
  const { dir } = await familyModels();
  const model = withByteTokenizer(dir, 'qwen3-mqa');
  const cases: [string[], RegExp][] = [
    [['--to', 'gguf', '--quant', 'Q3_K', '--out', path.join(tempDir(), 'x.gguf')], /--quant must be one of F32, F16, Q8_0, Q4_0, Q4_K, got "Q3_K"/],
    [['--to', 'onnx', '--quant', 'F16', '--out', path.join(tempDir(), 'x.gguf')], /--to must be gguf, got "onnx"/],
    [['--to', 'gguf', '--quant', 'F16', '--out', path.join(model, 'model.gguf')], /is inside the model folder/],
    [['--to', 'gguf', '--quant', 'F16', '--out', path.join(model, 'model.safetensors')], /is inside the model folder/],
  ];
  for (const [args, message] of cases) {
    const run = runCli(['export', '--model', model, ...args]);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, message);
    assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
  }
  assert.ok(fs.existsSync(path.join(model, 'model.safetensors')) && !fs.existsSync(path.join(model, 'model.gguf')));
  const refused = runCli(['export', '--model', path.join(dir, 'opt-prenorm'), '--to', 'gguf', '--quant', 'Q8_0', '--out', path.join(tempDir(), 'opt.gguf')]);
  assert.match(refused.stderr, /^topiary: cannot write .* as GGUF: llama.cpp has no architecture for opt models\n$/);
  const out = path.join(tempDir(), 'qwen3.gguf');
  const ok = runCli(['export', '--model', model, '--to', 'gguf', '--quant', 'q8_0', '--out', out, '--json']);
  assert.equal(ok.status, 0, ok.stderr);
  const summary = JSON.parse(ok.stdout) as { architecture: string; bytes: number; tensorTypes: Record<string, number> };
  assert.equal(summary.architecture, 'qwen3');
  assert.equal(summary.bytes, fs.statSync(out).size);
  assert.ok(summary.tensorTypes.Q8_0! > 0 && summary.tensorTypes.F32! > 0);
  const help = runCli(['export', '--help']);
  assert.match(help.stdout, /^topiary export --model PATH --to gguf --quant F32\|F16\|Q8_0\|Q4_0\|Q4_K --out FILE/);
});
