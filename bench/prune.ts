/**
 * Pruning side by side in one run (issue 3, Benchmark): Topiary's Wanda and SparseGPT against the
 * minimal PyTorch implementation in bench/torch_prune.py, on the same model and the SAME
 * calibration windows, at 50% unstructured and 2:4. For each run: wall time and peak memory of the
 * pruning process, and WikiText-2 perplexity of the pruned model measured by `topiary eval` with one
 * protocol for both (the PyTorch output is a Hugging Face folder Topiary loads).
 *
 * Topiary prunes the model file itself; PyTorch gets a dense Hugging Face folder exported from it
 * by Topiary (`prune --method magnitude --sparsity 0`: an exact fp32 copy, which transformers loads
 * even when the original is a llama2.c checkpoint or a quantized GGUF; both are evaluated, and their
 * equal perplexity shows the copy is exact). The windows are drawn once by drawCalibration with the
 * model's tokenizer and handed to PyTorch as token ids; the Topiary child draws them with the same
 * function, tokenizer and settings, hence the same windows.
 *
 *   node --import tsx bench/prune.ts [MODEL] [--nsamples 128] [--seqlen 2048] [--seed 0]
 *        [--eval-seqlen 2048] [--max-windows 8] [--threads N] [--targets 0.5,2:4] [--compare wanda,sparsegpt]
 *        [--all] [--keep] [--work DIR] [--results FILE]
 *
 * MODEL defaults to SmolLM2-135M (scripts/fetch-smollm2.sh). Sequence lengths default to
 * min(2048, the model's context). --threads N gives both sides N threads (default: each its own
 * default, all cores). PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless the caller sets it: with
 * OpenMP's default spin-waiting, torch on cores shared with other jobs ran 30-50× slower (measured
 * on the 2-core machine at load 7-10), which would flatter Topiary. --all adds Topiary-only rows
 * for magnitude, ria and apt. --targets picks the sparsity targets (unstructured fractions and N:M
 * patterns; default 0.5,2:4): the statistics pass, which dominates at 128 × 2048, is the same for
 * every target, so one target already shows each method's cost. --compare picks the methods run on
 * both sides (default wanda,sparsegpt; '' for none, e.g. with --all for Topiary's other methods alone).
 * Writes bench/results/prune.json (or --results FILE).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { drawCalibration } from '../src/data/calibration.js';
import { parseCorpusSpec } from '../src/data/corpora.js';
import { packageRoot, resolveDataDir } from '../src/data/datadir.js';
import { loadModel } from '../src/model/load.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { machineDescription, printTable } from './machine.js';
import { runJson, smolLM2, type ProcessRun } from './measure.js';

const root = packageRoot();
const { values, positionals } = parseArgs({
  options: {
    nsamples: { type: 'string', default: '128' },
    seqlen: { type: 'string' },
    seed: { type: 'string', default: '0' },
    'eval-seqlen': { type: 'string' },
    'max-windows': { type: 'string', default: '8' },
    threads: { type: 'string' },
    targets: { type: 'string', default: '0.5,2:4' },
    compare: { type: 'string', default: 'wanda,sparsegpt' },
    all: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    work: { type: 'string' },
    results: { type: 'string', default: path.join(root, 'bench', 'results', 'prune.json') },
  },
  allowPositionals: true,
});
const modelPath = positionals[0] ?? smolLM2(root);
const nsamples = Number(values.nsamples);
const seed = Number(values.seed);
const maxWindows = Number(values['max-windows']);
const threadFlags = values.threads === undefined ? [] : ['--threads', values.threads];
const torchEnvironment = { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' };
const workDir = values.work ?? fs.mkdtempSync(path.join(os.tmpdir(), 'topiary-bench-prune-'));
fs.mkdirSync(workDir, { recursive: true });

interface Target {
  label: string;
  /** The flags both `topiary prune` and bench/torch_prune.py take. */
  flags: string[];
}
const TARGETS: Target[] = values.targets.split(',').map((target) =>
  target.includes(':') ? { label: target, flags: ['--pattern', target] } : { label: `${Number(target) * 100}% unstructured`, flags: ['--sparsity', target] },
);
const COMPARED_METHODS = values.compare.split(',').filter((method) => method !== '');
const TOPIARY_ONLY_METHODS = ['magnitude', 'ria', 'apt'];
/** A folder name for one run, e.g. wanda-pattern24. */
const runName = (method: string, target: Target) => `${method}-${target.flags.join('').replace(/[^0-9a-z]/gi, '')}`;

