import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { detectFormat, openTensors } from '../src/formats/open.js';
import { TopiaryError } from '../src/util/errors.js';
import { repoRoot, tempDir, testDataDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'formats');
const stories = path.join(testDataDir, 'models', 'stories260K');

test('formats are recognised by content, not by file name', () => {
  const dir = tempDir();
  const cases: [string, string][] = [
    [path.join(fixtures, 'small.gguf'), 'gguf'],
    [path.join(fixtures, 'python.safetensors'), 'safetensors'],
    [path.join(stories, 'checkpoint_legacy.bin'), 'llama2c'],
    [path.join(stories, 'checkpoint_v1.bin'), 'llama2c'],
  ];
  for (const [source, format] of cases) {
    const renamed = path.join(dir, `weights-${format}-${path.basename(source)}.dat`);
    fs.copyFileSync(source, renamed);
    assert.equal(detectFormat(renamed), format, source);
    const store = openTensors(renamed);
    assert.equal(store.format, format);
    assert.ok(store.list().length > 0);
    store.read(store.list()[0].name);
    store.close();
  }
  fs.rmSync(dir, { recursive: true });
});

test('unknown, empty and missing inputs give a clear TopiaryError', () => {
  const dir = tempDir();
  const check = (target: string, pattern: RegExp) =>
    assert.throws(() => openTensors(target), (error: unknown) => {
      assert.ok(error instanceof TopiaryError, String(error));
      assert.equal(error.file, target);
      assert.match(error.message, pattern);
      return true;
    });
  const text = path.join(dir, 'notes.txt');
  fs.writeFileSync(text, 'these are not weights, just a few words of text\n');
  check(text, /unknown weight format/);
  const empty = path.join(dir, 'empty.bin');
  fs.writeFileSync(empty, '');
  check(empty, /unknown weight format/);
  check(path.join(dir, 'missing.gguf'), /no such file or folder/);
  check(dir, /neither model.safetensors.index.json nor model.safetensors/);
  fs.rmSync(dir, { recursive: true });
});

test('a damaged safetensors file is still recognised, so the error says what is wrong with it', () => {
  const dir = tempDir();
  const file = path.join(dir, 'cut.safetensors');
  fs.writeFileSync(file, fs.readFileSync(path.join(fixtures, 'python.safetensors')).subarray(0, 100));
  assert.equal(detectFormat(file), 'safetensors');
  assert.throws(() => openTensors(file), /cut\.safetensors: not a valid safetensors file: header length \d+ runs past the end of the 100-byte file/);
  fs.rmSync(dir, { recursive: true });
});
