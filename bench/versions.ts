/**
 * This checkout against an earlier revision, side by side in one run (issue 9: "no cost in speed":
 * SmolLM2 prefill tokens/s and a prune's wall time within 5% of the code before the change).
 *
 * The baseline revision is checked out into a temporary git worktree outside the repository, with
 * this checkout's node_modules linked in and its own native addon built there (offline); the
 * worktree is removed at the end, also when a run fails or is interrupted. Each measurement is a
 * fresh process running one tree's own code, baseline and current alternating run by run
 * (A B A B …, --repeats pairs per metric) so that the load of other jobs on the machine hits both
 * alike:
 *   - prefill: bench/versions-prefill.ts loads SmolLM2 with the tree's loadModel, warms up, and
 *     times windowNll on one 2048-token WikiText-2 test window (the first; the same token ids for
 *     both trees, tokenized here once);
 *   - prune: the tree's CLI, `prune --method wanda --pattern 2:4 --calib c4 --nsamples 8
 *     --seqlen 512`, wall time measured around the process (start-up, load, calibration, pruning,
 *     saving), into a fresh output folder each time.
 * Beside each wall time, the CPU time of the same run (user + system): on cores shared with other
 * jobs, wall time also counts waiting for a core, which CPU time leaves out.
 * Both trees run with --threads T (default 1), so that on a 2-core machine a run does not fight
 * its own BLAS threads, and with the environment this process got (run it with
 * `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to let OpenBLAS pick its kernel; the kernel each
 * tree ran is recorded). The data folder is the one this checkout resolves, passed to both.
 * Writes bench/results/versions.json: machine, revisions, every measurement, medians and ratios.
 *
 *   node --import tsx bench/versions.ts [--baseline REV] [--repeats N] [--threads T] [--model FILE]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { evaluationText } from '../src/data/corpora.js';
import { packageRoot, resolveDataDir } from '../src/data/datadir.js';
import { loadModel } from '../src/model/load.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { machineDescription, printTable } from './machine.js';
import { median, runJson, smolLM2 } from './measure.js';

const root = packageRoot();
const { values } = parseArgs({
  options: {
    // The last commit before issue 9's restructuring into model families.
    baseline: { type: 'string', default: '33e2553' },
    repeats: { type: 'string', default: '3' },
    threads: { type: 'string', default: '1' },
    model: { type: 'string' },
  },
});
const repeats = Number(values.repeats);
const threads = Number(values.threads);
if (!Number.isInteger(repeats) || repeats < 1) throw new Error(`--repeats must be a positive integer, got ${values.repeats}`);
if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer, got ${values.threads}`);
const modelPath = path.resolve(values.model ?? smolLM2(root));
const dataDir = resolveDataDir();
const PREFILL_SEQLEN = 2048;
const PRUNE_FLAGS = ['--method', 'wanda', '--pattern', '2:4', '--calib', 'c4', '--nsamples', '8', '--seqlen', '512'];
/** 5%: issue 9's allowance. */
const ALLOWED_COST = 0.05;

const git = (...args: string[]) => {
  const result = spawnSync('git', args, { cwd: root, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`git ${args.join(' ')} failed:\n${result.stderr}`);
  return result.stdout.trim();
};

interface Tree {
  label: 'baseline' | 'current';
  dir: string;
  commit: string;
}
const current: Tree = { label: 'current', dir: root, commit: git('rev-parse', 'HEAD') };
const uncommittedChanges = git('status', '--porcelain', '--untracked-files=no') !== '';
const baseline: Tree = { label: 'baseline', dir: '', commit: git('rev-parse', '--verify', `${values.baseline}^{commit}`) };

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'topiary-bench-versions-'));
baseline.dir = path.join(workDir, 'baseline');
let cleanedUp = false;
function cleanUp(): void {
  if (cleanedUp) return;
  cleanedUp = true;
  if (fs.existsSync(baseline.dir)) spawnSync('git', ['worktree', 'remove', '--force', baseline.dir], { cwd: root });
  fs.rmSync(workDir, { recursive: true, force: true });
  spawnSync('git', ['worktree', 'prune'], { cwd: root });
}
process.once('SIGINT', () => {
  cleanUp();
  process.exit(130);
});

