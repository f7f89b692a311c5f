/**
 * The model description Topiary works with, whatever file it came from. Names follow Hugging
 * Face's config.json; per-layer sizes (heads, MLP width) are read from the weights themselves so
 * that structurally pruned models with uneven layers need no special config.
 */
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
    };

export interface ModelConfig {
  /** Hugging Face model_type: 'llama', 'mistral', 'qwen2'. */
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | undefined;
  eosTokenId: number | undefined;
}

type Json = Record<string, unknown>;

function field(json: Json, file: string, key: string, fallback?: number): number {
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

function positiveInt(json: Json, file: string, key: string, fallback?: number): number {
  const value = field(json, file, key, fallback);
  if (!Number.isInteger(value) || value <= 0) {
    throw new TopiaryError(`field "${key}" should be a positive integer, found ${value}`, file);
  }
  return value;
}

function firstId(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (Array.isArray(value) && typeof value[0] === 'number') return value[0];
  return undefined;
}

function parseRopeScaling(raw: unknown, file: string): RopeScaling {
  if (raw === undefined || raw === null) return { type: 'none' };
  if (typeof raw !== 'object') throw new TopiaryError('rope_scaling should be an object', file);
  const scaling = raw as Json;
  const type = scaling.rope_type ?? scaling.type;
  switch (type) {
    case 'default':
      return { type: 'none' };
    case 'linear':
      return { type: 'linear', factor: field(scaling, file, 'factor') };
    case 'llama3':
      return {
        type: 'llama3',
        factor: field(scaling, file, 'factor'),
        lowFreqFactor: field(scaling, file, 'low_freq_factor'),
        highFreqFactor: field(scaling, file, 'high_freq_factor'),
        originalMaxPositionEmbeddings: field(scaling, file, 'original_max_position_embeddings'),
      };
    default:
      throw new TopiaryError(`unsupported rope_scaling type ${JSON.stringify(type)} (supported: linear, llama3)`, file);
  }
}

/** Parses a Hugging Face config.json object (already JSON-parsed); `file` is used in errors. */
export function parseHfConfig(json: Json, file: string): ModelConfig {
  const hiddenSize = positiveInt(json, file, 'hidden_size');
  const numHeads = positiveInt(json, file, 'num_attention_heads');
  const numKvHeads = positiveInt(json, file, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new TopiaryError(`num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`, file);
  }
  const headDim = positiveInt(json, file, 'head_dim', hiddenSize / numHeads);
  const ropeParameters = (json.rope_parameters ?? undefined) as Json | undefined;
  return {
    modelType: String(json.model_type ?? 'llama'),
    hiddenSize,
    intermediateSize: positiveInt(json, file, 'intermediate_size'),
    numLayers: positiveInt(json, file, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(json, file, 'vocab_size'),
    rmsNormEps: field(json, file, 'rms_norm_eps', 1e-6),
    ropeTheta: field(ropeParameters ?? json, file, 'rope_theta', 10000),
    ropeScaling: parseRopeScaling(json.rope_scaling ?? ropeParameters, file),
    maxPositionEmbeddings: positiveInt(json, file, 'max_position_embeddings', 2048),
    tieWordEmbeddings: json.tie_word_embeddings === true,
    bosTokenId: firstId(json.bos_token_id),
    eosTokenId: firstId(json.eos_token_id),
  };
}

/** The config.json Hugging Face `transformers` expects for this model. */
export function toHfConfig(config: ModelConfig, architecture: string): Json {
  const scaling: Json | undefined =
    config.ropeScaling.type === 'none'
      ? undefined
      : config.ropeScaling.type === 'linear'
        ? { rope_type: 'linear', factor: config.ropeScaling.factor }
        : {
            rope_type: 'llama3',
            factor: config.ropeScaling.factor,
            low_freq_factor: config.ropeScaling.lowFreqFactor,
            high_freq_factor: config.ropeScaling.highFreqFactor,
            original_max_position_embeddings: config.ropeScaling.originalMaxPositionEmbeddings,
          };
  return {
    architectures: [architecture],
    model_type: config.modelType,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    ...(scaling ? { rope_scaling: scaling } : {}),
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: 'silu',
    torch_dtype: 'float32',
    ...(config.bosTokenId !== undefined ? { bos_token_id: config.bosTokenId } : {}),
    ...(config.eosTokenId !== undefined ? { eos_token_id: config.eosTokenId } : {}),
  };
}