const topiary = (...args: string[]) => runJson(process.execPath, ['--import', 'tsx', path.join(root, 'src', 'cli', 'main.ts'), ...args], { cwd: root });

function topiaryPrune(model: string, method: string, flags: string[], out: string, calibrationSeqlen: number, samples = nsamples): ProcessRun {
  const calibration = ['--calib', 'c4', '--nsamples', String(samples), '--seqlen', String(calibrationSeqlen), '--seed', String(seed)];
  return topiary('prune', '--model', model, '--method', method, ...flags, ...calibration, ...threadFlags, '--out', out, '--json');
}

function perplexity(model: string, evalSeqlen: number): number {
  const run = topiary('eval', '--model', model, '--dataset', 'wikitext2', '--seqlen', String(evalSeqlen), '--max-windows', String(maxWindows), ...threadFlags, '--json');
  return run.report.perplexity as number;
}

/** Prunes, evaluates, and (unless --keep) deletes the pruned folder. */
function pruneAndEvaluate(prune: (out: string) => ProcessRun, out: string, evalSeqlen: number) {
  const run = prune(out);
  const ppl = perplexity(out, evalSeqlen);
  if (!values.keep) fs.rmSync(out, { recursive: true, force: true });
  return {
    seconds: run.report.seconds as number,
    wallSeconds: run.wallSeconds,
    peakRssMb: run.report.peak_rss_mb as number,
    sparsity: run.report.sparsity as number,
    perplexity: ppl,
    loadAverage1min: run.loadAverage1min,
    report: run.report,
  };
}

// 1. The dense model, its fp32 Hugging Face copy for PyTorch, and the perplexity of both.
const denseDir = path.join(workDir, 'dense');
topiaryPrune(modelPath, 'magnitude', ['--sparsity', '0'], denseDir, 64, 1);
const original = await loadModel(modelPath);
const context = original.config.maxPositionEmbeddings;
const seqlen = Number(values.seqlen ?? Math.min(2048, context));
const evalSeqlen = Number(values['eval-seqlen'] ?? Math.min(2048, context));
const densePerplexity = perplexity(modelPath, evalSeqlen);
const denseCopyPerplexity = perplexity(denseDir, evalSeqlen);

// 2. The calibration windows, drawn once, for PyTorch.
const calibration = drawCalibration(original.tokenizer, { corpus: parseCorpusSpec('c4'), nsamples, seqlen, seed }, resolveDataDir());
original.source.close();
const windowsFile = path.join(workDir, 'windows.json');
fs.writeFileSync(windowsFile, JSON.stringify({ windows: calibration.windows }));
process.stderr.write(
  `dense WikiText-2 ppl ${densePerplexity.toFixed(3)} (fp32 copy for PyTorch: ${denseCopyPerplexity.toFixed(3)}); ` +
    `${nsamples} × ${seqlen} C4 windows (seed ${seed})\n`,
);

// 3. Side by side, then Topiary alone.
const machine = machineDescription();
type Measured = ReturnType<typeof pruneAndEvaluate>;
const compared: { method: string; target: string; topiary: Measured; pytorch: Measured }[] = [];
const topiaryOnly: { method: string; target: string; topiary: Measured }[] = [];
/** Writes what has been measured so far: a run stopped part-way keeps its finished rows. */
function save(): void {
  const results = {
    benchmark: 'prune',
    model: path.resolve(modelPath),
    calibration: { corpus: 'c4', nsamples, seqlen, seed, notes: calibration.notes },
    threads: values.threads ?? 'each side its default',
    torchOmpWaitPolicy: torchEnvironment.OMP_WAIT_POLICY,
    evaluation: { dataset: 'wikitext2', seqlen: evalSeqlen, maxWindows, densePerplexity, denseCopyPerplexity },
    machine,
    loadAverage1minAtEnd: Number(os.loadavg()[0]!.toFixed(2)),
    compared,
    topiaryOnly,
  };
  fs.mkdirSync(path.dirname(values.results), { recursive: true });
  writeFileAtomic(values.results, (tmp) => fs.writeFileSync(tmp, JSON.stringify(results, null, 2) + '\n'));
}

