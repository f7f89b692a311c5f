/**
 * The zero-shot scorer: tokenization as the harness's _encode_pair, log-likelihoods equal to
 * log-softmax sums taken directly from the full-sequence logits (with prefix sharing, padding
 * and left truncation), the metrics and their standard errors, and every task end to end on
 * stories260K.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TASKS, type TaskItem } from '../src/eval/tasks/index.js';
import { accuracyStderr, encodeRequest, evaluateItems, evaluateTask, logLikelihoods, spreadSample, taskMetrics } from '../src/eval/zeroshot.js';
import { loadModel } from '../src/model/load.js';
import type { CausalLM } from '../src/model/causal-lm.js';
import type { Tokenizer } from '../src/tokenizers/tokenizer.js';
import { runCli, stories260K, tempDir, testDataDir } from './helpers.js';

let modelPromise: Promise<CausalLM> | undefined;
const model = () => (modelPromise ??= loadModel(stories260K));

/** Sum of log softmax of `continuation` given `context` from one plain logits call on the whole sequence. */
async function directLogLikelihood(m: CausalLM, context: number[], continuation: number[]): Promise<number> {
  const sequence = [...context, ...continuation];
  const logits = await m.logits([sequence]);
  const vocab = m.config.vocabSize;
  let sum = 0;
  continuation.forEach((token, j) => {
    const row = logits.subarray((context.length - 1 + j) * vocab, (context.length + j) * vocab);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    const logZ = Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) + max;
    sum += row[token]! - logZ;
  });
  return sum;
}

test('encodeRequest: trailing context spaces move to the continuation; continuation = whole[len(context):]', async () => {
  // A toy tokenizer that merges " b" into one token, so the split of the whole matters.
  const toy: Tokenizer = {
    vocabSize: 10, bosId: 1, eosId: 2, source: 'toy',
    decode: () => '',
    encode(text, options = {}) {
      const ids: number[] = options.addBos ?? true ? [1] : [];
      for (let i = 0; i < text.length; i++) {
        if (text[i] === ' ' && text[i + 1] === 'b') { ids.push(9); i++; } else ids.push(text.charCodeAt(i) % 7 + 3);
      }
      return ids;
    },
  };
  assert.deepEqual(encodeRequest(toy, { context: 'a ', continuation: 'b' }), { context: [1, 'a'.charCodeAt(0) % 7 + 3], continuation: [9] });
  assert.deepEqual(encodeRequest(toy, { context: '', continuation: ' b' }), { context: [1], continuation: [9] });

  const m = await model();
  const encoded = encodeRequest(m.tokenizer, { context: 'Question: Where is the cat?\nAnswer:', continuation: ' on the mat' });
  assert.equal(encoded.context[0], m.tokenizer.bosId, 'stories260K adds BOS by default, as its tokenizer does');
  assert.deepEqual([...encoded.context, ...encoded.continuation], m.tokenizer.encode('Question: Where is the cat?\nAnswer: on the mat'));
});

test('log-likelihoods equal log-softmax sums from full-sequence logits (shared prefixes, padding, batching)', async () => {
  const m = await model();
  const requests = [
    { context: 'Once upon a time, there was a', continuation: ' little girl' },
    { context: 'Once upon a time, there was a', continuation: ' big dog named Max' },
    { context: 'Once upon a time, there was a', continuation: ' little' }, // its input is a prefix of the first's
    { context: 'Lily liked to play', continuation: ' outside' },
    { context: 'Lily liked to play ', continuation: 'with her ball.' }, // trailing space moves over
    { context: 'The sun', continuation: ' was hot.' },
  ];
  for (const batchTokens of [2048, 16]) {
    const scored = await logLikelihoods(m, requests, { batchTokens });
    for (const [i, request] of requests.entries()) {
      const { context, continuation } = encodeRequest(m.tokenizer, request);
      const expected = await directLogLikelihood(m, context, continuation);
      assert.ok(Math.abs(scored[i]! - expected) < 1e-3, `request ${i} (batchTokens ${batchTokens}): ${scored[i]} vs ${expected}`);
      assert.ok(scored[i]! < 0);
    }
  }
});

