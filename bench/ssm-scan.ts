/**
 * Throughput of Mamba's sequence operations: Topiary's native selective scan and causal conv1d
 * against transformers' slow path (the PyTorch reference functions MambaMixer runs without the
 * CUDA kernels, bench/torch_ssm_scan.py) on the same shapes — mamba-130m's mixer (d_inner 1536,
 * d_state 16, conv kernel 4) over one 512-token window and over 8 windows of 128. One thread each;
 * CPU seconds per call (median after a warm-up), so other jobs on the machine slow neither side's
 * figure. Prints a table and writes bench/results/ssm-scan.json.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backend/index.js';
import { writeFileContentAtomic } from '../src/util/atomic.js';
import { createRng } from '../src/util/random.js';
import { machineDescription, printTable } from './machine.js';
import { median, runJson } from './measure.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = 5;
const CHANNELS = 1536;
const STATE_SIZE = 16;
const KERNEL = 4;
const SHAPES = [
  { windows: 1, seqLen: 512 },
  { windows: 8, seqLen: 128 },
];

async function cpuSeconds(call: () => Promise<void>): Promise<number> {
  await call();
  const times: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const started = process.cpuUsage();
    await call();
    const used = process.cpuUsage(started);
    times.push((used.user + used.system) / 1e6);
  }
  return median(times);
}

const backend = getBackend();
backend.setThreads(1);
const rng = createRng(0);
const random = (length: number, shift = 0) => Float32Array.from({ length }, () => rng.normal() + shift);
const rows: (string | number)[][] = [];
const results = [];
for (const { windows, seqLen } of SHAPES) {
  const n = windows * seqLen;
  const sequence = { windows, seqLen, channels: CHANNELS };
  const x = random(n * CHANNELS);
  const delta = random(n * CHANNELS, -3);
  const a = random(CHANNELS * STATE_SIZE).map((value) => -Math.exp(value));
  const [b, c] = [random(n * STATE_SIZE), random(n * STATE_SIZE)];
  const d = random(CHANNELS);
  const state = new Float32Array(windows * CHANNELS * STATE_SIZE);
  const out = new Float32Array(n * CHANNELS);
  const [weight, bias, history] = [random(CHANNELS * KERNEL), random(CHANNELS), new Float32Array(windows * (KERNEL - 1) * CHANNELS)];
  const topiary = {
    scanSeconds: await cpuSeconds(() => backend.selectiveScan({ x, delta, a, b, cmat: c, d, state: state.fill(0) }, out, { ...sequence, stateSize: STATE_SIZE })),
    convSeconds: await cpuSeconds(() => backend.causalConv1d(x, weight, bias, history, out, sequence)),
  };
  const torch = runJson('python3', [path.join(root, 'bench', 'torch_ssm_scan.py'), ...[windows, seqLen, CHANNELS, STATE_SIZE, KERNEL, RUNS].map(String)], { cwd: root }).report as { scanSeconds: number; convSeconds: number };
  const tokens = (seconds: number) => Math.round(n / seconds);
  rows.push([`${windows}×${seqLen}`, 'selective scan', tokens(topiary.scanSeconds), tokens(torch.scanSeconds), (torch.scanSeconds / topiary.scanSeconds).toFixed(1)]);
  rows.push([`${windows}×${seqLen}`, 'causal conv1d', tokens(topiary.convSeconds), tokens(torch.convSeconds), (torch.convSeconds / topiary.convSeconds).toFixed(1)]);
  results.push({ windows, seqLen, channels: CHANNELS, stateSize: STATE_SIZE, kernel: KERNEL, topiary, transformersSlowPath: torch });
}
printTable(['windows×tokens', 'operation', 'Topiary tokens/CPU-s', 'transformers tokens/CPU-s', 'ratio'], rows);
const file = path.join(root, 'bench', 'results', 'ssm-scan.json');
writeFileContentAtomic(file, JSON.stringify({ machine: machineDescription(), threads: 1, runs: RUNS, results }, null, 2) + '\n');
process.stdout.write(`wrote ${path.relative(root, file)}\n`);
