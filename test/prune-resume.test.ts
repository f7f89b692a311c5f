/**
 * An interrupted prune (killed mid-run) resumes from its last finished layer with --resume and
 * writes exactly the bytes an uninterrupted run writes; the killed run leaves no model file.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { repoRoot, runCli, smolLM2Path, tempDir, testDataDir } from './helpers.js';

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('prune: kill after a few layers, --resume, same output as an uninterrupted run (SmolLM2-135M)', async (t) => {
  const model = smolLM2Path();
  if (!model) return t.skip('SmolLM2-135M not fetched (scripts/fetch-smollm2.sh)');
  const args = (out: string) => [
    'prune', '--model', model, '--method', 'sparsegpt', '--sparsity', '0.5',
    '--calib', `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`,
    '--nsamples', '2', '--seqlen', '64', '--dtype', 'BF16', '--out', out,
  ];
  const reference = tempDir();
  const full = runCli(args(reference));
  assert.equal(full.status, 0, full.stderr);

  const interrupted = tempDir();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src', 'cli', 'main.ts'), ...args(interrupted)], {
    cwd: repoRoot,
    env: { ...process.env, TOPIARY_DATA_DIR: testDataDir },
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const marker = path.join(interrupted, '.topiary-checkpoint', 'layer-0004.json');
  const deadline = Date.now() + 300_000;
  while (!fs.existsSync(marker) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 10));
  assert.ok(fs.existsSync(marker), 'the run should have checkpointed layer 4');
  child.kill('SIGKILL');
  await exited;
  assert.ok(!fs.existsSync(path.join(interrupted, 'model.safetensors')), 'a killed run must not leave a model file');
  assert.ok(!fs.existsSync(path.join(interrupted, 'topiary.json')));

  const resumed = runCli([...args(interrupted), '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resumed: \d+ finished block/);
  assert.equal(sha256(path.join(interrupted, 'model.safetensors')), sha256(path.join(reference, 'model.safetensors')));
  const record = JSON.parse(fs.readFileSync(path.join(interrupted, 'topiary.json'), 'utf8')) as { layers: unknown[]; settings: { resumed: boolean } };
  assert.equal(record.layers.length, 30);
  assert.equal(record.settings.resumed, true);

  // A checkpoint made with other settings is refused rather than mixed in.
  fs.mkdirSync(path.join(interrupted, '.topiary-checkpoint'));
  fs.writeFileSync(path.join(interrupted, '.topiary-checkpoint', 'state.json'), '{"fingerprint":"other"}');
  const mismatched = runCli([...args(interrupted), '--resume']);
  assert.notEqual(mismatched.status, 0);
  assert.match(mismatched.stderr, /different settings/);
});
