/**
 * Prefill and decode speed of SmolLM2-135M, dense and structurally pruned (FLAP, wanda-sp, COMP at
 * several ratios), in Topiary and in llama.cpp (node-llama-cpp's prebuilt CPU binary), same run.
 *
 * Every model is exported to an F32 GGUF with our writer and both engines load that same file, so
 * they run the same fp32 weights. The Q4_1 source is timed too: llama.cpp computes in Q4_1, Topiary
 * dequantizes it to fp32 when loading. Prefill: one `--prompt`-token WikiText-2 test prompt, the
 * logits of its last position included. Decode: `--decode` greedy tokens, one at a time against the
 * KV cache, both engines starting from the token Topiary picked after the prompt (the table shows
 * how many leading tokens the engines then agree on). Both engines use `--threads` threads; each
 * phase is timed around the engine's calls by wall clock and by the process's CPU time (median of
 * `--runs` after a warm-up). On a machine shared with other jobs, wall time also counts the time the
 * engine waited for a core; CPU time (one thread: the engine's own work) does not, so speed-ups are
 * given on both. Writes bench/results/speed.json.
 *
 *   node --import tsx bench/speed.ts [--model PATH] [--methods flap,wanda-sp,comp] [--ratios 0.2,0.3,0.5]
 *     [--prompt 512] [--decode 64] [--threads 1] [--runs 2] [--nsamples 32] [--seqlen 128]
 *
 * One thread by default: on a shared machine, thread pools that spin at barriers (llama.cpp's)
 * collapse when another process takes a core, and one thread measures each engine's own work.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { getBackend } from '../src/backend/index.js';
import { drawCalibration } from '../src/data/calibration.js';
import { wikitext2Text } from '../src/data/corpora.js';
import { packageRoot, resolveDataDir } from '../src/data/datadir.js';
import { exportGguf } from '../src/export/gguf-writer.js';
import { CausalLM, KvCache } from '../src/model/decoder.js';
import { loadModel } from '../src/model/load.js';
import { structuredMethodByName } from '../src/prune/structured/index.js';
import { pruneStructured } from '../src/prune/structured/pipeline.js';
import { prunedSource } from '../src/prune/structured/pruned-source.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { machineDescription, printTable } from './machine.js';

const root = packageRoot();
const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    methods: { type: 'string', default: 'flap,wanda-sp,comp' },
    ratios: { type: 'string', default: '0.2,0.3,0.5' },
    prompt: { type: 'string', default: '512' },
    decode: { type: 'string', default: '64' },
    threads: { type: 'string', default: '1' },
    runs: { type: 'string', default: '2' },
    nsamples: { type: 'string', default: '32' },
    seqlen: { type: 'string', default: '128' },
  },
});
const promptTokens = Number(values.prompt);
const decodeTokens = Number(values.decode);
const threads = Number(values.threads);
const runs = Number(values.runs);
const calibration = { corpus: { kind: 'wikitext2' as const }, nsamples: Number(values.nsamples), seqlen: Number(values.seqlen), seed: 0 };
const sourcePath = values.model ?? execFileSync('bash', [path.join(root, 'scripts', 'fetch-smollm2.sh')], { encoding: 'utf8' }).trim();
const dataDir = resolveDataDir();

/** Seconds of one phase, by wall clock and by the CPU time of the whole process (every thread). */
interface PhaseTime {
  wall: number;
  cpu: number;
}

