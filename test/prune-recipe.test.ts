/**
 * llm-compressor recipes: the stage/modifier layout it reads and writes, in YAML and JSON, maps to
 * the same run as the equivalent flags (bit for bit); per-layer sparsity lists; unknown keys,
 * modifiers and contradictions refused in one line naming the file.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { resolveWhatToPrune, type WhatToPrune } from '../src/cli/commands/prune.js';
import { readRecipe } from '../src/prune/recipe.js';
import { parseRunRecord } from '../src/prune/record.js';
import { pruneModel } from '../src/prune/run.js';
import { assertTopiaryError, stories260K, tempDir, testDataDir } from './helpers.js';

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

function write(name: string, text: string): string {
  const file = path.join(tempDir(), name);
  fs.writeFileSync(file, text);
  return file;
}

/** As llm-compressor's examples and its own recipe.yaml files write it. */
const SPARSEGPT_YAML = `
sparsity_stage:
  run_type: oneshot
  sparsity_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      mask_structure: "2:4"
      sequential_update: false
      block_size: 64
      dampening_frac: 0.02
      targets: ["Linear"]
      ignore: ["re:.*lm_head", "re:.*down_proj"]
`;

const noFlags: WhatToPrune = { method: undefined, sparsity: undefined, pattern: undefined, ratio: undefined, options: [], permute: false, layers: undefined, targets: undefined, ignore: undefined, recipe: undefined, sparsityProfile: undefined };

test('recipes: llm-compressor layout in YAML and JSON gives the method, target, options and selections', () => {
  const yaml = write('recipe.yaml', SPARSEGPT_YAML);
  const request = readRecipe(yaml);
  assert.deepEqual(
    { ...request, source: undefined },
    { method: 'sparsegpt', target: { kind: 'nm', n: 2, m: 4 }, targets: ['Linear'], ignore: ['re:.*lm_head', 're:.*down_proj'], methodOptions: { blocksize: 64, damp: 0.02 }, source: undefined },
  );
  assert.deepEqual(request.source, { file: yaml, stage: 'sparsity_stage', modifier: 'SparseGPTModifier' });
  const json = write('recipe.json', JSON.stringify({ default_stage: { default_modifiers: { WandaPruningModifier: { sparsity: 0.6, targets: 're:model.layers.\\d+$', index: 0, group: 'default' } } } }));
  assert.deepEqual({ ...readRecipe(json), source: undefined }, { method: 'wanda', target: { kind: 'unstructured', sparsity: 0.6 }, targets: ['re:model.layers.\\d+$'], methodOptions: {}, source: undefined });
  const perLayer = readRecipe(write('layers.yaml', 'test_stage:\n  obcq_modifiers:\n    SparseGPTModifier:\n      sparsity: [0.4, 0.6]\n'));
  assert.deepEqual(perLayer.layerSparsity, [0.4, 0.6]);
  assert.deepEqual(perLayer.target, { kind: 'unstructured', sparsity: 0.5 });
});

