/**
 * topiary.json is read by report, compare and resume: a hostile or foreign record (truncated, an
 * older version, wrong types, absurd values) ends in one line naming the file, never a stack trace.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { repoRoot, runCli, tempDir } from './helpers.js';

const good = fs.readFileSync(path.join(repoRoot, 'test', 'fixtures', 'tasks', 'runs', 'wanda-0.5', 'topiary.json'), 'utf8');
const record = () => JSON.parse(good) as Record<string, any>;

const CASES: [string, string, RegExp][] = [
  ['truncated', good.slice(0, good.length / 2), /topiary\.json: invalid JSON/],
  ['an older version', JSON.stringify({ ...record(), version: undefined }), /version 1 run record; this Topiary reads version 2/],
  ['a string where a number belongs', JSON.stringify({ ...record(), summary: { ...record().summary, sparsity: 'NaN' } }), /field "sparsity" should be a number/],
  ['an absurd layer entry', JSON.stringify({ ...record(), layers: [{ layer: 1e308, seconds: null }] }), /field "seconds" should be a number/],
  ['not an object', '[1, 2, 3]', /topiary\.json/],
  [
    'a layer budget with a non-numeric target',
    JSON.stringify({ ...record(), layers: record().layers.map((layer: object) => ({ ...layer, budget: { profile: 'owl', score: 1, sparsity: 'most', zeros: 3, details: {} } })) }),
    /field "sparsity" should be a number, found "most"/,
  ],
];

for (const [what, content, message] of CASES) {
  test(`report and compare on a run folder whose topiary.json is ${what}: one line, status 1`, () => {
    const run = tempDir();
    fs.writeFileSync(path.join(run, 'topiary.json'), content);
    for (const args of [['compare', run], ['report', run, '--out', path.join(tempDir(), 'report.html')]]) {
      const result = runCli(args);
      assert.equal(result.status, 1, `${args[0]}: ${result.stderr}`);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0]!, message);
      assert.doesNotMatch(result.stderr, /internal error|    at /);
    }
  });
}
