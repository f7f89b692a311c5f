/**
 * The layer-wise pipeline with every method, on a tiny model and on stories260K through the CLI:
 * exact sparsity and N:M patterns in the saved weights, determinism, refusals before any work.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import type { CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { openSafetensors } from '../src/formats/safetensors.js';
import { checkNmPattern, prunedCount } from '../src/prune/masks.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { METHODS } from '../src/prune/methods/index.js';
import { prunePipeline } from '../src/prune/pipeline.js';
import { unstructuredStrategy, type UnstructuredRequest } from '../src/prune/unstructured.js';
import { createRng } from '../src/util/random.js';
import { repoRoot, runCli, stories260K, tempDir, testDataDir } from './helpers.js';

const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');

function randomWindows(count: number, length: number, vocab: number, seed: number): number[][] {
  const rng = createRng(seed);
  return Array.from({ length: count }, () => Array.from({ length }, () => rng.int(vocab)));
}

function permuteColumns(weight: Float32Array, rows: number, cols: number, order: readonly number[]): Float32Array {
  const out = new Float32Array(weight.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = weight[r * cols + order[c]!]!;
  return out;
}

function zeros(data: Float32Array): number {
  let count = 0;
  for (const value of data) if (value === 0) count++;
  return count;
}

/** The unstructured pipeline on `windows`, checkpointed in a fresh folder. */
async function pruneBlocks(model: CausalLM, windows: number[][], request: Omit<UnstructuredRequest, 'roles'>, batchWindows: number) {
  return prunePipeline(model, windows, unstructuredStrategy(model, { ...request, roles: model.roles }), {
    batchWindows,
    checkpoint: { dir: tempDir(), fingerprint: request.method.name, resume: false },
  });
}

const TARGETS: { target: SparsityTarget; permute: boolean }[] = [
  { target: { kind: 'unstructured', sparsity: 0.5 }, permute: false },
  { target: { kind: 'nm', n: 2, m: 4 }, permute: false },
  { target: { kind: 'nm', n: 4, m: 8 }, permute: false },
  { target: { kind: 'nm', n: 2, m: 4 }, permute: true },
];

for (const method of METHODS) {
  for (const { target, permute } of TARGETS) {
    const options: Record<string, boolean> = permute ? { permute: true } : {};
    if (permute && !Object.hasOwn(method.options, 'permute')) continue;
    if (method.unsupported(target, options)) continue;
    const label = `${method.name} ${target.kind === 'nm' ? `${target.n}:${target.m}` : 'unstructured 50%'}${permute ? ' permuted' : ''}`;
    test(`pipeline: ${label} gives the exact pattern in every matrix and changes only pruned layers`, async () => {
      const model = await loadModel(tinyModel, { backend: getBackend() });
      const windows = randomWindows(6, 24, model.config.vocabSize, 1);
      const result = await pruneBlocks(model, windows, { method, target, methodOptions: options, errorWindows: 6 }, 4);
      assert.equal(result.reports.length, model.numLayers);
      for (const report of result.reports) {
        const block = result.block(report.layer);
        for (const matrix of report.matrices) {
          const weight = block.linears[matrix.role]!.weight;
          if (target.kind === 'nm') {
            // With permutation the pattern holds in the permuted channel order (weights are stored
            // in the original order, so the layer computes the same function).
            const order = matrix.method.permutation as number[] | undefined;
            assert.equal(order !== undefined, permute, `${matrix.name}: permutation reported iff requested`);
            const inOrder = order ? permuteColumns(weight, matrix.rows, matrix.cols, order) : weight;
            assert.ok(checkNmPattern(inOrder, matrix.rows, matrix.cols, target.n, target.m), `${matrix.name}: N:M pattern broken`);
            assert.equal(zeros(weight), (matrix.rows * matrix.cols * target.n) / target.m, `${matrix.name}: N:M zero count`);
          } else {
            // Per-row methods prune floor(p·d_in) per row; whole-matrix ones floor(p·size).
            const perRow = matrix.rows * prunedCount(0.5, matrix.cols);
            const perMatrix = prunedCount(0.5, matrix.rows * matrix.cols);
            assert.ok([perRow, perMatrix].includes(zeros(weight)), `${matrix.name}: ${zeros(weight)} zeros`);
          }
          assert.equal(matrix.sparsity, zeros(weight) / weight.length);
          if (method.needs.length === 0) {
            // Data-free (magnitude): no forward pass ran, so the error is recorded as not measured.
            assert.equal(matrix.relativeError, null, `${matrix.name}: data-free methods measure no error`);
          } else {
            assert.ok(matrix.relativeError !== null && matrix.relativeError > 0 && matrix.relativeError < 1, `${matrix.name}: relative error ${matrix.relativeError}`);
          }
        }
      }
    });
  }
}

