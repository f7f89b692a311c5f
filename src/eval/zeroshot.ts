/**
 * Zero-shot multiple-choice scoring as lm-evaluation-harness does it (HFLM, loglikelihood):
 *
 * - Tokenization (`_encode_pair`): trailing spaces of the context move to the front of the
 *   continuation; the whole string and the context are encoded separately (with the tokenizer's
 *   default BOS behaviour) and the continuation tokens are `whole[len(context):]`.
 * - Truncation: the model reads `(context + continuation)[-(maxLen + 1):][:-1]`, so an over-long
 *   context loses tokens on the left. Each truncated request is counted and reported; an item whose
 *   continuation alone does not fit is skipped and counted, never scored.
 * - Log-likelihood of a request: the sum of log-softmax values of the continuation tokens.
 * - acc: the argmax choice is gold; acc_norm: argmax of log-likelihood / len(choice) (characters);
 *   stderr = sqrt(acc·(1 − acc)/(n − 1)), the harness's sample standard error of a mean of 0/1s.
 *
 * Efficiency, with results identical to scoring each request alone:
 * - A request whose model input is a prefix of another's is read from that one's forward pass.
 *   This shares the context whenever the choices are single tokens (BoolQ, RTE and any item whose
 *   choices are one token each: one pass over the context scores every choice, as the harness's
 *   logits cache does) and covers choices that extend one another.
 * - Inputs are sorted by length and packed into batches of equal-length windows for one
 *   `finalHidden` call each; shorter inputs are right-padded, which cannot change their hidden
 *   states because attention is causal.
 * - The LM head runs only on the rows that predict continuation tokens, gathered from the whole
 *   batch (in chunks of 256 rows), and the backend's tokenLogProbs reads just the target entries.
 *
 * Contexts of multi-token choices are recomputed per choice, as in the harness: sharing them needs
 * a prefix (KV) cache the model does not offer.
 */
import type { CausalLM } from '../model/causal-lm.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { TopiaryError } from '../util/errors.js';
import { requireFinite } from '../util/finite.js';
import { dataFile } from '../data/datadir.js';
import type { LoadedTask, TaskDefinition, TaskItem, TaskMetric, TaskRequest } from './tasks/index.js';

export interface EncodedRequest {
  context: number[];
  continuation: number[];
}

/** The harness's `_encode_pair` (plus its empty-context rule: BOS, else EOS, as the context). */
export function encodeRequest(tokenizer: Tokenizer, request: TaskRequest): EncodedRequest {
  let { context, continuation } = request;
  if (context === '') {
    const prefix = tokenizer.bosId ?? tokenizer.eosId;
    if (prefix === undefined) throw new TopiaryError('an empty context needs a BOS or EOS token, and the tokenizer has neither');
    return { context: [prefix], continuation: tokenizer.encode(continuation, { addBos: false }) };
  }
  const trimmed = context.trimEnd();
  if (trimmed.length < context.length) {
    continuation = context.slice(trimmed.length) + continuation;
    context = trimmed;
  }
  const whole = tokenizer.encode(context + continuation);
  const contextTokens = tokenizer.encode(context);
  return { context: contextTokens, continuation: whole.slice(contextTokens.length) };
}

/** A request as the model sees it: the input window and which of its rows predict which tokens. */
interface ScoredInput {
  /** (context + continuation)[-(maxLen + 1):][:-1]. */
  input: number[];
  continuation: number[];
  truncated: boolean;
}

/** The model's input for a request, or why it cannot be scored. */
function modelInput(encoded: EncodedRequest, maxLength: number): ScoredInput | string {
  const { context, continuation } = encoded;
  if (context.length === 0) return 'a context has no tokens to predict from';
  if (continuation.length === 0) return 'a continuation has no tokens of its own';
  if (continuation.length > maxLength) return `a continuation is longer than the model's context (${maxLength} tokens)`;
  const all = [...context, ...continuation];
  const window = all.slice(-(maxLength + 1));
  return { input: window.slice(0, -1), continuation, truncated: window.length < all.length };
}

