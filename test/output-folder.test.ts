/**
 * Where commands write (issue 10, items 2, 8, 11, 13): a bad output location fails before any
 * work with one line and status 2; prune's --out never mixes two models' files, is locked against
 * a second run, and refuses a planted checkpoint link; Ctrl-C says how to resume and exits 130.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../src/prune/checkpoint.js';
import { OutputFolder } from '../src/prune/output-folder.js';
import { repoRoot, runCli, stories260K, tempDir, testDataDir, type CliResult } from './helpers.js';

const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');
const calibration = `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`;
const cli = path.join(repoRoot, 'src', 'cli', 'main.ts');

/** A quick prune of stories260K into `out` (about a second). */
const pruneArgs = (out: string, extra: string[] = []) => [
  'prune', '--model', stories260K, '--method', 'magnitude', '--sparsity', '0.5',
  '--calib', calibration, '--nsamples', '2', '--seqlen', '32', '--out', out, ...extra,
];

function assertRefused(result: CliResult, pattern: RegExp, status = 2): void {
  assert.equal(result.status, status, `expected status ${status}:\n${result.stdout}${result.stderr}`);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0]!, /^topiary: /);
  assert.match(lines[0]!, pattern);
  assert.equal(result.stdout, '', 'no work should have been done');
}

test('a bad output location is refused before any work, in one line with status 2', () => {
  const dir = tempDir();
  const file = path.join(dir, 'a-file');
  fs.writeFileSync(file, 'x');
  assertRefused(runCli(pruneArgs(file)), /a-file: exists and is not a folder/);
  assertRefused(runCli(['eval', '--model', stories260K, '--dataset', calibration, '--out', path.join(dir, 'missing', 'eval.json')]), /missing: the folder to write in: no such file or folder/);
  assertRefused(runCli(['eval', '--model', stories260K, '--tasks', 'piqa', '--out', path.join(dir, 'missing', 'eval.json')]), /missing: the folder to write in: no such file/);
  assertRefused(runCli(['report', path.join(repoRoot, 'test', 'fixtures', 'tasks', 'runs', 'dense'), '--out', path.join(dir, 'missing', 'r.html')]), /missing: the folder to write in/);
  assertRefused(runCli(['eval', '--model', stories260K, '--dataset', calibration, '--out', dir]), /is a folder; give a file name/);
});

test('a read-only --out is refused before any work', () => {
  const parent = tempDir();
  fs.chmodSync(parent, 0o555);
  // root ignores permission bits: run the CLI as an unprivileged user then.
  const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  for (const args of [pruneArgs(path.join(parent, 'out')), ['eval', '--model', stories260K, '--dataset', calibration, '--out', path.join(parent, 'eval.json')]]) {
    const result = spawnSync(process.execPath, ['--import', 'tsx', cli, ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      env: { ...process.env, TOPIARY_DATA_DIR: testDataDir },
      timeout: 60_000,
      ...asUser,
    });
    assertRefused({ status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr }, /permission denied/);
  }
});

test('an --out holding another model is refused without --overwrite, and stale model files never survive an export', () => {
  const out = tempDir();
  for (const file of fs.readdirSync(tinyModel)) fs.copyFileSync(path.join(tinyModel, file), path.join(out, file));
  const before = fs.readFileSync(path.join(out, 'config.json'), 'utf8');
  assertRefused(runCli(pruneArgs(out)), /holds files that are not a Topiary run \(config\.json, model\.safetensors, reference\.json\).*--overwrite/);
  assert.equal(fs.readFileSync(path.join(out, 'config.json'), 'utf8'), before);

  // With --overwrite: Topiary's file names are replaced, other files are left alone, and a stale
  // shard index (which loaders would prefer over model.safetensors) is removed.
  fs.writeFileSync(path.join(out, 'model.safetensors.index.json'), '{"weight_map": {}}');
  fs.writeFileSync(path.join(out, 'model-00002-of-00002.safetensors'), 'stale');
  const overwritten = runCli(pruneArgs(out, ['--overwrite']));
  assert.equal(overwritten.status, 0, overwritten.stderr);
  assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'model.safetensors', 'reference.json', 'tokenizer.bin', 'topiary.json']);
  assert.notEqual(fs.readFileSync(path.join(out, 'config.json'), 'utf8'), before);

  // An earlier Topiary run is replaced without --overwrite.
  fs.writeFileSync(path.join(out, 'model.safetensors.index.json'), '{"weight_map": {}}');
  const again = runCli(pruneArgs(out));
  assert.equal(again.status, 0, again.stderr);
  assert.ok(!fs.existsSync(path.join(out, 'model.safetensors.index.json')));
  const inspected = runCli(['inspect', out, '--json']);
  assert.equal(inspected.status, 0, inspected.stderr);
  assert.equal((JSON.parse(inspected.stdout) as { layers: number }).layers, 5);

  // Evaluation results of the model there would not match a new one: refused, or removed with --overwrite.
  fs.writeFileSync(path.join(out, 'eval-wikitext2.json'), '{}');
  assertRefused(runCli(pruneArgs(out)), /holds evaluation results \(eval-wikitext2\.json\)/);
  const replaced = runCli(pruneArgs(out, ['--overwrite']));
  assert.equal(replaced.status, 0, replaced.stderr);
  assert.ok(!fs.existsSync(path.join(out, 'eval-wikitext2.json')));
});