test('pipeline: second-order methods reconstruct better than Wanda on the same layers', async () => {
  const errors: Record<string, number> = {};
  for (const name of ['wanda', 'sparsegpt', 'apt']) {
    const model = await loadModel(tinyModel, { backend: getBackend() });
    const { reports } = await pruneBlocks(
      model,
      randomWindows(8, 32, model.config.vocabSize, 2),
      { method: METHODS.find((m) => m.name === name)!, target: { kind: 'unstructured', sparsity: 0.5 }, methodOptions: {}, errorWindows: 8 },
      8,
    );
    // The first layer sees identical inputs in every run, so its errors compare method to method.
    errors[name] = reports[0]!.matrices.reduce((sum, m) => sum + m.relativeError!, 0);
  }
  assert.ok(errors.sparsegpt! < errors.wanda!, `sparsegpt ${errors.sparsegpt} vs wanda ${errors.wanda}`);
  assert.ok(errors.apt! <= errors.sparsegpt! * 1.0001, `apt ${errors.apt} vs sparsegpt ${errors.sparsegpt}`);
});

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

const calibText = () => `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`;

test('prune CLI on stories260K: exact zeros in the saved file, same seed gives the same bytes, topiary.json records the run', () => {
  const outs = [tempDir(), tempDir()];
  for (const out of outs) {
    const result = runCli(['prune', '--model', stories260K, '--method', 'sparsegpt', '--pattern', '2:4', '--calib', calibText(), '--nsamples', '8', '--seqlen', '128', '--seed', '3', '--out', out, '--json']);
    assert.equal(result.status, 0, result.stderr);
    const summary = JSON.parse(result.stdout) as { method: string; sparsity: number; seconds: number; peak_rss_mb: number; out: string };
    assert.equal(summary.method, 'sparsegpt');
    assert.equal(summary.sparsity, 0.5);
    assert.ok(summary.seconds > 0 && summary.peak_rss_mb > 0);
    assert.equal(summary.out, out);
  }
  assert.equal(sha256(path.join(outs[0]!, 'model.safetensors')), sha256(path.join(outs[1]!, 'model.safetensors')));
  const store = openSafetensors(outs[0]!);
  for (const info of store.list()) {
    if (!/_proj\.weight$/.test(info.name)) continue;
    const [rows, cols] = info.shape as [number, number];
    assert.ok(checkNmPattern(store.read(info.name), rows, cols, 2, 4), info.name);
  }
  store.close();
  const record = JSON.parse(fs.readFileSync(path.join(outs[0]!, 'topiary.json'), 'utf8')) as {
    settings: { calibration: { seed: number; nsamples: number } };
    environment: { topiary: string };
    layers: { matrices: unknown[]; seconds: number }[];
  };
  assert.equal(record.settings.calibration.seed, 3);
  assert.equal(record.layers.length, 5);
  assert.equal(record.layers[0]!.matrices.length, 7);
  assert.ok(!fs.existsSync(path.join(outs[0]!, '.topiary-checkpoint')), 'checkpoint removed after success');
  assert.deepEqual(fs.readFileSync(path.join(outs[0]!, 'tokenizer.bin')), fs.readFileSync(path.join(path.dirname(stories260K), 'tokenizer.bin')), 'tokenizer carried over byte for byte');
  // The pruned model loads and runs.
  const evaluated = runCli(['eval', '--model', outs[0]!, '--dataset', calibText(), '--seqlen', '128', '--max-windows', '2', '--json']);
  assert.equal(evaluated.status, 0, evaluated.stderr);
  assert.ok(Number.isFinite((JSON.parse(evaluated.stdout) as { perplexity: number }).perplexity));
});

test('prune CLI refuses invalid requests before any work, with status 2 and no output', () => {
  const cases: [string[], RegExp][] = [
    [['--method', 'wanda', '--sparsity', '1'], /sparsity must be a number in \[0, 1\)/],
    [['--method', 'wanda', '--sparsity=-0.1'], /sparsity must be a number in \[0, 1\)/],
    [['--method', 'sparsegpt', '--sparsity', '0.5', '--option', 'blocksiz=64'], /does not understand "blocksiz"/],
    [['--method', 'wanda', '--pattern', '4:4'], /0 < N < M/],
    [['--method', 'wanda', '--pattern', '4:8'], /multiple of 8/],
    [['--method', 'lottery', '--sparsity', '0.5'], /unknown method "lottery"/],
    [['--method', 'sparsegpt', '--pattern', '2:4', '--permute'], /permut/i],
    [['--method', 'wanda', '--sparsity', '0.5', '--permute'], /permut/i],
    [['--method', 'wanda', '--sparsity', '0.5', '--pattern', '2:4'], /exactly one of --sparsity/],
  ];
  for (const [args, message] of cases) {
    const out = path.join(tempDir(), 'out');
    const result = runCli(['prune', '--model', stories260K, '--out', out, ...args]);
    assert.notEqual(result.status, 0, `${args.join(' ')} should fail`);
    assert.match(result.stderr, message, args.join(' '));
    assert.doesNotMatch(result.stderr, /internal error/);
    assert.ok(!fs.existsSync(out), `${args.join(' ')} must not create the output folder`);
  }
});
