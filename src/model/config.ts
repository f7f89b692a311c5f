/**
 * The model description Topiary works with, whatever file or family it came from, and the field
 * readers families use to fill it from a config.json. Names follow Hugging Face's config.json;
 * per-layer sizes (heads, MLP width) are read from the weights themselves so that structurally
 * pruned models with uneven layers need no special config.
 */
import type { Activation } from '../backend/backend.js';
import { TopiaryError } from '../util/errors.js';

export type RopeScaling =
  | { type: 'none' }
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      /** YaRN: frequencies blend from extrapolated (fast) to interpolated (slow) over a ramp. */
      type: 'yarn';
      factor: number;
      originalMaxPositionEmbeddings: number;
      betaFast: number;
      betaSlow: number;
      /** Round the ramp's ends to whole dimensions (transformers' default). */
      truncate: boolean;
      /** Multiplies cos and sin (default 0.1·ln(factor) + 1). */
      attentionFactor: number;
    }
  | {
      /**
       * Phi-3's LongRoPE: per-frequency divisors, the short set while the positions in use fit the
       * original context and the long set beyond it; cos and sin are multiplied by attentionFactor.
       */
      type: 'longrope';
      shortFactor: readonly number[];
      longFactor: readonly number[];
      originalMaxPositionEmbeddings: number;
      attentionFactor: number;
    };

export interface RopeSpec {
  theta: number;
  scaling: RopeScaling;
  /** Gemma 3: the base of its sliding-window (local) layers; `theta` and `scaling` then apply to the full ones. */
  localTheta?: number;
  /** With `localTheta`: the scaling of the local layers (none when absent). */
  localScaling?: RopeScaling;
  /** Features of each head that rotate (headDim unless partial rotary). */
  rotaryDim: number;
  layout: 'half' | 'interleaved';
}

/** RMSNorm (`weightOffset` 1 for Gemma's 1 + w) or LayerNorm (bias when the tensor is present). */
export type NormSpec = { kind: 'rms'; eps: number; weightOffset: number } | { kind: 'layer'; eps: number };

export interface AttentionSpec {
  /** Multiplies q·k (usually 1/√headDim; Gemma: query_pre_attn_scalar^−½). */
  scale: number;
  /** Gemma 2: scores become cap·tanh(score/cap). */
  softCap?: number;
  /** Keys more than this many positions back are masked, on the layers marked 'sliding'. */
  slidingWindow?: number;
  /** Per layer: 'sliding' uses `slidingWindow` (and RoPE's localTheta), 'full' attends to the whole prefix. */
  layerTypes?: readonly ('full' | 'sliding')[];
}

export interface ModelConfig {
  /** Hugging Face model_type: 'llama', 'mistral', 'qwen2', … */
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | undefined;
  eosTokenId: number | undefined;
  norm: NormSpec;
  /** Absent for families with learned positions only. */
  rope?: RopeSpec;
  attention: AttentionSpec;
  activation: Activation;
  /** Multiplies the token embeddings (Gemma: √hidden, rounded to the weights' dtype). */
  embeddingScale?: number;
  /** OPT looks up learned position p at row p + 2. */
  positionOffset?: number;
  /**
   * OPT's word_embed_proj_dim, when it differs from hiddenSize: the token embeddings and the head
   * are this wide, projected to and from hiddenSize by the family's embedProjection/headProjection.
   */
  wordEmbeddingSize?: number;
  /** OPT-350m (do_layer_norm_before false): blocks normalize after each residual add instead of before each sublayer. */
  postNorm?: boolean;
  /** The blocks' output goes to the head without a final norm (OPT post-norm). */
  noFinalNorm?: boolean;
  /** Gemma 2: final logits become cap·tanh(logit/cap). */
  finalLogitSoftCap?: number;
  /** GPT-NeoX: attention and MLP both read the block's input and add to the residual together. */
  parallelResidual?: boolean;
  /** The config.json the model came with, if any: export writes it back with what pruning changed. */
  hfConfig?: Readonly<Json>;
}

export type Json = Record<string, unknown>;

const FLOAT_MARK = '\u{1}float:';

/**
 * A number config.json must hold as a float: transformers 5 validates some float fields strictly
 * and refuses 3 where it expects 3.0, which JSON.stringify would write. `configJson` writes it.
 */
export class FloatValue {
  constructor(readonly value: number) {}
  toJSON(): string {
    return `${FLOAT_MARK}${Number.isInteger(this.value) ? this.value.toFixed(1) : String(this.value)}`;
  }
}

/** config.json's text for `json`, FloatValues written as float literals. */
export function configJson(json: Json): string {
  return JSON.stringify(json, null, 2).replace(/"\\u0001float:([^"]*)"/g, '$1') + '\n';
}

/** A number field of a config.json; `fallback` when absent. */
export function numberField(json: Json, file: string, key: string, fallback?: number): number {
  const value = json[key];
  if (value === undefined || value === null) {
    if (fallback !== undefined) return fallback;
    throw new TopiaryError(`missing required field "${key}"`, file);
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new TopiaryError(`field "${key}" should be a number, found ${JSON.stringify(value)}`, file);
  }
  return value;
}

