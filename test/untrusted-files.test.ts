/**
 * Model folders and input files from elsewhere (issue 10, items 1, 3, 4, 7): links that leave the
 * model folder are neither read nor copied, FIFOs and devices are refused instead of hanging,
 * errors never quote file contents, and temporary files cannot be redirected by planted links.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { exportHfFolder } from '../src/export/hf-folder.js';
import { loadModel } from '../src/model/load.js';
import { writeFileContentAtomic } from '../src/util/atomic.js';
import { TopiaryError } from '../src/util/errors.js';
import { repoRoot, runCli, stories260K, tempDir } from './helpers.js';

const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');
const tinyTokenizer = path.join(repoRoot, 'test', 'fixtures', 'tokenizers', 'tiny_llama');
const SECRET = 'SECRET-7f3a9c-DO-NOT-LEAK';

/** A copy of the tiny model with a tokenizer, and a "private" file outside it. */
function modelFolder(): { dir: string; secret: string } {
  const root = tempDir();
  const dir = path.join(root, 'model');
  fs.mkdirSync(dir);
  for (const file of fs.readdirSync(tinyModel)) fs.copyFileSync(path.join(tinyModel, file), path.join(dir, file));
  for (const file of fs.readdirSync(tinyTokenizer)) fs.copyFileSync(path.join(tinyTokenizer, file), path.join(dir, file));
  const secret = path.join(root, 'id_rsa');
  fs.writeFileSync(secret, `${SECRET}\n`);
  return { dir, secret };
}

function mkfifo(file: string): void {
  execFileSync('mkfifo', [file]);
}

/** Every byte under `dir`, as one string, to search for leaked content. */
function allBytes(dir: string): string {
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => path.join(dir, name))
    .filter((file) => fs.lstatSync(file).isFile())
    .map((file) => fs.readFileSync(file, 'latin1'))
    .join('\n');
}

