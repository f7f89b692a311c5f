/**
 * Forward-pass speed against what the hardware allows, and beside PyTorch, in one run: prefill of
 * one 2048-token window (full logits, as evaluation needs them) of SmolLM2-135M in fp32, at 1 and
 * 2 threads, and the peak memory of `topiary eval`. Writes bench/results/prefill.json.
 *
 * The FLOP bound: the window's FLOPs — every linear layer and the LM head (2·rows·out·in each) and
 * causal attention (QKᵀ and P·V over the keys each query sees: 2·heads·headDim·T(T+1) per layer) —
 * divided by the GEMM rate measured here at the model's own shapes (each distinct linear layer
 * shape and the head, rows × out × in, best of a few runs, weighted by how often the window runs
 * it). Everything beyond those GEMMs (attention's softmax and packing, norms, RoPE, activations,
 * memory traffic) is what separates Topiary from the bound. Elementwise FLOPs are not counted.
 *
 * OpenBLAS's kernel is printed: OPENBLAS_CORETYPE can force a slower one, so bench/run.sh runs
 * this with it unset.
 *
 *   node --import tsx bench/prefill.ts [MODEL] [--seqlen 2048] [--runs 3] [--threads 1,2]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { Backend } from '../src/backend/backend.js';
import { backendKernel, getBackend } from '../src/backend/index.js';
import { packageRoot } from '../src/data/datadir.js';
import { loadAverage, timed, type PhaseTime } from '../src/eval/speed.js';
import type { CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { createRng } from '../src/util/random.js';
import { machineDescription, printTable } from './machine.js';
import { median, smolLM2 } from './measure.js';

const root = packageRoot();
const { values, positionals } = parseArgs({
  options: { seqlen: { type: 'string' }, runs: { type: 'string' }, threads: { type: 'string' } },
  allowPositionals: true,
});
const seqlen = Number(values.seqlen ?? 2048);
const runs = Number(values.runs ?? 3);
const threadCounts = (values.threads ?? '1,2').split(',').map(Number);
const modelPath = positionals[0] ?? smolLM2(root);

interface GemmShape {
  /** op(A)·op(B)ᵀ with A [rows, in], B [out, in]. */
  out: number;
  in: number;
  /** How many times one window runs it. */
  count: number;
}

/** The window's GEMMs (each linear layer of each block, the head) and its attention FLOPs. */
function prefillWork(model: CausalLM): { gemms: GemmShape[]; attentionFlops: number } {
  const { config } = model;
  const shapes = new Map<string, GemmShape>();
  const add = (out: number, inFeatures: number) => {
    const key = `${out}×${inFeatures}`;
    const shape = shapes.get(key) ?? { out, in: inFeatures, count: 0 };
    shape.count++;
    shapes.set(key, shape);
  };
  let attentionFlops = 0;
  for (let layer = 0; layer < model.numLayers; layer++) {
    const { linears } = model.layer(layer);
    for (const linear of Object.values(linears)) add(linear.outFeatures, linear.inFeatures);
    const heads = linears.q ? linears.q.outFeatures / config.headDim : config.numHeads;
    attentionFlops += 2 * heads * config.headDim * seqlen * (seqlen + 1);
  }
  add(config.vocabSize, config.wordEmbeddingSize ?? config.hiddenSize);
  return { gemms: [...shapes.values()], attentionFlops };
}

/** The fastest of a few runs after a warm-up, by wall clock and by CPU time separately. */
async function bestTime(call: () => Promise<unknown>, repeats: number): Promise<PhaseTime> {
  await call();
  const best = { wall: Infinity, cpu: Infinity };
  for (let i = 0; i < repeats; i++) {
    const { seconds } = await timed(call);
    best.wall = Math.min(best.wall, seconds.wall);
    best.cpu = Math.min(best.cpu, seconds.cpu);
  }
  return best;
}

/** Seconds of one rows×out×in GEMM X·Wᵀ. */
function gemmSeconds(backend: Backend, rows: number, shape: GemmShape): Promise<PhaseTime> {
  const rng = createRng(shape.out + shape.in);
  const x = Float32Array.from({ length: rows * shape.in }, () => rng.next() - 0.5);
  const w = Float32Array.from({ length: shape.out * shape.in }, () => rng.next() - 0.5);
  const y = new Float32Array(rows * shape.out);
  return bestTime(() => backend.gemm(x, w, y, { m: rows, n: shape.out, k: shape.in, transB: true }), 3);
}

/**
 * The GEMM rate at the window's shapes (GFLOP per second, and per CPU second) and the tokens/s
 * (per second, per CPU second) its FLOPs allow at that rate.
 */
async function flopBound(backend: Backend, work: ReturnType<typeof prefillWork>) {
  let gemmFlops = 0;
  const seconds = { wall: 0, cpu: 0 };
  for (const shape of work.gemms) {
    gemmFlops += 2 * seqlen * shape.out * shape.in * shape.count;
    const time = await gemmSeconds(backend, seqlen, shape);
    seconds.wall += shape.count * time.wall;
    seconds.cpu += shape.count * time.cpu;
  }
  const totalFlops = gemmFlops + work.attentionFlops;
  const rate = (clock: keyof PhaseTime) => gemmFlops / seconds[clock];
  const bound = (clock: keyof PhaseTime) => seqlen / (totalFlops / rate(clock));
  return {
    windowGflop: totalFlops / 1e9,
    gemmGflops: { wall: rate('wall') / 1e9, cpu: rate('cpu') / 1e9 },
    boundTokensPerSecond: { wall: bound('wall'), cpu: bound('cpu') },
  };
}

