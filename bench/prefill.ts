/**
 * Forward-pass speed and memory on a real model, Topiary beside PyTorch in the same run:
 * prefill tokens/s of one 2048-token window (logits included) for SmolLM2-135M in fp32, Topiary's
 * native backend against transformers on PyTorch CPU, and the peak memory of `topiary eval`.
 * Writes bench/results/prefill.json.
 *
 *   node --import tsx bench/prefill.ts [MODEL] [--seqlen 2048] [--runs 3]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { packageRoot } from '../src/data/datadir.js';
import { loadModel } from '../src/model/load.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { createRng } from '../src/util/random.js';
import { machineDescription, printTable } from './machine.js';
import { median, smolLM2 } from './measure.js';

const root = packageRoot();
const { values, positionals } = parseArgs({ options: { seqlen: { type: 'string' }, runs: { type: 'string' } }, allowPositionals: true });
const seqlen = Number(values.seqlen ?? 2048);
const runs = Number(values.runs ?? 3);
const modelPath = positionals[0] ?? smolLM2(root);

async function topiaryPrefill(): Promise<{ tokensPerSecond: number; runSeconds: number[] }> {
  const model = await loadModel(modelPath, { backend: getBackend() });
  const rng = createRng(0);
  const window = Array.from({ length: seqlen }, () => rng.int(model.config.vocabSize));
  await model.logits([window]); // warm-up: also reads and dequantizes the weights
  const runSeconds: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await model.logits([window]);
    runSeconds.push((performance.now() - started) / 1000);
  }
  return { tokensPerSecond: seqlen / median(runSeconds), runSeconds };
}

function torchPrefill(): Record<string, unknown> {
  const result = spawnSync('python3', [path.join(root, 'bench', 'torch_prefill.py'), modelPath, '--seqlen', String(seqlen), '--runs', String(runs)], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`bench/torch_prefill.py failed:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

function evalPeakMemory(): Record<string, unknown> {
  const result = spawnSync(process.execPath, [path.join(root, 'bin', 'topiary.js'), 'eval', '--model', modelPath, '--dataset', 'wikitext2', '--seqlen', String(seqlen), '--max-windows', '2', '--json'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`topiary eval failed:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

const machine = machineDescription();
const ours = await topiaryPrefill();
const torch = torchPrefill();
const evaluation = evalPeakMemory();
const torchTokensPerSecond = torch.tokens_per_second as number;
const report = {
  benchmark: 'prefill',
  model: modelPath,
  seqlen,
  runs,
  machine,
  topiary: { tokensPerSecond: Number(ours.tokensPerSecond.toFixed(1)), runSeconds: ours.runSeconds.map((s) => Number(s.toFixed(3))) },
  pytorch: torch,
  speedup: Number((ours.tokensPerSecond / torchTokensPerSecond).toFixed(2)),
  eval: { windows: evaluation.windows, seconds: evaluation.seconds, perplexity: evaluation.perplexity, peakRssMb: evaluation.peak_rss_mb },
};
printTable(
  ['engine', 'prefill tokens/s', 'median s', 'threads / BLAS'],
  [
    ['Topiary', report.topiary.tokensPerSecond, median(ours.runSeconds).toFixed(2), String(machine.backend)],
    ['PyTorch', torchTokensPerSecond, String(torch.median_seconds), `${String(torch.torch_threads)} threads, ${String(torch.blas ?? torch.torch_version)}`],
  ],
);
process.stdout.write(`Topiary / PyTorch: ${report.speedup}×   ·   topiary eval peak memory ${String(evaluation.peak_rss_mb)} MiB   ·   load average ${String(machine.loadAverage1min)}\n`);
const out = path.join(root, 'bench', 'results', 'prefill.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
writeFileAtomic(out, (tmp) => fs.writeFileSync(tmp, JSON.stringify(report, null, 2) + '\n'));
process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
