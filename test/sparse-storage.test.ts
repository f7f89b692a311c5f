/**
 * prune --save-format sparse (issue 14, item 1): the compressed-tensors sparse formats.
 * The compressed-tensors package decompresses Topiary's sparse folders to exactly the tensors of
 * the dense folder pruned alike (bit for bit); Topiary reads them back to the same logits and marks
 * the matrices stored sparse; the folder is smaller; a hostile sparse folder fails in one line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { summarize } from '../src/cli/commands/inspect.js';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { pruneModel, type PruneSettings, type SaveFormat } from '../src/prune/run.js';
import type { ExportDtype } from '../src/export/hf-folder.js';
import { TopiaryError } from '../src/util/errors.js';
import { familyCalibration, familyModels, withByteTokenizer } from './family-models.js';
import { repoRoot, runCli, stories260K, tempDir, testDataDir } from './helpers.js';
import { relativeDifference } from './parity.js';

const calibration = { corpus: `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`, nsamples: 2, seqlen: 64, seed: 0 };
const windows = [
  [1, 403, 407, 261, 378, 414, 267, 261, 422, 268, 300, 301],
  [1, 9, 100, 200, 300, 400, 500, 42, 7, 77, 111, 222],
];

interface Pair {
  label: string;
  dense: string;
  sparse: string;
}

async function prunePair(label: string, model: string, method: string, target: SparsityTarget, dtype: ExportDtype, calib: PruneSettings['calibration'] = calibration): Promise<Pair> {
  const out = (saveFormat: SaveFormat) => {
    const dir = tempDir();
    return pruneModel({ model, method, target, methodOptions: {}, calibration: calib, out: dir, resume: false, dtype, saveFormat }).then(() => dir);
  };
  return { label, dense: await out('dense'), sparse: await out('sparse') };
}

function sparsityConfig(dir: string): Record<string, unknown> {
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { quantization_config: { sparsity_config: Record<string, unknown> } };
  return config.quantization_config.sparsity_config;
}

/** compressed-tensors' decompression of each sparse folder, compared with the dense one (scripts/ct_decompress.py). */
function decompressWithCompressedTensors(pairs: Pair[]): { compressor: string; quantization: boolean; tensors: number; missing: string[]; extra: string[]; differing: string[] }[] {
  const result = spawnSync('python3', [path.join(repoRoot, 'scripts', 'ct_decompress.py')], { input: JSON.stringify(pairs), encoding: 'utf8', maxBuffer: 1 << 24 });
  assert.equal(result.status, 0, `compressed-tensors failed:\n${result.stderr}`);
  return result.stdout.trim().split('\n').map((line) => JSON.parse(line));
}

async function assertSameLogits(pair: Pair, inputIds: number[][]): Promise<void> {
  const dense = await loadModel(pair.dense, { backend: getBackend() });
  const sparse = await loadModel(pair.sparse, { backend: getBackend() });
  const linears = Object.values(sparse.layer(0).linears);
  assert.ok(linears.every((linear) => linear.sparse !== undefined && linear.sparse.layout === linear.storage), `${pair.label}: every stored-sparse matrix runs compressed`);
  assert.ok(Object.values(dense.layer(0).linears).every((linear) => linear.sparse === undefined));
  // The sparse folder's matrices run on the sparse kernels: the same products summed in another order.
  const difference = relativeDifference(await sparse.logits(inputIds), await dense.logits(inputIds));
  assert.ok(difference <= 1e-5, `${pair.label}: logits differ by ${difference} relative`);
  dense.source.close();
  sparse.source.close();
}

const pairs: Promise<{ unstructured: Pair; twoFour: Pair }> = (async () => ({
  unstructured: await prunePair('stories260K magnitude 50% F16', stories260K, 'magnitude', { kind: 'unstructured', sparsity: 0.5 }, 'F16'),
  twoFour: await prunePair('stories260K wanda 2:4 BF16', stories260K, 'wanda', { kind: 'nm', n: 2, m: 4 }, 'BF16'),
}))();

