/**
 * Hostile tokenizer.json files are refused when loaded, in one line naming the file and what is
 * wrong, and within a time bound (each run is killed after 30 s, which used to be a hang); every
 * pattern real tokenizers use still loads.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { PRE_TOKENIZATIONS } from '../src/tokenizers/gguf-pre.js';
import { checkTokenizerJson, regexProblem } from '../src/tokenizers/json-checks.js';
import { tokenizerFromJson } from '../src/tokenizers/load.js';
import { repoRoot, runCli, tempDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'tokenizers');
const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;

/** Pre-tokenizer regexes as published in the tokenizer.json of widely used models. */
const PUBLISHED_PATTERNS: Record<string, string> = {
  'GPT-2 / SmolLM': "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  'Llama 3': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  Qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  'GPT-4o': "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  'DeepSeek-V3': "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  BLOOM: " ?[^(\\s|[.,!?…。，、।۔،])]+",
  'T5 normalizer': ' {2,}',
};

test('every published pattern and every pre-tokenizer Topiary knows passes the checks', () => {
  for (const [model, pattern] of Object.entries(PUBLISHED_PATTERNS)) assert.equal(regexProblem(pattern), undefined, model);
  for (const [name, { preTokenizer }] of Object.entries(PRE_TOKENIZATIONS)) {
    assert.doesNotThrow(() => checkTokenizerJson({ pre_tokenizer: preTokenizer, model: { vocab: {} } }, name), name);
  }
  for (const name of ['tiny_bytelevel', 'tiny_llama']) assert.doesNotThrow(() => tokenizerFromJson(path.join(fixtures, name)), name);
  // A large Unigram vocabulary (ids are positions) with added tokens after it, as T5's and XLM-R's.
  const unigram = { model: { type: 'Unigram', vocab: Array.from({ length: 250_000 }, (_, i) => [`p${i}`, -i]) }, added_tokens: [{ id: 250_000, content: '<mask>' }] };
  assert.doesNotThrow(() => checkTokenizerJson(unigram, 'unigram'));
});

test('patterns that backtrack exponentially or with a high degree are recognised', () => {
  assert.match(regexProblem('(\\w+\\s?)*$')!, /exponential/);
  assert.match(regexProblem('(a|aa)*b')!, /exponential/);
  assert.match(regexProblem('(?:x{1,3}){2,}')!, /exponential/);
  assert.match(regexProblem('(a)\\1')!, /backreference/);
  assert.match(regexProblem('a*b*c*')!, /3 unbounded quantifiers in a row/);
  assert.match(regexProblem('.*.*.*x')!, /cubic time/);
  assert.match(regexProblem('\\s+(?=.*.*z)')!, /two unbounded quantifiers in a row followed by something that can fail/);
  assert.match(regexProblem('[\\s\\S]*[\\s\\S]*\\u0001')!, /cubic time/);
  assert.match(regexProblem('(?:a*a+|y)x')!, /cubic time/);
  assert.equal(regexProblem('a*b+c?(?:d|e)?'), undefined, 'two quantifiers followed only by optional parts');
  for (const quadratic of ['.*x', '[\\s\\S]*x', '[^a]+b', '\\S+(?=x)', '(?:.+)y']) {
    assert.match(regexProblem(quadratic)!, /quadratic in the text/, quadratic);
  }
  assert.equal(regexProblem('\\s+(?!\\S)|[^\\s]+|x.*'), undefined, 'narrow classes before a failure, or broad ones at the end');
  assert.equal(regexProblem('(?:ab){2,}|x?y*z+'), undefined, 'a repeated fixed-length group and two quantifiers are fine');
  assert.match(regexProblem('('.repeat(100_000))!, /nests groups more than 64 deep/);
  const started = Date.now();
  assert.equal(regexProblem('a{'.repeat(200_000)), undefined, 'literal braces');
  assert.ok(Date.now() - started < 1000, 'the check itself is linear');
});

