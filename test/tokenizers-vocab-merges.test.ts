/**
 * GPT-2-style vocab.json + merges.txt tokenizers (as OPT checkpoints ship them, with no
 * tokenizer.json): ids equal transformers' AutoTokenizer on the same folder, the model folder loads
 * with them, prune carries them to its output, and malformed files get one line naming the file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { getBackend } from '../src/backend/index.js';
import { openGguf } from '../src/formats/gguf.js';
import { loadModel } from '../src/model/load.js';
import { pruneModel } from '../src/prune/run.js';
import { tokenizerFromGguf, tokenizerFromJson, tokenizerFromVocabMerges } from '../src/tokenizers/load.js';
import { byteTokenizerJson, familyCalibration, familyModels } from './family-models.js';
import { assertTopiaryError, repoRoot, smolLM2Path, tempDir, testDataDir } from './helpers.js';

/** Writes `tokenizerJson`'s BPE vocabulary and merges as vocab.json + merges.txt (with a #version line, as transformers saves them). */
function writeVocabMerges(dir: string, tokenizerJson: object, tokenizerConfig: object): void {
  const model = (tokenizerJson as { model: { vocab: Record<string, number>; merges: (string | string[])[] } }).model;
  fs.writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify(model.vocab));
  const merges = model.merges.map((merge) => (Array.isArray(merge) ? merge.join(' ') : merge));
  fs.writeFileSync(path.join(dir, 'merges.txt'), ['#version: 0.2', ...merges, ''].join('\n'));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
}

/** OPT's tokenizer_config.json, with this vocabulary's end-of-text token. */
const optLikeConfig = (token: string) => ({ add_bos_token: true, bos_token: token, eos_token: token, unk_token: token, add_prefix_space: false, tokenizer_class: 'GPT2Tokenizer' });

const smolLM2 = smolLM2Path();

test('a vocab.json + merges.txt folder encodes as transformers AutoTokenizer does (BOS as add_bos_token says)', { skip: smolLM2 ? false : 'SmolLM2 GGUF not fetched' }, () => {
  // SmolLM2's 49,152-token byte-level BPE, saved the way OPT's and GPT-2's tokenizers are.
  const dir = tempDir('topiary-vocab-merges-');
  const { tokenizer: json } = tokenizerFromGguf(openGguf(smolLM2!).metadata, smolLM2).toHuggingFace!();
  writeVocabMerges(dir, json, optLikeConfig('<|endoftext|>'));
  const strings: string[] = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test', 'fixtures', 'tokenizers', 'strings.json'), 'utf8'));
  const texts = [...strings, fs.readFileSync(path.join(testDataDir, 'wikitext2', 'wiki.test.raw'), 'utf8').slice(0, 30_000)];

  const reference = spawnSync(
    'python3',
    ['-c', 'import json,sys\nfrom transformers import AutoTokenizer\nt=AutoTokenizer.from_pretrained(sys.argv[1])\nprint(json.dumps([t(s).input_ids for s in json.load(sys.stdin)]))', dir],
    { input: JSON.stringify(texts), encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  assert.equal(reference.status, 0, reference.stderr);
  const expected: number[][] = JSON.parse(reference.stdout);

  const tokenizer = tokenizerFromVocabMerges(dir);
  assert.equal(tokenizer.vocabSize, 49152);
  assert.equal(tokenizer.bosId, 0);
  texts.forEach((text, i) => {
    const ids = tokenizer.encode(text);
    assert.deepEqual(ids, expected[i], `ids of ${JSON.stringify(text.slice(0, 40))}`);
    assert.equal(tokenizer.decode(ids), text);
  });
});

test('an OPT folder with vocab.json + merges.txt and no tokenizer.json prunes, and its output carries them', async () => {
  const { dir: modelsDir } = await familyModels();
  const source = tempDir('topiary-opt-vocab-');
  for (const file of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(modelsDir, 'opt-prenorm', file), path.join(source, file));
  writeVocabMerges(source, byteTokenizerJson(), {});

  const model = await loadModel(source, { backend: getBackend() });
  const text = 'The tower is 324 metres tall.';
  const expected = tokenizerFromJson(byteTokenizerJson()).encode(text);
  assert.equal(expected.length, text.length);
  assert.deepEqual(model.tokenizer.encode(text), expected);

  const out = path.join(tempDir(), 'pruned');
  await pruneModel({ model: source, method: 'magnitude', target: { kind: 'unstructured', sparsity: 0.5 }, methodOptions: {}, calibration: familyCalibration(5_000), out, resume: false });
  for (const file of ['vocab.json', 'merges.txt']) assert.deepEqual(fs.readFileSync(path.join(out, file)), fs.readFileSync(path.join(source, file)), file);
  const pruned = await loadModel(out, { backend: getBackend() });
  assert.deepEqual(pruned.tokenizer.encode(text), expected);
});

test('malformed vocab.json or merges.txt: one line naming the file', () => {
  const dir = tempDir('topiary-vocab-merges-bad-');
  writeVocabMerges(dir, byteTokenizerJson(), {});
  fs.writeFileSync(path.join(dir, 'merges.txt'), '#version: 0.2\nĠ t\nĠ t h\n');
  assertTopiaryError(() => tokenizerFromVocabMerges(dir), path.join(dir, 'merges.txt'), /line 3: a merge is two tokens/);
  writeVocabMerges(dir, byteTokenizerJson(), {});
  fs.writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify({ a: 0, b: -1 }));
  assertTopiaryError(() => tokenizerFromVocabMerges(dir), path.join(dir, 'vocab.json'), /token "b" has the id -1/);
  fs.writeFileSync(path.join(dir, 'vocab.json'), '[1, 2]');
  assertTopiaryError(() => tokenizerFromVocabMerges(dir), path.join(dir, 'vocab.json'), /object/);
});
