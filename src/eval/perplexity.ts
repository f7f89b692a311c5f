import type { CausalLM } from '../model/causal-lm.js';
import { UsageError } from '../util/errors.js';
import { requireFiniteNumber } from '../util/finite.js';

export interface PerplexityOptions {
  seqlen: number;
  /** Evaluate only the first K windows. */
  maxWindows?: number;
  onProgress?: (done: number, total: number, runningPerplexity: number) => void;
}

export interface PerplexityResult {
  perplexity: number;
  /** Sum of next-token NLL (nats). */
  nll: number;
  /** Next-token predictions scored: windows × (seqlen − 1). */
  tokens: number;
  windows: number;
  seqlen: number;
  /** Tokens in the whole tokenized text. */
  textTokens: number;
  seconds: number;
}

/**
 * Perplexity by the papers' protocol: the tokenized text cut into non-overlapping windows of
 * `seqlen` tokens (the tail dropped), PPL = exp(mean next-token NLL over every window).
 */
export async function perplexity(model: CausalLM, tokens: readonly number[], options: PerplexityOptions): Promise<PerplexityResult> {
  const { seqlen } = options;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new UsageError(`--seqlen must be an integer ≥ 2, got ${seqlen}`);
  if (seqlen > model.config.maxPositionEmbeddings) {
    throw new UsageError(`--seqlen ${seqlen} exceeds the model's context (${model.config.maxPositionEmbeddings})`);
  }
  const available = Math.floor(tokens.length / seqlen);
  const windows = Math.min(available, options.maxWindows ?? available);
  if (windows === 0) throw new UsageError(`the text has ${tokens.length} tokens, fewer than one window of ${seqlen}`);
  const started = performance.now();
  let nll = 0;
  let predicted = 0;
  for (let w = 0; w < windows; w++) {
    const window = tokens.slice(w * seqlen, (w + 1) * seqlen);
    const result = await model.windowNll([window]);
    requireFiniteNumber(result.nll, `the log-likelihood of window ${w + 1}`, model.source.path);
    nll += result.nll;
    predicted += result.predicted;
    options.onProgress?.(w + 1, windows, Math.exp(nll / predicted));
  }
  return {
    // Finite log-likelihoods can still average past what exp() can represent (an overflowing model).
    perplexity: requireFiniteNumber(Math.exp(nll / predicted), 'the perplexity', model.source.path),
    nll,
    tokens: predicted,
    windows,
    seqlen,
    textTokens: tokens.length,
    seconds: (performance.now() - started) / 1000,
  };
}