test('publish interrupted between renames: no old file stays beside new ones, and no topiary.json', () => {
  const out = tempDir();
  for (const [name, content] of [['config.json', 'old config'], ['model.safetensors', 'old weights'], ['model.safetensors.index.json', 'old index'], ['topiary.json', 'old record']]) {
    fs.writeFileSync(path.join(out, name!), content!);
  }
  const folder = OutputFolder.claim(out, { overwrite: false });
  const staging = folder.stage();
  for (const name of ['model.safetensors', 'config.json', 'topiary.json']) fs.writeFileSync(path.join(staging, name), `new ${name}`);
  const rename = fs.renameSync;
  let renames = 0;
  fs.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
    if (++renames > 1) throw new Error('killed');
    rename(from, to);
  };
  syncBuiltinESMExports();
  try {
    assert.throws(() => folder.publish(staging), /killed/);
  } finally {
    fs.renameSync = rename;
    syncBuiltinESMExports();
    folder.release();
  }
  assert.deepEqual(fs.readdirSync(out).filter((name) => !name.startsWith('.')), ['model.safetensors']);
  assert.equal(fs.readFileSync(path.join(out, 'model.safetensors'), 'utf8'), 'new model.safetensors');
  // The next run clears the leftover staging folder.
  OutputFolder.claim(out, { overwrite: false }).release();
  assert.deepEqual(fs.readdirSync(out), ['model.safetensors']);
});

test('a second run into the same --out is refused while the first holds the lock; a stale lock is taken over', () => {
  const out = tempDir();
  fs.writeFileSync(path.join(out, '.topiary.lock'), `${process.pid}\n`); // this process is alive
  assertRefused(runCli(pruneArgs(out)), new RegExp(`another Topiary run \\(process ${process.pid}\\) is writing to this folder`), 1);
  const gone = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!;
  fs.writeFileSync(path.join(out, '.topiary.lock'), `${gone}\n`);
  const result = runCli(pruneArgs(out));
  assert.equal(result.status, 0, result.stderr);
  assert.ok(!fs.existsSync(path.join(out, '.topiary.lock')), 'the lock is removed when the run ends');

  // A lock naming this very process, which does not hold it, is a reused pid: stale. One this
  // process does hold keeps a second claim out.
  fs.writeFileSync(path.join(out, '.topiary.lock'), `${process.pid}\n`);
  const claimed = OutputFolder.claim(out, { overwrite: false });
  assert.throws(() => OutputFolder.claim(out, { overwrite: false }), /another Topiary run/);
  claimed.release();
  assert.ok(!fs.existsSync(path.join(out, '.topiary.lock')));
});

test('a .topiary-checkpoint link to another folder is refused, and that folder is left untouched', () => {
  const out = tempDir();
  const victim = tempDir();
  fs.writeFileSync(path.join(victim, 'precious.txt'), 'keep me');
  fs.symlinkSync(victim, path.join(out, '.topiary-checkpoint'));
  assertRefused(runCli(pruneArgs(out)), /\.topiary-checkpoint: is a symbolic link or not a folder/, 1);
  // The pipelines' own check, for library callers that skip the output folder.
  assert.throws(() => openCheckpoint(path.join(out, '.topiary-checkpoint'), 'fingerprint', false), /is a symbolic link or not a folder/);
  assert.deepEqual(fs.readdirSync(victim), ['precious.txt']);
  assert.equal(fs.readFileSync(path.join(victim, 'precious.txt'), 'utf8'), 'keep me');
});

test('Ctrl-C during prune: one line saying the checkpoint is kept and how to resume, status 130', async () => {
  const out = tempDir();
  const args = [
    'prune', '--model', stories260K, '--method', 'sparsegpt', '--sparsity', '0.5',
    '--calib', calibration, '--nsamples', '128', '--seqlen', '256', '--out', out,
  ];
  const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { cwd: repoRoot, env: { ...process.env, TOPIARY_DATA_DIR: testDataDir } });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const marker = path.join(out, '.topiary-checkpoint', 'layer-0000.json');
  const deadline = Date.now() + 60_000;
  while (!fs.existsSync(marker) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
  assert.ok(fs.existsSync(marker), 'the run should have checkpointed its first layer');
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const status = await exited;
  clearTimeout(timer);
  assert.equal(status, 130, stderr);
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0]!, /^topiary: interrupted; finished layers are kept in .*\.topiary-checkpoint: run the same command with --resume to continue$/);
  assert.ok(!fs.existsSync(path.join(out, '.topiary.lock')), 'the lock is removed on Ctrl-C');
  assert.ok(!fs.existsSync(path.join(out, 'topiary.json')));

  const resumed = runCli([...args, '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resumed: [1-4] finished layer/);
});
