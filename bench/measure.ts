/** What several benchmarks measure with: the default model, medians, and timed child processes. */
import { execFileSync, spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';

/** SmolLM2-135M (Q4_1 GGUF), fetched into the cache by scripts/fetch-smollm2.sh if absent. */
export function smolLM2(root: string): string {
  return execFileSync('bash', [path.join(root, 'scripts', 'fetch-smollm2.sh')], { encoding: 'utf8' }).trim();
}

export { median } from '../src/eval/speed.js';

export interface ProcessRun {
  /** The process's own report (its last stdout line, JSON). */
  report: Record<string, unknown>;
  /** Measured around the process: start-up, imports and model loading included. */
  wallSeconds: number;
  /**
   * User + system CPU time of the process and its children. With other jobs on the cores, wall
   * time also counts the time spent waiting for a core; CPU time counts only the work.
   */
  cpuSeconds: number;
  /** At the start of the run. */
  loadAverage1min: number;
}

/** bash's `times` on stderr after the command: its last line is the children's "user system", e.g. "1m2.345s 0m0.120s". */
const WITH_CPU_TIMES = '"$@"; status=$?; times >&2; exit $status';
const CHILDREN_TIMES = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/;

/** Runs a child process that prints one JSON object as its last stdout line. */
export function runJson(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): ProcessRun {
  const loadAverage1min = Number(os.loadavg()[0]!.toFixed(2));
  const started = performance.now();
  const result = spawnSync('bash', ['-c', WITH_CPU_TIMES, 'bash', command, ...args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  const wallSeconds = (performance.now() - started) / 1000;
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${result.stderr}`);
  const lastLine = result.stdout.trim().split('\n').at(-1)!;
  const times = CHILDREN_TIMES.exec(result.stderr);
  if (!times) throw new Error(`no CPU times from bash after ${command} ${args.join(' ')}:\n${result.stderr}`);
  const [minutesUser, secondsUser, minutesSystem, secondsSystem] = times.slice(1).map(Number) as [number, number, number, number];
  const cpuSeconds = 60 * (minutesUser + minutesSystem) + secondsUser + secondsSystem;
  return { report: JSON.parse(lastLine) as Record<string, unknown>, wallSeconds, cpuSeconds, loadAverage1min };
}
