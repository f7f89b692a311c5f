/**
 * Topiary as an installed package: `npm pack`, install the tarball into a fresh project, run the
 * README's library example there, and type-check a use of the shipped .d.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { getBackend } from '../src/backend/index.js';
import { datasetPerplexity } from '../src/eval/perplexity.js';
import { loadModel } from '../src/model/load.js';
import { repoRoot, tempDir, testDataDir } from './helpers.js';

function run(command: string, args: string[], options: SpawnSyncOptions): string {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...options });
  assert.equal(result.status, 0, `${command} ${args.join(' ')} failed:\n${String(result.stderr)}\n${String(result.stdout)}`);
  return String(result.stdout);
}

/** The code block between the README's library-example markers. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const match = /<!-- library-example -->\s*```js\n([\s\S]*?)```\s*<!-- \/library-example -->/.exec(readme);
  assert.ok(match, 'README has a library example between <!-- library-example --> markers');
  return match[1]!;
}

test('the npm pack tarball installs into a fresh project, runs the README example and type-checks', async () => {
  const packDir = tempDir('topiary-pack-');
  const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', packDir], { cwd: repoRoot })) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]!.files.map((file) => file.path);
  for (const expected of ['dist/src/index.js', 'dist/src/index.d.ts', 'bin/topiary.js', 'native/build/Release/topiary_native.node', 'native/topiary_native.c']) {
    assert.ok(files.includes(expected), `the tarball holds ${expected}`);
  }
  assert.ok(!files.some((file) => file.startsWith('dist/test/') || file.startsWith('test/')), 'tests are not shipped');

  const project = tempDir('topiary-user-');
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user', private: true, type: 'module' }));
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(packDir, packed[0]!.filename)], { cwd: project });

  fs.writeFileSync(path.join(project, 'example.mjs'), readmeExample());
  const output = run(process.execPath, ['example.mjs'], { cwd: project, env: { ...process.env, TOPIARY_DATA_DIR: testDataDir } });
  const sparsity = Number(/^sparsity (\S+)$/m.exec(output)?.[1]);
  const printed = /^perplexity (\S+)$/m.exec(output)?.[1];
  assert.equal(sparsity, 0.5, output);
  // The installed package computes what this checkout does on the same output folder.
  const model = await loadModel(path.join(project, 'stories260K-2of4'), { backend: getBackend() });
  const expected = await datasetPerplexity(model, { dataset: 'wikitext2', seqlen: 256, maxWindows: 4, dataDir: testDataDir });
  model.source.close();
  assert.equal(printed, expected.perplexity.toFixed(3));

  // The shipped declarations type-check a caller (a wrong field is an error, so the types are real).
  const typed = "import { prune, type PruneRequest } from 'topiary';\nconst request: PruneRequest = { model: 'm', method: 'wanda', target: { kind: 'unstructured', sparsity: 0.5 }, out: 'o' };\nexport const run = () => prune(request);\n";
  const tsc = path.join(repoRoot, 'node_modules', '.bin', 'tsc');
  const tscArgs = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', '--typeRoots', path.join(repoRoot, 'node_modules', '@types'), '--skipLibCheck', 'check.ts'];
  fs.writeFileSync(path.join(project, 'check.ts'), typed);
  run(tsc, tscArgs, { cwd: project });
  fs.writeFileSync(path.join(project, 'check.ts'), typed.replace("sparsity: 0.5", "sparsity: '0.5'"));
  const wrong = spawnSync(tsc, tscArgs, { cwd: project, encoding: 'utf8' });
  assert.notEqual(wrong.status, 0, 'a wrongly typed request is refused by the shipped types');
});
