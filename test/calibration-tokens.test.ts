/**
 * Reproducible calibration: --save-calibration writes the windows a run used, --calib tokens:FILE
 * reads them back (JSON or NumPy .npy), a pruning run on them equals the original bit for bit, and
 * hostile files are refused in one line. Also: magnitude needs no calibration data at all.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { readTokenWindows, writeTokenWindows } from '../src/data/token-windows.js';
import { parseRunRecord } from '../src/prune/record.js';
import { pruneModel, type PruneSettings } from '../src/prune/run.js';
import { assertTopiaryError, runCli, stories260K, tempDir, testDataDir } from './helpers.js';

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const WINDOWS = [
  [1, 2, 3, 4],
  [5, 6, 7, 511],
];

function python(code: string): string {
  const result = spawnSync('python3', ['-c', code], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
}

test('token windows: JSON and .npy round trips give the same ids and the same bytes; plain lists of lists are read', () => {
  const dir = tempDir();
  const provenance = { tokenizer: { source: 'tokenizer.bin', vocabSize: 512 }, corpus: 'c4', seed: 3 };
  const json = path.join(dir, 'windows.json');
  writeTokenWindows(json, WINDOWS, provenance);
  const read = readTokenWindows(json, 512);
  assert.deepEqual(read.windows, WINDOWS);
  assert.deepEqual(read.provenance, provenance);
  const again = path.join(dir, 'again.json');
  writeTokenWindows(again, read.windows, read.provenance);
  assert.deepEqual(fs.readFileSync(again), fs.readFileSync(json));

  const npy = path.join(dir, 'windows.npy');
  writeTokenWindows(npy, WINDOWS, provenance);
  const fromNpy = readTokenWindows(npy, 512);
  assert.deepEqual(fromNpy.windows, WINDOWS);
  assert.equal(fromNpy.sha256, read.sha256, 'the digest depends on the ids, not the format');
  // NumPy reads what Topiary writes.
  assert.equal(python(`import numpy as np; a = np.load(${JSON.stringify(npy)}); print(a.dtype, a.shape, a.tolist())`).trim(), `int32 (2, 4) ${JSON.stringify(WINDOWS).replaceAll(',', ', ')}`);

  const plain = path.join(dir, 'plain.json');
  fs.writeFileSync(plain, JSON.stringify(WINDOWS));
  assert.deepEqual(readTokenWindows(plain, 512).windows, WINDOWS);
});

test('token windows: .npy files written by NumPy (int32, int64, format 1 and 2) are read', () => {
  const dir = tempDir();
  python(`
import numpy as np
a = np.array(${JSON.stringify(WINDOWS)})
np.save(${JSON.stringify(path.join(dir, 'i64.npy'))}, a.astype(np.int64))
np.save(${JSON.stringify(path.join(dir, 'i32.npy'))}, a.astype(np.int32))
with open(${JSON.stringify(path.join(dir, 'v2.npy'))}, 'wb') as f:
    np.lib.format.write_array(f, a.astype(np.int64), version=(2, 0))
`);
  for (const name of ['i64.npy', 'i32.npy', 'v2.npy']) assert.deepEqual(readTokenWindows(path.join(dir, name), 512).windows, WINDOWS, name);
});

test('token windows: hostile or wrong files are refused in one line naming the file', () => {
  const dir = tempDir();
  const good = path.join(dir, 'good.npy');
  writeTokenWindows(good, WINDOWS, {});
  const bytes = fs.readFileSync(good);
  const headerEnd = 10 + bytes.readUInt16LE(8);
  const header = bytes.subarray(10, headerEnd).toString('latin1');
  const variant = (name: string, content: Uint8Array | string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    return file;
  };
  const withHeader = (text: string) => {
    const padded = text.padEnd(header.length - 1, ' ') + '\n';
    return Buffer.concat([bytes.subarray(0, 10), Buffer.from(padded, 'latin1'), bytes.subarray(headerEnd)]);
  };
  const cases: [string, Uint8Array | string, RegExp][] = [
    ['magic.npy', Buffer.from('NUMPY not really'), /not a NumPy \.npy file/],
    ['truncated.npy', bytes.subarray(0, 20), /the \.npy header claims \d+ bytes/],
    ['header.npy', withHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 4), 'extra': 1, }"), /malformed \.npy header/],
    ['garbage.npy', withHeader("__import__('os').system('x')"), /malformed \.npy header/],
    ['bigshape.npy', withHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (1000000000, 1000000000), }"), /shape \(1000000000, 1000000000\) of 4-byte ids needs .* the file has 32/],
    ['shortshape.npy', withHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }"), /needs 24 bytes of data; the file has 32/],
    ['float.npy', withHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }"), /dtype '<f4' \(calibration windows are int32/],
    ['fortran.npy', withHeader("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 4), }"), /Fortran-ordered/],
    ['flat.npy', withHeader("{'descr': '<i4', 'fortran_order': False, 'shape': (8,), }"), /2-D array/],
    ['version.npy', Buffer.concat([bytes.subarray(0, 6), Buffer.from([9, 0]), bytes.subarray(8)]), /format version 9\.0/],
    ['vocab.json', JSON.stringify([[1, 2], [3, 512]]), /window 1, token 1: 512 is not a token id of this model \(0 to 511\)/],
    ['negative.json', JSON.stringify([[1, -2]]), /-2 is not a token id/],
    ['fraction.json', JSON.stringify([[1, 2.5]]), /2\.5 is not a token id/],
    ['ragged.json', JSON.stringify([[1, 2, 3], [4, 5]]), /window 1 has 2 tokens, window 0 has 3/],
    ['empty.json', '[]', /holds no calibration window/],
    ['object.json', JSON.stringify({ windows: [[1, 2]] }), /"format" is not "topiary-calibration-windows"/],
    ['text.json', '{"format": "topiary-calib', /invalid JSON/],
  ];
  for (const [name, content, pattern] of cases) assertTopiaryError(() => readTokenWindows(variant(name, content), 512), path.join(dir, name), pattern);
});

const calibText = () => `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`;

function settings(out: string, calibration: PruneSettings['calibration']): PruneSettings {
  return { model: stories260K, method: 'sparsegpt', target: { kind: 'unstructured', sparsity: 0.5 }, methodOptions: {}, calibration, out, resume: false };
}

test('prune: --save-calibration then --calib tokens:FILE prunes bit for bit alike and saves the same bytes again', async () => {
  const dir = tempDir();
  const saved = path.join(dir, 'windows.json');
  const first = path.join(dir, 'first');
  await pruneModel(settings(first, { corpus: calibText(), nsamples: 4, seqlen: 64, seed: 5, save: saved }));
  const resaved = path.join(dir, 'resaved.json');
  const second = path.join(dir, 'second');
  await pruneModel(settings(second, { corpus: `tokens:${saved}`, seed: 0, save: resaved }));
  assert.equal(sha256(resaved), sha256(saved));
  assert.equal(sha256(path.join(second, 'model.safetensors')), sha256(path.join(first, 'model.safetensors')));
  const record = parseRunRecord(JSON.parse(fs.readFileSync(path.join(second, 'topiary.json'), 'utf8')), 'topiary.json');
  const calibration = record.settings.calibration as { corpus: string; nsamples: number; seqlen: number; sha256: string };
  assert.equal(calibration.corpus, `tokens:${saved}`);
  assert.deepEqual([calibration.nsamples, calibration.seqlen], [4, 64]);
  assert.equal(calibration.sha256, readTokenWindows(saved, 512).sha256);
  assert.deepEqual((record.calibration as { savedFrom: unknown }).savedFrom, { tokenizer: { source: 'tokenizer.bin', vocabSize: 512 }, corpus: calibText(), seed: 5 });

  // The same windows as .npy (what another tool would be handed) give the same model too.
  const npy = path.join(dir, 'windows.npy');
  writeTokenWindows(npy, readTokenWindows(saved, 512).windows, {});
  const third = path.join(dir, 'third');
  await pruneModel(settings(third, { corpus: `tokens:${npy}`, seed: 0 }));
  assert.equal(sha256(path.join(third, 'model.safetensors')), sha256(path.join(first, 'model.safetensors')));
  await assert.rejects(pruneModel(settings(path.join(dir, 'fourth'), { corpus: `tokens:${npy}`, nsamples: 8, seed: 0 })), /--nsamples 8 contradicts .*windows\.npy, which holds 4 windows/);
});

test('magnitude runs with an empty data folder and no --calib: no calibration, errors recorded as not measured; report and compare cope', () => {
  const dir = tempDir();
  const empty = path.join(dir, 'empty-data');
  fs.mkdirSync(empty);
  const out = path.join(dir, 'out');
  const result = runCli(['prune', '--model', stories260K, '--method', 'magnitude', '--sparsity', '0.5', '--out', out, '--json'], { TOPIARY_DATA_DIR: empty });
  assert.equal(result.status, 0, result.stderr);
  const record = parseRunRecord(JSON.parse(fs.readFileSync(path.join(out, 'topiary.json'), 'utf8')), 'topiary.json');
  assert.deepEqual(record.settings.calibration, { used: false });
  assert.equal(record.calibration.windows, 0);
  for (const layer of record.layers) {
    assert.equal(layer.forwardSeconds < 0.05, true, 'no forward pass');
    for (const matrix of layer.matrices) assert.equal(matrix.relativeError, null);
  }
  assert.equal(record.summary.sparsity, 0.5);
  const saving = runCli(['prune', '--model', stories260K, '--method', 'magnitude', '--sparsity', '0.5', '--out', path.join(dir, 'x'), '--save-calibration', path.join(dir, 'w.json')], { TOPIARY_DATA_DIR: empty });
  assert.equal(saving.status, 2);
  assert.match(saving.stderr, /--save-calibration: magnitude uses no calibration windows/);
  const compared = runCli(['compare', out]);
  assert.equal(compared.status, 0, compared.stderr);
  const report = path.join(dir, 'report.html');
  const reported = runCli(['report', out, '--out', report]);
  assert.equal(reported.status, 0, reported.stderr);
  assert.match(fs.readFileSync(report, 'utf8'), /Relative output error not measured: magnitude decides from the weights alone/);

  // Structured magnitude (magnitude-sp) is data-free too.
  const structured = path.join(dir, 'structured');
  const sp = runCli(['prune', '--model', stories260K, '--method', 'magnitude-sp', '--ratio', '0.2', '--out', structured, '--json'], { TOPIARY_DATA_DIR: empty });
  assert.equal(sp.status, 0, sp.stderr);
  const spRecord = parseRunRecord(JSON.parse(fs.readFileSync(path.join(structured, 'topiary.json'), 'utf8')), 'topiary.json');
  assert.deepEqual(spRecord.settings.calibration, { used: false });
  assert.ok(spRecord.summary.sparsity > 0.15, `removed ${spRecord.summary.sparsity}`);
  for (const layer of spRecord.layers) for (const matrix of layer.matrices) assert.equal(matrix.relativeError, null);
});
