/**
 * The hyper-parameters every GGUF model states (llama.cpp's `ARCH.*` keys), each checked
 * against the tensors the file actually holds before anything is sized by it: a header that says
 * 2^32−1 blocks, −1 heads or a head size of 1e308 is refused in one line naming the file and the
 * key, instead of ending in a heap abort, a stack trace or a hang.
 */
import { TopiaryError } from '../util/errors.js';
import type { TensorStore } from './tensors.js';

/**
 * No model dimension (width, heads, MLP width, vocabulary, context) exceeds this: 16.7 million,
 * above the largest published context windows and vocabularies by far.
 */
export const MAX_DIMENSION = 2 ** 24;

export interface GgufHyperparameters {
  numLayers: number;
  hiddenSize: number;
  headsPerLayer: number[];
  kvHeadsPerLayer: number[];
  ffnPerLayer: number[];
  headDim: number;
  vocabSize: number;
  contextLength: number;
  rmsNormEps: number;
  ropeTheta: number;
  bosTokenId: number | undefined;
  eosTokenId: number | undefined;
}

/**
 * `value` as an integer from `min` to `max`, or a TopiaryError naming `key` and `file`.
 * `why` explains the upper bound when it comes from the tensors (e.g. "the blocks the file holds").
 */
export function checkedCount(value: unknown, key: string, file: string, max: number, min = 1, why?: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const shown = typeof value === 'bigint' ? `${value}` : JSON.stringify(value);
    throw new TopiaryError(`GGUF metadata "${key}" is ${shown}: expected an integer from ${min} to ${max}${why ? ` (${why})` : ''}`, file);
  }
  return value;
}

/** `value` as a finite positive number, or a TopiaryError naming `key` and `file`. */
function checkedPositive(value: unknown, key: string, file: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TopiaryError(`GGUF metadata "${key}" is ${typeof value === 'bigint' ? `${value}` : JSON.stringify(value)}: expected a positive number`, file);
  }
  return value;
}

/** `attention` false: the architecture has none (Mamba), so the header's zero heads and MLP width are expected, not refused. */
export function ggufHyperparameters(store: TensorStore, arch: string, { attention = true } = {}): GgufHyperparameters {
  const file = store.path;
  const meta = store.metadata;
  const key = (name: string) => `${arch}.${name}`;
  const fail = (message: string): never => {
    throw new TopiaryError(message, file);
  };

  // Blocks: the count must be exactly the blk.N tensors present, so a lying header sizes nothing.
  const blocks = new Set<number>();
  for (const { name } of store.list()) {
    const match = /^blk\.(\d+)\./.exec(name);
    if (match) blocks.add(Number(match[1]));
  }
  const numLayers = checkedCount(meta[key('block_count')], key('block_count'), file, blocks.size, 1, `the file holds ${blocks.size} blocks`);
  for (let layer = 0; layer < numLayers; layer++) {
    if (!blocks.has(layer)) fail(`GGUF metadata "${key('block_count')}" is ${numLayers}, but the file has no tensors for block ${layer}`);
  }

  if (!store.has('token_embd.weight')) fail('the GGUF file has no token_embd.weight tensor');
  const embedShape = store.info('token_embd.weight').shape;
  if (embedShape.length !== 2) fail(`token_embd.weight has shape [${embedShape.join(', ')}], expected [vocabulary, width]`);
  const [embedRows, embedCols] = embedShape as [number, number];
  const hiddenSize = checkedCount(meta[key('embedding_length')], key('embedding_length'), file, MAX_DIMENSION);
  if (hiddenSize !== embedCols) fail(`GGUF metadata "${key('embedding_length')}" is ${hiddenSize}, but token_embd.weight has ${embedCols} columns`);

  const tokens = meta['tokenizer.ggml.tokens'];
  const vocabSize = Array.isArray(tokens) ? tokens.length : embedRows;
  if (vocabSize !== embedRows) fail(`the GGUF vocabulary has ${vocabSize} tokens, but token_embd.weight has ${embedRows} rows`);

  /** A hyper-parameter that may be one number or one per layer (llama.cpp accepts both). */
  const perLayer = (name: string, max: number, fallback?: number[]): number[] => {
    const value = meta[key(name)];
    if (value === undefined && fallback) return fallback;
    if (!Array.isArray(value)) return new Array<number>(numLayers).fill(checkedCount(value, key(name), file, max));
    if (value.length !== numLayers) fail(`GGUF metadata "${key(name)}" has ${value.length} values for ${numLayers} blocks`);
    return value.map((v) => checkedCount(v, key(name), file, max, 0));
  };
  const none = new Array<number>(numLayers).fill(0);
  const headsPerLayer = attention ? perLayer('attention.head_count', hiddenSize) : none;
  const kvHeadsPerLayer = attention ? perLayer('attention.head_count_kv', hiddenSize, headsPerLayer) : none;
  const ffnPerLayer = attention ? perLayer('feed_forward_length', MAX_DIMENSION) : none;
  const numHeads = Math.max(...headsPerLayer);
  if (attention && numHeads === 0) fail(`GGUF metadata "${key('attention.head_count')}" gives no layer any attention head`);
  const headDim = !attention
    ? 0
    : meta[key('attention.key_length')] === undefined
      ? hiddenSize / numHeads
      : checkedCount(meta[key('attention.key_length')], key('attention.key_length'), file, MAX_DIMENSION);
  if (!Number.isInteger(headDim)) fail(`the width ${hiddenSize} is not a multiple of the ${numHeads} attention heads, and "${key('attention.key_length')}" is missing`);

  for (let layer = 0; layer < numLayers; layer++) {
    const heads = headsPerLayer[layer]!;
    const kvHeads = kvHeadsPerLayer[layer]!;
    if (kvHeads > heads || (kvHeads > 0 && heads % kvHeads !== 0)) {
      fail(`block ${layer} has ${heads} attention heads, not a multiple of its ${kvHeads} key/value heads ("${key('attention.head_count_kv')}")`);
    }
  }
  // Per-block tensor sizes are checked against these by the family-aware model (CausalLM), which
  // knows each family's projections; converters write some keys loosely (GPT-2's feed_forward_length).

  const optional = <T>(name: string, check: (value: unknown, name: string) => T, fallback: T): T =>
    meta[name] === undefined ? fallback : check(meta[name], name);
  const tokenId = (value: unknown, name: string) => checkedCount(value, name, file, vocabSize - 1, 0, `the vocabulary has ${vocabSize} tokens`);
  return {
    numLayers,
    hiddenSize,
    headsPerLayer,
    kvHeadsPerLayer,
    ffnPerLayer,
    headDim,
    vocabSize,
    contextLength: optional(key('context_length'), (v, name) => checkedCount(v, name, file, MAX_DIMENSION), 2048),
    rmsNormEps: optional(key('attention.layer_norm_rms_epsilon'), (v, name) => checkedPositive(v, name, file), 1e-5),
    ropeTheta: optional(key('rope.freq_base'), (v, name) => checkedPositive(v, name, file), 10000),
    bosTokenId: optional<number | undefined>('tokenizer.ggml.bos_token_id', tokenId, undefined),
    eosTokenId: optional<number | undefined>('tokenizer.ggml.eos_token_id', tokenId, undefined),
  };
}
