/**
 * Prefill and decode speed of one GGUF file in Topiary and in llama.cpp (node-llama-cpp's prebuilt
 * CPU binary), for bench/structured.ts, measured by src/eval/speed.ts (what `topiary speed` runs).
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
import type { Llama } from 'node-llama-cpp';
import { getBackend } from '../src/backend/index.js';
import { wikitext2Text } from '../src/data/corpora.js';
import { llamaCppSpeed, loadAverage, topiarySpeed, type EngineSpeed, type PhaseTime, type SpeedSettings } from '../src/eval/speed.js';
import type { CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';

export { openLlamaCpp, secondsSince, timed, type EngineSpeed, type PhaseTime, type SpeedSettings } from '../src/eval/speed.js';

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

const round = (value: number, digits: number) => Number(value.toFixed(digits));

/** The first `tokens` tokens of the WikiText-2 test split: the prompt both engines prefill. */
export function wikitextPrompt(model: CausalLM, dataDir: string, tokens: number): number[] {
  const prompt = model.tokenizer.encode(wikitext2Text(dataDir, 'test').slice(0, 16 * tokens)).slice(0, tokens);
  if (prompt.length < tokens) throw new Error(`the WikiText-2 test excerpt gave only ${prompt.length} tokens`);
  return prompt;
}

/** Times `file` in Topiary, then in llama.cpp, on the same prompt. */
export async function measureSpeed(llama: Llama, file: string, prompt: number[], settings: SpeedSettings): Promise<SpeedMeasurement> {
  const before = loadAverage();
  const model = await loadModel(file, { backend: getBackend() });
  let topiary: SpeedMeasurement['topiary'];
  try {
    topiary = await topiarySpeed(model, prompt, settings);
  } finally {
    model.source.close();
  }
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
