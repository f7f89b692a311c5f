import { KvCache, type CausalLM } from './causal-lm.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** Random source in [0, 1) for sampling when temperature > 0. */
  random?: () => number;
  /** Called with each new token id as it is produced. */
  onToken?: (token: number) => void;
  /** Stop tokens (default: the model's EOS, and BOS as llama2.c does). */
  stopTokens?: number[];
}

function pick(logits: Float32Array, temperature: number, random: () => number): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  const weights = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    weights[i] = Math.exp((logits[i]! - logits[best]!) / temperature);
    total += weights[i]!;
  }
  let threshold = random() * total;
  for (let i = 0; i < weights.length; i++) {
    threshold -= weights[i]!;
    if (threshold <= 0) return i;
  }
  return best;
}

/**
 * Autoregressive generation with a KV cache: the prompt is prefilled once, then each new token
 * runs alone against the cached keys and values.
 */
export async function generate(model: CausalLM, prompt: number[], options: GenerateOptions): Promise<number[]> {
  const { vocabSize, maxPositionEmbeddings, bosTokenId, eosTokenId } = model.config;
  const stop = new Set(options.stopTokens ?? [eosTokenId, bosTokenId].filter((t): t is number => t !== undefined));
  const random = options.random ?? Math.random;
  const budget = Math.min(options.maxNewTokens, maxPositionEmbeddings - prompt.length);
  const generated: number[] = [];
  if (budget <= 0) return generated;
  const cache = new KvCache();
  let logits = await model.forwardCached(prompt, cache);
  for (;;) {
    const next = pick(logits.subarray(0, vocabSize), options.temperature, random);
    if (stop.has(next)) break;
    generated.push(next);
    options.onToken?.(next);
    if (generated.length >= budget) break;
    logits = await model.forwardCached([next], cache);
  }
  return generated;
}
