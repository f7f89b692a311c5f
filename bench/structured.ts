/**
 * Structured pruning of SmolLM2-135M, the README table: for the dense model and every method ×
 * ratio, WikiText-2 test perplexity at seqlen 128 (FLAP's protocol) and 2048, prune wall time and
 * peak memory, file size, and prefill / decode tokens/s in Topiary and in llama.cpp with their
 * speed-up over the dense model, all in one run.
 *
 * Every prune and every perplexity is the real CLI in its own process (`node bin/topiary.js ...
 * --json`, so `npm run build` first), which makes prune time and peak memory per method. For speed,
 * each model is timed as an F32 GGUF that both engines load (bench/engines.ts): a GGUF the CLI
 * wrote (uneven layers, added biases) as it is, a Hugging Face folder after exporting it with
 * Topiary's GGUF writer; the dense model both as its source file (Q4_1: llama.cpp computes in
 * Q4_1, Topiary dequantizes it when loading) and as F32 GGUF, the baseline of the speed-ups.
 *
 * Results accumulate in bench/results/structured.json (--results) keyed by method and ratio; rows
 * made with other settings are dropped (the dense row only needs the same evaluation and speed
 * settings), so an interrupted run continues where it stopped. Progress on stderr, table on stdout.
 *
 *   node --import tsx bench/structured.ts [--model PATH] [--methods magnitude-sp,wanda-sp,flap,comp]
 *     [--ratios 0.2,0.3,0.5] [--calib wikitext2] [--nsamples 128] [--seqlen 128] [--seed 0]
 *     [--eval-windows-128 256] [--eval-windows-2048 8] [--prompt 512] [--decode 64] [--threads 1]
 *     [--runs 2] [--results bench/results/structured.json] [--models DIR] [--speed-only]
 *
 * --eval-windows-2048 0 skips the 2048-token perplexity (for models with a shorter context).
 * --models DIR keeps the F32 GGUF each row was timed on (DIR/dense.gguf, DIR/flap-0.2.gguf, …);
 * --speed-only then times every row again, both engines, from those files (re-pruning a row whose
 * file is missing: pruning is seeded, so it is the same model): speed measured on a quiet machine
 * without redoing the perplexities.
 * --threads applies to every process (prune, eval, both engines' timing), so the benchmark can share
 * the machine with another single-threaded one without oversubscribing its cores.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { packageRoot, resolveDataDir } from '../src/data/datadir.js';
import { exportGguf } from '../src/export/gguf-writer.js';
import { loadModel } from '../src/model/load.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { measureSpeed, openLlamaCpp, secondsSince, speedupOver, wikitextPrompt, type EngineSpeed, type SpeedMeasurement } from './engines.js';
import { machineDescription, printTable } from './machine.js';
import { smolLM2 } from './measure.js';
import { structuredTable, type PerplexityCell, type SpeedEntry, type StructuredReport, type StructuredRow, type StructuredSettings } from './structured-report.js';

const METHODS = ['magnitude-sp', 'wanda-sp', 'flap', 'comp'];
const root = packageRoot();
const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    methods: { type: 'string', default: METHODS.join(',') },
    ratios: { type: 'string', default: '0.2,0.3,0.5' },
    calib: { type: 'string', default: 'wikitext2' },
    nsamples: { type: 'string', default: '128' },
    seqlen: { type: 'string', default: '128' },
    seed: { type: 'string', default: '0' },
    'eval-windows-128': { type: 'string', default: '256' },
    'eval-windows-2048': { type: 'string', default: '8' },
    prompt: { type: 'string', default: '512' },
    decode: { type: 'string', default: '64' },
    threads: { type: 'string', default: '1' },
    runs: { type: 'string', default: '2' },
    results: { type: 'string', default: path.join(root, 'bench', 'results', 'structured.json') },
    models: { type: 'string' },
    'speed-only': { type: 'boolean', default: false },
  },
});
const integer = (flag: string, min: number) => {
  const value = Number(values[flag as keyof typeof values]);
  if (!Number.isInteger(value) || value < min) throw new Error(`--${flag} must be an integer ≥ ${min}`);
  return value;
};
const settings: StructuredSettings = {
  calibration: { corpus: values.calib, nsamples: integer('nsamples', 1), seqlen: integer('seqlen', 1), seed: integer('seed', 0) },
  evaluation: { windows128: integer('eval-windows-128', 1), windows2048: integer('eval-windows-2048', 0) },
  speed: { promptTokens: integer('prompt', 8), decodeTokens: integer('decode', 1), threads: integer('threads', 1), runs: integer('runs', 1) },
};
const list = (text: string) => text.split(',').filter((item) => item !== '');
const methods = list(values.methods);
const ratios = list(values.ratios).map(Number);
const sourcePath = path.resolve(values.model ?? smolLM2(root));
const resultsFile = path.resolve(values.results);
const dataDir = resolveDataDir();
const log = (line: string) => process.stderr.write(`${line}\n`);

// The CLI runs from dist/: say so when src/ changed after the last build.
const newestSource = Math.max(
  ...fs
    .readdirSync(path.join(root, 'src'), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs),
);
const built = path.join(root, 'dist', 'src', 'cli', 'main.js');
if (!fs.existsSync(built) || fs.statSync(built).mtimeMs < newestSource) log('warning: src/ is newer than dist/: the CLI runs the last build (`npm run build`)');

const machine = machineDescription();
const { llama, info: llamaCpp } = await openLlamaCpp();

const previous = fs.existsSync(resultsFile) ? (JSON.parse(fs.readFileSync(resultsFile, 'utf8')) as StructuredReport) : undefined;
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const comparable = previous?.model === sourcePath && previous.llamaCpp.release === llamaCpp.release;
const sameDense = comparable && same(previous.settings.evaluation, settings.evaluation) && same(previous.settings.speed, settings.speed);
const sameAll = sameDense && same(previous.settings.calibration, settings.calibration);
const rows: StructuredRow[] = (previous?.rows ?? []).filter((row) => sameAll || (sameDense && row.method === 'dense'));
if (previous && rows.length < previous.rows.length) log(`${resultsFile}: dropping ${previous.rows.length - rows.length} row(s) made with other settings`);
const key = (method: string, ratio: number) => (method === 'dense' ? 'dense' : `${method} ${ratio}`);

const methodOrder = (method: string) => (method === 'dense' ? -1 : METHODS.includes(method) ? METHODS.indexOf(method) : METHODS.length);
function report(): StructuredReport {
  const dense = rows.find((row) => row.method === 'dense')?.speed.find((entry) => entry.weights === 'F32');
  for (const entry of rows.flatMap((row) => row.speed)) {
    if (dense) entry.speedupVsDenseF32 = { topiary: speedupOver(entry.topiary, dense.topiary), llamaCpp: speedupOver(entry.llamaCpp, dense.llamaCpp) };
  }
  rows.sort((a, b) => (a.method === 'dense' ? -1 : b.method === 'dense' ? 1 : a.ratio - b.ratio) || methodOrder(a.method) - methodOrder(b.method) || a.method.localeCompare(b.method));
  return { benchmark: 'structured', model: sourcePath, settings, machine: machine as StructuredReport['machine'], llamaCpp, rows };
}

function save(): void {
  const text = JSON.stringify(report(), null, 1) + '\n';
  fs.mkdirSync(path.dirname(resultsFile), { recursive: true });
  writeFileAtomic(resultsFile, (tmp) => fs.writeFileSync(tmp, text));
}

/** `node bin/topiary.js ARGS --json` in its own process: its JSON line and the process's wall time. */
function cli(args: string[]): { result: Record<string, unknown>; seconds: number } {
  const started = performance.now();
  const run = spawnSync(process.execPath, [path.join(root, 'bin', 'topiary.js'), ...args, '--threads', String(settings.speed.threads), '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (run.status !== 0) throw new Error(`topiary ${args.join(' ')} failed (status ${run.status})`);
  return { result: JSON.parse(run.stdout) as Record<string, unknown>, seconds: secondsSince(started) };
}

function perplexity(model: string, seqlen: number, windows: number): PerplexityCell | null {
  if (windows === 0) return null;
  log(`  perplexity, seqlen ${seqlen}, ${windows} windows`);
  const { result } = cli(['eval', '--model', model, '--dataset', 'wikitext2', '--seqlen', String(seqlen), '--max-windows', String(windows)]);
  return { perplexity: result.perplexity as number, windows: result.windows as number, tokens: result.tokens as number, seconds: result.seconds as number, peakRssMb: result.peak_rss_mb as number };
}

const quality = (model: string) => ({
  perplexity128: perplexity(model, 128, settings.evaluation.windows128),
  perplexity2048: perplexity(model, 2048, settings.evaluation.windows2048),
});

async function timedEntry(file: string, weights: string, prompt: number[]): Promise<SpeedEntry> {
  log(`  speed of ${path.basename(file)} (${weights}) in Topiary and llama.cpp`);
  const measured: SpeedMeasurement = await measureSpeed(llama, file, prompt, settings.speed);
  const brief = (engine: EngineSpeed) => `${engine.prefillTokensPerSecond.wall} / ${engine.decodeTokensPerSecond.wall}`;
  log(`  Topiary ${brief(measured.topiary)} tok/s, llama.cpp ${brief(measured.llamaCpp)} tok/s (prefill / decode, wall); greedy agreement ${measured.greedyAgreement}/${settings.speed.decodeTokens}`);
  const unit = { prefill: { wall: 1, cpu: 1 }, decode: { wall: 1, cpu: 1 } };
  return { weights, bytes: fs.statSync(file).size, ...measured, speedupVsDenseF32: { topiary: unit, llamaCpp: unit } };
}

/** The model at `from` as an F32 GGUF (tokenizer included), for both engines. */
async function exportF32(from: string, file: string, name: string): Promise<void> {
  const model = await loadModel(from, { backend: getBackend() });
  try {
    exportGguf(model, file, { dtype: 'F32', name });
  } finally {
    model.source.close();
  }
}

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'topiary-structured-'));
const modelsDir = values.models === undefined ? workDir : path.resolve(values.models);
fs.mkdirSync(modelsDir, { recursive: true });
/** Where the F32 GGUF of a row is kept while it is timed (and after, with --models). */
const speedFileOf = (method: string, ratio: number) => path.join(modelsDir, method === 'dense' ? 'dense.gguf' : `${method}-${ratio}.gguf`);
const discard = (file: string) => {
  if (values.models === undefined) fs.rmSync(file, { force: true });
};

