/**
 * Pruning memory is bounded by the layers being worked on, not the model: a random model of real
 * width (Llama-3.2-1B's blocks: hidden 2048, MLP 8192, 32/8 heads; BF16 on disk) pruned by Wanda
 * peaks below two fp32 blocks plus a fixed allowance for the runtime, the calibration activations
 * and the statistics, whatever the embedding (read a few rows at a time).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../src/formats/safetensors.js';
import { parseRunRecord } from '../src/prune/record.js';
import { createRng } from '../src/util/random.js';
import { byteTokenizerJson } from './family-models.js';
import { runCli, tempDir, testDataDir } from './helpers.js';

const MiB = 2 ** 20;
/** Node, the compiled sources, tokenizer, activations and Wanda's statistics: measured ≈ 310 MiB. */
const ALLOWANCE_MIB = 400;

test('Wanda on a 1B-wide model peaks below two fp32 blocks + a fixed allowance', () => {
  const dir = tempDir('topiary-memory-');
  const [hidden, mlp, heads, kvHeads, headDim, layers, vocab] = [2048, 8192, 32, 8, 64, 3, 32000];
  const rng = createRng(1);
  const random = (count: number) => () => Float32Array.from({ length: count }, () => (rng.next() - 0.5) * 0.04);
  const ones = (count: number) => () => new Float32Array(count).fill(1);
  const shapes: [string, [number, number]][] = [
    ['self_attn.q_proj', [heads * headDim, hidden]],
    ['self_attn.k_proj', [kvHeads * headDim, hidden]],
    ['self_attn.v_proj', [kvHeads * headDim, hidden]],
    ['self_attn.o_proj', [hidden, heads * headDim]],
    ['mlp.gate_proj', [mlp, hidden]],
    ['mlp.up_proj', [mlp, hidden]],
    ['mlp.down_proj', [hidden, mlp]],
  ];
  const tensors: TensorToWrite[] = [
    { name: 'model.embed_tokens.weight', shape: [vocab, hidden], dtype: 'BF16', data: random(vocab * hidden) },
    { name: 'model.norm.weight', shape: [hidden], dtype: 'BF16', data: ones(hidden) },
  ];
  for (let layer = 0; layer < layers; layer++) {
    const prefix = `model.layers.${layer}.`;
    for (const norm of ['input_layernorm', 'post_attention_layernorm']) tensors.push({ name: `${prefix}${norm}.weight`, shape: [hidden], dtype: 'BF16', data: ones(hidden) });
    for (const [name, shape] of shapes) tensors.push({ name: `${prefix}${name}.weight`, shape, dtype: 'BF16', data: random(shape[0] * shape[1]) });
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const config = { model_type: 'llama', hidden_size: hidden, intermediate_size: mlp, num_attention_heads: heads, num_key_value_heads: kvHeads, num_hidden_layers: layers, vocab_size: vocab, max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: true };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(byteTokenizerJson()));

  const out = path.join(tempDir(), 'pruned');
  const calibration = path.join(dir, 'calibration.txt');
  fs.writeFileSync(calibration, fs.readFileSync(path.join(testDataDir, 'wikitext2', 'wiki.valid.raw'), 'utf8').slice(0, 20_000));
  const result = runCli(['prune', '--model', dir, '--method', 'wanda', '--sparsity', '0.5', '--calib', `text:${calibration}`, '--nsamples', '2', '--seqlen', '128', '--dtype', 'BF16', '--out', out]);
  assert.equal(result.status, 0, result.stderr);
  const record = parseRunRecord(JSON.parse(fs.readFileSync(path.join(out, 'topiary.json'), 'utf8')), 'topiary.json');

  const blockBytes = shapes.reduce((sum, [, [rows, cols]]) => sum + rows * cols * 4, 0);
  const bound = (2 * blockBytes) / MiB + ALLOWANCE_MIB;
  const peak = record.summary.peak_rss_mb;
  assert.ok(peak <= bound, `peak ${peak} MiB, bound ${bound.toFixed(0)} MiB (two fp32 blocks ${((2 * blockBytes) / MiB).toFixed(0)} MiB + ${ALLOWANCE_MIB})`);
  // The whole model in fp32 would not fit the bound: it is the layers that are bounded, not the model.
  const modelBytes = layers * blockBytes + vocab * hidden * 4;
  assert.ok(modelBytes / MiB > bound, 'the model is larger than the bound');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(out, { recursive: true, force: true });
});
