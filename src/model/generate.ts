import type { CausalLM } from './decoder.js';

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
 * Autoregressive generation. Each step reruns the whole sequence (no KV cache): simple and exact,
 * and fast enough for sanity checks of small and pruned models.
 */
export async function generate(model: CausalLM, prompt: number[], options: GenerateOptions): Promise<number[]> {
  const { vocabSize, maxPositionEmbeddings, bosTokenId, eosTokenId } = model.config;
  const stop = new Set(options.stopTokens ?? [eosTokenId, bosTokenId].filter((t): t is number => t !== undefined));
  const random = options.random ?? Math.random;
  const tokens = [...prompt];
  const generated: number[] = [];
  while (generated.length < options.maxNewTokens && tokens.length < maxPositionEmbeddings) {
    const hidden = await model.finalHidden([tokens]);
    const d = model.config.hiddenSize;
    const last = hidden.subarray((tokens.length - 1) * d, tokens.length * d);
    const logits = await model.head(last, 1);
    const next = pick(logits.subarray(0, vocabSize), options.temperature, random);
    if (stop.has(next)) break;
    tokens.push(next);
    generated.push(next);
    options.onToken?.(next);
  }
  return generated;
}