interface PrunedCell {
  summary: { format: 'safetensors' | 'gguf'; seconds: number; peak_rss_mb: number; achievedRatio: number; paramsBefore: number; paramsAfter: number; layersRemoved: number; bytes: number };
  processSeconds: number;
  /** The CLI's output: the folder or its model.gguf. */
  written: string;
  out: string;
}

function prune(method: string, ratio: number): PrunedCell {
  const out = fs.mkdtempSync(path.join(workDir, `${method}-${ratio}-`));
  const { calibration: c } = settings;
  const pruned = cli([
    'prune', '--model', sourcePath, '--method', method, '--ratio', String(ratio),
    '--calib', c.corpus, '--nsamples', String(c.nsamples), '--seqlen', String(c.seqlen), '--seed', String(c.seed), '--out', out,
  ]);
  const summary = pruned.result as PrunedCell['summary'];
  return { summary, processSeconds: pruned.seconds, written: summary.format === 'gguf' ? path.join(out, 'model.gguf') : out, out };
}

/** The CLI writes F32 by default: a GGUF it wrote is timed as it is, a folder as its F32 GGUF export. */
async function speedFileFor(method: string, ratio: number, cell: PrunedCell): Promise<string> {
  const file = speedFileOf(method, ratio);
  if (cell.summary.format === 'gguf') {
    fs.renameSync(cell.written, file);
  } else {
    log('  export as F32 GGUF');
    await exportF32(cell.out, file, `${path.basename(sourcePath)} ${method} ${ratio}`);
  }
  return file;
}

