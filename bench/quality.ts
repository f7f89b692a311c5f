/**
 * The quality table of the README: WikiText-2 perplexity of the dense model and of every method
 * at 50% unstructured, 2:4 and 4:8 (N:M with and without channel permutation), each with its
 * wall time, peak memory and, for permutation, the kept score it gained. Runs the real CLI for
 * every cell; results accumulate in bench/results/quality-<label>.json, so an interrupted run
 * continues where it stopped.
 *
 *   node --import tsx bench/quality.ts [--model PATH] [--label smollm2] [--nsamples 128]
 *     [--calib-seqlen 256] [--eval-seqlen 2048] [--eval-windows 16] [--only wanda,ria]
 *     [--targets 0.5,2:4,4:8] [--permute-all] [--profiles uniform,owl,alphapruning] [--refine dsnot]
 *
 * --profiles adds a row per layer-budget profile for each unstructured target (N:M patterns take
 * only uniform); --refine adds, beside every row, the same run refined.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../src/data/datadir.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { machineDescription, printTable } from './machine.js';
import { smolLM2 } from './measure.js';

const root = packageRoot();
const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    label: { type: 'string' },
    nsamples: { type: 'string' },
    'calib-seqlen': { type: 'string' },
    'eval-seqlen': { type: 'string' },
    'eval-windows': { type: 'string' },
    calib: { type: 'string' },
    only: { type: 'string' },
    targets: { type: 'string' },
    /** Permuted runs for every N:M target, not only 2:4. */
    'permute-all': { type: 'boolean' },
    profiles: { type: 'string' },
    refine: { type: 'string' },
  },
});
const model = values.model ?? smolLM2(root);
const label = values.label ?? 'smollm2';
const settings = {
  calib: values.calib ?? 'c4',
  nsamples: Number(values.nsamples ?? 128),
  calibSeqlen: Number(values['calib-seqlen'] ?? 256),
  seed: 0,
  evalSeqlen: Number(values['eval-seqlen'] ?? 2048),
  evalWindows: Number(values['eval-windows'] ?? 16),
};

interface Cell {
  method: string;
  target: string;
  permute: boolean;
  profile?: string;
  refine?: string;
}
const GRID: Cell[] = [];
const profiles = (values.profiles ?? 'uniform').split(',');
const refinements = values.refine ? [undefined, values.refine] : [undefined];
for (const method of ['wanda', 'ria', 'sparsegpt', 'apt', 'magnitude']) {
  for (const target of (values.targets ?? '0.5,2:4,4:8').split(',')) {
    for (const profile of target.includes(':') ? ['uniform'] : profiles) {
      for (const refine of refinements) {
        GRID.push({ method, target, permute: false, ...(profile !== 'uniform' ? { profile } : {}), ...(refine ? { refine } : {}) });
      }
    }
    if ((method === 'wanda' || method === 'ria') && (target === '2:4' || (values['permute-all'] && target.includes(':')))) {
      GRID.push({ method, target, permute: true });
    }
  }
}
const only = values.only?.split(',');
const cells = GRID.filter((cell) => !only || only.includes(cell.method));

interface Row extends Cell {
  sparsity?: number;
  pruneSeconds?: number;
  peakRssMb?: number;
  perplexity: number;
  evalSeconds: number;
  keptScoreGainPercent?: number;
}

const resultsFile = path.join(root, 'bench', 'results', `quality-${label}.json`);
const key = (cell: Cell) => `${cell.method} ${cell.target}${cell.permute ? ' permuted' : ''}${cell.profile ? ` ${cell.profile}` : ''}${cell.refine ? ` +${cell.refine}` : ''}`;
const previous = fs.existsSync(resultsFile) ? (JSON.parse(fs.readFileSync(resultsFile, 'utf8')) as { settings: typeof settings; model: string; rows: Row[] }) : undefined;
// Rows made with the same settings are kept; the dense row only needs the same evaluation.
const sameModel = previous?.model === model;
const sameEvaluation = sameModel && previous.settings.evalSeqlen === settings.evalSeqlen && previous.settings.evalWindows === settings.evalWindows;
const sameSettings = sameModel && JSON.stringify(previous.settings) === JSON.stringify(settings);
const rows: Row[] = (previous?.rows ?? []).filter((row) => sameSettings || (sameEvaluation && row.method === 'dense'));