test('compressed-tensors decompresses the sparse folders to the dense folders bit for bit, and Topiary reads them to the same logits', async () => {
  const { unstructured, twoFour } = await pairs;
  assert.deepEqual(sparsityConfig(unstructured.sparse), {
    format: 'sparse-bitmask',
    targets: sparsityConfig(unstructured.sparse).targets,
    ignore: [],
    global_sparsity: sparsityConfig(unstructured.sparse).global_sparsity,
    sparsity_structure: 'unstructured',
  });
  assert.equal(sparsityConfig(twoFour.sparse).format, 'sparse-24-bitmask');
  assert.equal(sparsityConfig(twoFour.sparse).sparsity_structure, '2:4');
  // 35 pruned matrices (5 blocks of q k v o gate up down); about 0.44 of all 260K weights are zeros.
  assert.equal((sparsityConfig(twoFour.sparse).targets as string[]).length, 35);
  assert.ok(Math.abs((sparsityConfig(twoFour.sparse).global_sparsity as number) - 0.44) < 0.01);

  const results = decompressWithCompressedTensors([unstructured, twoFour]);
  assert.deepEqual(
    results.map(({ compressor, quantization, missing, extra, differing }) => ({ compressor, quantization, missing, extra, differing })),
    [
      { compressor: 'BitmaskCompressor', quantization: false, missing: [], extra: [], differing: [] },
      { compressor: 'Sparse24BitMaskCompressor', quantization: false, missing: [], extra: [], differing: [] },
    ],
  );
  for (const pair of [unstructured, twoFour]) await assertSameLogits(pair, windows);
});

test('the engine sees which matrices were stored sparse; embeddings and norms stay dense; the folder is smaller', async () => {
  const { unstructured, twoFour } = await pairs;
  for (const [pair, storage] of [[unstructured, 'bitmask'], [twoFour, '2:4']] as const) {
    const model = await loadModel(pair.sparse, { backend: getBackend() });
    for (const linear of Object.values(model.layer(4).linears)) assert.equal(linear.storage, storage, pair.label);
    assert.equal(model.source.storage('model.embed_tokens.weight'), 'dense');
    assert.equal(model.source.storage('model.layers.0.input_layernorm.weight'), 'dense');
    assert.equal(model.source.dtype('model.layers.0.mlp.down_proj.weight'), pair === twoFour ? 'BF16' : 'F16');
    // 5 blocks × (q 64×64, k and v 32×64, o 64×64, gate, up 172×64, down 64×172) compressed.
    assert.deepEqual(summarize(model).storage, { dense: 260_032 - 226_560, [storage]: 226_560 });
    model.source.close();
    const dense = await loadModel(pair.dense, { backend: getBackend() });
    for (const linear of Object.values(dense.layer(4).linears)) assert.equal(linear.storage, undefined);
    dense.source.close();
    // Pruned weights take half their 16 bits plus one bit each, 1.125 of 2 bytes, and the 32K
    // embedding weights of 260K stay dense: 0.62 of the dense bytes. sparse-bitmask adds 8 bytes
    // of row offset per row, 0.05 more on this tiny model (0.01 on SmolLM2).
    const bytes = (dir: string) => fs.statSync(path.join(dir, 'model.safetensors')).size;
    const ratio = bytes(pair.sparse) / bytes(pair.dense);
    const expected = storage === '2:4' ? [0.6, 0.65] : [0.65, 0.7];
    assert.ok(ratio > expected[0]! && ratio < expected[1]!, `${pair.label}: sparse/dense size ${ratio}`);
    const record = JSON.parse(fs.readFileSync(path.join(pair.sparse, 'topiary.json'), 'utf8'));
    assert.deepEqual(record.output.sparse, { storage, structure: storage === '2:4' ? '2:4' : 'unstructured', matrices: 35 });
    assert.equal(record.settings.saveFormat, 'sparse');
  }
});

