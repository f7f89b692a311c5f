/**
 * Absurd header values (a GGUF saying 2^32−1 blocks, −1 heads, a head size of 1e308, a BOS id of
 * 1e9; llama.2c headers with impossible sizes) are refused when the model is opened, in one line
 * naming the file and the field, before anything is allocated from them. They used to end in heap
 * aborts, segmentation faults, RangeError stack traces or hangs.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { perplexity } from '../src/eval/perplexity.js';
import { GgufValueType } from '../src/formats/gguf.js';
import { loadModel } from '../src/model/load.js';
import { TopiaryError } from '../src/util/errors.js';
import { smolLM2Path, stories260K, tempDir } from './helpers.js';
import { kv, TINY_GGUF_METADATA, tinyGgufTensors, writeTinyGguf, type KeyValue } from './tiny-gguf.js';

const dir = tempDir();
const tensors = await tinyGgufTensors(dir);
const { UINT32, INT32, UINT64, FLOAT32, FLOAT64, STRING, ARRAY } = GgufValueType;

let written = 0;
const ggufWith = (overrides: Record<string, KeyValue | undefined> = {}) => writeTinyGguf(path.join(dir, `case-${written++}.gguf`), tensors, overrides);

/** Opens the model and runs one window: must fail with one line naming the file and matching `problem`. */
async function assertRefused(file: string, problem: RegExp): Promise<void> {
  await assert.rejects(
    async () => {
      const model = await loadModel(file, { backend: getBackend() });
      await perplexity(model, Array.from({ length: 8 }, (_, i) => 3 + i), { seqlen: 8 });
    },
    (error: unknown) => {
      assert.ok(error instanceof TopiaryError, `expected a TopiaryError, got ${(error as Error).stack}`);
      assert.ok(error.message.startsWith(`${file}: `), error.message);
      assert.ok(!error.message.includes('\n'), error.message);
      assert.match(error.message, problem);
      return true;
    },
  );
}

test('the well-formed tiny GGUF loads and runs', async () => {
  const model = await loadModel(ggufWith(), { backend: getBackend() });
  const result = await perplexity(model, Array.from({ length: 8 }, (_, i) => 3 + i), { seqlen: 8 });
  assert.ok(Number.isFinite(result.perplexity));
  assert.equal(model.config.numLayers, 2);
  assert.equal(model.tokenizer.encode('hi').length > 0, true);
});

test('block_count: 2^32−1, 2^31, 2^63, −1, 64.5, 0 and one more than the file holds', async () => {
  for (const value of [kv(UINT32, 2 ** 32 - 1), kv(UINT32, 2 ** 31), kv(UINT64, 2n ** 63n), kv(INT32, -1), kv(FLOAT32, 64.5), kv(UINT32, 0), kv(UINT32, 3)]) {
    await assertRefused(ggufWith({ 'llama.block_count': value }), /GGUF metadata "llama\.block_count" is .*: expected an integer from 1 to 2 \(the file holds 2 blocks\)$/);
  }
});

test('head counts 0 or −1, or not matching the attention tensors', async () => {
  await assertRefused(ggufWith({ 'llama.attention.head_count': kv(UINT32, 0) }), /"llama\.attention\.head_count" is 0: expected an integer from 1 to 64$/);
  await assertRefused(ggufWith({ 'llama.attention.head_count': kv(INT32, -1) }), /"llama\.attention\.head_count" is -1/);
  await assertRefused(ggufWith({ 'llama.attention.head_count_kv': kv(UINT32, 0) }), /"llama\.attention\.head_count_kv" is 0/);
  await assertRefused(ggufWith({ 'llama.attention.head_count_kv': kv(INT32, -1) }), /"llama\.attention\.head_count_kv" is -1/);
  await assertRefused(ggufWith({ 'llama.attention.head_count_kv': kv(UINT32, 3) }), /block 0 has 4 attention heads, not a multiple of its 3 key\/value heads/);
  await assertRefused(ggufWith({ 'llama.attention.head_count': kv(UINT32, 2) }), /the config says 2 attention heads and 2 key\/value heads, the weights hold 4 and 2$/);
  await assertRefused(ggufWith({ 'llama.attention.head_count': kv(ARRAY, [4, 2 ** 31], UINT32) }), /"llama\.attention\.head_count" is 2147483648: expected an integer from 0 to 64$/);
  await assertRefused(ggufWith({ 'llama.attention.head_count': kv(ARRAY, [4, 4, 4], UINT32) }), /"llama\.attention\.head_count" has 3 values for 2 blocks$/);
});