for (const method of COMPARED_METHODS) {
  for (const target of TARGETS) {
    const name = runName(method, target);
    process.stderr.write(`${method} ${target.label}: topiary…`);
    const ours = pruneAndEvaluate((out) => topiaryPrune(modelPath, method, target.flags, out, seqlen), path.join(workDir, `topiary-${name}`), evalSeqlen);
    process.stderr.write(` ${ours.seconds.toFixed(1)} s; pytorch…`);
    const torchScript = path.join(root, 'bench', 'torch_prune.py');
    const theirs = pruneAndEvaluate(
      (out) => runJson('python3', [torchScript, denseDir, windowsFile, '--method', method, ...target.flags, ...threadFlags, '--out', out], { cwd: root, env: torchEnvironment }),
      path.join(workDir, `torch-${name}`),
      evalSeqlen,
    );
    process.stderr.write(` ${theirs.seconds.toFixed(1)} s\n`);
    compared.push({ method, target: target.label, topiary: ours, pytorch: theirs });
    save();
  }
}
if (values.all) {
  for (const method of TOPIARY_ONLY_METHODS) {
    for (const target of TARGETS) {
      process.stderr.write(`${method} ${target.label}: topiary…`);
      const name = runName(method, target);
      const ours = pruneAndEvaluate((out) => topiaryPrune(modelPath, method, target.flags, out, seqlen), path.join(workDir, `topiary-${name}`), evalSeqlen);
      process.stderr.write(` ${ours.seconds.toFixed(1)} s\n`);
      topiaryOnly.push({ method, target: target.label, topiary: ours });
      save();
    }
  }
}
if (!values.keep && !values.work) fs.rmSync(workDir, { recursive: true, force: true });

// 4. Report.
const pct = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)}%`;
process.stdout.write(
  `\n${path.basename(modelPath)}: calibration ${nsamples} × ${seqlen} C4 windows (seed ${seed}); ` +
    `WikiText-2 perplexity at seqlen ${evalSeqlen} over ${maxWindows} windows; dense ppl ${densePerplexity.toFixed(3)} ` +
    `(its fp32 copy: ${denseCopyPerplexity.toFixed(3)})\n` +
    `time = the pruning process's own total (load, calibration, prune, save); speed-up = PyTorch s / Topiary s; ` +
    `Δppl = (Topiary − PyTorch) / PyTorch\n\n`,
);
printTable(
  ['method', 'target', 'Topiary s', 'PyTorch s', 'speed-up', 'Topiary ppl', 'PyTorch ppl', 'Δppl', 'Topiary MiB', 'PyTorch MiB'],
  [
    ...compared.map((row) => [
      row.method,
      row.target,
      row.topiary.seconds.toFixed(1),
      row.pytorch.seconds.toFixed(1),
      `${(row.pytorch.seconds / row.topiary.seconds).toFixed(2)}×`,
      row.topiary.perplexity.toFixed(3),
      row.pytorch.perplexity.toFixed(3),
      pct(((row.topiary.perplexity - row.pytorch.perplexity) / row.pytorch.perplexity) * 100),
      row.topiary.peakRssMb,
      row.pytorch.peakRssMb,
    ]),
    ...topiaryOnly.map((row) => [row.method, row.target, row.topiary.seconds.toFixed(1), '–', '–', row.topiary.perplexity.toFixed(3), '–', '–', row.topiary.peakRssMb, '–']),
  ],
);
process.stdout.write(`\nload average (1 min) at start ${machine.loadAverage1min as number}, at end ${os.loadavg()[0]!.toFixed(2)} on ${machine.cores as number} cores\n`);

save();
process.stdout.write(`wrote ${values.results}\n`);