test('2:4 stored [in, out] (GPT-2) is not 2:4 along the stored rows: it is written as sparse-bitmask, and still decompresses exactly', async () => {
  const { dir } = await familyModels();
  const source = withByteTokenizer(dir, 'gpt2');
  const pair = await prunePair('gpt2 magnitude 2:4 F32', source, 'magnitude', { kind: 'nm', n: 2, m: 4 }, 'F32', familyCalibration(5_000));
  assert.equal(sparsityConfig(pair.sparse).format, 'sparse-bitmask');
  assert.equal(sparsityConfig(pair.sparse).sparsity_structure, 'unstructured');
  assert.deepEqual(decompressWithCompressedTensors([pair])[0]!.differing, []);
  const model = await loadModel(pair.sparse, { backend: getBackend() });
  assert.equal(model.layer(0).linears.c_fc!.storage, 'bitmask');
  model.source.close();
  await assertSameLogits(pair, [[1, 2, 3, 4, 5, 6, 7, 8]]);
});

test('--save-format is checked before any work: structured pruning and unknown formats are refused', () => {
  const out = path.join(tempDir(), 'never-made');
  const structured = runCli(['prune', '--model', stories260K, '--method', 'flap', '--ratio', '0.2', '--save-format', 'sparse', '--out', out]);
  assert.equal(structured.status, 2, structured.stderr);
  assert.match(structured.stderr, /^topiary: --save-format sparse is for unstructured and N:M pruning/);
  const unknown = runCli(['prune', '--model', stories260K, '--method', 'magnitude', '--sparsity', '0.5', '--save-format', 'csr', '--out', out]);
  assert.equal(unknown.status, 2, unknown.stderr);
  assert.equal(unknown.stderr.trim(), 'topiary: --save-format must be dense or sparse, got "csr"');
  assert.ok(!fs.existsSync(out));
});

/** A copy of `dir` whose model.safetensors has its tensors changed by `edit`. */
function hostileCopy(dir: string, edit: (tensors: Map<string, TensorToWrite>) => void, allowNonFinite = false): string {
  const copy = tempDir();
  for (const name of fs.readdirSync(dir)) if (fs.statSync(path.join(dir, name)).isFile()) fs.copyFileSync(path.join(dir, name), path.join(copy, name));
  const store = openSafetensors(dir);
  const tensors = new Map<string, TensorToWrite>();
  for (const info of store.list()) {
    const bytes = store.readBytes(info.name);
    const data = info.dtype === 'U8' ? bytes : info.dtype === 'I64' ? new BigInt64Array(bytes.slice().buffer) : store.read(info.name);
    tensors.set(info.name, { name: info.name, shape: info.shape, dtype: info.dtype as TensorToWrite['dtype'], data });
  }
  store.close();
  edit(tensors);
  writeSafetensors(path.join(copy, 'model.safetensors'), [...tensors.values()], undefined, { allowNonFinite });
  return copy;
}

async function assertOneLineError(dir: string, pattern: RegExp, where = path.join(dir, 'model.safetensors')): Promise<void> {
  await assert.rejects(
    (async () => {
      const model = await loadModel(dir, { backend: getBackend() });
      for (let layer = 0; layer < model.numLayers; layer++) model.layer(layer);
    })(),
    (error: unknown) => {
      assert.ok(error instanceof TopiaryError, `expected a TopiaryError, got ${String(error)}`);
      assert.ok(error.message.startsWith(`${where}: `), error.message);
      assert.match(error.message, pattern);
      assert.ok(!error.message.includes('\n'));
      return true;
    },
  );
}

