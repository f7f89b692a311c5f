/**
 * Bad input through the real command line: one clear line naming the file and the problem, a
 * non-zero exit, and never a stack trace.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { repoRoot, runCli, stories260K, tempDir } from './helpers.js';

const tinyModel = path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa');

function copyTiny(): string {
  const dir = tempDir();
  for (const file of fs.readdirSync(tinyModel)) fs.copyFileSync(path.join(tinyModel, file), path.join(dir, file));
  return dir;
}

function expectCleanError(args: string[], fileMention: string, problem: RegExp): void {
  const result = runCli(args);
  assert.notEqual(result.status, 0, `expected failure, got success:\n${result.stdout}`);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0]!, /^topiary: /);
  assert.ok(lines[0]!.includes(fileMention), `error should name ${fileMention}: ${lines[0]}`);
  assert.match(lines[0]!, problem);
  assert.doesNotMatch(result.stderr, /internal error|\n\s+at /);
}

test('missing model path', () => {
  expectCleanError(['inspect', '/nonexistent/model.gguf'], '/nonexistent/model.gguf', /no such file/);
});

test('truncated safetensors', () => {
  const dir = copyTiny();
  const file = path.join(dir, 'model.safetensors');
  const size = fs.statSync(file).size;
  fs.truncateSync(file, Math.floor(size / 2));
  expectCleanError(['inspect', dir], 'model.safetensors', /ends at byte \d+ of a \d+-byte data area/);
});

test('safetensors header that lies about its length', () => {
  const dir = copyTiny();
  const file = path.join(dir, 'model.safetensors');
  const bytes = fs.readFileSync(file);
  bytes.writeBigUInt64LE(BigInt(bytes.length * 4), 0);
  fs.writeFileSync(file, bytes);
  expectCleanError(['inspect', dir], 'model.safetensors', /header/i);
});

test('corrupt GGUF', () => {
  const dir = tempDir();
  const file = path.join(dir, 'broken.gguf');
  const header = Buffer.alloc(64);
  header.write('GGUF', 0, 'latin1');
  header.writeUInt32LE(3, 4);
  header.writeBigUInt64LE(1n << 40n, 8); // absurd tensor count
  fs.writeFileSync(file, header);
  expectCleanError(['inspect', file], 'broken.gguf', /tensor|count|file/i);
});

test('config missing a required field', () => {
  const dir = copyTiny();
  const configFile = path.join(dir, 'config.json');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  delete config.hidden_size;
  fs.writeFileSync(configFile, JSON.stringify(config));
  expectCleanError(['inspect', dir], 'config.json', /hidden_size/);
});

test('unsupported model type, named before any field complaint', () => {
  const dir = copyTiny();
  const configFile = path.join(dir, 'config.json');
  fs.writeFileSync(configFile, JSON.stringify({ model_type: 'bloom', n_embed: 64 }));
  expectCleanError(['inspect', dir], 'config.json', /unsupported model type "bloom" \(supported: llama, mistral, qwen2/);
});

test('missing tokenizer when text is needed', () => {
  expectCleanError(['generate', '--model', tinyModel, '--prompt', 'hello'], tinyModel, /tokenizer/);
});

test('llama2.c checkpoint whose size does not match its header', () => {
  const dir = tempDir();
  const file = path.join(dir, 'model.bin');
  fs.writeFileSync(file, fs.readFileSync(stories260K).subarray(0, 5000));
  expectCleanError(['inspect', file], 'model.bin', /implies 1056540 bytes, but the file has 5000/);
});

test('usage errors exit with status 2', () => {
  const result = runCli(['eval', '--model', tinyModel, '--seqlen', 'abc']);
  assert.equal(result.status, 2);
  assert.match(result.stderr, /^topiary: --seqlen must be an integer/);
});

/** Requests that must be refused with one usage line (status 2) before any work starts. */
function expectUsageError(args: string[], problem: RegExp): void {
  const started = Date.now();
  const result = runCli(args);
  assert.equal(result.status, 2, `expected a usage error, got status ${result.status}:\n${result.stdout}${result.stderr}`);
  assert.equal(result.stderr.trim().split('\n').length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(result.stderr, problem);
  assert.ok(Date.now() - started < 20_000, 'refused before any work');
}

test('prune requests refused before any work', () => {
  const prune = ['prune', '--model', stories260K, '--calib', 'wikitext2', '--out', tempDir()];
  expectUsageError([...prune, '--method', 'magnitude', '--sparsity', ''], /--sparsity must be a number in \[0, 1\), got ""/);
  expectUsageError([...prune, '--method', 'magnitude', '--sparsity', ' '], /--sparsity must be a number/);
  expectUsageError([...prune, '--method', 'flap', '--ratio', ''], /--ratio must be a number in \[0, 1\), got ""/);
  expectUsageError([...prune, '--method', 'wanda', '--sparsity', '0.5', '--nsamples', '1000000000'], /--nsamples 1000000000 × --seqlen 512 needs about .* GiB.*use fewer samples/);
  expectUsageError([...prune, '--method', 'wanda', '--sparsity', '0.5', '--layers', 'q,q'], /layer "q" is named twice in --layers/);
  expectUsageError([...prune, '--method', 'ria', '--sparsity', '0.5', '--option', '__proto__=1'], /"__proto__" is not an option name/);
  expectUsageError([...prune, '--method', 'ria', '--sparsity', '0.5', '--option', 'a=1', '--option', 'a=2'], /--option a is given twice/);
  expectUsageError([...prune, '--method', 'magnitude', '--sparsity', '0.5', 'stray'], /unexpected argument "stray"/);
  expectUsageError([...prune, '--method', 'magnitude', '--sparsity', '0.5', '--threads', '100000'], /--threads must be an integer from 1 to \d+, got "100000"/);
  expectUsageError([...prune, '--method', 'magnitude', '--sparsity', '0.5', '--seed', ''], /--seed must be an integer/);
});

test('a negative number where a value is expected is one line', () => {
  expectUsageError(['eval', '--model', tinyModel, '--seqlen', '-5'], /^topiary: Option '--seqlen' argument is ambiguous\. .*--seqlen=-XYZ/);
  expectUsageError(['eval', '--model', tinyModel, '--seqlen=-5'], /--seqlen must be an integer ≥ 2, got "-5"/);
});

test('stray arguments to eval and generate are refused', () => {
  expectUsageError(['eval', '--model', tinyModel, 'wikitext2'], /unexpected argument "wikitext2"/);
  expectUsageError(['generate', '--model', stories260K, '--prompt', 'a', 'b'], /unexpected argument "b"/);
});

test('generate refuses more new tokens than the context holds', () => {
  expectUsageError(['generate', '--model', stories260K, '--prompt', 'Once', '--max-new-tokens', '100000'], /--max-new-tokens 100000 after a \d+-token prompt exceeds the model's context of 512 tokens/);
});

test('a binary calibration or evaluation file is refused, naming it', () => {
  const dir = tempDir();
  const withNul = path.join(dir, 'nul.txt');
  fs.writeFileSync(withNul, Buffer.from('Once upon a time\0there was'));
  const invalidUtf8 = path.join(dir, 'latin1.txt');
  fs.writeFileSync(invalidUtf8, Buffer.from([0x4f, 0x6e, 0x63, 0x65, 0xff, 0xfe, 0x20, 0x61]));
  expectCleanError(['prune', '--model', stories260K, '--method', 'wanda', '--sparsity', '0.5', '--calib', `text:${withNul}`, '--out', path.join(dir, 'out')], 'nul.txt', /not a text file: NUL byte at offset 16/);
  expectCleanError(['eval', '--model', stories260K, '--dataset', `text:${invalidUtf8}`], 'latin1.txt', /not a text file: invalid UTF-8/);
});
