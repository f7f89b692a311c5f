/**
 * llama2.c tokenizer.bin files through the score-driven merge. Golden ids (from
 * scripts/make_tokenizer_fixtures.py): SentencePiece with Llama-2's tokenizer.model, and a
 * line-for-line Python transcription of run.c's encode() for both tokenizer.bin files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { tokenizerFromLlama2cBin } from '../src/tokenizers/load.js';
import { TopiaryError } from '../src/util/errors.js';
import { repoRoot, tempDir, testDataDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'tokenizers');
const readFixture = (name: string) => JSON.parse(readFileSync(path.join(fixtures, name), 'utf8'));
const strings: string[] = readFixture('strings.json');
const stories260KBin = path.join(testDataDir, 'models', 'stories260K', 'tokenizer.bin');
const llama2Bin = path.join(testDataDir, 'tokenizers', 'llama2', 'tokenizer.bin');

test('Llama-2 tokenizer.bin encodes the probe strings exactly as SentencePiece and run.c do', () => {
  const tokenizer = tokenizerFromLlama2cBin(llama2Bin);
  assert.equal(tokenizer.vocabSize, 32000);
  assert.equal(tokenizer.source, 'tokenizer.bin');
  const sentencePiece: number[][] = readFixture('llama2_spm.json').ids;
  const runC: number[][] = readFixture('llama2c_runc.json').llama2;
  strings.forEach((text, i) => {
    const ids = tokenizer.encode(text, { addBos: false });
    assert.deepEqual(ids, sentencePiece[i], `ids of ${JSON.stringify(text.slice(0, 40))}`);
    assert.deepEqual(ids, runC[i]);
    assert.equal(tokenizer.decode(ids), text);
  });
});

test('Llama-2 tokenizer.bin encodes all of wiki.test.raw as SentencePiece does', (t) => {
  const tokenizer = tokenizerFromLlama2cBin(llama2Bin);
  const text = readFileSync(path.join(testDataDir, 'wikitext2', 'wiki.test.raw'), 'utf8');
  const started = performance.now();
  const ids = tokenizer.encode(text, { addBos: false });
  t.diagnostic(`tokenizer.bin (Llama-2) encoded wiki.test.raw into ${ids.length} tokens in ${((performance.now() - started) / 1000).toFixed(2)} s`);
  const expected = readFixture('llama2_spm.json').wiki_test;
  assert.equal(ids.length, expected.count);
  assert.equal(createHash('sha256').update(ids.join(',')).digest('hex'), expected.sha256);
});

test('stories260K tokenizer.bin: run.c ids, BOS/EOS, round trips and a known decode', () => {
  const tokenizer = tokenizerFromLlama2cBin(stories260KBin, 512);
  assert.equal(tokenizer.vocabSize, 512);
  assert.equal(tokenizer.bosId, 1);
  assert.equal(tokenizer.eosId, 2);
  const runC: number[][] = readFixture('llama2c_runc.json').stories260K;
  strings.forEach((text, i) => {
    const ids = tokenizer.encode(text, { addBos: false });
    assert.deepEqual(ids, runC[i], `ids of ${JSON.stringify(text.slice(0, 40))}`);
    assert.equal(tokenizer.decode(ids), text);
  });
  const story = 'Once upon a time, there was a little girl named Lily.';
  const storyIds = runC[strings.indexOf(story)]!;
  // BOS by default, as run.c's generate() encodes the prompt; EOS and BOS vanish on decode.
  assert.deepEqual(tokenizer.encode(story), [1, ...storyIds]);
  assert.equal(tokenizer.decode([1, ...storyIds, 2]), story);
  // A character outside the 512-token vocabulary is spelled by its UTF-8 bytes, <0xXX> = id 3 + byte.
  const ids = tokenizer.encode('😀', { addBos: false });
  assert.deepEqual(ids.slice(1), [0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
  assert.equal(tokenizer.decode(ids), '😀');
  assert.deepEqual(tokenizer.encode('', { addBos: true }), [1]);
});

test('missing, truncated and mismatched tokenizer.bin files are TopiaryErrors naming the file', () => {
  const dir = tempDir();
  const isNamed = (file: string, message: RegExp) => (error: unknown) =>
    error instanceof TopiaryError && error.message.startsWith(`${file}: `) && message.test(error.message);

  const missing = path.join(dir, 'no-such-tokenizer.bin');
  assert.throws(() => tokenizerFromLlama2cBin(missing), isNamed(missing, /no such file/));

  const whole = readFileSync(stories260KBin);
  const truncated = path.join(dir, 'truncated.bin');
  writeFileSync(truncated, whole.subarray(0, whole.length - 3));
  assert.throws(() => tokenizerFromLlama2cBin(truncated), isNamed(truncated, /truncated: it ends inside token 511/));

  const header = path.join(dir, 'header.bin');
  writeFileSync(header, whole.subarray(0, 2));
  assert.throws(() => tokenizerFromLlama2cBin(header), isNamed(header, /shorter than its 4-byte header/));

  const corrupt = path.join(dir, 'corrupt.bin');
  const bad = Buffer.from(whole);
  bad.writeInt32LE(-5, 4 + 4); // the first token's length
  writeFileSync(corrupt, bad);
  assert.throws(() => tokenizerFromLlama2cBin(corrupt), isNamed(corrupt, /token 0 has length -5/));

  assert.throws(() => tokenizerFromLlama2cBin(stories260KBin, 32000), isNamed(stories260KBin, /holds 512 tokens but the model's vocabulary has 32000/));
  assert.throws(() => tokenizerFromLlama2cBin(stories260KBin).decode([512]), TopiaryError);
});
