/**
 * The sparse kernels against dense BLAS on SmolLM2-135M's linear shapes ([out, in]: 576×1536 down,
 * 1536×576 gate/up, 576×576 q/o; the 49152×576 head stays dense), pruned 50% per row, 2:4 and 70%
 * per row by magnitude of random weights:
 *   - decode, one row: sparseMatmul vs sgemv, beside the bound the bytes allow (dense bytes ÷
 *     compressed bytes: a product streaming its matrix from memory cannot beat it). Each call reads
 *     the next of enough copies of the matrix that they do not fit in the last-level cache, as a
 *     model's layers do not when decoding;
 *   - prefill, 512 rows: sparseMatmul vs sgemm.
 * at 1 and 2 threads, with the AVX-512 and the AVX2 kernels. Dense and sparse alternate within each
 * repetition and the best times are compared (the least disturbed run of each: on a shared machine
 * a median mostly measures the neighbours). Prints a table and writes bench/results/sparse.json.
 *
 *   nice -n 10 node --import tsx bench/sparse.ts [--quick]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backend/index.js';
import type { NativeBackend, SparseIsa } from '../src/backend/native.js';
import { compressSparse, sparseBytes, type SparseLayout, type SparseMatrix } from '../src/backend/sparse.js';
import { applyMask, selectNm, selectPerRow } from '../src/prune/masks.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { createRng } from '../src/util/random.js';
import { machineDescription, printTable } from './machine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');

const SHAPES: [number, number][] = [[576, 1536], [1536, 576], [576, 576]];
const PRUNINGS = ['50%', '2:4', '70%'] as const;
type Pruning = (typeof PRUNINGS)[number];
/** Dense bytes of the copies one decode pass walks through: above the caches a shared VM lets one process use. */
const DECODE_WORKING_SET_BYTES = (quick ? 128 : 384) * 2 ** 20;
const PREFILL_ROWS = 512;
const REPEATS = quick ? 5 : 11;

interface Row {
  shape: string;
  pruning: Pruning;
  layout: SparseLayout;
  threads: number;
  clock: Clock;
  kernel: SparseIsa;
  denseBytes: number;
  sparseBytes: number;
  /** dense bytes ÷ sparse bytes */
  byteBound: number;
  decodeDenseMicroseconds: number;
  decodeSparseMicroseconds: number;
  /** dense time ÷ sparse time */
  decodeSpeedup: number;
  decodeFractionOfBound: number;
  prefillDenseMilliseconds: number;
  prefillSparseMilliseconds: number;
  /** dense time ÷ sparse time */
  prefillSpeedup: number;
  loadAverage1min: number;
}

function pruned(rows: number, cols: number, pruning: Pruning, seed: number): Float32Array {
  const rng = createRng(seed);
  const weight = Float32Array.from({ length: rows * cols }, () => rng.normal() * 0.05);
  const scores = weight.map(Math.abs);
  const mask = pruning === '2:4' ? selectNm(scores, rows, cols, 2, 4) : selectPerRow(scores, rows, cols, pruning === '50%' ? 0.5 : 0.7);
  return applyMask(weight, mask);
}

function copyOf(matrix: SparseMatrix): SparseMatrix {
  return { ...matrix, masks: matrix.masks.slice(), values: matrix.values.slice(), rowOffsets: matrix.rowOffsets.slice() };
}

/**
 * Which clock a figure is read from. One thread: the process's CPU time, the work alone without
 * the time other processes held the core (on this shared machine, most of the wall time). Two
 * threads: wall time, since CPU time would count threads spinning while they wait for work.
 */
type Clock = 'cpu' | 'wall';

async function seconds(clock: Clock, run: () => Promise<void>): Promise<number> {
  const wallStart = performance.now();
  const cpuStart = process.cpuUsage();
  await run();
  const cpu = process.cpuUsage(cpuStart);
  return clock === 'cpu' ? (cpu.user + cpu.system) / 1e6 : (performance.now() - wallStart) / 1000;
}