function comparePrefixOrder(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function isPrefix(short: readonly number[], long: readonly number[]): boolean {
  if (short.length > long.length) return false;
  for (let i = 0; i < short.length; i++) if (short[i] !== long[i]) return false;
  return true;
}

/** Rows per LM-head call: 256 × a 49k vocabulary is 50 MB of logits. */
const HEAD_CHUNK_ROWS = 256;

export interface ScoreOptions {
  /** Upper bound on padded tokens per forward batch (memory and cache size); default 2048. */
  batchTokens?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface ScoreStats {
  /** Distinct forward windows run (after prefix sharing). */
  forwards: number;
  /** Forward batches (finalHidden calls). */
  batches: number;
  /** Tokens run through the model, padding included. */
  tokens: number;
  /** Of those, right-padding added to even out a batch. */
  paddingTokens: number;
}

/**
 * Log-likelihoods of the continuations: `logLikelihoods[i]` for `inputs[i]`. Exact: equal to
 * scoring each input alone on the full sequence.
 */
async function scoreInputs(model: CausalLM, inputs: readonly ScoredInput[], options: ScoreOptions): Promise<{ logLikelihoods: Float64Array; stats: ScoreStats }> {
  const batchTokens = options.batchTokens ?? 2048;
  // Each input is read from the longest input it is a prefix of (its "host"): in prefix order, a
  // sequence that is a prefix of any other is a prefix of the very next one.
  const order = inputs.map((_, i) => i).sort((a, b) => comparePrefixOrder(inputs[a]!.input, inputs[b]!.input));
  const hostOf = new Int32Array(inputs.length);
  for (let k = order.length - 1; k >= 0; k--) {
    const i = order[k]!;
    const next = order[k + 1];
    hostOf[i] = next !== undefined && isPrefix(inputs[i]!.input, inputs[next]!.input) ? hostOf[next]! : i;
  }
  const guests = new Map<number, number[]>();
  for (let i = 0; i < inputs.length; i++) {
    const list = guests.get(hostOf[i]!) ?? [];
    list.push(i);
    guests.set(hostOf[i]!, list);
  }
  // Longest first (as the harness orders them), so each batch pads to its first window.
  const hosts = [...guests.keys()].sort((a, b) => inputs[b]!.input.length - inputs[a]!.input.length);

  const { hiddenSize: d, vocabSize } = model.config;
  const logLikelihoods = new Float64Array(inputs.length);
  const stats: ScoreStats = { forwards: hosts.length, batches: 0, tokens: 0, paddingTokens: 0 };
  let done = 0;
  for (let start = 0; start < hosts.length; ) {
    // Grow the batch while it fits the token budget and padding stays under 1/8 of its tokens.
    const seqLen = inputs[hosts[start]!]!.input.length;
    let end = start + 1;
    let padding = 0;
    while (end < hosts.length && (end - start + 1) * seqLen <= batchTokens) {
      const extra = seqLen - inputs[hosts[end]!]!.input.length;
      if ((padding + extra) * 8 > (end - start + 1) * seqLen) break;
      padding += extra;
      end++;
    }
    const batch = hosts.slice(start, end);
    start = end;
    const windows = batch.map((h) => {
      const input = inputs[h]!.input;
      return input.length === seqLen ? input : [...input, ...new Array<number>(seqLen - input.length).fill(input[input.length - 1]!)];
    });
    const hidden = await model.finalHidden(windows);
    stats.batches++;
    stats.tokens += windows.length * seqLen;
    stats.paddingTokens += padding;

    // Gather the rows that predict continuation tokens, one span per request, for one head GEMM.
    const spans: { request: number; firstRow: number; rows: number }[] = [];
    let totalRows = 0;
    batch.forEach((host, w) => {
      for (const request of guests.get(host)!) {
        const { input, continuation } = inputs[request]!;
        spans.push({ request, firstRow: w * seqLen + input.length - continuation.length, rows: continuation.length });
        totalRows += continuation.length;
      }
    });
    const gathered = new Float32Array(totalRows * d);
    const targets = new Int32Array(totalRows);
    let row = 0;
    for (const span of spans) {
      gathered.set(hidden.subarray(span.firstRow * d, (span.firstRow + span.rows) * d), row * d);
      targets.set(inputs[span.request]!.continuation, row);
      row += span.rows;
    }
    // The head in row chunks, so a big batch never holds a rows × vocab logit matrix at once.
    const logProbs = new Float64Array(totalRows);
    for (let first = 0; first < totalRows; first += HEAD_CHUNK_ROWS) {
      const rows = Math.min(HEAD_CHUNK_ROWS, totalRows - first);
      const logits = await model.head(gathered.subarray(first * d, (first + rows) * d), rows);
      await model.backend.tokenLogProbs(logits, targets.subarray(first, first + rows), vocabSize, logProbs.subarray(first, first + rows));
    }
    row = 0;
    for (const span of spans) {
      let sum = 0;
      for (let r = 0; r < span.rows; r++) sum += logProbs[row++]!;
      logLikelihoods[span.request] = sum;
    }
    done += spans.length;
    options.onProgress?.(done, inputs.length);
  }
  return { logLikelihoods, stats };
}

/** Log-likelihood of each (context, continuation) request, tokenized and truncated as the harness does. */
export async function logLikelihoods(model: CausalLM, requests: readonly TaskRequest[], options: ScoreOptions = {}): Promise<number[]> {
  const maxLength = model.config.maxPositionEmbeddings;
  const inputs = requests.map((request, i) => {
    const input = modelInput(encodeRequest(model.tokenizer, request), maxLength);
    if (typeof input === 'string') throw new TopiaryError(`request ${i} cannot be scored: ${input}`);
    return input;
  });
  return [...(await scoreInputs(model, inputs, options)).logLikelihoods];
}

export interface MetricValue {
  value: number;
  /** sqrt(p(1 − p)/(n − 1)); null when n < 2. */
  stderr: number | null;
}

export interface TaskResult {
  task: string;
  title: string;
  /** Items scored. */
  n: number;
  metrics: Partial<Record<TaskMetric, MetricValue>>;
  /** Items left out (malformed-but-tolerated, or a continuation longer than the model's context). */
  skipped: { index: number; reason: string }[];
  /** Items whose context was cut on the left to fit the model's context, as the harness does. */
  truncated: number;
  requests: number;
  stats: ScoreStats;
  seconds: number;
}

/** The harness's stderr of a mean of 0/1 scores: sample standard deviation / sqrt(n). */
export function accuracyStderr(accuracy: number, n: number): number | null {
  return n < 2 ? null : Math.sqrt((accuracy * (1 - accuracy)) / (n - 1));
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** acc and acc_norm of scored items (first maximum wins ties, like numpy's argmax). */
export function taskMetrics(items: readonly TaskItem[], scores: readonly (readonly number[])[], metrics: readonly TaskMetric[]): Partial<Record<TaskMetric, MetricValue>> {
  const n = items.length;
  const result: Partial<Record<TaskMetric, MetricValue>> = {};
  for (const metric of metrics) {
    let correct = 0;
    items.forEach((item, i) => {
      const lls = scores[i]!;
      const normalized = metric === 'acc_norm' ? lls.map((ll, c) => ll / item.choiceLengths[c]!) : lls;
      if (argmax(normalized) === item.gold) correct++;
    });
    const value = n === 0 ? NaN : correct / n;
    result[metric] = { value, stderr: accuracyStderr(value, n) };
  }
  return result;
}

export interface EvaluateTaskOptions extends ScoreOptions {
  /** Score N items spread evenly through the file (see spreadSample). */
  limit?: number;
}

/**
 * `limit` items at evenly spaced positions (every total/limit-th, from the first), or all of them.
 * Unlike the harness's --limit (the first N) so that files sorted by label still give a fair
 * sample: the BoolQ file holds its 1,237 "true" items first.
 */
export function spreadSample<T>(items: readonly T[], limit?: number): T[] {
  if (limit === undefined || limit >= items.length) return [...items];
  return Array.from({ length: limit }, (_, i) => items[Math.floor((i * items.length) / limit)]!);
}

/** Scores the loaded items of `task` on `model` (the first `limit` of them). */
export async function evaluateItems(
  model: CausalLM,
  task: Pick<TaskDefinition, 'name' | 'title' | 'metrics'>,
  loaded: LoadedTask,
  options: EvaluateTaskOptions = {},
): Promise<TaskResult> {
  const started = performance.now();
  const items = spreadSample(loaded.items, options.limit);
  const maxLength = model.config.maxPositionEmbeddings;
  const skipped = [...loaded.skipped];
  const scoredItems: TaskItem[] = [];
  const inputs: ScoredInput[] = [];
  let truncated = 0;
  for (const item of items) {
    const itemInputs = item.requests.map((request) => modelInput(encodeRequest(model.tokenizer, request), maxLength));
    const problem = itemInputs.find((input): input is string => typeof input === 'string');
    if (problem !== undefined) {
      skipped.push({ index: item.index, reason: problem });
      continue;
    }
    const scorable = itemInputs as ScoredInput[];
    if (scorable.some((input) => input.truncated)) truncated++;
    scoredItems.push(item);
    inputs.push(...scorable);
  }
  // Accuracy over no items would be NaN: say why there is none instead of reporting it.
  if (scoredItems.length === 0) {
    throw new TopiaryError(`${task.name}: none of its ${items.length} items can be scored${skipped.length > 0 ? ` (item ${skipped[0]!.index}: ${skipped[0]!.reason})` : ''}`);
  }
  const { logLikelihoods: lls, stats } = await scoreInputs(model, inputs, options);
  requireFinite(lls, `${task.name}: the list of answer log-likelihoods`, model.source.path);
  let offset = 0;
  const scores = scoredItems.map((item) => {
    const itemScores = [...lls.subarray(offset, offset + item.requests.length)];
    offset += item.requests.length;
    return itemScores;
  });
  return {
    task: task.name,
    title: task.title,
    n: scoredItems.length,
    metrics: taskMetrics(scoredItems, scores, task.metrics),
    skipped,
    truncated,
    requests: inputs.length,
    stats,
    seconds: (performance.now() - started) / 1000,
  };
}

/** Loads `task` from the data directory and scores it. */
export async function evaluateTask(model: CausalLM, task: TaskDefinition, dataDir: string, options: EvaluateTaskOptions = {}): Promise<TaskResult> {
  return evaluateItems(model, task, task.load(dataFile(dataDir, ...task.file.split('/'))), options);
}
