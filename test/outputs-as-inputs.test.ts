/**
 * Every folder `prune` writes is an input to every command: an unstructured run (Hugging Face
 * folder), a uniform structured run (a smaller Hugging Face folder) and a FLAP run (model.gguf
 * with uneven blocks) each go through inspect, eval, generate, prune, report and compare.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { runCli, stories260K, tempDir, testDataDir } from './helpers.js';

const calib = ['--calib', 'wikitext2', '--nsamples', '4', '--seqlen', '64'];
const text = `text:${path.join(testDataDir, 'wikitext2', 'wiki.valid.raw')}`;

const OUTPUTS: { name: string; args: string[]; file: string; uneven: boolean }[] = [
  { name: 'unstructured wanda 50%', args: ['--method', 'wanda', '--sparsity', '0.5'], file: 'model.safetensors', uneven: false },
  { name: 'structured wanda-sp 20%', args: ['--method', 'wanda-sp', '--ratio', '0.2'], file: 'model.safetensors', uneven: false },
  { name: 'structured flap 30% (GGUF)', args: ['--method', 'flap', '--ratio', '0.3'], file: 'model.gguf', uneven: true },
];

function ok(args: string[]): string {
  const result = runCli(args);
  assert.equal(result.status, 0, `topiary ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

for (const output of OUTPUTS) {
  test(`${output.name}: its output folder goes through inspect, eval, generate, prune, report and compare`, () => {
    const run = tempDir();
    ok(['prune', '--model', stories260K, ...output.args, ...calib, '--out', run]);
    assert.ok(fs.existsSync(path.join(run, output.file)), `${output.file} written`);

    const summary = JSON.parse(ok(['inspect', run, '--json'])) as { layers: number; unevenLayers?: unknown[] };
    assert.equal(summary.unevenLayers !== undefined, output.uneven, 'inspect shows per-layer shapes exactly for uneven models');
    assert.match(ok(['inspect', run]), output.uneven ? /per layer/ : /parameters/);

    const evaluated = JSON.parse(ok(['eval', '--model', run, '--dataset', text, '--seqlen', '64', '--max-windows', '2', '--json', '--out', path.join(run, 'eval-text.json')]));
    assert.ok(Number.isFinite(evaluated.perplexity) && evaluated.perplexity > 1);

    assert.ok(ok(['generate', '--model', run, '--prompt', 'Once upon a time', '--max-new-tokens', '8']).length > 0);

    const again = tempDir();
    ok(['prune', '--model', run, '--method', 'magnitude', '--sparsity', '0.3', ...calib, '--out', again]);
    assert.ok(fs.existsSync(path.join(again, 'topiary.json')));

    const report = path.join(tempDir(), 'report.html');
    ok(['report', run, '--out', report]);
    assert.match(fs.readFileSync(report, 'utf8'), /<html/);
    assert.match(ok(['compare', run]), new RegExp(output.args[1]!));
  });
}
