/**
 * Tokenizers from GGUF metadata. Golden ids come from scripts/make_tokenizer_fixtures.py:
 * SmolLM2's byte-level BPE by the Rust `tokenizers` library, other pre-tokenizer types by
 * transformers' GGUF converter, and SentencePiece vocabularies by the `sentencepiece` package.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { openGguf } from '../src/formats/gguf.js';
import { tokenizerFromGguf } from '../src/tokenizers/load.js';
import { TopiaryError } from '../src/util/errors.js';
import { repoRoot, smolLM2Path, testDataDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'tokenizers');
const readFixture = (name: string) => JSON.parse(readFileSync(path.join(fixtures, name), 'utf8'));
const strings: string[] = readFixture('strings.json');
const smolLM2 = smolLM2Path();
const needsSmolLM2 = { skip: smolLM2 ? false : 'SmolLM2 GGUF not fetched (scripts/fetch-smollm2.sh)' };

let smolLM2Metadata: Record<string, unknown> | undefined;
function smolLM2Vocabulary(): Record<string, unknown> {
  smolLM2Metadata ??= openGguf(smolLM2!).metadata;
  return smolLM2Metadata;
}

const idsDigest = (ids: number[]) => createHash('sha256').update(ids.join(',')).digest('hex');

test('SmolLM2 GGUF vocabulary encodes the probe strings exactly as the reference, and decodes back', needsSmolLM2, () => {
  const tokenizer = tokenizerFromGguf(smolLM2Vocabulary(), smolLM2);
  assert.equal(tokenizer.source, 'gguf:gpt2');
  assert.equal(tokenizer.vocabSize, 49152);
  assert.equal(tokenizer.bosId, 1);
  assert.equal(tokenizer.eosId, 2);
  const expected: number[][] = readFixture('smollm2_gguf.json').ids;
  strings.forEach((text, i) => {
    const ids = tokenizer.encode(text);
    assert.deepEqual(ids, expected[i], `ids of ${JSON.stringify(text.slice(0, 40))}`);
    assert.equal(tokenizer.decode(ids), text);
  });
  // add_bos_token is false in this file; asking for BOS prepends <|im_start|>.
  assert.deepEqual(tokenizer.encode('Hello world', { addBos: true }), [1, ...expected[0]!]);
  // Control tokens are matched whole and skipped on decode.
  assert.deepEqual(tokenizer.encode('<|im_end|>'), [2]);
  assert.equal(tokenizer.decode([1, ...expected[0]!, 2]), 'Hello world');
});

test('SmolLM2 GGUF vocabulary encodes all of wiki.test.raw as the reference does, in seconds', needsSmolLM2, (t) => {
  const tokenizer = tokenizerFromGguf(smolLM2Vocabulary(), smolLM2);
  const text = readFileSync(path.join(testDataDir, 'wikitext2', 'wiki.test.raw'), 'utf8');
  const started = performance.now();
  const ids = tokenizer.encode(text);
  const seconds = (performance.now() - started) / 1000;
  const expected = readFixture('smollm2_gguf.json').wiki_test;
  assert.equal(ids.length, expected.count);
  assert.equal(idsDigest(ids), expected.sha256);
  t.diagnostic(`gguf:gpt2 encoded ${text.length} chars of wiki.test.raw into ${ids.length} tokens in ${seconds.toFixed(2)} s`);
  assert.ok(seconds < 30, `encoding took ${seconds} s`);
});

test('other tokenizer.ggml.pre types split as transformers does for them', needsSmolLM2, () => {
  const expected = readFixture('smollm2_other_pre.json');
  for (const pre of ['gpt-2', 'llama-bpe', 'qwen2']) {
    const tokenizer = tokenizerFromGguf({ ...smolLM2Vocabulary(), 'tokenizer.ggml.pre': pre });
    strings.forEach((text, i) => assert.deepEqual(tokenizer.encode(text), expected[pre][i], `${pre}: ${JSON.stringify(text.slice(0, 40))}`));
  }
  // Each type really splits differently from SmolLM2's own on some probe string.
  const smollm: number[][] = readFixture('smollm2_gguf.json').ids;
  for (const pre of ['gpt-2', 'llama-bpe', 'qwen2']) {
    assert.ok(strings.some((_, i) => JSON.stringify(expected[pre][i]) !== JSON.stringify(smollm[i])), pre);
  }
});

test("llama.cpp's 'default' pre-tokenizer (no tokenizer.ggml.pre) splits punctuation runs and round-trips", needsSmolLM2, () => {
  const { ['tokenizer.ggml.pre']: _, ...withoutPre } = smolLM2Vocabulary();
  const tokenizer = tokenizerFromGguf(withoutPre);
  for (const text of strings) assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
  // llama.cpp's first default regex isolates punctuation runs, so " (about" cannot merge its space with "(".
  const gpt2 = tokenizerFromGguf({ ...smolLM2Vocabulary(), 'tokenizer.ggml.pre': 'gpt-2' });
  const text = 'it cost (about';
  assert.notDeepEqual(tokenizer.encode(text), gpt2.encode(text));
});

/** The Llama-2 vocabulary as llama.cpp's converter writes it to GGUF, rebuilt from llama2.c's tokenizer.bin. */
function llama2GgufMetadata(): Record<string, unknown> {
  const data = readFileSync(path.join(testDataDir, 'tokenizers', 'llama2', 'tokenizer.bin'));
  const tokens: string[] = [];
  const scores: number[] = [];
  for (let offset = 4; offset < data.length; ) {
    scores.push(data.readFloatLE(offset));
    const length = data.readInt32LE(offset + 4);
    tokens.push(data.toString('utf8', offset + 8, offset + 8 + length));
    offset += 8 + length;
  }
  // Types as GGUF numbers them: 2 unknown, 3 control, 6 byte, 1 normal.
  const tokenType = tokens.map((_, id) => (id === 0 ? 2 : id <= 2 ? 3 : id <= 258 ? 6 : 1));
  return {
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': tokens.map((token, id) => (id <= 2 ? ['<unk>', '<s>', '</s>'][id]! : token.replaceAll(' ', '\u2581'))),
    'tokenizer.ggml.scores': Float32Array.from(scores),
    'tokenizer.ggml.token_type': tokenType,
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
  };
}

