/**
 * GGUF exports carry the tokenizer of sources that are not GGUF: llama2.c's tokenizer.bin becomes a
 * 'llama' (SentencePiece) vocabulary, a byte-level BPE tokenizer.json a 'gpt2' one with its merges
 * and pre-tokenizer name, a SentencePiece-style tokenizer.json a 'llama' one scored by merge rank.
 * In each case a real llama.cpp tokenizes text from the exported file exactly as Topiary's own
 * tokenizer of the source does, and computes the same logits.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { exportGguf } from '../src/export/gguf-writer.js';
import { exportHfFolder } from '../src/export/hf-folder.js';
import { openGguf } from '../src/formats/gguf.js';
import { openSafetensors, writeSafetensors } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { tokenizerFromGguf, tokenizerFromLlama2cBin } from '../src/tokenizers/load.js';
import type { Tokenizer } from '../src/tokenizers/tokenizer.js';
import { createRng } from '../src/util/random.js';
import { repoRoot, smolLM2Path, stories260K, tempDir } from './helpers.js';
import { assertLlamaCppAgrees, llamaCppTokenize, nodeLlamaCpp } from './llama-cpp.js';

const TEXTS = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside.',
  ' one leading space',
  '   three leading spaces, two trailing  ',
  'line one\nline two\n\n  indented line\n',
  'Digits 1234567 and 3.14159, dates 2024-01-01, ½ of 10',
  'Ünïcödé: naïve café, Ελληνικά, 日本語のテキスト, emoji 🙂🎉',
  'tabs\tand\r\nCRLF, "quotes" and (brackets) [x] {y} <z>',
  "don't won't I'm we'll they've",
];

/** Asserts llama.cpp's ids for TEXTS from `file` equal `tokenizer`'s, and that Topiary reading the file back agrees too. */
async function assertSameTokens(lib: typeof import('node-llama-cpp'), file: string, tokenizer: Tokenizer) {
  const expected = TEXTS.map((text) => tokenizer.encode(text, { addBos: false }));
  const { ids } = await llamaCppTokenize(lib, file, TEXTS);
  TEXTS.forEach((text, i) => assert.deepEqual(ids[i], expected[i], `llama.cpp tokenizes ${JSON.stringify(text)} as Topiary does`));
  const reread = (await loadModel(file, { backend: getBackend() })).tokenizer;
  TEXTS.forEach((text, i) => assert.deepEqual(reread.encode(text, { addBos: false }), expected[i], `Topiary reads ${JSON.stringify(text)} back alike`));
}

function tokenizerKeys(file: string): Record<string, unknown> {
  const store = openGguf(file);
  try {
    return Object.fromEntries(Object.entries(store.metadata).filter(([key]) => key.startsWith('tokenizer.')));
  } finally {
    store.close();
  }
}

test('stories260K (llama2.c) exported to GGUF carries its tokenizer.bin as a llama vocabulary llama.cpp tokenizes with', async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const model = await loadModel(stories260K, { backend: getBackend() });
  const file = path.join(tempDir(), 'stories.gguf');
  assert.deepEqual(exportGguf(model, file, { dtype: 'F32' }).warnings, []);

  const keys = tokenizerKeys(file);
  assert.equal(keys['tokenizer.ggml.model'], 'llama');
  const tokens = keys['tokenizer.ggml.tokens'] as string[];
  assert.deepEqual(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
  assert.equal(tokens[259], '\u2581t', "spaces are spelled '▁'");
  assert.deepEqual([...(keys['tokenizer.ggml.token_type'] as number[])].slice(0, 4), [2, 3, 3, 6]);
  assert.deepEqual([...(keys['tokenizer.ggml.scores'] as number[])].slice(260, 262), [-1, -2]);
  assert.deepEqual(
    [keys['tokenizer.ggml.bos_token_id'], keys['tokenizer.ggml.eos_token_id'], keys['tokenizer.ggml.unknown_token_id']],
    [1, 2, 0],
  );
  assert.equal(keys['tokenizer.ggml.add_bos_token'], true);
  assert.equal(keys['tokenizer.ggml.add_space_prefix'], true);

  await assertSameTokens(lib, file, model.tokenizer);
  // A prompt as llama.cpp tokenizes it, BOS first, gives the next-token logits Topiary computes.
  const prompt = 'Once upon a time, there was a little girl';
  const { ids, bos } = await llamaCppTokenize(lib, file, [prompt]);
  assert.equal(bos, 1);
  const promptIds = [bos!, ...ids[0]!];
  assert.deepEqual(promptIds, model.tokenizer.encode(prompt));
  await assertLlamaCppAgrees(lib, file, promptIds);
});

