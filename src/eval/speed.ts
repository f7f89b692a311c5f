/**
 * Prefill and decode speed of one model, in Topiary or in llama.cpp (node-llama-cpp's prebuilt CPU
 * binary): what `topiary speed` prints and bench/engines.ts compares.
 *
 * Prefill: one prompt into an empty KV cache, the logits of its last position included. Decode:
 * greedy tokens, one at a time against the cache. Each phase is timed around the engine's calls by
 * wall clock and by the process's CPU time, after a warm-up that reads (and dequantizes) every
 * layer, and the median of the runs is reported. On a machine shared with other jobs wall time
 * also counts the time the engine waited for a core; CPU time (one thread: the engine's own work)
 * does not, so both are kept.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Llama, Token } from 'node-llama-cpp';
import { KvCache, type CausalLM } from '../model/causal-lm.js';
import { TopiaryError } from '../util/errors.js';

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

export const secondsSince = (started: number) => (performance.now() - started) / 1000;

/** The upper median: one of the measurements itself, never an average of two. */
export const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const round = (value: number, digits: number) => Number(value.toFixed(digits));
const roundedPhase = (time: PhaseTime, digits: number): PhaseTime => ({ wall: round(time.wall, digits), cpu: round(time.cpu, digits) });

/** The 1-minute load average: other processes on the cores slow every figure measured beside it. */
export const loadAverage = () => round(os.loadavg()[0]!, 2);

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

/**
 * Topiary: prefill into a KV cache, then one forwardCached call per greedy token. `cachedPositions`
 * is the cache's length after the last run: prompt and decoded tokens, as asked.
 */
export async function topiarySpeed(model: CausalLM, prompt: number[], settings: SpeedSettings): Promise<EngineSpeed & { firstToken: number; cachedPositions: number }> {
  model.backend.setThreads(settings.threads);
  await model.forwardCached(prompt.slice(0, 8), new KvCache()); // warm-up: reads (and dequantizes) every layer
  const prefillSeconds: PhaseTime[] = [];
  const decodeSeconds: PhaseTime[] = [];
  let decoded: number[] = [];
  let firstToken = 0;
  let cachedPositions = 0;
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
    cachedPositions = cache.length;
  }
  return { ...summarize(settings, prefillSeconds, decodeSeconds, decoded), firstToken, cachedPositions };
}

/** llama.cpp: the prompt as one batch, then greedy generation from `firstToken`, one token per step. */
export async function llamaCppSpeed(llama: Llama, file: string, prompt: number[], firstToken: number, settings: SpeedSettings): Promise<EngineSpeed & { flashAttention: string }> {
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

/**
 * node-llama-cpp's prebuilt CPU llama.cpp (never built here), and what it says it is. It is a
 * development dependency, loaded only when asked for.
 */
export async function openLlamaCpp(): Promise<{ llama: Llama; info: { build: string; release: string; systemInfo: string } }> {
  let lib: typeof import('node-llama-cpp');
  try {
    lib = await import('node-llama-cpp');
  } catch {
    throw new TopiaryError('the llama.cpp engine needs the node-llama-cpp package (npm install node-llama-cpp)');
  }
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  return { llama, info: { build: llama.buildType, release: llama.llamaCppRelease.release, systemInfo: llama.systemInfo } };
}

/** The GGUF file llama.cpp can run for a model Topiary opened: the file itself, or the model.gguf a prune folder holds. */
export function ggufFileOf(model: CausalLM): string {
  const { format, path: modelPath } = model.source;
  if (format !== 'gguf') throw new TopiaryError(`llama.cpp runs GGUF files only; this model is ${format}`, modelPath);
  return fs.statSync(modelPath).isDirectory() ? path.join(modelPath, 'model.gguf') : modelPath;
}