test('contexts longer than the model are cut on the left as the harness does; a continuation that cannot fit is a counted skip', async () => {
  const m = await model();
  const maxLength = m.config.maxPositionEmbeddings;
  const longContext = 'Tim saw a big red ball in the park. '.repeat(60).trim();
  const request = { context: longContext, continuation: ' He was happy.' };
  const { context, continuation } = encodeRequest(m.tokenizer, request);
  assert.ok(context.length + continuation.length > maxLength + 1);
  const window = [...context, ...continuation].slice(-(maxLength + 1));
  const expected = await directLogLikelihood(m, window.slice(0, window.length - continuation.length), continuation);
  const [scored] = await logLikelihoods(m, [request]);
  assert.ok(Math.abs(scored! - expected) < 1e-3, `${scored} vs ${expected}`);

  const hugeChoice = ' and then'.repeat(400);
  const item = (index: number, choices: string[]): TaskItem => ({
    index,
    requests: choices.map((c) => ({ context: 'The dog', continuation: c })),
    gold: 0,
    choiceLengths: choices.map((c) => c.length),
  });
  const truncatedItem: TaskItem = { index: 2, requests: [request, { context: longContext, continuation: ' He was sad.' }], gold: 0, choiceLengths: [13, 11] };
  const result = await evaluateItems(m, { name: 'toy', title: 'Toy', metrics: ['acc'] }, {
    items: [item(0, [' ran.', ' sat.']), item(1, [' ran.', hugeChoice]), truncatedItem],
    skipped: [],
  });
  assert.equal(result.n, 2);
  assert.deepEqual(result.skipped.map((s) => s.index), [1]);
  assert.match(result.skipped[0]!.reason, /longer than the model's context \(512 tokens\)/);
  assert.equal(result.truncated, 1);
  assert.equal(result.requests, 4);
});

test('a task none of whose items can be scored is an error, not an accuracy of NaN', async () => {
  const m = await model();
  const tooLong = { index: 0, requests: [{ context: 'The dog', continuation: ' and then'.repeat(400) }], gold: 0, choiceLengths: [3600] };
  await assert.rejects(
    () => evaluateItems(m, { name: 'toy', title: 'Toy', metrics: ['acc'] }, { items: [tooLong], skipped: [] }),
    /^TopiaryError: toy: none of its 1 items can be scored \(item 0: .*longer than the model's context/,
  );
});

test('acc, acc_norm (by choice length) and the harness stderr sqrt(p(1-p)/(n-1))', () => {
  const items: TaskItem[] = [
    { index: 0, requests: [], gold: 0, choiceLengths: [10, 2] }, // acc: -3 > -4 right; norm: -0.3 > -2 right
    { index: 1, requests: [], gold: 1, choiceLengths: [1, 100] }, // acc: -2 > -50 wrong; norm: -0.5 > -2 right
    { index: 2, requests: [], gold: 0, choiceLengths: [5, 5] }, // a tie: the first choice wins, as numpy's argmax
    { index: 3, requests: [], gold: 1, choiceLengths: [3, 3] }, // both wrong
  ];
  const scores = [[-3, -4], [-2, -50], [-7, -7], [-1, -9]];
  const metrics = taskMetrics(items, scores, ['acc', 'acc_norm']);
  // acc: items 0 and 2 right → 0.5; acc_norm: items 0, 1 and 2 right → 0.75.
  assert.equal(metrics.acc!.value, 0.5);
  assert.equal(metrics.acc_norm!.value, 0.75);
  assert.equal(metrics.acc!.stderr, Math.sqrt((0.5 * 0.5) / 3));
  assert.equal(metrics.acc_norm!.stderr, Math.sqrt((0.75 * 0.25) / 3));
  // The same as the sample standard deviation of the 0/1 scores over sqrt(n).
  const sample = [1, 0, 1, 0];
  const mean = 0.5;
  const sd = Math.sqrt(sample.reduce((s, x) => s + (x - mean) ** 2, 0) / (sample.length - 1));
  assert.ok(Math.abs(metrics.acc!.stderr! - sd / Math.sqrt(sample.length)) < 1e-15);
  assert.equal(accuracyStderr(1, 1), null);
  assert.deepEqual(spreadSample([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4), [0, 2, 5, 7]);
  assert.deepEqual(spreadSample([1, 2], 5), [1, 2]);
});

test('every task end to end on stories260K with a limit: loader, scorer, metrics', async () => {
  const m = await model();
  for (const task of TASKS) {
    const result = await evaluateTask(m, task, testDataDir, { limit: 12 });
    assert.equal(result.n + result.skipped.length, 12, task.name);
    assert.deepEqual(Object.keys(result.metrics).sort(), [...task.metrics].sort(), task.name);
    for (const metric of Object.values(result.metrics)) {
      assert.ok(metric.value >= 0 && metric.value <= 1, `${task.name}: ${metric.value}`);
      assert.ok(Number.isInteger(Math.round(metric.value * result.n * 1e9) / 1e9), 'a whole number of items right');
      assert.ok(Math.abs(metric.stderr! - Math.sqrt((metric.value * (1 - metric.value)) / (result.n - 1))) < 1e-12);
    }
    assert.ok(result.stats.forwards <= result.requests && result.stats.tokens > 0);
  }
});

test('single-token choices sharing a context share one forward pass', async () => {
  const m = await model();
  // Two items whose choices are each one token after the shared context: one window per item.
  const single = (index: number, context: string): TaskItem => ({ index, requests: [{ context, continuation: 'a' }, { context, continuation: 'b' }], gold: 0, choiceLengths: [1, 1] });
  const items = [single(0, 'The cat saw'), single(1, 'A dog ran to')];
  for (const request of items.flatMap((item) => item.requests)) assert.equal(encodeRequest(m.tokenizer, request).continuation.length, 1);
  const result = await evaluateItems(m, { name: 'toy', title: 'Toy', metrics: ['acc'] }, { items, skipped: [] });
  assert.equal(result.requests, 4);
  assert.equal(result.stats.forwards, 2);
});

test('topiary eval --tasks: table, --json, --out, and usage errors', () => {
  const dir = tempDir('topiary-eval-tasks-');
  const out = path.join(dir, 'eval-tasks.json');
  const json = runCli(['eval', '--model', stories260K, '--tasks', 'arc_easy,winogrande', '--limit', '6', '--json', '--out', out]);
  assert.equal(json.status, 0, json.stderr);
  const record = JSON.parse(json.stdout) as { kind: string; limit: number; tasks: { task: string; n: number; metrics: Record<string, { value: number }> }[] };
  assert.equal(record.kind, 'zero-shot');
  assert.equal(record.limit, 6);
  assert.deepEqual(record.tasks.map((t) => [t.task, t.n]), [['arc_easy', 6], ['winogrande', 6]]);
  assert.deepEqual(Object.keys(record.tasks[1]!.metrics), ['acc']);
  assert.deepEqual(JSON.parse(fs.readFileSync(out, 'utf8')).tasks.map((t: { task: string }) => t.task), ['arc_easy', 'winogrande']);
  assert.deepEqual(fs.readdirSync(dir), ['eval-tasks.json'], 'nothing but the --out file is written');

  const table = runCli(['eval', '--model', stories260K, '--tasks', 'rte', '--limit', '4']);
  assert.equal(table.status, 0, table.stderr);
  assert.match(table.stdout, /^task\s+n\s+acc % ± se\s+acc_norm % ± se/);
  assert.match(table.stdout, /\nrte\s+4\s+\d+\.\d\d ± \d+\.\d\d\s+—/);

  const unknown = runCli(['eval', '--model', stories260K, '--tasks', 'arc_easy,nope']);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown task "nope"/);
  const badLimit = runCli(['eval', '--model', stories260K, '--tasks', 'rte', '--limit', '0']);
  assert.equal(badLimit.status, 2);
  assert.match(badLimit.stderr, /--limit must be an integer ≥ 1/);
});
