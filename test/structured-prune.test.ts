/**
 * Structured pruning (FLAP, COMP, wanda-sp, magnitude-sp) on stories260K: exact parameter
 * accounting, "removing nothing changes nothing", compensation lowering each layer's output error,
 * COMP's layer removal, and the exported files reloading with identical logits.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { drawCalibration } from '../src/data/calibration.js';
import { exportGguf } from '../src/export/gguf-writer.js';
import { openGguf } from '../src/formats/gguf.js';
import { CausalLM, type Linear as CausalLMLinear } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { STRUCTURED_METHODS, structuredMethodByName } from '../src/prune/structured/index.js';
import { blockParams, prunePipeline, type PipelineResult } from '../src/prune/pipeline.js';
import { structuredStrategy } from '../src/prune/structured/strategy.js';
import type { BlockReport } from '../src/prune/record.js';
import { runCli, stories260K, tempDir, testDataDir } from './helpers.js';

async function calibrated() {
  const model = await loadModel(stories260K, { backend: getBackend() });
  const { windows } = drawCalibration(model.tokenizer, { corpus: { kind: 'wikitext2' }, nsamples: 8, seqlen: 64, seed: 0 }, testDataDir);
  return { model, windows };
}

async function prune(method: string, ratio: number, methodOptions: Record<string, string | number> = {}) {
  const { model, windows } = await calibrated();
  const pipeline = await prunePipeline(model, windows, structuredStrategy(model, structuredMethodByName(method), ratio, methodOptions), {
    batchWindows: 4,
    checkpoint: { dir: tempDir(), fingerprint: method, resume: false },
  });
  const smaller = new CausalLM(pipeline.source(), model.backend);
  evalWindows = await evalWindowsFor(model);
  return { model, windows, result: summarize(pipeline), smaller };
}

/** The pipeline's result as these tests read it: structure reports flattened, pruned blocks by original index, parameter totals. */
function summarize(pipeline: PipelineResult) {
  const paramsBefore = pipeline.reports.reduce((sum, report) => sum + report.paramsBefore, 0);
  const paramsAfter = pipeline.reports.reduce((sum, report) => sum + report.paramsAfter, 0);
  return {
    outcomes: pipeline.reports.map((report) => ({ ...report, ...report.structure })),
    pruned: new Map(pipeline.keptLayers.map((layer) => [layer, pipeline.block(layer)])),
    keptLayers: pipeline.keptLayers,
    paramsBefore,
    paramsAfter,
    achievedRatio: 1 - paramsAfter / paramsBefore,
  };
}
type StructuredResult = ReturnType<typeof summarize>;

/** Two windows of real TinyStories-style text (stories260K's tokenizer), 24 tokens each. */
async function evalWindowsFor(model: CausalLM): Promise<number[][]> {
  const texts = [
    'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.',
    'One day, a big dog came to the garden. The dog was happy and wanted to play with the ball. They had fun all day.',
  ];
  return texts.map((text) => model.tokenizer.encode(text).slice(0, 24));
}
let evalWindows: number[][] = [];

function decoderParamsOf(result: StructuredResult): number {
  let total = 0;
  for (const layer of result.pruned.values()) {
    for (const lin of Object.values(layer.linears)) assert.equal(lin.weight.length, lin.outFeatures * lin.inFeatures);
    total += blockParams(layer);
  }
  return total;
}

