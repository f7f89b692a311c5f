/**
 * An interrupted structured prune (killed mid-run) resumes from its checkpoint with --resume and
 * writes exactly the files an uninterrupted run writes, for a uniform schedule with a dense pass
 * (COMP: layer ranking, then layer by layer) and for the global one (FLAP AL-AM: a dense scoring
 * pass, then a pruning pass). The kills are deterministic: a child process runs the same prune as
 * the CLI and SIGKILLs itself when a chosen stage is reached.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { repoRoot, runCli, stories260K, tempDir, testDataDir } from './helpers.js';
import { parseRunRecord, type RunRecord } from '../src/prune/record.js';

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

const NSAMPLES = 8;
const SEQLEN = 64;

/** Method options as the CLI parses them (numbers as numbers: they are part of the fingerprint). */
type Options = Record<string, number | string>;

/** The CLI arguments of one structured prune. */
const cliArgs = (method: string, ratio: number, options: Options, out: string) => [
  'prune', '--model', stories260K, '--method', method, '--ratio', String(ratio),
  ...Object.entries(options).flatMap(([key, value]) => ['--option', `${key}=${value}`]),
  '--calib', 'wikitext2', '--nsamples', String(NSAMPLES), '--seqlen', String(SEQLEN), '--out', out,
];

const KILLER = `
import { pruneModel } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'src', 'prune', 'run.ts')).href)};
const { settings, stage, layer } = JSON.parse(process.env.TOPIARY_TEST_KILL);
await pruneModel({
  ...settings,
  onEvent(event) {
    if (event.kind === 'stage' && event.stage === stage && event.layer >= layer) process.kill(process.pid, 'SIGKILL');
  },
});
`;

/**
 * Runs the prune the CLI would run (same settings, so the same checkpoint fingerprint) and kills
 * it with SIGKILL at the first `stage` event of a layer ≥ `layer`.
 */
function killAt(method: string, ratio: number, options: Options, out: string, resume: boolean, stage: string, layer: number): void {
  const settings = {
    model: stories260K,
    method,
    target: { kind: 'structured', ratio },
    methodOptions: options,
    calibration: { corpus: 'wikitext2', nsamples: NSAMPLES, seqlen: SEQLEN, seed: 0 },
    out,
    resume,
    batchWindows: 4,
    dtype: 'F32',
  };
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', KILLER], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, TOPIARY_DATA_DIR: testDataDir, TOPIARY_TEST_KILL: JSON.stringify({ settings, stage, layer }) },
    timeout: 300_000,
  });
  assert.equal(child.signal, 'SIGKILL', `the run should have been killed at ${stage} of layer ${layer}: ${child.stderr}`);
  assert.ok(fs.existsSync(path.join(out, '.topiary-checkpoint', 'state.json')));
  assert.ok(!fs.existsSync(path.join(out, 'topiary.json')), 'a killed run must not leave topiary.json');
}

/** Every output file but topiary.json, by name, with its hash. */
function modelFiles(dir: string): Record<string, string> {
  const files = fs.readdirSync(dir).filter((name) => name !== 'topiary.json' && !name.startsWith('.'));
  return Object.fromEntries(files.sort().map((name) => [name, sha256(path.join(dir, name))]));
}

const record = (dir: string) => parseRunRecord(JSON.parse(fs.readFileSync(path.join(dir, 'topiary.json'), 'utf8')), 'topiary.json');
const keptLayers = (run: RunRecord) => run.layers.filter((layer) => !layer.removed).map((layer) => layer.layer);

const CASES: { method: string; ratio: number; options: Options; kills: [stage: string, layer: number][] }[] = [
  // Uniform with a dense pass: killed while ranking layers, then while pruning; layer 0.5 of the
  // budget as whole layers removes one of the five.
  { method: 'comp', ratio: 0.4, options: { layers: 0.5 }, kills: [['dense pass', 2], ['forward', 2]] },
  // Global: killed in the dense scoring pass, then in the pruning pass.
  { method: 'flap', ratio: 0.3, options: {}, kills: [['dense pass', 2], ['forward', 3]] },
];

for (const { method, ratio, options, kills } of CASES) {
  test(`structured prune (${method}): killed twice, --resume gives the same files as an uninterrupted run`, () => {
    const reference = tempDir();
    const full = runCli(cliArgs(method, ratio, options, reference));
    assert.equal(full.status, 0, full.stderr);
    assert.ok(!fs.existsSync(path.join(reference, '.topiary-checkpoint')), 'checkpoint removed after success');

    const interrupted = tempDir();
    kills.forEach(([stage, layer], i) => killAt(method, ratio, options, interrupted, i > 0, stage, layer));
    const checkpoint = fs.readdirSync(path.join(interrupted, '.topiary-checkpoint'));
    assert.ok(checkpoint.some((name) => name.startsWith('layer-')), `pruned layers checkpointed: ${checkpoint.join(', ')}`);

    const resumed = runCli([...cliArgs(method, ratio, options, interrupted), '--resume']);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stderr, /resumed: [1-9]\d* finished block\(s\) and the dense pass of 5 block\(s\)/);
    assert.ok(!fs.existsSync(path.join(interrupted, '.topiary-checkpoint')), 'checkpoint removed after success');

    assert.deepEqual(modelFiles(interrupted), modelFiles(reference));
    const [before, after] = [record(reference), record(interrupted)];
    const withoutTimes = (run: RunRecord) => run.layers.map(({ seconds, statisticsSeconds, pruneSeconds, forwardSeconds, ...rest }) => rest);
    assert.deepEqual(withoutTimes(after), withoutTimes(before));
    assert.deepEqual(keptLayers(after), keptLayers(before));
    assert.equal(after.summary.paramsAfter, before.summary.paramsAfter);
    assert.equal(after.settings.resumed, true);
    if (method === 'comp') assert.equal(keptLayers(after).length, 4, 'one whole layer removed');
  });
}

test('structured prune: a checkpoint made with other settings is refused on --resume and cleared without it', () => {
  const out = tempDir();
  killAt('wanda-sp', 0.2, {}, out, false, 'prune', 2);
  const refused = runCli([...cliArgs('wanda-sp', 0.3, {}, out), '--resume']);
  assert.equal(refused.status, 1);
  const errors = refused.stderr.split('\n').filter((line) => line.startsWith('topiary: '));
  assert.equal(errors.length, 1, refused.stderr);
  assert.match(errors[0]!, /^topiary: .*\.topiary-checkpoint: cannot resume: the checkpoint was made with different settings/);
  assert.ok(fs.existsSync(path.join(out, '.topiary-checkpoint', 'layer-0000.json')), 'the refused checkpoint is left alone');

  const fresh = runCli(cliArgs('wanda-sp', 0.3, {}, out));
  assert.equal(fresh.status, 0, fresh.stderr);
  assert.doesNotMatch(fresh.stderr, /resumed/);
  assert.ok(!fs.existsSync(path.join(out, '.topiary-checkpoint')));
  assert.equal(record(out).settings.resumed, false);
});