/** A model folder (the tiny model) with the byte-level fixture tokenizer, edited by `edit`. */
function modelWithTokenizer(edit: (tokenizer: Record<string, any>) => void): string {
  const dir = tempDir();
  for (const file of fs.readdirSync(tinyModel)) fs.copyFileSync(path.join(tinyModel, file), path.join(dir, file));
  const tokenizer = readJson(path.join(fixtures, 'tiny_bytelevel', 'tokenizer.json'));
  edit(tokenizer);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  return dir;
}

/** eval on a text with long words before punctuation: refused in one line naming tokenizer.json, not a hang. */
function expectRefused(dir: string, problem: RegExp): void {
  const text = path.join(dir, 'text.txt');
  fs.writeFileSync(text, `${'a'.repeat(40)}! `.repeat(50));
  const started = Date.now();
  const result = runCli(['eval', '--model', dir, '--dataset', `text:${text}`, '--seqlen', '16'], {}, 30_000);
  assert.notEqual(result.status, null, 'killed after 30 s: the tokenizer hung');
  assert.equal(result.status, 1, result.stderr);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, result.stderr);
  assert.ok(lines[0]!.includes(path.join(dir, 'tokenizer.json')), lines[0]);
  assert.match(lines[0]!, problem);
  assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
}

test('a catastrophically backtracking pre-tokenizer regex is refused, naming it', () => {
  const dir = modelWithTokenizer((tokenizer) => {
    tokenizer.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '(\\w+\\s?)*$' }, behavior: 'Isolated', invert: false }, tokenizer.pre_tokenizer] };
  });
  expectRefused(dir, /the regex "\(\\\\w\+\\\\s\?\)\*\$" at pre_tokenizer\.pretokenizers\[0\]\.pattern repeats a group .* exponential time/);
});

test('a normalizer that multiplies the text 100,000 times is refused', () => {
  const dir = modelWithTokenizer((tokenizer) => {
    tokenizer.normalizer = { type: 'Replace', pattern: { String: 'a' }, content: 'b'.repeat(100_000) };
  });
  expectRefused(dir, /its normalizer can make the text up to 100001 times longer \(at most 1024/);
});

test('a chain of small Replace normalizers that multiply is refused too', () => {
  const dir = modelWithTokenizer((tokenizer) => {
    tokenizer.normalizer = { type: 'Sequence', normalizers: Array.from({ length: 20 }, () => ({ type: 'Replace', pattern: { String: 'a' }, content: 'aa' })) };
  });
  expectRefused(dir, /its normalizer can make the text up to 3486784401 times longer/);
});

test('a configuration nested 10,000 deep is refused, not a stack overflow', () => {
  const dir = modelWithTokenizer((tokenizer) => (tokenizer.normalizer = 'NESTED'));
  // Written as text: JSON.stringify itself overflows the stack on such nesting.
  const nested = '{"type":"Sequence","normalizers":['.repeat(10_000) + '{"type":"NFC"}' + ']}'.repeat(10_000);
  const file = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('"NESTED"', nested));
  expectRefused(dir, /refusing this tokenizer: normalizer nests more than 64 levels deep$/);
});

test('token ids of 1e9 in the vocabulary or the added tokens are refused', () => {
  expectRefused(
    modelWithTokenizer((tokenizer) => {
      tokenizer.added_tokens.push({ id: 1e9, content: '<big>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    }),
    /added_tokens\[1\]\.id is 1000000000, not a token id from 0 to 65937 \(402 tokens\)/,
  );
  expectRefused(
    modelWithTokenizer((tokenizer) => {
      tokenizer.model.vocab.zz = 1e9;
    }),
    /model\.vocab "zz" is 1000000000/,
  );
  expectRefused(
    modelWithTokenizer((tokenizer) => {
      tokenizer.added_tokens[0].id = -1;
    }),
    /added_tokens\[0\]\.id is -1/,
  );
});