for (const method of STRUCTURED_METHODS) {
  test(`${method.name}: ratio 0 removes nothing and the logits stay bit-exact`, async () => {
    const { model, result, smaller } = await prune(method.name, 0);
    assert.equal(result.achievedRatio, 0);
    assert.equal(result.keptLayers.length, model.numLayers);
    for (const layer of result.pruned.values()) {
      for (const lin of Object.values(layer.linears)) assert.equal(lin.bias, undefined, 'no compensation when nothing was removed');
    }
    assert.deepEqual(await smaller.logits(evalWindows), await model.logits(evalWindows));
  });

  test(`${method.name}: ratio 0.3 removes what it reports, keeps GQA groups whole, and the model still predicts`, async () => {
    const { model, result, smaller } = await prune(method.name, 0.3);
    assert.equal(decoderParamsOf(result), result.paramsAfter);
    assert.equal(result.paramsBefore, 227_200, 'stories260K: 5 layers of 45,440 parameters');
    assert.ok(Math.abs(result.achievedRatio - 0.3) < 0.02, `achieved ${result.achievedRatio}`);
    assert.equal(result.achievedRatio, 1 - result.paramsAfter / result.paramsBefore);
    const headDim = model.config.headDim;
    for (const layer of result.pruned.values()) {
      const { q, k, v, o, gate, up, down } = layer.linears as Record<string, CausalLMLinear>;
      assert.equal(q.outFeatures / k.outFeatures, 2, 'every kept kv head keeps its 2 query heads');
      assert.equal(v.outFeatures, k.outFeatures);
      assert.equal(o.inFeatures, q.outFeatures);
      assert.ok(k.outFeatures >= headDim && gate.outFeatures >= 1);
      assert.equal(up.outFeatures, gate.outFeatures);
      assert.equal(down.inFeatures, gate.outFeatures);
    }
    // Pruning 30% of a 260K-parameter model hurts, but it must still beat a uniform guess by far.
    const { nll, predicted } = await smaller.windowNll(evalWindows);
    assert.ok(nll / predicted < 0.75 * Math.log(model.config.vocabSize), `mean NLL ${nll / predicted}`);
  });
}

test('flap: bias compensation lowers every pruned projection’s output error on the calibration data', async () => {
  const { result } = await prune('flap', 0.3);
  let pruned = 0;
  for (const outcome of result.outcomes) {
    for (const projection of ['o', 'down'] as const) {
      const errors = outcome.errors![projection];
      if (errors.none === 0) continue;
      pruned++;
      assert.ok(errors.bias < errors.none, `layer ${outcome.layer} ${projection}: ${errors.bias} vs ${errors.none}`);
      assert.equal(errors.final, errors.bias, 'FLAP keeps exactly the bias-compensated projection');
      assert.ok(Number(outcome.compensation![projection]!.biasNorm) > 0);
    }
  }
  assert.ok(pruned >= 3, `only ${pruned} projections were pruned`);
});

for (const tune of ['scales', 'refit']) {
  test(`comp: mask tuning (${tune}) lowers the error below bias compensation, which is below none`, async () => {
    const { result } = await prune('comp', 0.3, { tune, layers: 0 });
    for (const outcome of result.outcomes) {
      for (const projection of ['o', 'down'] as const) {
        const errors = outcome.errors![projection];
        assert.ok(errors.none > 0, 'every layer loses units at a uniform 30%');
        assert.ok(errors.bias < errors.none, `layer ${outcome.layer} ${projection}: bias ${errors.bias} vs none ${errors.none}`);
        assert.ok(errors.final < errors.bias, `layer ${outcome.layer} ${projection}: tuned ${errors.final} vs bias ${errors.bias}`);
      }
    }
  });
}

test('comp: the coarse stage removes the least important whole layers, and the shorter model runs', async () => {
  const { model, result, smaller } = await prune('comp', 0.4, { layers: 1 });
  const removed = result.outcomes.filter((o) => o.removed);
  // 40% of 5 equal layers, all of it as whole layers: 2 layers.
  assert.equal(removed.length, 2);
  const importance = result.outcomes.map((o) => o.importance!);
  const threshold = Math.max(...removed.map((o) => o.importance!));
  for (const outcome of result.outcomes) if (!outcome.removed) assert.ok(outcome.importance! >= threshold);
  assert.ok(importance.every((v) => v > 0 && v < 2));
  assert.equal(smaller.numLayers, model.numLayers - 2);
  assert.equal(decoderParamsOf(result), result.paramsAfter);
  const logits = await smaller.logits(evalWindows);
  assert.ok(logits.every(Number.isFinite));
});