/** The baseline tree, runnable: checked out, node_modules linked, native addon built. */
function prepareBaseline(): void {
  process.stderr.write(`checking out ${values.baseline} (${baseline.commit.slice(0, 12)}) into ${baseline.dir} and building its native addon…\n`);
  git('worktree', 'add', '--detach', baseline.dir, baseline.commit);
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(baseline.dir, 'node_modules'));
  const nodeDir = path.dirname(path.dirname(process.execPath));
  const build = spawnSync('npx', ['--offline', 'node-gyp', 'rebuild', '--directory', 'native', `--nodedir=${nodeDir}`, '--loglevel=error'], {
    cwd: baseline.dir,
    encoding: 'utf8',
  });
  if (build.status !== 0) throw new Error(`building the baseline's native addon failed:\n${build.stdout}${build.stderr}`);
}

/** The first PREFILL_SEQLEN tokens of WikiText-2 test, as this checkout's tokenizer encodes them. */
async function prefillWindow(): Promise<number[]> {
  const model = await loadModel(modelPath);
  const tokens = model.tokenizer.encode(evaluationText({ kind: 'wikitext2' }, dataDir));
  model.source.close();
  return tokens.slice(0, PREFILL_SEQLEN);
}

const childEnvironment = { ...process.env, TOPIARY_DATA_DIR: dataDir };

interface PrefillRun {
  tokensPerSecond: number;
  seconds: number;
  tokensPerCpuSecond: number;
  cpuSeconds: number;
  backend: string;
  loadAverage1min: number;
}
function measurePrefill(tree: Tree, windowFile: string): PrefillRun {
  const driver = path.join(root, 'bench', 'versions-prefill.ts');
  const run = runJson(process.execPath, ['--import', 'tsx', driver, tree.dir, modelPath, windowFile, String(threads)], { cwd: tree.dir, env: childEnvironment });
  return { ...(run.report as Omit<PrefillRun, 'loadAverage1min'>), loadAverage1min: run.loadAverage1min };
}

interface PruneRun {
  wallSeconds: number;
  cpuSeconds: number;
  /** The prune command's own total, as it reports it (load, calibration, pruning, saving). */
  reportedSeconds: number;
  loadAverage1min: number;
}
function measurePrune(tree: Tree, out: string): PruneRun {
  const cli = path.join(tree.dir, 'src', 'cli', 'main.ts');
  const args = ['--import', 'tsx', cli, 'prune', '--model', modelPath, ...PRUNE_FLAGS, '--threads', String(threads), '--out', out, '--json'];
  const run = runJson(process.execPath, args, { cwd: tree.dir, env: childEnvironment });
  fs.rmSync(out, { recursive: true, force: true });
  return { wallSeconds: run.wallSeconds, cpuSeconds: run.cpuSeconds, reportedSeconds: run.report.seconds as number, loadAverage1min: run.loadAverage1min };
}

getBackend().setThreads(threads);
const machine = machineDescription();
const measurements = { prefill: { baseline: [] as PrefillRun[], current: [] as PrefillRun[] }, prune: { baseline: [] as PruneRun[], current: [] as PruneRun[] } };
const trees = [baseline, current];
try {
  prepareBaseline();
  const windowFile = path.join(workDir, 'window.json');
  fs.writeFileSync(windowFile, JSON.stringify(await prefillWindow()));
  for (let pair = 0; pair < repeats; pair++) {
    for (const tree of trees) {
      const run = measurePrefill(tree, windowFile);
      process.stderr.write(`prefill ${pair + 1}/${repeats} ${tree.label}: ${run.tokensPerSecond.toFixed(1)} tokens/s, ${run.tokensPerCpuSecond.toFixed(1)} per CPU s (${run.backend})\n`);
      measurements.prefill[tree.label].push(run);
    }
  }
  for (let pair = 0; pair < repeats; pair++) {
    for (const tree of trees) {
      const run = measurePrune(tree, path.join(workDir, `prune-${tree.label}-${pair}`));
      process.stderr.write(`prune ${pair + 1}/${repeats} ${tree.label}: ${run.wallSeconds.toFixed(1)} s wall, ${run.cpuSeconds.toFixed(1)} s CPU\n`);
      measurements.prune[tree.label].push(run);
    }
  }
} finally {
  cleanUp();
}

