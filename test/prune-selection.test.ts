/**
 * --targets / --ignore in llm-compressor's convention (names, re: patterns matched from the start,
 * class names, modules containing linear layers) on the canonical names of three families, and how
 * they combine with --layers: each refusal of a self-contradicting request.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';
import { parseNameList, selectLinears, type SelectionRequest } from '../src/prune/selection.js';
import { UsageError } from '../src/util/errors.js';
import { familyModels } from './family-models.js';
import { repoRoot } from './helpers.js';

const llama = () => loadModel(path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa'), { backend: getBackend() });

test('parseNameList: commas split entries, but not inside a pattern\'s braces, brackets or after a backslash', () => {
  assert.deepEqual(parseNameList('re:.*q_proj, model.layers.1.mlp ,Linear', '--targets'), ['re:.*q_proj', 'model.layers.1.mlp', 'Linear']);
  assert.deepEqual(parseNameList('re:model.layers.\\d{1,2}\\.mlp,re:.*(k|v)_proj', '--targets'), ['re:model.layers.\\d{1,2}\\.mlp', 're:.*(k|v)_proj']);
  assert.deepEqual(parseNameList('re:a\\,b', '--ignore'), ['re:a\\,b']);
  assert.throws(() => parseNameList('Linear,,re:x', '--targets'), /--targets has an empty entry/);
  assert.throws(() => parseNameList('re:', '--ignore'), /--ignore has an empty entry/);
});

test('selection on llama: names, re: from the start, class names, containing modules; ignore wins', async () => {
  const model = await llama();
  assert.deepEqual(model.roles, ['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
  const select = (request: SelectionRequest) => selectLinears(model, request).layerRoles;
  assert.deepEqual(select({}), [model.roles, model.roles]);
  assert.deepEqual(select({ targets: ['Linear'] }), [model.roles, model.roles]);
  // A decoder block matched by name or pattern selects every linear layer inside it.
  assert.deepEqual(select({ targets: ['re:model.layers.\\d+$'] }), [model.roles, model.roles]);
  assert.deepEqual(select({ targets: ['model.layers.1'] }), [[], model.roles]);
  assert.deepEqual(select({ targets: ['re:.*q_proj', 'model.layers.1.mlp'] }), [['q'], ['q', 'gate', 'up', 'down']]);
  // re.match semantics: anchored at the start only, so "q_pro" reaches q_proj through ".*".
  assert.deepEqual(select({ targets: ['re:.*q_pro'] }), [['q'], ['q']]);
  assert.deepEqual(select({ targets: ['re:model.layers.1.mlp'] }), [[], ['gate', 'up', 'down']]);
  assert.deepEqual(select({ ignore: ['model.layers.1.mlp.up_proj', 're:.*lm_head'] }), [model.roles, ['q', 'k', 'v', 'o', 'gate', 'down']]);
  assert.deepEqual(select({ ignore: ['re:model.layers.0.self_attn'] }), [['gate', 'up', 'down'], model.roles]);
  assert.deepEqual(select({ roles: ['q', 'down'], ignore: ['re:.*layers.1.*down'] }), [['q', 'down'], ['q']]);
  assert.deepEqual(select({ roles: ['q', 'down'], targets: ['re:.*(q|down)_proj'], ignore: ['model.layers.0'] }), [[], ['q', 'down']]);
  // Python's named groups are accepted.
  assert.deepEqual(select({ targets: ['re:model.layers.(?P<n>0).self_attn.(?P<p>[kv])_proj'] }), [['k', 'v'], []]);
  const selection = selectLinears(model, { targets: ['re:.*q_proj', 'model.layers.1.mlp'] });
  assert.deepEqual(selection.roles, ['q', 'gate', 'up', 'down']);
  assert.equal(selection.matrices, 5);
});

test('selection refuses requests that contradict themselves, in one line', async () => {
  const model = await llama();
  const refuses = (request: SelectionRequest, pattern: RegExp) =>
    assert.throws(() => selectLinears(model, request), (error: unknown) => error instanceof UsageError && pattern.test(error.message) && !error.message.includes('\n'));
  // Not anchored at the end, but at the start: "layers" alone names nothing.
  refuses({ targets: ['re:layers'] }, /--targets "re:layers" matches no linear layer of this llama model \(its layers are named like model\.layers\.0\.self_attn\.q_proj; class names: Linear\)/);
  refuses({ targets: ['LlamaDecoderLayer'] }, /matches no linear layer/);
  refuses({ targets: ['q_proj'] }, /matches no linear layer/);
  refuses({ roles: ['q', 'k'], targets: ['re:.*down_proj'] }, /--targets "re:\.\*down_proj" matches only down layers, which --layers q,k leaves out/);
  refuses({ roles: ['q', 'down'], targets: ['re:.*q_proj'] }, /--layers names down, but no down layer matches --targets/);
  refuses({ ignore: ['Linear'] }, /no linear layer left to prune/);
  refuses({ roles: ['q'], ignore: ['re:.*q_proj'] }, /no linear layer left to prune/);
  refuses({ targets: ['re:model.layers.(0'] }, /--targets "re:model\.layers\.\(0": not a regular expression/);
  refuses({ roles: ['q', 'q'] }, /layer "q" is named twice in --layers/);
  refuses({ roles: ['qkv'] }, /unknown layer "qkv" for the llama family/);
});

test('selection on GPT-2 (Conv1D, transformer.h.N) and OPT (model.decoder.layers.N) names', async () => {
  const { dir } = await familyModels();
  const gpt2 = await loadModel(path.join(dir, 'gpt2'), { backend: getBackend() });
  assert.deepEqual(selectLinears(gpt2, { targets: ['Conv1D'] }).roles, gpt2.roles);
  assert.deepEqual(selectLinears(gpt2, { targets: ['transformer.h.0.attn.c_attn', 're:transformer.h.\\d+.mlp.c_proj'] }).layerRoles[0], ['c_attn', 'mlp_c_proj']);
  assert.throws(() => selectLinears(gpt2, { targets: ['Linear'] }), /matches no linear layer of this gpt2 model .*class names: Linear, Conv1D/);
  const opt = await loadModel(path.join(dir, 'opt-prenorm'), { backend: getBackend() });
  const selection = selectLinears(opt, { targets: ['re:model.decoder.layers.\\d+.fc'], ignore: ['model.decoder.layers.0'] });
  assert.deepEqual(selection.layerRoles[0], []);
  assert.deepEqual(selection.layerRoles[1], ['fc1', 'fc2']);
});
