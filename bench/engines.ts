/**
 * Prefill and decode speed of one GGUF file in Topiary and in llama.cpp (node-llama-cpp's prebuilt
 * CPU binary), for bench/structured.ts.
 *
 * Prefill: one prompt, the logits of its last position included. Decode: greedy tokens, one at a
 * time against the KV cache, both engines starting from the token Topiary picked after the prompt
 * (`greedyAgreement` counts the leading tokens the engines then agree on). Both engines use the
 * same number of threads; each phase is timed around the engine's calls by wall clock and by the
 * process's CPU time (median of the runs after a warm-up). On a machine shared with other jobs,
 * wall time also counts the time the engine waited for a core; CPU time (one thread: the engine's
 * own work) does not, so speed-ups are given on both.
 *
 * One thread is the benchmark's default: on a shared machine, thread pools that spin at barriers
 * (llama.cpp's) collapse when another process takes a core, and one thread measures each engine's
 * own work.
 */
import * as os from 'node:os';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { getBackend } from '../src/backend/index.js';
import { wikitext2Text } from '../src/data/corpora.js';
import { KvCache, type CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { median } from './measure.js';

export interface SpeedSettings {
  promptTokens: number;
  decodeTokens: number;
  threads: number;
  runs: number;
}

/** Seconds of one phase (or tokens per second), by wall clock and by the CPU time of the whole process (every thread). */
export interface PhaseTime {
  wall: number;
  cpu: number;
}

export interface EngineSpeed {
  /** Tokens per second by wall time and by CPU time (medians over the runs). */
  prefillTokensPerSecond: PhaseTime;
  decodeTokensPerSecond: PhaseTime;
  prefillSeconds: PhaseTime[];
  decodeSeconds: PhaseTime[];
  /** The greedy tokens of the last decode run. */
  decoded: number[];
}

export interface SpeedMeasurement {
  topiary: EngineSpeed & { firstToken: number };
  llamaCpp: EngineSpeed & { flashAttention: string };
  /** Leading decoded tokens on which the two engines agree (out of decodeTokens). */
  greedyAgreement: number;
  /** 1-minute load average before and after the measurement. */
  loadAverage1min: { before: number; after: number };
}

export interface Speedups {
  prefill: PhaseTime;
  decode: PhaseTime;
}

export const secondsSince = (started: number) => (performance.now() - started) / 1000;
const round = (value: number, digits: number) => Number(value.toFixed(digits));
const roundedPhase = (time: PhaseTime, digits: number): PhaseTime => ({ wall: round(time.wall, digits), cpu: round(time.cpu, digits) });
const loadAverage = () => round(os.loadavg()[0]!, 2);

export async function timed<T>(phase: () => Promise<T>): Promise<{ value: T; seconds: PhaseTime }> {
  const wallStarted = performance.now();
  const cpuStarted = process.cpuUsage();
  const value = await phase();
  const cpu = process.cpuUsage(cpuStarted);
  return { value, seconds: { wall: secondsSince(wallStarted), cpu: (cpu.user + cpu.system) / 1e6 } };
}

function tokensPerSecond(tokens: number, seconds: PhaseTime[]): PhaseTime {
  return roundedPhase({ wall: tokens / median(seconds.map((s) => s.wall)), cpu: tokens / median(seconds.map((s) => s.cpu)) }, 2);
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

function summarize(settings: SpeedSettings, prefillSeconds: PhaseTime[], decodeSeconds: PhaseTime[], decoded: number[]): EngineSpeed {
  return {
    prefillTokensPerSecond: tokensPerSecond(settings.promptTokens, prefillSeconds),
    decodeTokensPerSecond: tokensPerSecond(settings.decodeTokens, decodeSeconds),
    prefillSeconds: prefillSeconds.map((time) => roundedPhase(time, 4)),
    decodeSeconds: decodeSeconds.map((time) => roundedPhase(time, 4)),
    decoded,
  };
}

/** The first `tokens` tokens of the WikiText-2 test split: the prompt both engines prefill. */
export function wikitextPrompt(model: CausalLM, dataDir: string, tokens: number): number[] {
  const prompt = model.tokenizer.encode(wikitext2Text(dataDir, 'test').slice(0, 16 * tokens)).slice(0, tokens);
  if (prompt.length < tokens) throw new Error(`the WikiText-2 test excerpt gave only ${prompt.length} tokens`);
  return prompt;
}

/** Topiary: prefill into a KV cache, then one forwardCached call per greedy token. */
async function topiarySpeed(file: string, prompt: number[], settings: SpeedSettings): Promise<SpeedMeasurement['topiary']> {
  const model = await loadModel(file, { backend: getBackend() });
  model.backend.setThreads(settings.threads);
  try {
    await model.forwardCached(prompt.slice(0, 8), new KvCache()); // warm-up: reads (and dequantizes) every layer
    const prefillSeconds: PhaseTime[] = [];
    const decodeSeconds: PhaseTime[] = [];
    let decoded: number[] = [];
    let firstToken = 0;
    for (let run = 0; run < settings.runs; run++) {
      const cache = new KvCache();
      const prefill = await timed(async () => argmax(await model.forwardCached(prompt, cache)));
      prefillSeconds.push(prefill.seconds);
      firstToken = prefill.value;
      const decode = await timed(async () => {
        const tokens: number[] = [];
        let next = firstToken;
        while (tokens.length < settings.decodeTokens) {
          next = argmax(await model.forwardCached([next], cache));
          tokens.push(next);
        }
        return tokens;
      });
      decodeSeconds.push(decode.seconds);
      decoded = decode.value;
    }
    return { ...summarize(settings, prefillSeconds, decodeSeconds, decoded), firstToken };
  } finally {
    model.source.close();
  }
}

/** llama.cpp: the prompt as one batch, then greedy generation from `firstToken`, one token per step. */
async function llamaCppSpeed(llama: Llama, file: string, prompt: number[], firstToken: number, settings: SpeedSettings): Promise<SpeedMeasurement['llamaCpp']> {
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({
    contextSize: settings.promptTokens + settings.decodeTokens + 16,
    batchSize: settings.promptTokens,
    threads: { ideal: settings.threads, min: settings.threads },
  });
  try {
    const sequence = context.getSequence();
    // node-llama-cpp brands token ids; they are plain numbers.
    const asTokens = (ids: number[]) => ids as unknown as Token[];
    await sequence.evaluateWithoutGeneratingNewTokens(asTokens(prompt.slice(0, 8))); // warm-up: pages the weights in
    const prefillSeconds: PhaseTime[] = [];
    const decodeSeconds: PhaseTime[] = [];
    let decoded: number[] = [];
    for (let run = 0; run < settings.runs; run++) {
      await sequence.clearHistory();
      prefillSeconds.push((await timed(() => sequence.evaluateWithoutGeneratingNewTokens(asTokens(prompt)))).seconds);
      // Each iteration evaluates the previous token and samples the next (temperature 0: greedy).
      const generation = sequence.evaluate(asTokens([firstToken]), { temperature: 0 });
      const decode = await timed(async () => {
        const tokens: number[] = [];
        while (tokens.length < settings.decodeTokens) tokens.push((await generation.next()).value as unknown as number);
        return tokens;
      });
      await generation.return();
      decodeSeconds.push(decode.seconds);
      decoded = decode.value;
    }
    return { ...summarize(settings, prefillSeconds, decodeSeconds, decoded), flashAttention: String(context.flashAttention) };
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** node-llama-cpp's prebuilt CPU llama.cpp (never built here), and what it says it is. */
export async function openLlamaCpp(): Promise<{ llama: Llama; info: { build: string; release: string; systemInfo: string } }> {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  return { llama, info: { build: llama.buildType, release: llama.llamaCppRelease.release, systemInfo: llama.systemInfo } };
}

/** Times `file` in Topiary, then in llama.cpp, on the same prompt. */
export async function measureSpeed(llama: Llama, file: string, prompt: number[], settings: SpeedSettings): Promise<SpeedMeasurement> {
  const before = loadAverage();
  const topiary = await topiarySpeed(file, prompt, settings);
  const llamaCpp = await llamaCppSpeed(llama, file, prompt, topiary.firstToken, settings);
  const disagreement = topiary.decoded.findIndex((token, i) => token !== llamaCpp.decoded[i]);
  return {
    topiary,
    llamaCpp,
    greedyAgreement: disagreement === -1 ? settings.decodeTokens : disagreement,
    loadAverage1min: { before, after: loadAverage() },
  };
}

/** Tokens/s of `speed` over those of `baseline`, per phase and clock. */
export function speedupOver(speed: EngineSpeed, baseline: EngineSpeed): Speedups {
  const ratio = (phase: 'prefillTokensPerSecond' | 'decodeTokensPerSecond'): PhaseTime => ({
    wall: round(speed[phase].wall / baseline[phase].wall, 2),
    cpu: round(speed[phase].cpu / baseline[phase].cpu, 2),
  });
  return { prefill: ratio('prefillTokensPerSecond'), decode: ratio('decodeTokensPerSecond') };
}