test('flap: the exported non-uniform GGUF reloads in Topiary with identical logits', async () => {
  const { result, smaller } = await prune('flap', 0.3);
  const widths = [...result.pruned.values()].map((l) => `${l.linears.k!.outFeatures}/${l.linears.gate!.outFeatures}`);
  assert.ok(new Set(widths).size > 1, 'AL-AM gives layers different widths');
  const file = path.join(tempDir(), 'model.gguf');
  assert.equal(exportGguf(smaller, file, { dtype: 'F32' }).architecture, 'deci');
  const store = openGguf(file);
  const heads = store.metadata['deci.attention.head_count'] as number[];
  assert.deepEqual(heads, [...result.pruned.values()].map((l) => l.linears.q!.outFeatures / smaller.config.headDim));
  let decoderParams = 0;
  for (const info of store.list()) if (info.name.startsWith('blk.')) decoderParams += info.shape.reduce((a, b) => a * b, 1);
  store.close();
  assert.equal(decoderParams, result.paramsAfter, 'the file holds exactly the reported decoder parameters');
  const reloaded = await loadModel(file, { backend: getBackend() });
  assert.deepEqual(await reloaded.logits(evalWindows), await smaller.logits(evalWindows));
});

test('cli: prune --ratio writes a HF folder for uniform shapes, GGUF otherwise, and topiary.json says what was removed', async () => {
  const common = ['--model', stories260K, '--calib', 'wikitext2', '--nsamples', '4', '--seqlen', '64'];
  const uniformDir = tempDir();
  const uniform = runCli(['prune', ...common, '--method', 'wanda-sp', '--ratio', '0.2', '--out', uniformDir, '--json']);
  assert.equal(uniform.status, 0, uniform.stderr);
  assert.equal(JSON.parse(uniform.stdout).format, 'safetensors');
  assert.equal(JSON.parse(uniform.stdout).kind, 'structured');
  assert.ok(fs.existsSync(path.join(uniformDir, 'model.safetensors')));
  const reloaded = await loadModel(uniformDir, { backend: getBackend() });
  assert.equal(reloaded.config.numKvHeads, 3, 'one of 4 kv groups removed in every layer');

  const flapDir = tempDir();
  const flapRun = runCli(['prune', ...common, '--method', 'flap', '--ratio', '0.2', '--option', 'metric=ifv', '--out', flapDir, '--json']);
  assert.equal(flapRun.status, 0, flapRun.stderr);
  const record = JSON.parse(fs.readFileSync(path.join(flapDir, 'topiary.json'), 'utf8'));
  assert.equal(record.output.format, 'gguf');
  assert.ok(fs.existsSync(path.join(flapDir, 'model.gguf')));
  assert.equal(record.settings.methodOptions.metric, 'ifv');
  const structures = (record.layers as BlockReport[]).map((l) => l.structure!);
  const removedGroups = structures.flatMap((l) => l.attention!.removedGroups);
  const removedChannels = structures.reduce((s, l) => {
    assert.equal(l.mlp!.removedChannels.length, l.mlp!.removedScores.length);
    return s + l.mlp!.removedChannels.length;
  }, 0);
  assert.ok(removedGroups.length + removedChannels > 0);
  assert.ok(Math.abs(record.summary.sparsity - 0.2) < 0.02);

  const bad = runCli(['prune', ...common, '--method', 'flap', '--ratio', '0.2', '--option', 'metric=nope', '--out', tempDir()]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /metric must be one of wifv, ifv, wifn/);
  const mixed = runCli(['prune', ...common, '--method', 'comp', '--sparsity', '0.5', '--out', tempDir()]);
  assert.match(mixed.stderr, /give --ratio R, not --sparsity/);
});