const smol = smolLM2Path();

/**
 * A Hugging Face folder with a small random LLaMA (2 layers of 64) whose vocabulary is SmolLM2's:
 * tokenizer.json and tokenizer_config.json as Topiary exports them from the SmolLM2 GGUF.
 */
function smallModelWithSmolLM2Tokenizer(): string {
  const dir = tempDir();
  const fixture = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');
  const vocabSize = 49152;
  const config = JSON.parse(fs.readFileSync(path.join(fixture, 'config.json'), 'utf8'));
  Object.assign(config, { vocab_size: vocabSize, tie_word_embeddings: true, max_position_embeddings: 256, bos_token_id: 1, eos_token_id: 2 });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const store = openSafetensors(fixture);
  const rng = createRng(7);
  const embedding = Float32Array.from({ length: vocabSize * config.hidden_size }, () => (rng.next() - 0.5) * 0.2);
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    store
      .list()
      .filter((info) => info.name !== 'lm_head.weight')
      .map((info) =>
        info.name === 'model.embed_tokens.weight'
          ? { name: info.name, shape: [vocabSize, config.hidden_size], data: embedding }
          : { name: info.name, shape: info.shape, data: store.read(info.name) },
      ),
  );
  store.close();
  const gguf = openGguf(smol!);
  const { tokenizer, config: tokenizerConfig } = tokenizerFromGguf(gguf.metadata).toHuggingFace!();
  gguf.close();
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
  return dir;
}

test('an HF folder with a byte-level BPE tokenizer.json (SmolLM2) exports a gpt2 vocabulary llama.cpp tokenizes with', { skip: !smol && 'SmolLM2 GGUF not present (scripts/fetch-smollm2.sh)' }, async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const model = await loadModel(smallModelWithSmolLM2Tokenizer(), { backend: getBackend() });
  assert.equal(model.tokenizer.source, 'tokenizer.json');
  const file = path.join(tempDir(), 'hf-bpe.gguf');
  assert.deepEqual(exportGguf(model, file, { dtype: 'F32' }).warnings, []);

  // The vocabulary llama.cpp's converter wrote into the SmolLM2 GGUF comes back key for key.
  const keys = tokenizerKeys(file);
  const original = tokenizerKeys(smol!);
  for (const key of ['model', 'pre', 'tokens', 'merges', 'token_type', 'add_bos_token']) {
    assert.deepEqual(keys[`tokenizer.ggml.${key}`], original[`tokenizer.ggml.${key}`], key);
  }
  assert.equal(keys['tokenizer.ggml.pre'], 'smollm');
  assert.equal(keys['tokenizer.ggml.scores'], undefined);

  await assertSameTokens(lib, file, model.tokenizer);
  await assertLlamaCppAgrees(lib, file, model.tokenizer.encode(TEXTS[0]!).slice(0, 16));
});

/**
 * stories260K's vocabulary as a LLaMA-2-style tokenizer.json (what transformers' LlamaConverter
 * makes of a SentencePiece model): pieces with '▁', byte fallback, a Prepend/Replace normalizer,
 * and merges for every split of a piece into two pieces, in the order of the pieces' scores.
 */