function cli(args: string[]): Record<string, unknown> {
  const result = spawnSync(process.execPath, [path.join(root, 'bin', 'topiary.js'), ...args, '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (result.status !== 0) throw new Error(`topiary ${args.join(' ')} failed (status ${result.status})`);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

function evaluate(modelPath: string): { perplexity: number; seconds: number } {
  const result = cli(['eval', '--model', modelPath, '--dataset', 'wikitext2', '--seqlen', String(settings.evalSeqlen), '--max-windows', String(settings.evalWindows)]);
  return { perplexity: result.perplexity as number, seconds: result.seconds as number };
}

function save(): void {
  fs.mkdirSync(path.dirname(resultsFile), { recursive: true });
  const report = { benchmark: 'quality', model, label, settings, machine: machineDescription(), rows };
  writeFileAtomic(resultsFile, (tmp) => fs.writeFileSync(tmp, JSON.stringify(report, null, 2) + '\n'));
}

if (!rows.some((row) => row.method === 'dense')) {
  const dense = evaluate(model);
  rows.push({ method: 'dense', target: '-', permute: false, perplexity: dense.perplexity, evalSeconds: dense.seconds });
  save();
}
for (const cell of cells) {
  if (rows.some((row) => key(row) === key(cell))) continue;
  process.stderr.write(`== ${key(cell)}\n`);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'topiary-quality-'));
  try {
    const pruned = cli([
      'prune', '--model', model, '--method', cell.method,
      ...(cell.target.includes(':') ? ['--pattern', cell.target] : ['--sparsity', cell.target]),
      ...(cell.permute ? ['--permute'] : []),
      ...(cell.profile ? ['--sparsity-profile', cell.profile] : []),
      ...(cell.refine ? ['--refine', cell.refine] : []),
      '--calib', settings.calib, '--nsamples', String(settings.nsamples), '--seqlen', String(settings.calibSeqlen),
      '--seed', String(settings.seed), '--out', out,
    ]);
    const record = JSON.parse(fs.readFileSync(path.join(out, 'topiary.json'), 'utf8')) as { layers: { matrices: { method: Record<string, number> }[] }[] };
    let before = 0;
    let after = 0;
    for (const layer of record.layers) {
      for (const matrix of layer.matrices) {
        before += matrix.method.permuteKeptScoreBefore ?? 0;
        after += matrix.method.permuteKeptScoreAfter ?? 0;
      }
    }
    const evaluation = evaluate(out);
    rows.push({
      ...cell,
      sparsity: pruned.sparsity as number,
      pruneSeconds: pruned.seconds as number,
      peakRssMb: pruned.peak_rss_mb as number,
      perplexity: evaluation.perplexity,
      evalSeconds: evaluation.seconds,
      ...(cell.permute ? { keptScoreGainPercent: (100 * (after - before)) / before } : {}),
    });
    save();
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}
printTable(
  ['method', 'target', 'permute', 'profile', 'refine', 'sparsity', `ppl (wikitext2, ${settings.evalSeqlen}×${settings.evalWindows})`, 'prune s', 'peak MiB', 'kept-score gain'],
  rows.map((row) => [
    row.method, row.target, row.permute ? 'yes' : '', row.profile ?? '', row.refine ?? '', row.sparsity === undefined ? '' : `${(row.sparsity * 100).toFixed(1)}%`,
    row.perplexity.toFixed(2), row.pruneSeconds?.toFixed(0) ?? '', row.peakRssMb ?? '', row.keptScoreGainPercent === undefined ? '' : `+${row.keptScoreGainPercent.toFixed(2)}%`,
  ]),
);
process.stdout.write(`settings: ${JSON.stringify(settings)}; results in ${path.relative(process.cwd(), resultsFile)}\n`);