test('recipes: unknown keys, modifiers and contradictions are refused in one line naming the file', () => {
  const modifier = (args: string) => `sparsity_stage:\n  sparsity_modifiers:\n    SparseGPTModifier:\n${args}`;
  const cases: [string, RegExp][] = [
    [modifier('      sparsity: 0.5\n      sparsity_ratio: 0.5\n'), /unknown key "sparsity_ratio" in SparseGPTModifier \(sparsity_stage\) \(known: sparsity, /],
    ['sparsity_stage:\n  sparsity_modifiers:\n    WandaPruningModifier:\n      sparsity: 0.5\n      block_size: 64\n', /unknown key "block_size" in WandaPruningModifier/],
    ['quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      targets: Linear\n', /modifier "GPTQModifier" is not one Topiary runs \(SparseGPTModifier or WandaPruningModifier\)/],
    ['sparsity:\n  0.5\n', /unknown key "sparsity" at the top of the recipe/],
    ['sparsity_stage:\n  run_type: train\n', /run_type "train"/],
    ['sparsity_stage:\n  sparsity_modifiers: {}\n', /no pruning modifier/],
    [modifier('      sparsity: 0.7\n      mask_structure: "2:4"\n'), /sparsity 0\.7 should be 0\.5 or absent: mask_structure 2:4 zeroes 2 of every 4/],
    [modifier('      sparsity: 0.5\n      mask_structure: "4:4"\n'), /mask_structure "4:4" should be "0:0" or "N:M" with 0 < N < M/],
    [modifier('      sparsity: 1.5\n'), /sparsity 1\.5 should be a number in \[0, 1\) or a list/],
    [modifier('      sparsity: 0.5\n      owl_m: 5\n'), /give all of sparsity_profile "owl", owl_m and owl_lmbda, or none/],
    [modifier('      sparsity: 0.5\n      preserve_sparsity_mask: true\n'), /preserve_sparsity_mask true is not supported/],
    [modifier('      sparsity: 0.5\n      sparsity: 0.6\n'), /invalid YAML: /],
    ['sparsity_stage: [\n', /invalid YAML: /],
  ];
  for (const [text, pattern] of cases) {
    const file = write('recipe.yaml', text);
    assertTopiaryError(() => readRecipe(file), file, pattern);
  }
});

test('recipes and flags: a setting comes from one place; an OWL profile waits for --sparsity-profile', () => {
  const recipe = write('recipe.yaml', SPARSEGPT_YAML);
  assert.throws(() => resolveWhatToPrune({ ...noFlags, recipe, sparsity: '0.5' }), /--sparsity with --recipe: the recipe's sparsity and mask_structure set the target/);
  assert.throws(() => resolveWhatToPrune({ ...noFlags, recipe, method: 'wanda' }), /--method wanda contradicts the recipe's SparseGPTModifier \(sparsegpt\)/);
  assert.throws(() => resolveWhatToPrune({ ...noFlags, recipe, ignore: 're:.*q_proj' }), /--ignore with --recipe, whose SparseGPTModifier sets ignore too/);
  assert.throws(() => resolveWhatToPrune({ ...noFlags, recipe, options: ['blocksize=32'] }), /--option blocksize with --recipe/);
  assert.equal(resolveWhatToPrune({ ...noFlags, recipe, method: 'sparsegpt', layers: 'q,k', options: ['fp64=true'] }).methodOptions.fp64, true);
  const owl = write('owl.yaml', 'sparsity_stage:\n  sparsity_modifiers:\n    WandaPruningModifier:\n      sparsity: 0.7\n      sparsity_profile: owl\n      owl_m: 5\n      owl_lmbda: 0.08\n');
  assert.equal(readRecipe(owl).sparsityProfile, 'owl');
  assert.deepEqual(readRecipe(owl).methodOptions, { owlM: 5, owlLambda: 0.08 });
  const resolved = resolveWhatToPrune({ ...noFlags, recipe: owl });
  assert.equal(resolved.sparsityProfile, 'owl');
  assert.deepEqual(resolved.methodOptions, { owlM: 5, owlLambda: 0.08 });
  assert.throws(() => resolveWhatToPrune({ ...noFlags, recipe: owl, sparsityProfile: 'owl' }), /--sparsity-profile with --recipe, whose WandaPruningModifier sets sparsity_profile too/);
});

const calibration = { corpus: `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`, nsamples: 4, seqlen: 64, seed: 1 };

test('a recipe prunes exactly as the equivalent flags do, and topiary.json records where the settings came from', async () => {
  const dir = tempDir();
  const recipe = write('recipe.yaml', SPARSEGPT_YAML.replace('mask_structure: "2:4"', 'mask_structure: "0:0"'));
  const fromRecipe = path.join(dir, 'recipe');
  await pruneModel({ model: stories260K, ...resolveWhatToPrune({ ...noFlags, recipe }), calibration, out: fromRecipe, resume: false });
  const fromFlags = path.join(dir, 'flags');
  const flags = { ...noFlags, method: 'sparsegpt', sparsity: '0.5', options: ['blocksize=64', 'damp=0.02'], targets: 'Linear', ignore: 're:.*lm_head,re:.*down_proj' };
  await pruneModel({ model: stories260K, ...resolveWhatToPrune(flags), calibration, out: fromFlags, resume: false });
  assert.equal(sha256(path.join(fromRecipe, 'model.safetensors')), sha256(path.join(fromFlags, 'model.safetensors')));
  const record = parseRunRecord(JSON.parse(fs.readFileSync(path.join(fromRecipe, 'topiary.json'), 'utf8')), 'topiary.json');
  assert.deepEqual(record.settings.recipe, { file: recipe, stage: 'sparsity_stage', modifier: 'SparseGPTModifier' });
  assert.deepEqual(record.settings.ignore, ['re:.*lm_head', 're:.*down_proj']);
  assert.deepEqual(record.settings.roles, ['q', 'k', 'v', 'o', 'gate', 'up']);
  for (const layer of record.layers) assert.deepEqual(layer.matrices.map((m) => m.role), ['q', 'k', 'v', 'o', 'gate', 'up']);
});

test('a per-layer sparsity list prunes each block to its own sparsity; a list of the wrong length is refused', async () => {
  const dir = tempDir();
  const sparsities = [0.3, 0.4, 0.5, 0.6, 0.7];
  const recipe = write('recipe.yaml', `s_stage:\n  s_modifiers:\n    WandaPruningModifier:\n      sparsity: [${sparsities.join(', ')}]\n      targets: ["re:.*(q|o)_proj"]\n`);
  const out = path.join(dir, 'out');
  await pruneModel({ model: stories260K, ...resolveWhatToPrune({ ...noFlags, recipe }), calibration, out, resume: false });
  const record = parseRunRecord(JSON.parse(fs.readFileSync(path.join(out, 'topiary.json'), 'utf8')), 'topiary.json');
  record.layers.forEach((layer, i) => {
    assert.deepEqual(layer.matrices.map((m) => m.role), ['q', 'o']);
    for (const matrix of layer.matrices) assert.ok(Math.abs(matrix.sparsity - sparsities[i]!) < 1 / matrix.cols, `layer ${i} ${matrix.role}: ${matrix.sparsity}`);
  });
  const short = write('short.yaml', 's_stage:\n  s_modifiers:\n    WandaPruningModifier:\n      sparsity: [0.5, 0.5]\n');
  await assert.rejects(pruneModel({ model: stories260K, ...resolveWhatToPrune({ ...noFlags, recipe: short }), calibration, out: path.join(dir, 'short'), resume: false }), /2 per-layer sparsities given for a model of 5 layers/);
});
