/**
 * Hugging Face tokenizer.json files through @huggingface/tokenizers. The two tiny tokenizers and
 * their golden ids come from the Rust `tokenizers` library (scripts/make_tokenizer_fixtures.py):
 * a GPT-2-style byte-level BPE without BOS, and a Llama-style one (Metaspace normalizer, byte
 * fallback, BOS added by its TemplateProcessing post-processor).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { tokenizerFromJson } from '../src/tokenizers/load.js';
import { TopiaryError } from '../src/util/errors.js';
import { repoRoot, tempDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'tokenizers');
const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8'));
const strings: string[] = readJson(path.join(fixtures, 'strings.json'));

for (const name of ['tiny_bytelevel', 'tiny_llama']) {
  test(`${name}/tokenizer.json encodes the probe strings as the Rust library does, and decodes back`, () => {
    const folder = path.join(fixtures, name);
    const tokenizer = tokenizerFromJson(folder);
    assert.equal(tokenizer.source, 'tokenizer.json');
    const expected = readJson(path.join(folder, 'expected.json'));
    strings.forEach((text, i) => {
      const label = JSON.stringify(text.slice(0, 40));
      // Default BOS behaviour follows the file: what the Rust library adds with special tokens on.
      assert.deepEqual(tokenizer.encode(text), expected.ids_with_special[i], label);
      assert.deepEqual(tokenizer.encode(text, { addBos: false }), expected.ids[i], label);
      assert.equal(tokenizer.decode(tokenizer.encode(text)), text, label);
    });
  });
}

test('BOS, EOS and vocabulary size come from tokenizer.json and tokenizer_config.json', () => {
  const llama = tokenizerFromJson(path.join(fixtures, 'tiny_llama', 'tokenizer.json'));
  assert.equal(llama.vocabSize, 500);
  assert.equal(llama.bosId, 1);
  assert.equal(llama.eosId, 2);
  assert.equal(llama.encode('Hello')[0], 1);
  assert.notEqual(llama.encode('Hello', { addBos: false })[0], 1);
  assert.deepEqual(llama.encode(''), [1]);

  const byteLevel = tokenizerFromJson(path.join(fixtures, 'tiny_bytelevel'));
  assert.equal(byteLevel.vocabSize, 400);
  assert.equal(byteLevel.bosId, 0); // <|endoftext|> doubles as BOS and EOS, as in GPT-2
  assert.equal(byteLevel.eosId, 0);
  assert.deepEqual(byteLevel.encode('Hello', { addBos: true }), [0, ...byteLevel.encode('Hello')]);
  assert.equal(byteLevel.decode([0, ...byteLevel.encode('Hello'), 0]), 'Hello');

  // A config given explicitly overrides the one beside the file; an object works as well as a path.
  const tokenizerJson = readJson(path.join(fixtures, 'tiny_llama', 'tokenizer.json'));
  const withoutBos = tokenizerFromJson(tokenizerJson, { add_bos_token: false, bos_token: '<s>', eos_token: '</s>' });
  assert.notEqual(withoutBos.encode('Hello')[0], 1);
  assert.equal(withoutBos.bosId, 1);
  assert.equal(tokenizerFromJson(tokenizerJson).encode('Hello')[0], 1); // the template's BOS, no config needed
});

test('missing or malformed tokenizer.json files are TopiaryErrors naming the file', () => {
  const dir = tempDir();
  const isNamed = (file: string, message: RegExp) => (error: unknown) =>
    error instanceof TopiaryError && error.message.startsWith(`${file}: `) && message.test(error.message);

  const missing = path.join(dir, 'tokenizer.json');
  assert.throws(() => tokenizerFromJson(dir), isNamed(missing, /no such file/));

  const truncated = path.join(dir, 'truncated.json');
  writeFileSync(truncated, readFileSync(path.join(fixtures, 'tiny_bytelevel', 'tokenizer.json'), 'utf8').slice(0, 500));
  assert.throws(() => tokenizerFromJson(truncated), isNamed(truncated, /invalid JSON/));

  const wrongShape = path.join(dir, 'wrong.json');
  writeFileSync(wrongShape, JSON.stringify({ model: { type: 'NoSuchModel' } }));
  assert.throws(() => tokenizerFromJson(wrongShape), isNamed(wrongShape, /not a usable tokenizer\.json/));

  const tokenizer = tokenizerFromJson(path.join(fixtures, 'tiny_bytelevel'));
  assert.throws(() => tokenizer.decode([400]), /token id 400 is outside the vocabulary/);
  assert.equal(tokenizer.decode([]), '');
});