interface EngineSpeed {
  /** Tokens per second by wall time and by CPU time (medians over the runs). */
  prefillTokensPerSecond: PhaseTime;
  decodeTokensPerSecond: PhaseTime;
  prefillSeconds: PhaseTime[];
  decodeSeconds: PhaseTime[];
  /** The greedy tokens of the last decode run. */
  decoded: number[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const secondsSince = (started: number) => (performance.now() - started) / 1000;

async function timed<T>(phase: () => Promise<T>): Promise<{ value: T; seconds: PhaseTime }> {
  const wallStarted = performance.now();
  const cpuStarted = process.cpuUsage();
  const value = await phase();
  const cpu = process.cpuUsage(cpuStarted);
  return { value, seconds: { wall: secondsSince(wallStarted), cpu: (cpu.user + cpu.system) / 1e6 } };
}

function tokensPerSecond(tokens: number, seconds: PhaseTime[]): PhaseTime {
  return { wall: tokens / median(seconds.map((s) => s.wall)), cpu: tokens / median(seconds.map((s) => s.cpu)) };
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

function summarize(prefillSeconds: PhaseTime[], decodeSeconds: PhaseTime[], decoded: number[]): EngineSpeed {
  return {
    prefillTokensPerSecond: tokensPerSecond(promptTokens, prefillSeconds),
    decodeTokensPerSecond: tokensPerSecond(decodeTokens, decodeSeconds),
    prefillSeconds,
    decodeSeconds,
    decoded,
  };
}

/** Topiary: prefill into a KV cache, then one forwardCached call per greedy token. */
async function topiarySpeed(file: string, prompt: number[]): Promise<EngineSpeed & { firstToken: number }> {
  const model = await loadModel(file, { backend: getBackend() });
  model.backend.setThreads(threads);
  await model.forwardCached(prompt.slice(0, 8), new KvCache()); // warm-up: reads (and dequantizes) every layer
  const prefillSeconds: PhaseTime[] = [];
  const decodeSeconds: PhaseTime[] = [];
  let decoded: number[] = [];
  let firstToken = 0;
  for (let run = 0; run < runs; run++) {
    const cache = new KvCache();
    const prefill = await timed(async () => argmax(await model.forwardCached(prompt, cache)));
    prefillSeconds.push(prefill.seconds);
    firstToken = prefill.value;
    const decode = await timed(async () => {
      const tokens: number[] = [];
      let next = firstToken;
      while (tokens.length < decodeTokens) {
        next = argmax(await model.forwardCached([next], cache));
        tokens.push(next);
      }
      return tokens;
    });
    decodeSeconds.push(decode.seconds);
    decoded = decode.value;
  }
  model.source.close();
  return { ...summarize(prefillSeconds, decodeSeconds, decoded), firstToken };
}

/** llama.cpp: the prompt as one batch, then greedy generation from `firstToken`, one token per step. */
async function llamaCppSpeed(llama: Llama, file: string, prompt: number[], firstToken: number): Promise<EngineSpeed & { flashAttention: string }> {
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({
    contextSize: promptTokens + decodeTokens + 16,
    batchSize: promptTokens,
    threads: { ideal: threads, min: threads },
  });
  try {
    const sequence = context.getSequence();
    // node-llama-cpp brands token ids; they are plain numbers.
    const asTokens = (ids: number[]) => ids as unknown as Token[];
    await sequence.evaluateWithoutGeneratingNewTokens(asTokens(prompt.slice(0, 8))); // warm-up: pages the weights in
    const prefillSeconds: PhaseTime[] = [];
    const decodeSeconds: PhaseTime[] = [];
    let decoded: number[] = [];
    for (let run = 0; run < runs; run++) {
      await sequence.clearHistory();
      prefillSeconds.push((await timed(() => sequence.evaluateWithoutGeneratingNewTokens(asTokens(prompt)))).seconds);
      // Each iteration evaluates the previous token and samples the next (temperature 0: greedy).
      const generation = sequence.evaluate(asTokens([firstToken]), { temperature: 0 });
      const decode = await timed(async () => {
        const tokens: number[] = [];
        while (tokens.length < decodeTokens) tokens.push((await generation.next()).value as unknown as number);
        return tokens;
      });
      await generation.return();
      decodeSeconds.push(decode.seconds);
      decoded = decode.value;
    }
    return { ...summarize(prefillSeconds, decodeSeconds, decoded), flashAttention: String(context.flashAttention) };
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

interface Row {
  label: string;
  method: string;
  ratio: number;
  achievedRatio: number;
  weights: 'Q4_1' | 'F32';
  bytes: number;
  pruneSeconds?: number;
  topiary: EngineSpeed;
  llamaCpp: EngineSpeed & { flashAttention: string };
  /** Leading decoded tokens on which the two engines agree (out of decodeTokens). */
  greedyAgreement: number;
}

async function measure(llama: Llama, file: string, prompt: number[], row: Omit<Row, 'topiary' | 'llamaCpp' | 'greedyAgreement' | 'bytes'>): Promise<Row> {
  const topiary = await topiarySpeed(file, prompt);
  const llamaCpp = await llamaCppSpeed(llama, file, prompt, topiary.firstToken);
  const disagreement = topiary.decoded.findIndex((token, i) => token !== llamaCpp.decoded[i]);
  const measured: Row = {
    ...row,
    bytes: fs.statSync(file).size,
    topiary,
    llamaCpp,
    greedyAgreement: disagreement === -1 ? decodeTokens : disagreement,
  };
  const brief = (speed: EngineSpeed) => `${speed.prefillTokensPerSecond.wall.toFixed(1)} / ${speed.decodeTokensPerSecond.wall.toFixed(2)}`;
  process.stderr.write(`${row.label}: Topiary ${brief(topiary)} tok/s, llama.cpp ${brief(llamaCpp)} tok/s (prefill / decode, wall)\n`);
  return measured;
}

/** Prunes the source model with `method` at `ratio` and writes the result as an F32 GGUF. */
async function pruneToGguf(method: string, ratio: number, file: string): Promise<{ achievedRatio: number; pruneSeconds: number }> {
  const started = performance.now();
  const model = await loadModel(sourcePath, { backend: getBackend() });
  const { windows } = drawCalibration(model.tokenizer, calibration, dataDir);
  const result = await pruneStructured(model, windows, { method: structuredMethodByName(method), ratio, methodOptions: {}, batchWindows: 4 });
  const smaller = new CausalLM(prunedSource(model.source, model.spec, result.keptLayers, result.pruned), model.spec, model.backend);
  const pruneSeconds = secondsSince(started);
  exportGguf(smaller, file, { dtype: 'F32', name: `SmolLM2-135M ${method} ${ratio}` });
  model.source.close();
  return { achievedRatio: result.achievedRatio, pruneSeconds };
}

const machine = machineDescription();
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'topiary-speed-'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const llamaCppInfo = { build: llama.buildType, release: llama.llamaCppRelease.release, systemInfo: llama.systemInfo };
const rows: Row[] = [];
try {
  const source = await loadModel(sourcePath, { backend: getBackend() });
  const prompt = source.tokenizer.encode(wikitext2Text(dataDir, 'test').slice(0, 16 * promptTokens)).slice(0, promptTokens);
  if (prompt.length < promptTokens) throw new Error(`the WikiText-2 test excerpt gave only ${prompt.length} tokens`);
  const denseFile = path.join(workDir, 'dense.gguf');
  exportGguf(source, denseFile, { dtype: 'F32', name: 'SmolLM2-135M dense' });
  source.source.close();

  const dense = { method: 'dense', ratio: 0, achievedRatio: 0 };
  rows.push(await measure(llama, sourcePath, prompt, { ...dense, label: 'dense (Q4_1 source)', weights: 'Q4_1' }));
  rows.push(await measure(llama, denseFile, prompt, { ...dense, label: 'dense', weights: 'F32' }));
  fs.rmSync(denseFile);
  for (const ratio of values.ratios.split(',').map(Number)) {
    for (const method of values.methods.split(',')) {
      const file = path.join(workDir, `${method}-${ratio}.gguf`);
      const pruned = await pruneToGguf(method, ratio, file);
      rows.push(await measure(llama, file, prompt, { label: `${method} ${ratio}`, method, ratio, weights: 'F32', ...pruned }));
      fs.rmSync(file);
    }
  }
} finally {
  fs.rmSync(workDir, { recursive: true, force: true });
  await llama.dispose();
}

const baseline = rows.find((row) => row.label === 'dense')!;
type Clock = keyof PhaseTime;
const round = (value: number, digits: number) => Number(value.toFixed(digits));
const roundedPhase = (time: PhaseTime, digits: number): PhaseTime => ({ wall: round(time.wall, digits), cpu: round(time.cpu, digits) });
function reported(row: Row, engine: 'topiary' | 'llamaCpp') {
  const speed = row[engine];
  const ratio = (phase: 'prefillTokensPerSecond' | 'decodeTokensPerSecond', clock: Clock) => round(speed[phase][clock] / baseline[engine][phase][clock], 2);
  return {
    ...speed,
    prefillTokensPerSecond: roundedPhase(speed.prefillTokensPerSecond, 1),
    decodeTokensPerSecond: roundedPhase(speed.decodeTokensPerSecond, 2),
    prefillSeconds: speed.prefillSeconds.map((time) => roundedPhase(time, 3)),
    decodeSeconds: speed.decodeSeconds.map((time) => roundedPhase(time, 3)),
    speedupVsDenseF32: {
      prefill: { wall: ratio('prefillTokensPerSecond', 'wall'), cpu: ratio('prefillTokensPerSecond', 'cpu') },
      decode: { wall: ratio('decodeTokensPerSecond', 'wall'), cpu: ratio('decodeTokensPerSecond', 'cpu') },
    },
  };
}
const report = {
  benchmark: 'speed',
  model: sourcePath,
  promptTokens,
  decodeTokens,
  threads,
  runs,
  calibration: `WikiText-2 validation, ${calibration.nsamples}×${calibration.seqlen}, seed 0`,
  machine,
  loadAverage1minAtEnd: round(os.loadavg()[0]!, 2),
  llamaCpp: llamaCppInfo,
  rows: rows.map((row) => ({ ...row, topiary: reported(row, 'topiary'), llamaCpp: reported(row, 'llamaCpp') })),
};

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
for (const clock of ['wall', 'cpu'] as const) {
  process.stdout.write(`\ntokens/s by ${clock === 'wall' ? 'wall time' : 'CPU time (the engine\'s own work, not time waiting for a core)'}\n`);
  printTable(
    ['model', 'removed', 'weights', 'MiB', 'Topiary prefill', 'decode', 'speed-up p/d', 'llama.cpp prefill', 'decode', 'speed-up p/d', 'greedy agree'],
    report.rows.map((row) => [
      row.label,
      row.achievedRatio.toFixed(3),
      row.weights,
      mib(row.bytes),
      ...[row.topiary, row.llamaCpp].flatMap((speed) => [
        speed.prefillTokensPerSecond[clock],
        speed.decodeTokensPerSecond[clock],
        `${speed.speedupVsDenseF32.prefill[clock]}× / ${speed.speedupVsDenseF32.decode[clock]}×`,
      ]),
      `${row.greedyAgreement}/${decodeTokens}`,
    ]),
  );
}
process.stdout.write(
  `prompt ${promptTokens} tokens, ${decodeTokens} decoded; ${threads} thread(s) in both engines; speed-ups against the dense F32 model; ` +
    `load average ${String(machine.loadAverage1min)} at start, ${report.loadAverage1minAtEnd} at end\n`,
);
const out = path.join(root, 'bench', 'results', 'speed.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
writeFileAtomic(out, (tmp) => fs.writeFileSync(tmp, JSON.stringify(report, null, 2) + '\n'));
process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