const started = performance.now();
try {
  const source = await loadModel(sourcePath, { backend: getBackend() });
  const prompt = wikitextPrompt(source, dataDir, settings.speed.promptTokens);
  const sourceWeights = source.source.dtype(`${source.linearName(0, 'q')}.weight`);
  const sourceFormat = source.source.format;
  source.source.close();

  const denseSpeed = async (): Promise<SpeedEntry[]> => {
    const speed: SpeedEntry[] = [];
    if (sourceFormat === 'gguf') speed.push(await timedEntry(sourcePath, sourceWeights, prompt));
    const denseFile = speedFileOf('dense', 0);
    if (!fs.existsSync(denseFile)) await exportF32(sourcePath, denseFile, `${path.basename(sourcePath)} dense`);
    speed.push(await timedEntry(denseFile, 'F32', prompt));
    discard(denseFile);
    return speed;
  };

  if (values['speed-only']) {
    for (const row of rows) {
      log(`== ${key(row.method, row.ratio)}: speed again`);
      if (row.method === 'dense') {
        row.speed = await denseSpeed();
      } else {
        let file = speedFileOf(row.method, row.ratio);
        if (!fs.existsSync(file)) {
          log('  prune (its model file was not kept)');
          const cell = prune(row.method, row.ratio);
          file = await speedFileFor(row.method, row.ratio, cell);
          fs.rmSync(cell.out, { recursive: true, force: true });
        }
        row.speed = [await timedEntry(file, 'F32', prompt)];
        discard(file);
      }
      save();
    }
  }

  if (!rows.some((row) => row.method === 'dense')) {
    log('== dense');
    const speed = await denseSpeed();
    rows.push({
      method: 'dense',
      ratio: 0,
      achievedRatio: 0,
      layersRemoved: 0,
      output: { format: sourceFormat, weights: sourceWeights, bytes: fs.statSync(sourcePath).size },
      ...quality(sourcePath),
      speed,
      date: new Date().toISOString(),
    });
    save();
  }
  for (const ratio of values['speed-only'] ? [] : ratios) {
    for (const method of methods) {
      if (rows.some((row) => key(row.method, row.ratio) === key(method, ratio))) continue;
      const cellStarted = performance.now();
      log(`== ${key(method, ratio)}: prune`);
      const cell = prune(method, ratio);
      const { summary } = cell;
      const measuredQuality = quality(cell.written);
      const speedFile = await speedFileFor(method, ratio, cell);
      const entry = await timedEntry(speedFile, 'F32', prompt);
      rows.push({
        method,
        ratio,
        achievedRatio: summary.achievedRatio,
        paramsBefore: summary.paramsBefore,
        paramsAfter: summary.paramsAfter,
        layersRemoved: summary.layersRemoved,
        prune: { seconds: summary.seconds, processSeconds: cell.processSeconds, peakRssMb: summary.peak_rss_mb },
        output: { format: summary.format, weights: 'F32', bytes: summary.bytes },
        ...measuredQuality,
        speed: [entry],
        date: new Date().toISOString(),
      });
      save();
      fs.rmSync(cell.out, { recursive: true, force: true });
      discard(speedFile);
      const ppl = (c: PerplexityCell | null) => c?.perplexity.toFixed(2) ?? '—';
      log(`  ${key(method, ratio)}: ppl ${ppl(measuredQuality.perplexity128)} @128, ${ppl(measuredQuality.perplexity2048)} @2048; ${secondsSince(cellStarted).toFixed(0)} s for the cell`);
    }
  }
} finally {
  fs.rmSync(workDir, { recursive: true, force: true });
  await llama.dispose();
}

const final = report();
for (const clock of ['wall', 'cpu'] as const) {
  const table = structuredTable(final, clock);
  process.stdout.write(`\n${table.heading}\n`);
  printTable(table.headers, table.rows);
  process.stdout.write(`${table.footer}\n`);
}
process.stdout.write(`${secondsSince(started).toFixed(0)} s in this run; results in ${path.relative(process.cwd(), resultsFile)}\n`);