test("a 'llama' (SentencePiece) GGUF vocabulary encodes as SentencePiece does", () => {
  const tokenizer = tokenizerFromGguf(llama2GgufMetadata());
  assert.equal(tokenizer.source, 'gguf:llama');
  const expected: number[][] = readFixture('llama2_spm.json').ids;
  strings.forEach((text, i) => {
    const ids = tokenizer.encode(text, { addBos: false });
    assert.deepEqual(ids, expected[i], `ids of ${JSON.stringify(text.slice(0, 40))}`);
    assert.equal(tokenizer.decode(ids), text);
  });
  // BOS by default (llama.cpp's default for SentencePiece vocabularies), skipped on decode.
  assert.deepEqual(tokenizer.encode('Hello world'), [1, ...expected[0]!]);
  assert.equal(tokenizer.decode([1, ...expected[0]!, 2]), 'Hello world');
  // The "<s>" in text is not the control token.
  assert.ok(!tokenizer.encode('<s>', { addBos: false }).includes(1));
});

test('bad GGUF tokenizer metadata is a TopiaryError naming the file and the key', () => {
  const file = 'model.gguf';
  const metadata = llama2GgufMetadata();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...metadata, 'tokenizer.ggml.model': 'bert' }, /tokenizer model 'bert' is not supported/],
    [{ ...metadata, 'tokenizer.ggml.tokens': undefined }, /tokenizer\.ggml\.tokens is missing/],
    [{ ...metadata, 'tokenizer.ggml.scores': [1, 2, 3] }, /tokenizer\.ggml\.scores is missing or not an array of 32000 numbers/],
    [{ ...metadata, 'tokenizer.ggml.bos_token_id': 99999 }, /tokenizer\.ggml\.bos_token_id/],
    [{ ...metadata, 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': 'no-such-pre' }, /pre-tokenizer 'no-such-pre' is not supported/],
    [{ ...metadata, 'tokenizer.ggml.model': 'gpt2' }, /tokenizer\.ggml\.merges is missing/],
  ];
  for (const [bad, message] of cases) {
    assert.throws(
      () => tokenizerFromGguf(bad, file),
      (error: unknown) => error instanceof TopiaryError && error.message.startsWith(`${file}: `) && message.test(error.message),
    );
  }
});
