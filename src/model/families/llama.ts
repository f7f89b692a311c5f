/**
 * The LLaMA family: pre-norm RMSNorm, RoPE, grouped-query attention, SwiGLU MLP. Mistral and
 * Qwen2 checkpoints use the same tensor names; Qwen2 adds q/k/v biases (read wherever a `.bias`
 * tensor is present) and, like Mistral, may attend through a sliding window.
 */
import type { GgufMetadata } from '../../formats/gguf.js';
import { TopiaryError } from '../../util/errors.js';
import { separateProjectionAttention } from '../components/attention.js';
import { gatedMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import {
  activationField,
  attentionShape,
  layerSizesJson,
  positiveField,
  ropeBase,
  ropeScalingJson,
  sizeField,
  specialTokenIdsJson,
  vocabularyFields,
  type Json,
  type ModelConfig,
} from '../config.js';
import type { Family } from './family.js';

/** Which layers attend through a sliding window, from whichever convention the config uses. */
export function slidingLayers(json: Json, file: string, numLayers: number): ('full' | 'sliding')[] | undefined {
  const types = json.layer_types;
  if (Array.isArray(types)) {
    if (types.length !== numLayers) throw new TopiaryError(`field "layer_types" should list ${numLayers} layers, found ${types.length}`, file);
    return types.map((type) => (type === 'sliding_attention' ? 'sliding' : 'full'));
  }
  if (typeof json.sliding_window !== 'number') return undefined;
  // Qwen2/Qwen3 before layer_types: use_sliding_window turns it on from layer max_window_layers up.
  if (json.model_type === 'qwen2' || json.model_type === 'qwen3') {
    if (json.use_sliding_window !== true) return undefined;
    const from = typeof json.max_window_layers === 'number' ? json.max_window_layers : 0;
    return Array.from({ length: numLayers }, (_, layer) => (layer >= from ? 'sliding' : 'full'));
  }
  return new Array<'sliding'>(numLayers).fill('sliding');
}

function parseConfig(json: Json, file: string): ModelConfig {
  const shape = attentionShape(json, file);
  const numLayers = sizeField(json, file, 'num_hidden_layers');
  const { theta, scaling } = ropeBase(json, file);
  const types = slidingLayers(json, file, numLayers);
  const layerTypes = types?.includes('sliding') ? types : undefined;
  return {
    modelType: String(json.model_type),
    ...shape,
    intermediateSize: sizeField(json, file, 'intermediate_size'),
    numLayers,
    ...vocabularyFields(json, file, false),
    maxPositionEmbeddings: sizeField(json, file, 'max_position_embeddings', 2048),
    norm: { kind: 'rms', eps: positiveField(json, file, 'rms_norm_eps', 1e-6), weightOffset: 0 },
    rope: { theta, scaling, rotaryDim: shape.headDim, layout: 'half' },
    attention: {
      scale: 1 / Math.sqrt(shape.headDim),
      ...(layerTypes ? { layerTypes, slidingWindow: sizeField(json, file, 'sliding_window') } : {}),
    },
    activation: activationField(json, file, 'hidden_act', 'silu'),
    hfConfig: json,
  };
}

function toHfConfig(config: ModelConfig): Json {
  const scaling = config.rope ? ropeScalingJson(config.rope.scaling) : undefined;
  return {
    architectures: [llama.hfArchitectures[config.modelType]],
    model_type: config.modelType,
    ...layerSizesJson(config),
    head_dim: config.headDim,
    rms_norm_eps: config.norm.eps,
    rope_theta: config.rope?.theta,
    ...(scaling ? { rope_scaling: scaling } : {}),
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: 'silu',
    ...slidingWindowJson(config),
    ...specialTokenIdsJson(config),
  };
}

/**
 * The sliding window as transformers reads it back: Mistral applies `sliding_window` to every
 * layer; Qwen2 and Qwen3 need `use_sliding_window` and say which layers in `layer_types`.
 */
function slidingWindowJson(config: ModelConfig): Json {
  const { layerTypes, slidingWindow } = config.attention;
  if (config.modelType === 'mistral') return { sliding_window: layerTypes ? slidingWindow : null };
  if (config.modelType !== 'qwen2' && config.modelType !== 'qwen3') return {};
  if (!layerTypes) return { use_sliding_window: false };
  return {
    use_sliding_window: true,
    sliding_window: slidingWindow,
    layer_types: layerTypes.map((type) => (type === 'sliding' ? 'sliding_attention' : 'full_attention')),
  };
}

/** A size in GGUF metadata, bounded like config.json's. */
export function ggufNumber(meta: GgufMetadata, key: string, file: string, fallback?: number): number {
  const value = meta[key];
  const number = typeof value === 'bigint' ? Number(value) : value;
  if (number === undefined && fallback !== undefined) return fallback;
  if (typeof number !== 'number' || !Number.isFinite(number)) throw new TopiaryError(`GGUF metadata lacks a number "${key}"`, file);
  return number;
}

/**
 * The vocabulary fields of a GGUF file, read alike by every family: the size from the token list
 * (`embeddingRows()`, the token embedding's rows, when the file has none) and the special token ids.
 */
export function ggufVocabularyFields(meta: GgufMetadata, embeddingRows: () => number): Pick<ModelConfig, 'vocabSize' | 'bosTokenId' | 'eosTokenId'> {
  const tokens = meta['tokenizer.ggml.tokens'];
  const id = (key: string) => (typeof meta[key] === 'number' ? (meta[key] as number) : undefined);
  return {
    vocabSize: Array.isArray(tokens) ? tokens.length : embeddingRows(),
    bosTokenId: id('tokenizer.ggml.bos_token_id'),
    eosTokenId: id('tokenizer.ggml.eos_token_id'),
  };
}

export function parseGgufConfig(meta: GgufMetadata, arch: string, modelType: string, tensors: { has(name: string): boolean; shape(name: string): number[] }, file: string): ModelConfig {
  const num = (key: string, fallback?: number) => ggufNumber(meta, `${arch}.${key}`, file, fallback);
  const numLayers = num('block_count');
  /** A hyper-parameter that may be one number or one per layer (llama.cpp accepts both). */
  const perLayer = (key: string, fallback?: number[]): number[] => {
    const value = meta[`${arch}.${key}`];
    if (!Array.isArray(value)) return value === undefined && fallback ? fallback : new Array<number>(numLayers).fill(num(key));
    if (value.length !== numLayers || !value.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= 0)) {
      throw new TopiaryError(`GGUF metadata "${arch}.${key}" should hold ${numLayers} non-negative integers`, file);
    }
    return value as number[];
  };
  const hiddenSize = num('embedding_length');
  const numHeads = Math.max(...perLayer('attention.head_count'));
  const numKvHeads = Math.max(...perLayer('attention.head_count_kv', perLayer('attention.head_count')));
  const headDim = num('attention.key_length', hiddenSize / numHeads);
  const slidingWindow = meta[`${arch}.attention.sliding_window`];
  return {
    modelType,
    hiddenSize,
    intermediateSize: Math.max(...perLayer('feed_forward_length')),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    ...ggufVocabularyFields(meta, () => tensors.shape('model.embed_tokens.weight')[0]!),
    maxPositionEmbeddings: num('context_length', 2048),
    tieWordEmbeddings: !tensors.has('lm_head.weight'),
    norm: { kind: 'rms', eps: num('attention.layer_norm_rms_epsilon', 1e-5), weightOffset: 0 },
    rope: { theta: num('rope.freq_base', 10000), scaling: { type: 'none' }, rotaryDim: headDim, layout: 'half' },
    attention: {
      scale: 1 / Math.sqrt(headDim),
      ...(typeof slidingWindow === 'number' && slidingWindow > 0 ? { slidingWindow, layerTypes: new Array<'sliding'>(numLayers).fill('sliding') } : {}),
    },
    activation: 'silu',
  };
}