async function rejects(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof TopiaryError, `expected a TopiaryError, got ${String(error)}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes(SECRET), `the message quotes the file: ${error.message}`);
    return true;
  });
}

test('carried-over files that link outside the model folder are not copied, and the export says so', async () => {
  const { dir, secret } = modelFolder();
  for (const name of ['tokenizer.model', 'special_tokens_map.json', 'generation_config.json']) fs.symlinkSync(secret, path.join(dir, name));
  // A link that stays inside the folder is fine.
  fs.renameSync(path.join(dir, 'tokenizer_config.json'), path.join(dir, 'real_tokenizer_config.json'));
  fs.symlinkSync('real_tokenizer_config.json', path.join(dir, 'tokenizer_config.json'));
  const model = await loadModel(dir, { backend: getBackend() });
  const out = tempDir();
  const exported = exportHfFolder(model, out, { dtype: 'F32', override: () => undefined });
  model.source.close();
  assert.ok(!allBytes(out).includes(SECRET), 'the private file was copied into the output');
  assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  assert.equal(exported.warnings.length, 3);
  for (const warning of exported.warnings) assert.match(warning, /not copied to the output: .*link to a file outside/);
});

test('config.json, weights and tokenizer.json that link outside the folder are refused', async () => {
  for (const name of ['config.json', 'model.safetensors']) {
    const { dir } = modelFolder();
    const elsewhere = path.join(path.dirname(dir), `elsewhere-${name}`);
    fs.renameSync(path.join(dir, name), elsewhere);
    fs.symlinkSync(elsewhere, path.join(dir, name));
    await rejects(loadModel(dir, { backend: getBackend() }), new RegExp(`${name}: is a link to a file outside`));
  }
  const { dir, secret } = modelFolder();
  fs.rmSync(path.join(dir, 'tokenizer.json'));
  fs.symlinkSync(secret, path.join(dir, 'tokenizer.json'));
  const model = await loadModel(dir, { backend: getBackend() });
  const tokenizer = model.source.tokenizer;
  assert.ok('missing' in tokenizer, 'a linked tokenizer.json must not be used');
  assert.match(tokenizer.missing, /tokenizer\.json: is a link to a file outside/);
  model.source.close();
});

test('a sharded index cannot pull in a shard linked from outside the folder', async () => {
  const { dir } = modelFolder();
  const elsewhere = path.join(path.dirname(dir), 'shard.safetensors');
  fs.renameSync(path.join(dir, 'model.safetensors'), elsewhere);
  fs.symlinkSync(elsewhere, path.join(dir, 'model-00001-of-00001.safetensors'));
  const header = JSON.parse(fs.readFileSync(elsewhere).subarray(8, 8 + Number(fs.readFileSync(elsewhere).readBigUInt64LE(0))).toString()) as object;
  const weightMap = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k) => [k, 'model-00001-of-00001.safetensors']));
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
  await rejects(loadModel(dir, { backend: getBackend() }), /model-00001-of-00001\.safetensors: is a link to a file outside/);
});

test('the Hugging Face cache layout (snapshots linking to ../../blobs) still loads', async () => {
  const repo = path.join(tempDir(), 'models--test--tiny');
  const snapshot = path.join(repo, 'snapshots', 'abc123');
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  for (const [i, file] of ['config.json', 'model.safetensors'].entries()) {
    fs.copyFileSync(path.join(tinyModel, file), path.join(repo, 'blobs', `blob${i}`));
    fs.symlinkSync(`../../blobs/blob${i}`, path.join(snapshot, file));
  }
  const model = await loadModel(snapshot, { backend: getBackend() });
  assert.equal(model.numLayers, 2);
  model.source.close();
});

test('error messages about bad JSON name the file and the problem, not the content', async () => {
  const cases: [string, string][] = [
    ['config.json', `{"hidden_size": ${SECRET}}`],
    ['tokenizer.json', `${SECRET} is not JSON`],
    ['model.safetensors.index.json', `{"weight_map": ${SECRET}`],
  ];
  for (const [name, content] of cases) {
    const { dir } = modelFolder();
    fs.writeFileSync(path.join(dir, name), content);
    try {
      const model = await loadModel(dir, { backend: getBackend() });
      const tokenizer = model.source.tokenizer;
      assert.ok('missing' in tokenizer, name);
      assert.match(tokenizer.missing, /tokenizer\.json: invalid JSON/);
      assert.ok(!tokenizer.missing.includes(SECRET), tokenizer.missing);
      model.source.close();
    } catch (error) {
      assert.ok(error instanceof TopiaryError, String(error));
      assert.match(error.message, new RegExp(`${name.replaceAll('.', '\\.')}: .*invalid JSON`));
      assert.ok(!error.message.includes(SECRET), error.message);
    }
  }
  // A safetensors header that is not JSON.
  const { dir } = modelFolder();
  const header = Buffer.from(`{"a": ${SECRET}}`);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([length, header]));
  await rejects(loadModel(dir, { backend: getBackend() }), /model\.safetensors: not a valid safetensors file: header is invalid JSON/);
});

test('FIFOs as config.json, weights or tokenizer.json are refused at once instead of hanging', async () => {
  for (const name of ['config.json', 'model.safetensors', 'tokenizer.json']) {
    const { dir } = modelFolder();
    fs.rmSync(path.join(dir, name));
    mkfifo(path.join(dir, name));
    // Through the CLI, so that a hang fails the test (by its timeout) instead of stalling it.
    const result = runCli(['inspect', dir], {}, 20_000);
    assert.equal(result.signal, null, `${name}: topiary hung on a FIFO`);
    if (name === 'tokenizer.json') {
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /tokenizer +none \(.*tokenizer\.json: a FIFO; only regular files are read\)/);
    } else {
      assert.equal(result.status, 1);
      assert.match(result.stderr, new RegExp(`^topiary: .*${name}: a FIFO; only regular files are read\\n$`));
    }
  }
  const fifoModel = path.join(tempDir(), 'model.gguf');
  mkfifo(fifoModel);
  const result = runCli(['inspect', fifoModel], {}, 20_000);
  assert.equal(result.signal, null, 'topiary hung on a FIFO model file');
  assert.match(result.stderr, /^topiary: .*model\.gguf: a FIFO; only regular files are read\n$/);
});

test('text files for evaluation and calibration: devices and FIFOs are refused, size is limited', () => {
  const fifo = path.join(tempDir(), 'calib.txt');
  mkfifo(fifo);
  const big = path.join(tempDir(), 'big.txt');
  fs.writeFileSync(big, '');
  fs.truncateSync(big, 300 * 2 ** 20); // sparse: no disk used
  const cases: [string[], RegExp][] = [
    [['eval', '--model', stories260K, '--dataset', 'text:/dev/zero'], /\/dev\/zero: a device; only regular files are read/],
    [['eval', '--model', stories260K, '--dataset', `text:${fifo}`], /calib\.txt: a FIFO; only regular files are read/],
    [['prune', '--model', stories260K, '--method', 'wanda', '--sparsity', '0.5', '--calib', 'text:/dev/zero', '--out', tempDir()], /\/dev\/zero: a device/],
    [['eval', '--model', stories260K, '--dataset', `text:${big}`], /big\.txt: 300\.0 MiB is over the 256 MiB limit/],
  ];
  for (const [args, pattern] of cases) {
    const result = runCli(args, {}, 60_000);
    assert.equal(result.signal, null, `${args.join(' ')}: hung`);
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, pattern);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
  }
});

test('temporary files: a planted link under the old predictable name or at the target is not written through', () => {
  const dir = tempDir();
  const outside = path.join(tempDir(), 'victim.txt');
  fs.writeFileSync(outside, 'original\n');
  const target = path.join(dir, 'config.json');
  fs.symlinkSync(outside, path.join(dir, `.config.json.tmp-${process.pid}`));
  writeFileContentAtomic(target, 'new\n');
  assert.equal(fs.readFileSync(outside, 'utf8'), 'original\n');
  assert.equal(fs.readFileSync(target, 'utf8'), 'new\n');
  // A link at the target itself is replaced, not written through.
  fs.rmSync(target);
  fs.symlinkSync(outside, target);
  writeFileContentAtomic(target, 'newer\n');
  assert.equal(fs.readFileSync(outside, 'utf8'), 'original\n');
  assert.ok(fs.lstatSync(target).isFile());
  // Names are unpredictable and nothing is left behind.
  assert.deepEqual(fs.readdirSync(dir).sort(), [`.config.json.tmp-${process.pid}`, 'config.json']);
});

test('no code in src/ writes through a plain open that follows links (writeFileSync, createWriteStream, "w"/"a" flags): writers use writeFileAtomic', () => {
  const offenders: string[] = [];
  for (const name of fs.readdirSync(path.join(repoRoot, 'src'), { recursive: true, encoding: 'utf8' })) {
    if (!name.endsWith('.ts') || name === path.join('util', 'atomic.ts')) continue;
    const text = fs.readFileSync(path.join(repoRoot, 'src', name), 'utf8');
    if (/writeFileSync|createWriteStream|appendFileSync|openSync\([^)]*'[wa]/.test(text)) offenders.push(name);
  }
  assert.deepEqual(offenders, []);
});
