import { defaultEvaluationWindows, describeCorpus, evaluationText, parseCorpusSpec } from '../data/corpora.js';
import { resolveDataDir } from '../data/datadir.js';
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

export interface DatasetPerplexityOptions extends Omit<PerplexityOptions, 'maxWindows'> {
  /** `wikitext2` (test split), `c4` (validation) or `text:FILE`. */
  dataset: string;
  /** Evaluate only the first K windows (default: all; 256 for C4, as the papers do). */
  maxWindows?: number;
  /** The data folder; default TOPIARY_DATA_DIR, else ../shared/data beside the checkout. */
  dataDir?: string;
}

export interface DatasetPerplexity extends PerplexityResult {
  /** The dataset as described in reports (e.g. "wikitext2 test"). */
  dataset: string;
  tokenizeSeconds: number;
}

/** `perplexity` over a named dataset, tokenized with the model's own tokenizer (what `topiary eval --dataset` runs). */
export async function datasetPerplexity(model: CausalLM, options: DatasetPerplexityOptions): Promise<DatasetPerplexity> {
  const corpus = parseCorpusSpec(options.dataset);
  const dataDir = corpus.kind === 'text' ? '' : resolveDataDir(options.dataDir);
  const tokenizeStart = performance.now();
  const tokens = model.tokenizer.encode(evaluationText(corpus, dataDir));
  const tokenizeSeconds = (performance.now() - tokenizeStart) / 1000;
  const maxWindows = options.maxWindows ?? defaultEvaluationWindows(corpus);
  const result = await perplexity(model, tokens, {
    seqlen: options.seqlen,
    ...(maxWindows !== undefined ? { maxWindows } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  return { dataset: describeCorpus(corpus), ...result, tokenizeSeconds };
}
