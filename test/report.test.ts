/**
 * Run folders, the comparison table and the HTML report. The fixtures are real: stories260K pruned
 * by three methods at three sparsities and 2:4, with perplexity and zero-shot results
 * (scripts/make_report_fixtures.sh). The HTML is rendered in headless Chromium: the charts must be
 * in the DOM after scripts ran, with no console errors, and a screenshot must be taken.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compareRuns, formatComparison } from '../src/report/compare.js';
import { buildReportHtml } from '../src/report/html.js';
import { readRun, readRuns } from '../src/report/runs.js';
import { TopiaryError } from '../src/util/errors.js';
import { repoRoot, runCli, tempDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'tasks', 'runs');
const runDirs = fs.readdirSync(fixtures).sort().map((name) => path.join(fixtures, name));
const prunedDirs = runDirs.filter((dir) => path.basename(dir) !== 'dense');
const chromium = '/usr/bin/chromium';

function readJson(file: string): any {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

test('run folders: the folder without topiary.json is the baseline and comes first; labels from the method and target', () => {
  const runs = readRuns([...prunedDirs.slice(0, 3), path.join(fixtures, 'dense'), ...prunedDirs.slice(3)]);
  assert.equal(runs.length, runDirs.length);
  assert.equal(runs[0]!.label, 'dense');
  assert.ok(runs[0]!.baseline && !runs[0]!.prune);
  assert.equal(runs.filter((run) => run.baseline).length, 1);
  const wanda = runs.find((run) => run.dir.endsWith('wanda-0.5'))!;
  assert.equal(wanda.label, 'wanda 50.0% unstructured');
  assert.equal(wanda.prune!.layers.length, 5);
  assert.deepEqual(wanda.prune!.layers[0]!.matrices.map((m) => m.role), ['q', 'k', 'v', 'o', 'gate', 'up', 'down']);
  // --baseline puts that folder first even when given after the others.
  const explicit = readRuns(prunedDirs.slice(0, 2), path.join(fixtures, 'dense'));
  assert.deepEqual(explicit.map((run) => run.baseline), [true, false, false]);
  // Two runs with the same label get their folder names.
  const twice = readRuns([prunedDirs[0]!, prunedDirs[0]!]);
  assert.ok(twice.every((run) => run.label.endsWith(`(${path.basename(prunedDirs[0]!)})`)));
});

test('the comparison holds the numbers of the eval files, with deltas against the baseline', () => {
  const runs = readRuns(runDirs);
  const comparison = compareRuns(runs);
  assert.deepEqual(comparison.columns.map((c) => c.key), ['sparsity', 'ppl:wikitext2', 'task:boolq', 'task:piqa', 'task:hellaswag', 'task:arc_easy', 'mean']);
  for (const row of comparison.rows) {
    const dir = row.run.dir;
    assert.equal(row.cells[1]!.value, readJson(path.join(dir, 'eval-wikitext2.json')).perplexity);
    const tasks = readJson(path.join(dir, 'eval-tasks.json')).tasks as { task: string; metrics: { acc: { value: number }; acc_norm?: { value: number } } }[];
    const piqa = tasks.find((t) => t.task === 'piqa')!;
    assert.equal(row.cells[3]!.value, piqa.metrics.acc.value);
    assert.equal(row.cells[3]!.norm, piqa.metrics.acc_norm!.value);
    assert.equal(row.cells[2]!.norm, undefined, 'BoolQ has no acc_norm in the harness');
    const mean = tasks.reduce((s, t) => s + t.metrics.acc.value, 0) / tasks.length;
    assert.ok(Math.abs(row.cells[6]!.value! - mean) < 1e-12);
    if (row.run.prune) assert.equal(row.cells[0]!.value, readJson(path.join(dir, 'topiary.json')).summary.sparsity);
  }
  const text = formatComparison(comparison);
  const lines = text.split('\n');
  assert.equal(lines.length, 2 + runs.length);
  assert.match(lines[2]!, /^dense \(baseline\)\s+0\.0\s+\d+\.\d\d\s/);
  const base = comparison.rows[0]!.cells[1]!.value!;
  const magnitude50 = comparison.rows.find((row) => row.run.dir.endsWith('magnitude-0.5'))!;
  const delta = magnitude50.cells[1]!.value! - base;
  assert.ok(text.includes(`(${delta > 0 ? '+' : '−'}${Math.abs(delta).toFixed(2)})`), text);
});

test('malformed run folders give clear errors naming the file', () => {
  const dir = tempDir('topiary-run-');
  assert.throws(() => readRun(path.join(dir, 'missing')), /run folder not found/);
  assert.throws(() => readRun(dir), /holds neither topiary.json nor eval\*\.json/);
  fs.writeFileSync(path.join(dir, 'eval-x.json'), '{"hello": 1}');
  assert.throws(() => readRun(dir), (e: unknown) => e instanceof TopiaryError && /eval-x\.json: not a topiary eval result/.test(e.message));
  fs.writeFileSync(path.join(dir, 'eval-x.json'), '{"kind": "zero-shot", "tasks": [{"task": "piqa"}]}');
  assert.throws(() => readRun(dir), /eval-x\.json: a zero-shot task result lacks task, n or metrics/);
  fs.rmSync(path.join(dir, 'eval-x.json'));
  const record = readJson(path.join(prunedDirs[0]!, 'topiary.json'));
  record.layers[1].matrices[2].sparsity = 'half';
  fs.writeFileSync(path.join(dir, 'topiary.json'), JSON.stringify(record));
  assert.throws(() => readRun(dir), /topiary\.json: field "sparsity" should be a number, found "half"/);
  fs.writeFileSync(path.join(dir, 'topiary.json'), '{"command": "eval"}');
  assert.throws(() => readRun(dir), /topiary\.json: is not a topiary prune record/);
});

test('the HTML is one self-contained file with every chart', () => {
  const html = buildReportHtml(readRuns(runDirs), new Date('2026-01-01T00:00:00Z'));
  assert.doesNotMatch(html, /<link|@import|\b(src|href)\s*=\s*["']?(https?:)?\/\//i, 'nothing is fetched from elsewhere');
  assert.equal((html.match(/<svg class="chart heatmap"/g) ?? []).length, 2 * prunedDirs.length);
  assert.equal((html.match(/<rect class="cell"/g) ?? []).length, 2 * prunedDirs.length * 5 * 7);
  assert.equal((html.match(/<svg class="chart line-chart"/g) ?? []).length, 2, 'perplexity and mean accuracy against sparsity');
  assert.equal((html.match(/<svg class="chart bars"/g) ?? []).length, prunedDirs.length);
  assert.match(html, /wanda 2:4/);
});

function runChromium(args: string[], profile: string): { stdout: string; stderr: string; status: number | null } {
  const result = spawnSync(
    chromium,
    [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', `--user-data-dir=${profile}`, '--enable-logging=stderr', '--v=0', ...args,
    ],
    { encoding: 'utf8', timeout: 90_000 },
  );
  return { stdout: result.stdout, stderr: result.stderr, status: result.status };
}

/** Lines where the page's scripts failed or logged an error. */
function consoleErrors(stderr: string): string[] {
  return stderr.split('\n').filter((line) => /CONSOLE/.test(line) && /Uncaught|Error/.test(line));
}