/**
 * Issue 9 asks for the wall-time metrics; the CPU-time ones beside them count only the work, not
 * the waiting for a core, which on a machine shared with other jobs is most of the noise.
 */
interface Metric {
  key: string;
  label: string;
  higherIsBetter: boolean;
  values: (tree: Tree['label']) => number[];
}
const METRICS: Metric[] = [
  { key: 'prefillTokensPerSecond', label: `prefill tokens/s (${PREFILL_SEQLEN} tokens)`, higherIsBetter: true, values: (tree) => measurements.prefill[tree].map((run) => run.tokensPerSecond) },
  { key: 'prefillTokensPerCpuSecond', label: 'prefill tokens per CPU second', higherIsBetter: true, values: (tree) => measurements.prefill[tree].map((run) => run.tokensPerCpuSecond) },
  { key: 'pruneWallSeconds', label: 'prune wall s (wanda 2:4, 8 × 512 C4)', higherIsBetter: false, values: (tree) => measurements.prune[tree].map((run) => run.wallSeconds) },
  { key: 'pruneCpuSeconds', label: 'prune CPU s', higherIsBetter: false, values: (tree) => measurements.prune[tree].map((run) => run.cpuSeconds) },
];
const round = (x: number, digits: number) => Number(x.toFixed(digits));
const summary = METRICS.map((metric) => {
  const baselineMedian = median(metric.values('baseline'));
  const currentMedian = median(metric.values('current'));
  const ratio = currentMedian / baselineMedian;
  // The cost is the slowdown, whichever way the metric counts.
  const cost = metric.higherIsBetter ? 1 - ratio : ratio - 1;
  return { metric: metric.key, label: metric.label, baseline: round(baselineMedian, 3), current: round(currentMedian, 3), ratio: round(ratio, 4), withinAllowance: cost <= ALLOWED_COST };
});

const results = {
  benchmark: 'versions',
  model: modelPath,
  revisions: { baseline: { requested: values.baseline, commit: baseline.commit }, current: { commit: current.commit, uncommittedChanges } },
  threads,
  order: `baseline and current alternating run by run, ${repeats} pairs per metric, each run a fresh process`,
  prefill: { dataset: 'wikitext2 test, first window', seqlen: PREFILL_SEQLEN, timed: 'windowNll([window]) after one warm-up call in the same process; CPU time of the whole process during it' },
  prune: { flags: [...PRUNE_FLAGS, '--threads', String(threads)], timed: 'wall and CPU time (user + system, with children) around the CLI process' },
  allowedCost: ALLOWED_COST,
  machine,
  loadAverage1minAtEnd: round(os.loadavg()[0]!, 2),
  measurements,
  summary,
};

process.stdout.write(
  `\nbaseline ${values.baseline} (${baseline.commit.slice(0, 12)}) vs current ${current.commit.slice(0, 12)}${uncommittedChanges ? ' with uncommitted changes' : ''}; ` +
    `${path.basename(modelPath)}, ${threads} thread${threads === 1 ? '' : 's'} each, medians of ${repeats} alternating runs\n` +
    `backend: ${String(machine.backend)}; load average ${String(machine.loadAverage1min)} at start, ${results.loadAverage1minAtEnd} at end on ${String(machine.cores)} cores\n\n`,
);
printTable(
  ['metric', 'baseline median', 'current median', 'current/baseline', `within ${ALLOWED_COST * 100}%`],
  summary.map((row) => [row.label, row.baseline.toFixed(1), row.current.toFixed(1), row.ratio.toFixed(3), row.withinAllowance ? 'yes' : 'NO']),
);
const out = path.join(root, 'bench', 'results', 'versions.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
writeFileAtomic(out, (tmp) => fs.writeFileSync(tmp, JSON.stringify(results, null, 2) + '\n'));
process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
