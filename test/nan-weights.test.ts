/**
 * Non-finite weights and results: a NaN in a downloaded model is refused when its tensor is read,
 * naming the tensor, by every pruning method and by eval; nothing non-finite is ever written; and
 * a model whose outputs overflow does not get a "perplexity NaN" with exit status 0.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { perplexity } from '../src/eval/perplexity.js';
import { openSafetensors, writeSafetensors } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { METHODS } from '../src/prune/methods/index.js';
import { prunePipeline } from '../src/prune/pipeline.js';
import { STRUCTURED_METHODS } from '../src/prune/structured/index.js';
import { structuredStrategy } from '../src/prune/structured/strategy.js';
import { unstructuredStrategy } from '../src/prune/unstructured.js';
import { TopiaryError } from '../src/util/errors.js';
import { createRng } from '../src/util/random.js';
import { repoRoot, runCli, stories260K, tempDir, testDataDir } from './helpers.js';

const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');
/** In the last layer: where a NaN used to slip through SparseGPT and APT. */
const POISONED = 'model.layers.1.mlp.down_proj.weight';

/** A copy of the tiny model with `edit` applied to its tensors. */
function tinyModelWith(edit: (name: string, data: Float32Array) => void): string {
  const dir = tempDir();
  fs.copyFileSync(path.join(tinyModel, 'config.json'), path.join(dir, 'config.json'));
  const store = openSafetensors(path.join(tinyModel, 'model.safetensors'));
  const tensors = store.list().map((info) => {
    const data = store.read(info.name);
    edit(info.name, data);
    return { name: info.name, shape: info.shape, data };
  });
  store.close();
  // Written raw: writeSafetensors itself refuses non-finite values, as it should.
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([length, json, ...tensors.map((t) => Buffer.from(t.data.buffer))]));
  return dir;
}

const nanModel = tinyModelWith((name, data) => {
  if (name === POISONED) data[37] = Number.NaN;
});

function windows(count: number, length: number): number[][] {
  const rng = createRng(5);
  return Array.from({ length: count }, () => Array.from({ length }, () => rng.int(256)));
}

async function assertRefusesNaN(run: () => Promise<unknown>): Promise<void> {
  await assert.rejects(run, (error: unknown) => {
    assert.ok(error instanceof TopiaryError, `expected a TopiaryError, got ${String(error)}`);
    assert.match(error.message, new RegExp(`^${nanModel}: tensor "${POISONED}" has NaN at index 37 of 10240$`));
    return true;
  });
}

for (const method of METHODS) {
  test(`${method.name} refuses a model with a NaN weight, naming the tensor`, async () => {
    const model = await loadModel(nanModel, { backend: getBackend() });
    await assertRefusesNaN(() =>
      prunePipeline(
        model,
        windows(4, 16),
        unstructuredStrategy(model, { method, target: { kind: 'unstructured', sparsity: 0.5 }, methodOptions: {}, roles: model.roles, errorWindows: 4 }),
        { batchWindows: 4, checkpoint: { dir: tempDir(), fingerprint: method.name, resume: false } },
      ),
    );
  });
}

for (const method of STRUCTURED_METHODS) {
  test(`${method.name} refuses a model with a NaN weight, naming the tensor`, async () => {
    const model = await loadModel(nanModel, { backend: getBackend() });
    await assertRefusesNaN(() => prunePipeline(model, windows(4, 16), structuredStrategy(model, method, 0.2, {}), {
        batchWindows: 4,
        checkpoint: { dir: tempDir(), fingerprint: method.name, resume: false },
      }));
  });
}

test('perplexity refuses a model with a NaN weight', async () => {
  const model = await loadModel(nanModel, { backend: getBackend() });
  await assertRefusesNaN(() => perplexity(model, windows(1, 64)[0]!, { seqlen: 32 }));
});

test('perplexity refuses outputs that overflow, though every weight is finite', async () => {
  const overflowing = tinyModelWith((name, data) => {
    if (name === 'lm_head.weight') for (let i = 0; i < data.length; i++) data[i] = Math.sign(data[i]!) * 3e38;
  });
  const model = await loadModel(overflowing, { backend: getBackend() });
  await assert.rejects(() => perplexity(model, windows(1, 64)[0]!, { seqlen: 32 }), /log-likelihood of window 1 is (NaN|-?Infinity): the model produced non-finite numbers/);
});

test('eval on the command line: a NaN weight is one line naming the tensor, not "perplexity NaN"', () => {
  // stories260K (legacy llama2.c, shared classifier): the final norm lies just before the two RoPE tables.
  const dir = tempDir();
  const checkpoint = path.join(dir, 'model.bin');
  const bytes = fs.readFileSync(stories260K);
  const ropeTables = 2 * 512 * 4 * 4;
  bytes.writeFloatLE(Number.POSITIVE_INFINITY, bytes.length - ropeTables - 64 * 4 + 8);
  fs.writeFileSync(checkpoint, bytes);
  fs.copyFileSync(path.join(path.dirname(stories260K), 'tokenizer.bin'), path.join(dir, 'tokenizer.bin'));
  const result = runCli(['eval', '--model', checkpoint, '--dataset', `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`, '--seqlen', '64', '--max-windows', '1']);
  assert.equal(result.status, 1, result.stdout + result.stderr);
  assert.equal(result.stderr, `topiary: ${checkpoint}: tensor "norm.weight" has Infinity at index 2 of 64\n`);
  assert.doesNotMatch(result.stdout, /perplexity/);
});

test('writers refuse non-finite values and values the stored type cannot hold', () => {
  const dir = tempDir();
  const nan = { name: 'w', shape: [2, 2], data: new Float32Array([1, 2, Number.NaN, 4]) };
  assert.throws(() => writeSafetensors(path.join(dir, 'a.safetensors'), [nan]), /a\.safetensors: refusing to write tensor "w": it has NaN at index 2 of 4$/);
  const large = { name: 'big', shape: [2], data: new Float32Array([1, 1e6]), dtype: 'F16' as const };
  assert.throws(() => writeSafetensors(path.join(dir, 'b.safetensors'), [large]), /refusing to write tensor "big": its value 1000000 at index 1 does not fit F16$/);
  assert.equal(fs.readdirSync(dir).length, 0, 'nothing left behind');
});
