/**
 * Cost of the N:M channel permutation search (--permute) on one SmolLM2-135M block's matrices
 * (q, k, v, o, gate, up, down: d_out × d_in), with the refinement in TypeScript (the reference)
 * and in the native kernel, at 2:4 and 4:8 (the whole mask choice: search, then N:M selection). Scores are |N(0,1)| times a log-normal per-channel
 * scale, the shape of Wanda scores. One thread; CPU seconds of one search each (both sides give
 * the same order, checked here), so other jobs on the machine slow neither figure. Prints a table
 * and writes bench/results/permutation.json.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backend/index.js';
import { chooseMask, chooseMaskOn, DEFAULT_PERMUTATION_OPTIONS } from '../src/prune/permutation.js';
import { writeFileContentAtomic } from '../src/util/atomic.js';
import { createRng } from '../src/util/random.js';
import { machineDescription, printTable } from './machine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MATRICES = [
  { name: 'q_proj', rows: 576, cols: 576 },
  { name: 'k_proj', rows: 192, cols: 576 },
  { name: 'v_proj', rows: 192, cols: 576 },
  { name: 'o_proj', rows: 576, cols: 576 },
  { name: 'gate_proj', rows: 1536, cols: 576 },
  { name: 'up_proj', rows: 1536, cols: 576 },
  { name: 'down_proj', rows: 576, cols: 1536 },
];
const PATTERNS = [
  { n: 2, m: 4 },
  { n: 4, m: 8 },
];

async function cpuSeconds<T>(call: () => T | Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = process.cpuUsage();
  const value = await call();
  const used = process.cpuUsage(started);
  return { value, seconds: (used.user + used.system) / 1e6 };
}

const backend = getBackend();
backend.setThreads(1);
const rows: (string | number)[][] = [];
const results = [];
for (const { n, m } of PATTERNS) {
  let referenceTotal = 0;
  let backendTotal = 0;
  for (const matrix of MATRICES) {
    const rng = createRng(matrix.rows * 7 + matrix.cols);
    const scale = Float64Array.from({ length: matrix.cols }, () => Math.exp(rng.normal()));
    const scores = Float32Array.from({ length: matrix.rows * matrix.cols }, (_, i) => Math.abs(rng.normal()) * scale[i % matrix.cols]!);
    const target = { kind: 'nm', n, m } as const;
    const reference = await cpuSeconds(() => chooseMask(scores, matrix.rows, matrix.cols, target, 'row', DEFAULT_PERMUTATION_OPTIONS).report);
    const native = await cpuSeconds(async () => (await chooseMaskOn(backend, scores, matrix.rows, matrix.cols, target, 'row', DEFAULT_PERMUTATION_OPTIONS)).report);
    const same = reference.value.permutationHash === native.value.permutationHash && reference.value.permuteRounds === native.value.permuteRounds;
    if (!same) throw new Error(`${matrix.name} ${n}:${m}: the backend's order differs from the reference`);
    referenceTotal += reference.seconds;
    backendTotal += native.seconds;
    const row = { pattern: `${n}:${m}`, ...matrix, rounds: native.value.permuteRounds as number, referenceSeconds: reference.seconds, backendSeconds: native.seconds };
    results.push(row);
    rows.push([row.pattern, matrix.name, `${matrix.rows}×${matrix.cols}`, row.rounds, reference.seconds.toFixed(3), native.seconds.toFixed(3), (reference.seconds / native.seconds).toFixed(1)]);
  }
  rows.push([`${n}:${m}`, 'block total', '', '', referenceTotal.toFixed(3), backendTotal.toFixed(3), (referenceTotal / backendTotal).toFixed(1)]);
}
printTable(['N:M', 'matrix', 'shape', 'rounds', 'TS s', `${backend.info.name} s`, 'speed-up'], rows);
const out = path.join(root, 'bench', 'results', 'permutation.json');
writeFileContentAtomic(out, JSON.stringify({ machine: machineDescription(), unit: 'CPU seconds per search, one thread', results }, null, 2) + '\n');
process.stdout.write(`wrote ${path.relative(root, out)}\n`);
