/**
 * A config that disagrees with the tensors is refused when the model is opened, in one line naming
 * the config, instead of silently giving another model (issue 10, item 10).
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSafetensors, writeSafetensors } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { familyModels } from './family-models.js';
import { assertTopiaryError, repoRoot, tempDir } from './helpers.js';

const tiny = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');

/** A copy of the tiny GQA llama (2 layers, 4 heads, 2 kv heads of 16, untied) with `edit` applied to its config. */
function withConfig(edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(tiny, dir, { recursive: true });
  const file = path.join(dir, 'config.json');
  const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(config);
  fs.writeFileSync(file, JSON.stringify(config));
  return dir;
}

async function assertRefused(dir: string, pattern: RegExp): Promise<void> {
  let thrown: unknown;
  await loadModel(dir).catch((error: unknown) => (thrown = error));
  assertTopiaryError(() => {
    if (thrown) throw thrown;
  }, path.join(dir, 'config.json'), pattern);
}

const CASES: [string, (config: Record<string, unknown>) => void, RegExp][] = [
  ['fewer layers than the weights hold', (c) => (c.num_hidden_layers = 1), /says 1 layers, the weights hold 2/],
  ['more layers than the weights hold', (c) => (c.num_hidden_layers = 3), /says 3 layers, the weights hold 2/],
  ['an absurd layer count', (c) => (c.num_hidden_layers = 2 ** 31), /num_hidden_layers/],
  ['a fractional layer count', (c) => (c.num_hidden_layers = 1.5), /num_hidden_layers/],
  ['more kv heads than k_proj holds', (c) => (c.num_key_value_heads = 4), /4 key\/value heads, the weights hold 4 and 2/],
  ['a head size the projections cannot hold', (c) => (c.head_dim = 24), /do not hold whole heads of head_dim 24/],
  ['rope_theta 0', (c) => ((c.rope_parameters as Record<string, unknown>).rope_theta = 0), /rope_theta/],
];

for (const [what, edit, message] of CASES) {
  test(`config vs tensors: ${what} is refused`, () => assertRefused(withConfig(edit), message));
}

test('config vs tensors: an untied head the weights lack is refused, not silently tied', async () => {
  const dir = withConfig(() => {});
  const file = path.join(dir, 'model.safetensors');
  const store = openSafetensors(file);
  const tensors = store
    .list()
    .filter((info) => info.name !== 'lm_head.weight')
    .map((info) => ({ name: info.name, shape: info.shape, data: store.read(info.name) }));
  store.close();
  writeSafetensors(file, tensors);
  await assertRefused(dir, /untied, but the weights lack "lm_head.weight"/);
});

test('config vs tensors: fused projections that hold no whole heads are refused when the model is opened, not when a layer first runs', async () => {
  const { dir: modelsDir } = await familyModels();
  const dir = path.join(tempDir(), 'model');
  fs.cpSync(path.join(modelsDir, 'phi3-gqa-partial'), dir, { recursive: true });
  const file = path.join(dir, 'config.json');
  // qkv_proj holds (4 + 2·2)·16 rows and o_proj 64 inputs: heads of 24 do not divide them.
  fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), head_dim: 24 }));
  await assertRefused(dir, /layer 0: the fused qkv projection has 128 outputs and o 64 inputs, not q, k and v sets of whole heads of 24$/);
});