test('embedding_length, head size, MLP width and context: absurd or not matching the tensors', async () => {
  await assertRefused(ggufWith({ 'llama.embedding_length': kv(UINT32, 2 ** 32 - 1) }), /"llama\.embedding_length" is 4294967295: expected an integer from 1 to 16777216$/);
  await assertRefused(ggufWith({ 'llama.embedding_length': kv(UINT32, 32) }), /"llama\.embedding_length" is 32, but token_embd\.weight has 64 columns$/);
  await assertRefused(ggufWith({ 'llama.attention.key_length': kv(FLOAT64, 1e308) }), /"llama\.attention\.key_length" is 1e\+308: expected an integer/);
  await assertRefused(ggufWith({ 'llama.attention.key_length': kv(UINT32, 2 ** 31) }), /"llama\.attention\.key_length" is 2147483648/);
  await assertRefused(ggufWith({ 'llama.attention.key_length': kv(UINT32, 8) }), /the config says 4 attention heads and 2 key\/value heads, the weights hold 8 and 4$/);
  await assertRefused(ggufWith({ 'llama.feed_forward_length': kv(UINT32, 2 ** 32 - 1) }), /"llama\.feed_forward_length" is 4294967295/);
  await assertRefused(ggufWith({ 'llama.feed_forward_length': kv(UINT32, 100) }), /the config says an MLP width of 100, the weights hold 160$/);
  await assertRefused(ggufWith({ 'llama.context_length': kv(UINT32, 2 ** 32 - 1) }), /"llama\.context_length" is 4294967295/);
  await assertRefused(ggufWith({ 'llama.rope.freq_base': kv(FLOAT32, 0) }), /"llama\.rope\.freq_base" is 0: expected a positive number$/);
  await assertRefused(ggufWith({ 'llama.attention.layer_norm_rms_epsilon': kv(FLOAT32, Number.NaN) }), /"llama\.attention\.layer_norm_rms_epsilon" is null: expected a positive number$/);
  await assertRefused(ggufWith({ 'llama.embedding_length': undefined }), /"llama\.embedding_length" is undefined: expected an integer/);
});

test('vocabulary: token ids of 1e9 or −1, and a token list that does not match the embedding', async () => {
  await assertRefused(ggufWith({ 'tokenizer.ggml.bos_token_id': kv(UINT32, 1e9) }), /"tokenizer\.ggml\.bos_token_id" is 1000000000: expected an integer from 0 to 255 \(the vocabulary has 256 tokens\)$/);
  await assertRefused(ggufWith({ 'tokenizer.ggml.eos_token_id': kv(INT32, -1) }), /"tokenizer\.ggml\.eos_token_id" is -1/);
  const tokens = TINY_GGUF_METADATA['tokenizer.ggml.tokens']!.value as string[];
  await assertRefused(
    ggufWith({ 'tokenizer.ggml.tokens': kv(ARRAY, [...tokens, 'extra'], STRING), 'tokenizer.ggml.scores': undefined, 'tokenizer.ggml.token_type': undefined }),
    /the GGUF vocabulary has 257 tokens, but token_embd\.weight has 256 rows$/,
  );
});

test('llama2.c headers with absurd sizes are refused in one line', async () => {
  const original = fs.readFileSync(stories260K);
  // dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
  const cases: [number, number][] = [[0, 2 ** 31 - 1], [1, 2 ** 31 - 1], [2, 2 ** 31 - 1], [3, -1], [4, 0], [5, 1e9], [5, -(2 ** 31)], [6, -5], [3, 7]];
  for (const [field, value] of cases) {
    const file = path.join(dir, `llama2c-${field}-${value}.bin`);
    const bytes = Buffer.from(original);
    bytes.writeInt32LE(value, 4 * field);
    fs.writeFileSync(file, bytes);
    await assertRefused(file, /not a valid llama2\.c checkpoint: /);
  }
});

test('SmolLM2 (a real GGUF) still loads', { skip: smolLM2Path() === undefined }, async () => {
  const model = await loadModel(smolLM2Path()!, { backend: getBackend() });
  assert.equal(model.config.numLayers, 30);
  assert.equal(model.config.vocabSize, 49152);
  model.source.close();
});