/** Prefill tokens per second and per CPU second: the median of the runs after a warm-up. */
async function topiaryPrefill(model: CausalLM): Promise<{ tokensPerSecond: PhaseTime; runSeconds: PhaseTime[] }> {
  const rng = createRng(0);
  const window = Array.from({ length: seqlen }, () => rng.int(model.config.vocabSize));
  await model.logits([window]); // warm-up: also reads and dequantizes the weights
  const runSeconds: PhaseTime[] = [];
  for (let i = 0; i < runs; i++) runSeconds.push((await timed(() => model.logits([window]))).seconds);
  return { tokensPerSecond: { wall: seqlen / median(runSeconds.map((s) => s.wall)), cpu: seqlen / median(runSeconds.map((s) => s.cpu)) }, runSeconds };
}

function torchPrefill(threads: number): Record<string, unknown> {
  const args = [path.join(root, 'bench', 'torch_prefill.py'), modelPath, '--seqlen', String(seqlen), '--runs', String(runs), '--threads', String(threads)];
  const result = spawnSync('python3', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`bench/torch_prefill.py failed:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

function evalPeakMemory(): Record<string, unknown> {
  const result = spawnSync(process.execPath, [path.join(root, 'bin', 'topiary.js'), 'eval', '--model', modelPath, '--dataset', 'wikitext2', '--seqlen', String(seqlen), '--max-windows', '2', '--json'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`topiary eval failed:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

const round = (value: number, digits = 1) => Number(value.toFixed(digits));
const machine = machineDescription();
const backend = getBackend();
const model = await loadModel(modelPath, { backend });
const work = prefillWork(model);
const perThreads = [];
for (const threads of threadCounts) {
  backend.setThreads(threads);
  const bound = await flopBound(backend, work);
  const ours = await topiaryPrefill(model);
  const torch = torchPrefill(threads);
  const torchTokensPerSecond = torch.tokens_per_second as number;
  const rounded = (time: PhaseTime, digits = 1): PhaseTime => ({ wall: round(time.wall, digits), cpu: round(time.cpu, digits) });
  perThreads.push({
    threads,
    windowGflop: round(bound.windowGflop),
    gemmGflops: rounded(bound.gemmGflops),
    boundTokensPerSecond: rounded(bound.boundTokensPerSecond),
    topiary: {
      tokensPerSecond: rounded(ours.tokensPerSecond),
      runSeconds: ours.runSeconds.map((s) => rounded(s, 3)),
      fractionOfBound: { wall: round(ours.tokensPerSecond.wall / bound.boundTokensPerSecond.wall, 3), cpu: round(ours.tokensPerSecond.cpu / bound.boundTokensPerSecond.cpu, 3) },
    },
    pytorch: torch,
    speedupOverPytorch: round(ours.tokensPerSecond.wall / torchTokensPerSecond, 2),
    loadAverage1min: loadAverage(),
  });
}
model.source.close();
const evaluation = evalPeakMemory();
const report = {
  benchmark: 'prefill',
  model: modelPath,
  seqlen,
  runs,
  machine,
  kernel: backendKernel(backend),
  perThreads,
  eval: { windows: evaluation.windows, seconds: evaluation.seconds, perplexity: evaluation.perplexity, peakRssMb: evaluation.peak_rss_mb },
};
process.stdout.write(`kernel ${report.kernel}; ${String(machine.cpu)}, ${String(machine.cores)} cores; window ${perThreads[0]?.windowGflop} GFLOP\n`);
// Wall clock first, then per CPU second (with one thread, immune to other jobs taking the core).
const both = (time: PhaseTime, percent = false) => (percent ? `${(100 * time.wall).toFixed(1)}% / ${(100 * time.cpu).toFixed(1)}%` : `${time.wall} / ${time.cpu}`);
printTable(
  ['threads', 'GEMM GFLOP/s at the model shapes', 'FLOP bound tok/s', 'Topiary tok/s', '% of bound', 'PyTorch tok/s', 'Topiary / PyTorch', 'load'],
  perThreads.map((row) => [
    row.threads,
    both(row.gemmGflops),
    both(row.boundTokensPerSecond),
    both(row.topiary.tokensPerSecond),
    both(row.topiary.fractionOfBound, true),
    String(row.pytorch.tokens_per_second),
    row.speedupOverPytorch,
    row.loadAverage1min,
  ]),
);
process.stdout.write('(each cell: by wall clock / per CPU second of the whole process)\n');
process.stdout.write(`PyTorch: ${String(perThreads[0]?.pytorch.blas)}; topiary eval peak memory ${String(evaluation.peak_rss_mb)} MiB; load average ${String(machine.loadAverage1min)} at the start\n`);
const out = path.join(root, 'bench', 'results', 'prefill.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
writeFileAtomic(out, (tmp) => fs.writeFileSync(tmp, JSON.stringify(report, null, 2) + '\n'));
process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