/** Why llama.cpp's `arch` would run `config` differently (it has no sliding window, knows linear rope scaling only), if it would. */
export function ropeAndWindowUnsupported(config: ModelConfig, arch: string): string | undefined {
  if (config.attention.layerTypes?.includes('sliding')) return `llama.cpp's ${arch} architecture has no sliding-window attention`;
  const scaling = config.rope?.scaling.type ?? 'none';
  if (scaling !== 'none' && scaling !== 'linear') return `${scaling} rope scaling is not written to GGUF yet`;
  return undefined;
}

/** llama.cpp's q/k/v biases, which its LLaMA-like architectures load through create_tensor_qkv. */
export const QKV_BIASES = ['attn_q', 'attn_k', 'attn_v'] as const;

/**
 * The LLaMA block: pre-norm attention and gated MLP, each added to the residual stream. With
 * `qkNorm` (Qwen3) q and k get a per-head RMSNorm before RoPE.
 */
export function llamaBlock(options: { qkNorm: boolean }): Family['forward'] {
  return async (block, hidden, ctx) => {
    const { backend, config } = ctx;
    const qkNorm = options.qkNorm ? { q: block.tensors['self_attn.q_norm.weight']!, k: block.tensors['self_attn.k_norm.weight']! } : undefined;
    const normed = ctx.scratch('normed', hidden.length);
    await norm(backend, config.norm, block.tensors['input_layernorm.weight']!, undefined, hidden, normed);
    await backend.addInPlace(hidden, await separateProjectionAttention(ctx, block, normed, qkNorm));
    await norm(backend, config.norm, block.tensors['post_attention_layernorm.weight']!, undefined, hidden, normed);
    await backend.addInPlace(hidden, await gatedMlp(ctx, block, normed, config.activation));
  };
}