test('hostile sparse folders fail in one line naming the file, before the dense matrix is allocated', async () => {
  const { unstructured, twoFour } = await pairs;
  const down = 'model.layers.1.mlp.down_proj';
  const bitmask = (tensors: Map<string, TensorToWrite>, prefix = down) => tensors.get(`${prefix}.bitmask`)!.data as Uint8Array;
  await assertOneLineError(
    hostileCopy(unstructured.sparse, (tensors) => {
      const entry = tensors.get(`${down}.bitmask`)!;
      tensors.set(entry.name, { ...entry, shape: [entry.shape[0]!, entry.shape[1]! - 1], data: bitmask(tensors).slice(0, entry.shape[0]! * (entry.shape[1]! - 1)) });
    }),
    /compressed tensor "model.layers.1.mlp.down_proj": its bitmask is U8 \[64, 21\], a \[64, 172\] matrix needs U8 \[64, 22\]/,
  );
  await assertOneLineError(
    hostileCopy(unstructured.sparse, (tensors) => {
      bitmask(tensors)[40]! ^= 0x01;
    }),
    /the bitmask keeps \d+ weights but \d+ values are stored|row_offsets\[\d+\] is \d+, the bitmask puts that row's values at \d+/,
  );
  await assertOneLineError(
    hostileCopy(unstructured.sparse, (tensors) => {
      // Same popcount, moved into the padding past column 172 of row 0 (byte 21 holds columns 168..175).
      const bits = bitmask(tensors);
      const set = [0, 1, 2, 3, 4, 5, 6, 7].find((bit) => bits[0]! & (1 << bit))!;
      bits[0]! &= ~(1 << set);
      bits[21]! |= 0x80;
    }),
    /bitmask row 0 has bits set past column 172/,
  );
  await assertOneLineError(
    hostileCopy(unstructured.sparse, (tensors) => {
      const offsets = tensors.get(`${down}.row_offsets`)!.data as BigInt64Array;
      offsets[3] = offsets[3]! + 1n;
    }),
    /row_offsets\[3\] is \d+, the bitmask puts that row's values at \d+/,
  );
  await assertOneLineError(
    hostileCopy(unstructured.sparse, (tensors) => {
      tensors.set(`${down}.shape`, { name: `${down}.shape`, shape: [2], dtype: 'I64', data: BigInt64Array.from([64n, 2n ** 40n]) });
    }),
    /its shape tensor holds 1099511627776, not a positive size/,
  );
  await assertOneLineError(
    hostileCopy(unstructured.sparse, (tensors) => {
      tensors.delete(`${down}.row_offsets`);
    }),
    /has a bitmask but no "model.layers.1.mlp.down_proj.row_offsets"/,
  );
  await assertOneLineError(
    hostileCopy(twoFour.sparse, (tensors) => {
      // Three kept in the first group of four, one in the second: the popcount is unchanged.
      const bits = bitmask(tensors);
      bits[0] = 0b0001_0111;
    }),
    /bitmask row 0 has a group of four without exactly two kept weights/,
  );
  // A NaN among the kept values is refused when the matrix is read, like any other weight's (naming the folder).
  const withNaN = hostileCopy(
    unstructured.sparse,
    (tensors) => {
      (tensors.get(`${down}.compressed`)!.data as Float32Array)[5] = Number.NaN;
    },
    true,
  );
  await assertOneLineError(withNaN, /tensor "model.layers.1.mlp.down_proj.weight" has NaN at index \d+/, withNaN);
  // A file cut short is refused when opened, not read past its end.
  const truncated = hostileCopy(unstructured.sparse, () => {});
  const file = path.join(truncated, 'model.safetensors');
  fs.truncateSync(file, fs.statSync(file).size - 100);
  await assertOneLineError(truncated, /bytes|data area|truncated|short|end of file/);
});

test('a hostile sparse folder is one line on the command line', () => {
  const dir = tempDir();
  const config = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa', 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, quantization_config: { quant_method: 'compressed-tensors', sparsity_config: { format: 'sparse-42' } } }));
  fs.copyFileSync(path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa', 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const result = runCli(['inspect', dir]);
  assert.equal(result.status, 1);
  assert.equal(result.stderr.trim(), `topiary: ${path.join(dir, 'config.json')}: quantization_config: sparsity format "sparse-42" is not supported (sparse-bitmask, sparse-24-bitmask or dense)`);
});