/** Largest size field accepted: far above any real model, far below what would exhaust memory. */
const MAX_SIZE = 1 << 24;

/** A positive integer size field, bounded so that no absurd value reaches an allocation. */
export function sizeField(json: Json, file: string, key: string, fallback?: number): number {
  const value = numberField(json, file, key, fallback);
  if (!Number.isInteger(value) || value <= 0 || value > MAX_SIZE) {
    throw new TopiaryError(`field "${key}" should be a positive integer up to ${MAX_SIZE}, found ${value}`, file);
  }
  return value;
}

/** A positive number field (epsilons, thetas, scales). */
export function positiveField(json: Json, file: string, key: string, fallback?: number): number {
  const value = numberField(json, file, key, fallback);
  if (!(value > 0)) throw new TopiaryError(`field "${key}" should be positive, found ${value}`, file);
  return value;
}

export function booleanField(json: Json, file: string, key: string, fallback: boolean): boolean {
  const value = json[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') throw new TopiaryError(`field "${key}" should be true or false, found ${JSON.stringify(value)}`, file);
  return value;
}

export function firstId(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value;
  if (Array.isArray(value)) return firstId(value[0]);
  return undefined;
}

/** Hugging Face activation names → the backend's. */
export function activationField(json: Json, file: string, key: string, fallback: string): Activation {
  const name = json[key] ?? fallback;
  switch (name) {
    case 'silu':
    case 'swish':
      return 'silu';
    case 'gelu':
      return 'gelu';
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return 'gelu_tanh';
    case 'relu':
      return 'relu';
    default:
      throw new TopiaryError(`unsupported activation ${JSON.stringify(name)} in "${key}" (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)`, file);
  }
}

/** A Hugging Face name for each backend activation, for configs written without a source config.json (GGUF). */
export const HF_ACTIVATION_NAMES: Readonly<Record<Activation, string>> = { silu: 'silu', gelu: 'gelu', gelu_tanh: 'gelu_new', relu: 'relu' };

/** rope_scaling (or transformers 5's rope_parameters) as Topiary models it. */
export function parseRopeScaling(raw: unknown, file: string): RopeScaling {
  if (raw === undefined || raw === null) return { type: 'none' };
  if (typeof raw !== 'object') throw new TopiaryError('rope_scaling should be an object', file);
  const scaling = raw as Json;
  const type = scaling.rope_type ?? scaling.type ?? 'default';
  switch (type) {
    case 'default':
      return { type: 'none' };
    case 'linear':
      return { type: 'linear', factor: positiveField(scaling, file, 'factor') };
    case 'llama3':
      return {
        type: 'llama3',
        factor: positiveField(scaling, file, 'factor'),
        lowFreqFactor: positiveField(scaling, file, 'low_freq_factor'),
        highFreqFactor: positiveField(scaling, file, 'high_freq_factor'),
        originalMaxPositionEmbeddings: positiveField(scaling, file, 'original_max_position_embeddings'),
      };
    case 'yarn': {
      const factor = positiveField(scaling, file, 'factor');
      const mscale = numberField(scaling, file, 'mscale', 0);
      const mscaleAllDim = numberField(scaling, file, 'mscale_all_dim', 0);
      // transformers' default: 0.1·m·ln(factor) + 1 (1 for factor ≤ 1), as a ratio when both mscales are set.
      const yarnScale = (m: number) => (factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1);
      return {
        type: 'yarn',
        factor,
        originalMaxPositionEmbeddings: positiveField(scaling, file, 'original_max_position_embeddings'),
        // transformers reads `x or default`: 0 means the default too.
        betaFast: numberField(scaling, file, 'beta_fast', 0) || 32,
        betaSlow: numberField(scaling, file, 'beta_slow', 0) || 1,
        truncate: booleanField(scaling, file, 'truncate', true),
        attentionFactor: positiveField(scaling, file, 'attention_factor', mscale && mscaleAllDim ? yarnScale(mscale) / yarnScale(mscaleAllDim) : yarnScale(1)),
      };
    }
    default:
      throw new TopiaryError(`unsupported rope_scaling type ${JSON.stringify(type)} (supported: default, linear, llama3, yarn)`, file);
  }
}

/** The rope_scaling object to write back for `scaling` (undefined for none). */
export function ropeScalingJson(scaling: RopeScaling): Json | undefined {
  switch (scaling.type) {
    case 'none':
      return undefined;
    case 'linear':
      return { rope_type: 'linear', factor: scaling.factor };
    case 'llama3':
      return {
        rope_type: 'llama3',
        factor: scaling.factor,
        low_freq_factor: scaling.lowFreqFactor,
        high_freq_factor: scaling.highFreqFactor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
      };
    case 'yarn':
      return {
        rope_type: 'yarn',
        factor: scaling.factor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
        beta_fast: scaling.betaFast,
        beta_slow: scaling.betaSlow,
        truncate: scaling.truncate,
        attention_factor: scaling.attentionFactor,
      };
    case 'longrope':
      return {
        rope_type: 'longrope',
        short_factor: scaling.shortFactor,
        long_factor: scaling.longFactor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
        attention_factor: scaling.attentionFactor,
      };
  }
}

/**
 * The rope_parameters object to write back (transformers 5's layout): base, scaling and the
 * partial rotary factor, which families with partial rotary (Phi, Phi-3, GPT-NeoX) all write.
 */
export function ropeParametersJson(config: ModelConfig): Json | undefined {
  const rope = config.rope;
  if (!rope) return undefined;
  return { rope_type: 'default', ...ropeScalingJson(rope.scaling), rope_theta: rope.theta, partial_rotary_factor: rope.rotaryDim / config.headDim };
}

/**
 * RoPE base and scaling from either config layout: `rope_theta` + `rope_scaling` (most published
 * checkpoints) or transformers 5's `rope_parameters` (one object, or one per layer type).
 */
export function ropeBase(json: Json, file: string, layerType = 'full_attention', defaultTheta = 10000): { theta: number; scaling: RopeScaling } {
  let parameters = json.rope_parameters as Json | undefined;
  if (parameters && typeof parameters === 'object' && typeof parameters[layerType] === 'object') parameters = parameters[layerType] as Json;
  const source = parameters && typeof parameters === 'object' ? parameters : json;
  return {
    theta: positiveField(source, file, 'rope_theta', defaultTheta),
    scaling: parseRopeScaling(json.rope_scaling ?? parameters, file),
  };
}

/** Heads, kv heads and head size, checked against each other. */
export function attentionShape(json: Json, file: string, keys = { heads: 'num_attention_heads', kvHeads: 'num_key_value_heads' }): { hiddenSize: number; numHeads: number; numKvHeads: number; headDim: number } {
  const hiddenSize = sizeField(json, file, 'hidden_size');
  const numHeads = sizeField(json, file, keys.heads);
  const numKvHeads = sizeField(json, file, keys.kvHeads, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new TopiaryError(`${keys.heads} (${numHeads}) is not a multiple of ${keys.kvHeads} (${numKvHeads})`, file);
  }
  const headDim = sizeField(json, file, 'head_dim', Math.floor(hiddenSize / numHeads));
  return { hiddenSize, numHeads, numKvHeads, headDim };
}

/**
 * The shape of multi-head attention whose heads split the hidden size evenly, as GPT-NeoX, OPT and
 * GPT-2 configs give it: no head_dim or key/value head count fields, so one key/value head per head.
 */
export function evenHeadsShape(json: Json, file: string, keys = { hidden: 'hidden_size', heads: 'num_attention_heads' }): { hiddenSize: number; numHeads: number; numKvHeads: number; headDim: number } {
  const hiddenSize = sizeField(json, file, keys.hidden);
  const numHeads = sizeField(json, file, keys.heads);
  if (hiddenSize % numHeads !== 0) throw new TopiaryError(`${keys.hidden} (${hiddenSize}) is not a multiple of ${keys.heads} (${numHeads})`, file);
  return { hiddenSize, numHeads, numKvHeads: numHeads, headDim: hiddenSize / numHeads };
}

/**
 * The config.json to export: the one the model came with (keeping fields Topiary does not model),
 * with `fields` written over it and the `superseded` fields (older spellings of what `fields` say)
 * removed.
 */
export function exportedHfConfig(config: ModelConfig, fields: Json, superseded: readonly string[] = []): Json {
  const kept = Object.entries(config.hfConfig ?? {}).filter(([key]) => !superseded.includes(key));
  return { ...Object.fromEntries(kept), ...fields };
}

/**
 * The vocabulary fields every family reads alike from config.json: its size, whether the head
 * shares the embeddings (`tiedByDefault` when unsaid: families disagree) and the special token ids.
 */
export function vocabularyFields(json: Json, file: string, tiedByDefault: boolean): Pick<ModelConfig, 'vocabSize' | 'tieWordEmbeddings' | 'bosTokenId' | 'eosTokenId'> {
  return {
    vocabSize: sizeField(json, file, 'vocab_size'),
    tieWordEmbeddings: booleanField(json, file, 'tie_word_embeddings', tiedByDefault),
    bosTokenId: firstId(json.bos_token_id),
    eosTokenId: firstId(json.eos_token_id),
  };
}

/**
 * The special token ids to write to config.json: only those known, so that an id left out keeps
 * transformers' default rather than becoming null.
 */
export function specialTokenIdsJson(config: ModelConfig): Json {
  return {
    ...(config.bosTokenId !== undefined ? { bos_token_id: config.bosTokenId } : {}),
    ...(config.eosTokenId !== undefined ? { eos_token_id: config.eosTokenId } : {}),
  };
}

/** The size fields of the LLaMA-style config.json (also Gemma's and Phi's), as transformers names them. */
export function layerSizesJson(config: ModelConfig): Json {
  return {
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    vocab_size: config.vocabSize,
  };
}