test('the report renders in headless Chromium: charts in the DOM, the toggle script works, no console errors', { skip: fs.existsSync(chromium) ? false : `${chromium} is not installed` }, () => {
  const dir = tempDir('topiary-report-');
  const file = path.join(dir, 'report.html');
  const cli = runCli(['report', ...runDirs, '--out', file]);
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, /wrote .*report\.html \(13 runs/);

  // The page as delivered, plus a click on the acc_norm toggle, so the script's effect shows in the DOM.
  const clicked = path.join(dir, 'clicked.html');
  fs.writeFileSync(
    clicked,
    fs.readFileSync(file, 'utf8').replace('</body>', `<script>var box = document.getElementById('show-norm'); box.checked = true; box.dispatchEvent(new Event('change'));</script></body>`),
  );
  const dom = runChromium(['--dump-dom', `file://${clicked}`], path.join(dir, 'profile-dom'));
  assert.equal(dom.status, 0, dom.stderr);
  assert.deepEqual(consoleErrors(dom.stderr), []);
  const svgs = dom.stdout.match(/<svg class="chart[^"]*"/g) ?? [];
  assert.equal(svgs.length, 2 * prunedDirs.length + 2 + prunedDirs.length);
  const paths = [...dom.stdout.matchAll(/<path class="series" d="([^"]*)"/g)].map((m) => m[1]!);
  assert.ok(paths.length >= 6 && paths.every((d) => /^M[\d.]+,[\d.]+( L[\d.]+,[\d.]+)*$/.test(d)), 'every series path has points');
  assert.equal((dom.stdout.match(/<rect class="cell"/g) ?? []).length, 2 * prunedDirs.length * 35);
  // After the click, PIQA cells show their acc_norm.
  const piqaCell = /<td data-acc="([\d.]+)" data-norm="([\d.]+)"[^>]*><span class="value">([\d.]+)<\/span>/.exec(dom.stdout);
  assert.ok(piqaCell, 'a cell with acc and acc_norm');
  assert.equal(piqaCell[3], piqaCell[2]);

  const shot = path.join(dir, 'report.png');
  const screenshot = runChromium([`--screenshot=${shot}`, '--window-size=1400,1800', `file://${file}`], path.join(dir, 'profile-shot'));
  assert.equal(screenshot.status, 0, screenshot.stderr);
  assert.deepEqual(consoleErrors(screenshot.stderr), []);
  const png = fs.readFileSync(shot);
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [1400, 1800]);
  assert.ok(png.length > 50_000, `a screenshot with content, not a blank page (${png.length} bytes)`);
});

test('the console-error check catches a failing script (so the check above can fail)', { skip: fs.existsSync(chromium) ? false : `${chromium} is not installed` }, () => {
  const dir = tempDir('topiary-report-');
  const file = path.join(dir, 'broken.html');
  fs.writeFileSync(file, '<!doctype html><html><body><script>undefinedFunction();</script></body></html>');
  const result = runChromium(['--dump-dom', `file://${file}`], path.join(dir, 'profile'));
  assert.equal(consoleErrors(result.stderr).length, 1);
});

test('topiary compare prints the table; report needs --out', () => {
  const compare = runCli(['compare', ...runDirs.slice(0, 3)]);
  assert.equal(compare.status, 0, compare.stderr);
  assert.match(compare.stdout, /^run\s+sparsity%\s+wikitext2 ppl\s+boolq acc%/);
  assert.match(compare.stdout, /\ndense \(baseline\)/);
  const json = runCli(['compare', '--json', ...runDirs.slice(0, 2)]);
  assert.equal(json.status, 0, json.stderr);
  assert.equal(JSON.parse(json.stdout).rows.length, 2);
  const missing = runCli(['report', runDirs[0]!]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /--out is required/);
  const bad = runCli(['compare', '/nonexistent/run']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /\/nonexistent\/run: run folder not found/);
});