/** Tensor names and linear layers of the LLaMA layout, which Qwen and Gemma checkpoints share. */
export const llamaLayout: Pick<Family, 'embedTokens' | 'finalNorm' | 'lmHead' | 'layerPrefix' | 'linears' | 'inputGroups' | 'structure'> = {
  embedTokens: 'model.embed_tokens.weight',
  finalNorm: 'model.norm',
  lmHead: 'lm_head.weight',
  layerPrefix: (layer: number) => `model.layers.${layer}.`,
  linears: [
    { role: 'q', name: 'self_attn.q_proj' },
    { role: 'k', name: 'self_attn.k_proj' },
    { role: 'v', name: 'self_attn.v_proj' },
    { role: 'o', name: 'self_attn.o_proj' },
    { role: 'gate', name: 'mlp.gate_proj' },
    { role: 'up', name: 'mlp.up_proj' },
    { role: 'down', name: 'mlp.down_proj' },
  ],
  inputGroups: [['q', 'k', 'v'], ['o'], ['gate', 'up'], ['down']],
  structure: { attention: { inputs: { q: 'q', k: 'k', v: 'v' }, output: 'o' }, mlp: { inputs: { gate: 'gate', up: 'up' }, output: 'down' } },
};

export const llama: Family = {
  name: 'llama',
  modelTypes: ['llama', 'mistral', 'qwen2'],
  hfArchitectures: { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' },
  parseConfig,
  toHfConfig,
  ...llamaLayout,

  forward: llamaBlock({ qkNorm: false }),

  gguf: {
    architectures: {
      llama: { modelType: 'llama', interleavedRope: true },
      mistral: { modelType: 'mistral', interleavedRope: true },
      qwen2: { modelType: 'qwen2', interleavedRope: false },
      // The LLaMA block with per-layer head counts and MLP widths: how structurally pruned models are stored.
      deci: { modelType: 'llama', interleavedRope: true },
    },
    layerNames: {
      attn_norm: 'input_layernorm',
      ffn_norm: 'post_attention_layernorm',
      attn_q: 'self_attn.q_proj',
      attn_k: 'self_attn.k_proj',
      attn_v: 'self_attn.v_proj',
      attn_output: 'self_attn.o_proj',
      ffn_gate: 'mlp.gate_proj',
      ffn_up: 'mlp.up_proj',
      ffn_down: 'mlp.down_proj',
    },
    parseConfig: parseGgufConfig,
    writing: {
      // llama.cpp has no `mistral` architecture: Mistral without a sliding window is the LLaMA block.
      architecture: (config) => (config.modelType === 'qwen2' ? 'qwen2' : 'llama'),
      // Its llama loads every bias; qwen2 only q/k/v's, so FLAP's o/down biases go to deci.
      biases: (config) => (config.modelType === 'qwen2' ? QKV_BIASES : 'any'),
      unevenArchitecture: 'deci',
      unsupported: (config) => ropeAndWindowUnsupported(config, config.modelType === 'qwen2' ? 'qwen2' : 'llama'),
    },
  },
};
