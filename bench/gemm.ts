/**
 * Throughput of the native backend at the shapes pruning uses: linear layers over a 2048-token
 * calibration batch (SmolLM2-135M widths), a large square GEMM, Hessian accumulation by syrk, and
 * the Cholesky/inverse SparseGPT needs. Prints a table and writes bench/results/gemm.json.
 *
 *   node --import tsx bench/gemm.ts
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Backend, FloatArray } from '../src/backend/backend.js';
import { backendKernel, describeBackend, getBackend } from '../src/backend/index.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { createRng } from '../src/util/random.js';

interface Measurement {
  operation: string;
  shape: string;
  dtype: 'fp32' | 'fp64';
  flops: number;
  seconds: number;
  gflops: number;
  fractionOfPeak: number;
}

/** Best of several runs after one warm-up, stopping once `budgetSeconds` is spent. */
async function bestTime(run: () => Promise<void>, { repeats = 5, budgetSeconds = 3, warmUp = true } = {}): Promise<number> {
  if (warmUp) await run();
  let best = Infinity;
  const started = performance.now();
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await run();
    best = Math.min(best, (performance.now() - t0) / 1000);
    if ((performance.now() - started) / 1000 > budgetSeconds) break;
  }
  return best;
}

function randomArray<T extends FloatArray>(length: number, type: { new (length: number): T }, seed: number): T {
  const rng = createRng(seed);
  const array = new type(length);
  for (let i = 0; i < length; i++) array[i] = rng.next() - 0.5;
  return array;
}

/** A well-conditioned SPD matrix XᵀX/rows + I, built with the backend itself. */
async function spdMatrix<T extends FloatArray>(backend: Backend, n: number, type: { new (length: number): T }): Promise<T> {
  const x = randomArray(n * n, type, n);
  const a = new type(n * n);
  for (let i = 0; i < n; i++) a[i * n + i] = 1;
  await backend.gemm(x, x, a, { m: n, n, k: n, transA: true, alpha: 1 / n, beta: 1 });
  return a;
}

/**
 * The clock the peak is computed at, in MHz, and where it came from: the boost (maximum) clock
 * from cpufreq or lscpu when the machine exposes it; otherwise /proc/cpuinfo's current clock, which
 * under a hypervisor is usually the base clock, so that turbo can carry measurements above 100%.
 */
function peakClock(): { mhz: number; source: string } {
  const cpufreq = '/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq';
  if (fs.existsSync(cpufreq)) return { mhz: Number(fs.readFileSync(cpufreq, 'utf8').trim()) / 1000, source: `boost clock from ${cpufreq}` };
  const lscpu = spawnSync('lscpu', { encoding: 'utf8' });
  const lscpuMax = /^CPU max MHz:\s*([\d.]+)/m.exec(lscpu.stdout ?? '')?.[1];
  if (lscpuMax) return { mhz: Number(lscpuMax), source: 'boost clock from lscpu "CPU max MHz"' };
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const current = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.speed ?? 0);
  return { mhz: current, source: 'current clock from /proc/cpuinfo (no boost clock exposed: turbo may read above 100%)' };
}

/**
 * Theoretical fp32 peak: every core sustaining two FMA units at the widest vector width the CPU
 * advertises (AVX-512: 2 × 16 lanes × 2 FLOP = 64 FLOP/cycle; AVX2: 32; SSE: 16) at the boost
 * clock. CPUs that split AVX-512 into 256-bit halves (AMD Zen 4) really peak at half.
 */
function estimatePeak(): { gflops: number; assumption: string; cpu: string } {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1].split(/\s+/) ?? [];
  const clock = peakClock();
  const cores = os.availableParallelism();
  const flopsPerCycle = flags.includes('avx512f') ? 64 : flags.includes('avx2') && flags.includes('fma') ? 32 : 16;
  const gflops = (cores * clock.mhz * flopsPerCycle) / 1000;
  return {
    gflops,
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    assumption: `${cores} cores × ${(clock.mhz / 1000).toFixed(2)} GHz (${clock.source}) × ${flopsPerCycle} fp32 FLOP/cycle (2 FMA units at the widest advertised vector width)`,
  };
}