async function measure(backend: NativeBackend, rows: number, cols: number, pruning: Pruning, threads: number, kernel: SparseIsa): Promise<Row> {
  backend.setThreads(threads);
  backend.useSparseIsa(kernel);
  const weight = pruned(rows, cols, pruning, rows * 7 + cols);
  const layout: SparseLayout = pruning === '2:4' ? '2:4' : 'bitmask';
  const sparse = compressSparse(weight, rows, cols, layout);
  const copies = Math.max(2, Math.ceil(DECODE_WORKING_SET_BYTES / weight.byteLength));
  const denseCopies = Array.from({ length: copies }, () => weight.slice());
  const sparseCopies = Array.from({ length: copies }, () => copyOf(sparse));
  const rng = createRng(1);
  const x = Float32Array.from({ length: PREFILL_ROWS * cols }, () => rng.normal());
  const xRow = x.subarray(0, cols);
  const y = new Float32Array(PREFILL_ROWS * rows);

  const decodeDense: number[] = [];
  const decodeSparse: number[] = [];
  const prefillDense: number[] = [];
  const prefillSparse: number[] = [];
  const clock: Clock = threads === 1 ? 'cpu' : 'wall';
  for (let repeat = 0; repeat <= REPEATS; repeat++) {
    const times = [
      await seconds(clock, async () => {
        for (const w of denseCopies) await backend.gemm(xRow, w, y, { m: 1, n: rows, k: cols, transB: true });
      }),
      await seconds(clock, async () => {
        for (const w of sparseCopies) await backend.sparseMatmul(xRow, w, y, 1);
      }),
      await seconds(clock, () => backend.gemm(x, weight, y, { m: PREFILL_ROWS, n: rows, k: cols, transB: true })),
      await seconds(clock, () => backend.sparseMatmul(x, sparse, y, PREFILL_ROWS)),
    ];
    if (repeat === 0) continue; // warm-up
    decodeDense.push(times[0]! / copies);
    decodeSparse.push(times[1]! / copies);
    prefillDense.push(times[2]!);
    prefillSparse.push(times[3]!);
  }
  const byteBound = weight.byteLength / sparseBytes(sparse);
  const decodeSpeedup = Math.min(...decodeDense) / Math.min(...decodeSparse);
  return {
    shape: `${rows}×${cols}`,
    pruning,
    layout,
    threads,
    clock,
    kernel,
    denseBytes: weight.byteLength,
    sparseBytes: sparseBytes(sparse),
    byteBound,
    decodeDenseMicroseconds: Math.min(...decodeDense) * 1e6,
    decodeSparseMicroseconds: Math.min(...decodeSparse) * 1e6,
    decodeSpeedup,
    decodeFractionOfBound: decodeSpeedup / byteBound,
    prefillDenseMilliseconds: Math.min(...prefillDense) * 1e3,
    prefillSparseMilliseconds: Math.min(...prefillSparse) * 1e3,
    prefillSpeedup: Math.min(...prefillDense) / Math.min(...prefillSparse),
    loadAverage1min: Number(os.loadavg()[0]!.toFixed(2)),
  };
}

async function main(): Promise<void> {
  const backend = getBackend('native') as NativeBackend;
  const best = backend.sparseIsa;
  const kernels: SparseIsa[] = best === 'avx512' ? ['avx512', 'avx2'] : [best];
  const machine = machineDescription();
  const results: Row[] = [];
  for (const threads of [1, 2]) {
    for (const kernel of kernels) {
      for (const [rows, cols] of SHAPES) {
        for (const pruning of PRUNINGS) {
          const row = await measure(backend, rows, cols, pruning, threads, kernel);
          results.push(row);
          process.stderr.write(`${row.shape} ${pruning} ${threads}t ${kernel}: decode ${row.decodeSpeedup.toFixed(2)}× (bound ${row.byteBound.toFixed(2)}×), prefill ${row.prefillSpeedup.toFixed(2)}×\n`);
        }
      }
    }
  }
  backend.useSparseIsa('auto');
  const f = (value: number, digits = 2) => value.toFixed(digits);
  process.stdout.write(`${JSON.stringify(machine)}\nsparse kernels: ${kernels.join(', ')}; decode working set ${DECODE_WORKING_SET_BYTES / 2 ** 20} MiB dense per shape; prefill ${PREFILL_ROWS} rows; best of ${REPEATS}\n\n`);
  printTable(
    ['shape', 'pruning', 'thr', 'clock', 'kernel', 'load', 'byte bound', 'decode dense µs', 'sparse µs', 'speedup', '% of bound', 'prefill dense ms', 'sparse ms', 'sparse/dense speed'],
    results.map((r) => [
      r.shape, r.pruning, r.threads, r.clock, r.kernel, f(r.loadAverage1min, 1), `${f(r.byteBound)}×`, f(r.decodeDenseMicroseconds, 1),
      f(r.decodeSparseMicroseconds, 1), `${f(r.decodeSpeedup)}×`, `${f(100 * r.decodeFractionOfBound, 0)}%`,
      f(r.prefillDenseMilliseconds), f(r.prefillSparseMilliseconds), `${f(r.prefillSpeedup)}×`,
    ]),
  );
  const file = path.join(root, 'bench', 'results', quick ? 'sparse-quick.json' : 'sparse.json');
  const report = { ...machine, kernels, decodeWorkingSetBytes: DECODE_WORKING_SET_BYTES, prefillRows: PREFILL_ROWS, repeats: REPEATS, statistic: 'best', results };
  writeFileAtomic(file, (tmp) => fs.writeFileSync(tmp, `${JSON.stringify(report, null, 2)}\n`));
  process.stdout.write(`\nwrote ${path.relative(root, file)}\n`);
}

await main();