function sentencePieceTokenizerJson(): object {
  const bin = tokenizerFromLlama2cBin(path.join(path.dirname(stories260K), 'tokenizer.bin'));
  const vocabulary = bin.toGguf();
  const vocab: Record<string, number> = Object.create(null);
  vocabulary.tokens.forEach((token, id) => (vocab[token] = id));
  const normal = (piece: string) => vocab[piece] !== undefined && vocabulary.kinds[vocab[piece]!] === 'normal';
  const merges: [string, string][] = [];
  vocabulary.tokens.forEach((piece, id) => {
    if (vocabulary.kinds[id] !== 'normal') return;
    const chars = [...piece];
    const splits: [string, string][] = [];
    for (let k = 1; k < chars.length; k++) {
      const pair: [string, string] = [chars.slice(0, k).join(''), chars.slice(k).join('')];
      if (normal(pair[0]) && normal(pair[1])) splits.push(pair);
    }
    splits.sort((a, b) => vocab[a[0]]! - vocab[b[0]]! || vocab[a[1]]! - vocab[b[1]]!);
    merges.push(...splits);
  });
  const special = (id: number) => ({ id, content: vocabulary.tokens[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0), special(1), special(2)],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  };
}

test('an HF folder with a SentencePiece-style tokenizer.json exports a llama vocabulary scored by merge rank that llama.cpp tokenizes with', async (t) => {
  const lib = await nodeLlamaCpp();
  if (!lib) return t.skip('node-llama-cpp is not installed');
  const dir = tempDir();
  exportHfFolder(await loadModel(stories260K, { backend: getBackend() }), dir, { dtype: 'F32', override: () => undefined });
  fs.rmSync(path.join(dir, 'tokenizer.bin'));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(sentencePieceTokenizerJson()));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true, bos_token: '<s>', eos_token: '</s>' }));
  const model = await loadModel(dir, { backend: getBackend() });
  assert.equal(model.tokenizer.source, 'tokenizer.json');
  const file = path.join(tempDir(), 'hf-spm.gguf');
  assert.deepEqual(exportGguf(model, file, { dtype: 'F32' }).warnings, []);

  const keys = tokenizerKeys(file);
  assert.equal(keys['tokenizer.ggml.model'], 'llama');
  assert.equal(keys['tokenizer.ggml.add_space_prefix'], true);
  assert.equal(keys['tokenizer.ggml.merges'], undefined);
  assert.deepEqual([keys['tokenizer.ggml.bos_token_id'], keys['tokenizer.ggml.eos_token_id'], keys['tokenizer.ggml.unknown_token_id']], [1, 2, 0]);

  await assertSameTokens(lib, file, model.tokenizer);
  await assertLlamaCppAgrees(lib, file, model.tokenizer.encode(TEXTS[0]!));
});

test('a tokenizer GGUF cannot express is left out with a warning, not an error', async () => {
  const dir = tempDir();
  exportHfFolder(await loadModel(stories260K, { backend: getBackend() }), dir, { dtype: 'F32', override: () => undefined });
  fs.rmSync(path.join(dir, 'tokenizer.bin'));
  const wordLevel = { version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, post_processor: null, pre_tokenizer: { type: 'Whitespace' }, decoder: { type: 'WordPiece', prefix: '##', cleanup: true }, model: { type: 'WordLevel', vocab: { '[UNK]': 0, a: 1 }, unk_token: '[UNK]' } };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(wordLevel));
  const model = await loadModel(dir, { backend: getBackend() });
  const file = path.join(tempDir(), 'no-tokenizer.gguf');
  const { warnings } = exportGguf(model, file, { dtype: 'F32' });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /written without a tokenizer.*WordLevel model; only BPE/);
  assert.deepEqual(tokenizerKeys(file), {});
  assert.equal((await loadModel(file, { backend: getBackend() })).config.vocabSize, 512, 'the model itself is written');
});