async function main(): Promise<void> {
  const backend = getBackend('native');
  const peak = estimatePeak();
  const results: Measurement[] = [];
  const record = (operation: string, shape: string, dtype: 'fp32' | 'fp64', flops: number, seconds: number): void => {
    const gflops = flops / seconds / 1e9;
    const fractionOfPeak = dtype === 'fp32' ? gflops / peak.gflops : (2 * gflops) / peak.gflops;
    results.push({ operation, shape, dtype, flops, seconds, gflops, fractionOfPeak });
    console.log(
      `${operation.padEnd(22)} ${shape.padEnd(26)} ${dtype}  ${seconds.toFixed(4).padStart(9)} s  ${gflops.toFixed(1).padStart(7)} GFLOP/s  ${(100 * fractionOfPeak).toFixed(0).padStart(3)}% of peak`,
    );
  };

  console.log(`backend: ${describeBackend(backend)}`);
  console.log(`kernel: ${backendKernel(backend)} (OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? 'unset'})`);
  console.log(`CPU: ${peak.cpu}; estimated fp32 peak ${peak.gflops.toFixed(0)} GFLOP/s = ${peak.assumption}`);
  console.log('(fp64 rows are compared with half the fp32 peak)');
  // Other processes competing for the cores make every number below meaningless; say so.
  const loadBefore = os.loadavg()[0];
  if (loadBefore > 0.5) console.log(`WARNING: load average is ${loadBefore.toFixed(2)}; results will understate the machine`);
  console.log();

  // Linear layers Y = X·Wᵀ over a 2048-token calibration batch: (tokens × out × in).
  for (const [m, n, k] of [[2048, 576, 576], [2048, 1536, 576], [2048, 576, 1536]]) {
    const x = randomArray(m * k, Float32Array, 1);
    const w = randomArray(n * k, Float32Array, 2);
    const y = new Float32Array(m * n);
    const seconds = await bestTime(() => backend.gemm(x, w, y, { m, n, k, transB: true }));
    record('gemm X·Wᵀ', `${m}×${n}×${k}`, 'fp32', 2 * m * n * k, seconds);
  }
  {
    const size = 4096;
    const a = randomArray(size * size, Float32Array, 3);
    const b = randomArray(size * size, Float32Array, 4);
    const c = new Float32Array(size * size);
    const seconds = await bestTime(() => backend.gemm(a, b, c, { m: size, n: size, k: size }), { repeats: 1, warmUp: false });
    record('gemm', `${size}×${size}×${size}`, 'fp32', 2 * size ** 3, seconds);
  }

  // Hessian accumulation H += XᵀX over 128 calibration windows of 2048 tokens each.
  {
    const [rows, d, chunkRows] = [262144, 576, 2048];
    const chunk = randomArray(chunkRows * d, Float32Array, 5);
    const h = new Float32Array(d * d);
    const seconds = await bestTime(
      async () => {
        for (let done = 0; done < rows; done += chunkRows) await backend.syrk(chunk, chunkRows, d, h);
      },
      { repeats: 2 },
    );
    record('syrk (chunks of 2048)', `${rows}×${d}`, 'fp32', rows * d * d, seconds);
  }

  // Cholesky (n³/3 FLOP) and SPD inverse (potrf + potri, n³ FLOP) of a 4096 Hessian.
  const n = 4096;
  for (const [dtype, type] of [['fp32', Float32Array], ['fp64', Float64Array]] as const) {
    const spd = await spdMatrix<FloatArray>(backend, n, type);
    const work = spd.slice();
    const options = { repeats: 2, warmUp: false };
    const choleskySeconds = await bestTime(async () => {
      work.set(spd);
      if (!(await backend.cholesky(work, n, 'upper'))) throw new Error('benchmark matrix is not positive definite');
    }, options);
    record('cholesky', `${n}×${n}`, dtype, n ** 3 / 3, choleskySeconds);
    const inverseSeconds = await bestTime(async () => {
      work.set(spd);
      if (!(await backend.invertSpd(work, n))) throw new Error('benchmark matrix is not positive definite');
    }, options);
    record('invertSpd', `${n}×${n}`, dtype, n ** 3, inverseSeconds);
  }

  const resultsDir = path.join(path.dirname(new URL(import.meta.url).pathname), 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, 'gemm.json');
  const report = {
    date: new Date().toISOString(),
    backend: backend.info,
    kernel: backendKernel(backend),
    cpu: peak.cpu,
    peakFp32Gflops: peak.gflops,
    peakAssumption: peak.assumption,
    loadAverageBefore: loadBefore,
    loadAverageAfter: os.loadavg()[0],
    results,
  };
  writeFileAtomic(file, (tmp) => fs.writeFileSync(tmp, `${JSON.stringify(report, null, 2)}\n`));
  console.log(`\nwrote ${file}`);
}

await main();
