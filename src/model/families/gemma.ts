/**
 * Gemma 2 and Gemma 3 (text): the LLaMA layout with Gemma's differences. RMSNorm multiplies by
 * 1 + w; "sandwich" norms wrap both the attention and the MLP (their outputs are normed before
 * the residual add); embeddings are scaled by √hidden; attention scales by query_pre_attn_scalar^−½
 * and may soft-cap its scores and the final logits; sliding-window and full layers alternate.
 * Gemma 3 adds a per-head q/k norm before RoPE and gives its sliding layers their own RoPE base,
 * the rope scaling applying to the full layers only.
 */
import type { GgufMetadata } from '../../formats/gguf.js';
import { TopiaryError } from '../../util/errors.js';
import { separateProjectionAttention } from '../components/attention.js';
import { gatedMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import {
  activationField,
  attentionShape,
  FloatValue,
  layerSizesJson,
  positiveField,
  ropeBase,
  ropeScalingJson,
  sizeField,
  specialTokenIdsJson,
  vocabularyFields,
  type Json,
  type ModelConfig,
  type RopeScaling,
  type RopeSpec,
} from '../config.js';
import type { Family, GgufArchKeyValue } from './family.js';
import { ggufNumber, llama, llamaLayout, parseGgufConfig as parseLlamaGgufConfig, QKV_BIASES, slidingLayers } from './llama.js';

/** transformers' defaults where the two configs differ. */
const DEFAULTS = {
  gemma2: { maxPositions: 8192, attnSoftCap: 50, finalSoftCap: 30 },
  gemma3_text: { maxPositions: 131072, attnSoftCap: undefined, finalSoftCap: undefined },
} as const;

/** A soft-cap field: absent means transformers' default, null means none. */
function softCapField(json: Json, file: string, key: string, fallback: number | undefined): number | undefined {
  if (json[key] === null) return undefined;
  if (json[key] === undefined && fallback === undefined) return undefined;
  return positiveField(json, file, key, fallback);
}

/**
 * Which layers are sliding: layer_types when the config lists them, else Gemma 2 alternates
 * (layer 0 sliding) and Gemma 3 makes every sliding_window_pattern-th layer full (default 6).
 */
function gemmaLayerTypes(json: Json, file: string, numLayers: number): ('full' | 'sliding')[] {
  if (Array.isArray(json.layer_types)) return slidingLayers(json, file, numLayers)!;
  const pattern = json.model_type === 'gemma2' ? 2 : sizeField(json, file, 'sliding_window_pattern', sizeField(json, file, '_sliding_window_pattern', 6));
  return Array.from({ length: numLayers }, (_, layer) => ((layer + 1) % pattern !== 0 ? 'sliding' : 'full'));
}

/**
 * Gemma 3's two RoPE settings: transformers 5 nests rope_parameters by layer type; published
 * configs give rope_theta + rope_scaling (full layers) and rope_local_base_freq (sliding layers).
 */
function gemma3Rope(json: Json, file: string): Pick<RopeSpec, 'theta' | 'scaling' | 'localTheta' | 'localScaling'> {
  const global = ropeBase(json, file, 'full_attention', 1e6);
  const parameters = json.rope_parameters as Json | undefined;
  const local =
    parameters && typeof parameters === 'object' && typeof parameters.sliding_attention === 'object'
      ? ropeBase({ rope_parameters: parameters }, file, 'sliding_attention', 1e4)
      : { theta: positiveField(json, file, 'rope_local_base_freq', 1e4), scaling: { type: 'none' as const } };
  return { ...global, localTheta: local.theta, localScaling: local.scaling };
}

function parseConfig(json: Json, file: string): ModelConfig {
  const modelType = String(json.model_type) as keyof typeof DEFAULTS;
  const defaults = DEFAULTS[modelType];
  // transformers' Gemma configs default head_dim to 256, not hidden/heads.
  const shape = attentionShape({ head_dim: 256, ...json }, file);
  const numLayers = sizeField(json, file, 'num_hidden_layers');
  const rope = modelType === 'gemma3_text' ? gemma3Rope(json, file) : ropeBase(json, file);
  const attnSoftCap = softCapField(json, file, 'attn_logit_softcapping', defaults.attnSoftCap);
  const finalSoftCap = softCapField(json, file, 'final_logit_softcapping', defaults.finalSoftCap);
  return {
    modelType,
    ...shape,
    intermediateSize: sizeField(json, file, 'intermediate_size'),
    numLayers,
    ...vocabularyFields(json, file, true),
    maxPositionEmbeddings: sizeField(json, file, 'max_position_embeddings', defaults.maxPositions),
    norm: { kind: 'rms', eps: positiveField(json, file, 'rms_norm_eps', 1e-6), weightOffset: 1 },
    rope: { ...rope, rotaryDim: shape.headDim, layout: 'half' },
    attention: {
      scale: 1 / Math.sqrt(positiveField(json, file, 'query_pre_attn_scalar', 256)),
      ...(attnSoftCap !== undefined ? { softCap: attnSoftCap } : {}),
      slidingWindow: sizeField(json, file, 'sliding_window', 4096),
      layerTypes: gemmaLayerTypes(json, file, numLayers),
    },
    activation: activationField(json, file, 'hidden_activation', 'gelu_pytorch_tanh'),
    // transformers casts √hidden to the weights' dtype (fp32 here).
    embeddingScale: Math.fround(Math.sqrt(shape.hiddenSize)),
    ...(finalSoftCap !== undefined ? { finalLogitSoftCap: finalSoftCap } : {}),
    hfConfig: json,
  };
}

function toHfConfig(config: ModelConfig): Json {
  const rope = config.rope!;
  const scaling = ropeScalingJson(rope.scaling);
  if (rope.localScaling && rope.localScaling.type !== 'none') {
    throw new TopiaryError('cannot write a config.json with rope scaling on Gemma 3 sliding layers');
  }
  return {
    architectures: [gemma.hfArchitectures[config.modelType]],
    model_type: config.modelType,
    ...layerSizesJson(config),
    head_dim: config.headDim,
    rms_norm_eps: config.norm.eps,
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_activation: { silu: 'silu', gelu: 'gelu', gelu_tanh: 'gelu_pytorch_tanh', relu: 'relu' }[config.activation],
    // The config's own value when there is one: 1/scale² would round it.
    query_pre_attn_scalar: config.hfConfig?.query_pre_attn_scalar ?? Math.round(1 / config.attention.scale ** 2),
    attn_logit_softcapping: config.attention.softCap !== undefined ? new FloatValue(config.attention.softCap) : null,
    final_logit_softcapping: config.finalLogitSoftCap !== undefined ? new FloatValue(config.finalLogitSoftCap) : null,
    sliding_window: config.attention.slidingWindow,
    layer_types: config.attention.layerTypes?.map((type) => (type === 'sliding' ? 'sliding_attention' : 'full_attention')),
    rope_theta: rope.theta,
    ...(scaling ? { rope_scaling: scaling } : {}),
    ...(rope.localTheta !== undefined ? { rope_local_base_freq: rope.localTheta } : {}),
    ...specialTokenIdsJson(config),
  };
}

/**
 * A Gemma config from GGUF metadata, as llama.cpp reads it: the LLaMA keys, soft-caps (Gemma 2
 * defaults 50 and 30), sliding layers by the fixed pattern (every 2nd layer full for Gemma 2,
 * every 6th for Gemma 3) when a window is given, Gemma 3's local RoPE base, and attention scaled by
 * head_dim^−½ except in the 27B models, which scale by (hidden/heads)^−½.
 */
function parseGgufConfig(meta: GgufMetadata, arch: string, modelType: string, tensors: { has(name: string): boolean; shape(name: string): number[] }, file: string): ModelConfig {
  const base = parseLlamaGgufConfig(meta, arch, modelType, tensors, file);
  const num = (key: string, fallback?: number) => ggufNumber(meta, `${arch}.${key}`, file, fallback);
  const gemma2 = modelType === 'gemma2';
  const is27B = base.numLayers === (gemma2 ? 46 : 62);
  const attnSoftCap = num('attn_logit_softcapping', gemma2 ? 50 : 0);
  const finalSoftCap = num('final_logit_softcapping', gemma2 ? 30 : 0);
  const slidingWindow = num('attention.sliding_window', 0);
  // llama.cpp's load_swa_pattern: one flag per layer, else every pattern-th layer full.
  const flags = meta[`${arch}.attention.sliding_window_pattern`];
  const pattern = typeof flags === 'number' ? flags : gemma2 ? 2 : 6;
  const isSliding = (layer: number): boolean =>
    Array.isArray(flags) && flags.length === base.numLayers ? flags[layer] === true : (layer + 1) % pattern !== 0;
  const scalingType = meta[`${arch}.rope.scaling.type`] ?? 'none';
  if (scalingType !== 'none' && scalingType !== 'linear') throw new TopiaryError(`unsupported rope scaling type ${JSON.stringify(scalingType)} (supported: none, linear)`, file);
  const scaling: RopeScaling = scalingType === 'linear' ? { type: 'linear', factor: num('rope.scaling.factor') } : { type: 'none' };
  return {
    ...base,
    norm: { kind: 'rms', eps: num('attention.layer_norm_rms_epsilon', 1e-6), weightOffset: 1 },
    rope: {
      theta: num('rope.freq_base', gemma2 ? 10000 : 1e6),
      scaling,
      ...(gemma2 ? {} : { localTheta: num('rope.freq_base_swa', 1e4), localScaling: { type: 'none' as const } }),
      rotaryDim: base.headDim,
      layout: 'half',
    },
    attention: {
      scale: 1 / Math.sqrt(is27B ? base.hiddenSize / base.numHeads : base.headDim),
      ...(attnSoftCap > 0 ? { softCap: attnSoftCap } : {}),
      ...(slidingWindow > 0
        ? { slidingWindow, layerTypes: Array.from({ length: base.numLayers }, (_, layer) => (isSliding(layer) ? ('sliding' as const) : ('full' as const))) }
        : {}),
    },
    activation: 'gelu_tanh',
    embeddingScale: Math.fround(Math.sqrt(base.hiddenSize)),
    ...(finalSoftCap > 0 ? { finalLogitSoftCap: finalSoftCap } : {}),
  };
}

/** llama.cpp's architecture for a Gemma model_type. */
const ggufArchitecture = (config: ModelConfig) => (config.modelType === 'gemma2' ? 'gemma2' : 'gemma3');

/**
 * What llama.cpp's gemma2/gemma3 cannot express: it scales attention by head_dim^−½ (the 27B
 * models by (hidden/heads)^−½) whatever query_pre_attn_scalar says; gemma2 always soft-caps
 * attention and logits and ties its head; gemma3 never soft-caps attention and scales only the
 * full layers' RoPE.
 */
function ggufUnsupported(config: ModelConfig): string | undefined {
  const gemma2 = config.modelType === 'gemma2';
  const is27B = config.numLayers === (gemma2 ? 46 : 62);
  const llamaCppScale = 1 / Math.sqrt(is27B ? config.hiddenSize / config.numHeads : config.headDim);
  if (Math.abs(config.attention.scale - llamaCppScale) > 1e-6 * llamaCppScale) {
    return `llama.cpp scales ${config.modelType} attention by ${is27B ? '(hidden/heads)' : 'head_dim'}^-1/2, not by this model's query_pre_attn_scalar`;
  }
  const scaling = config.rope!.scaling.type;
  if (scaling !== 'none' && scaling !== 'linear') return `${scaling} rope scaling is not written to GGUF yet`;
  if (gemma2 && (config.attention.softCap === undefined || config.finalLogitSoftCap === undefined)) return "llama.cpp's gemma2 always soft-caps attention scores and logits, which this model does not";
  if (gemma2 && !config.tieWordEmbeddings) return "llama.cpp's gemma2 ties the output to the embedding, which this model does not";
  if (!gemma2 && config.attention.softCap !== undefined) return "llama.cpp's gemma3 does not soft-cap attention scores";
  if (!gemma2 && config.rope!.localScaling && config.rope!.localScaling.type !== 'none') return "llama.cpp's gemma3 does not scale the sliding layers' RoPE";
  return undefined;
}

/** Soft-caps, the sliding window and which layers use it, and Gemma 3's local RoPE base. */
function ggufKeyValues(config: ModelConfig): GgufArchKeyValue[] {
  const { attention, rope } = config;
  const keyValues: GgufArchKeyValue[] = [];
  if (attention.softCap !== undefined) keyValues.push({ key: 'attn_logit_softcapping', type: 'f32', value: attention.softCap });
  if (config.finalLogitSoftCap !== undefined) keyValues.push({ key: 'final_logit_softcapping', type: 'f32', value: config.finalLogitSoftCap });
  if (attention.layerTypes && attention.slidingWindow !== undefined) {
    keyValues.push(
      { key: 'attention.sliding_window', type: 'u32', value: attention.slidingWindow },
      { key: 'attention.sliding_window_pattern', type: 'bool[]', value: attention.layerTypes.map((type) => type === 'sliding') },
    );
  }
  if (rope?.localTheta !== undefined) keyValues.push({ key: 'rope.freq_base_swa', type: 'f32', value: rope.localTheta });
  return keyValues;
}

export const gemma: Family = {
  name: 'gemma',
  modelTypes: ['gemma2', 'gemma3_text'],
  hfArchitectures: { gemma2: 'Gemma2ForCausalLM', gemma3_text: 'Gemma3ForCausalLM' },
  parseConfig,
  toHfConfig,
  ...llamaLayout,

  async forward(block, hidden, ctx) {
    const { backend, config } = ctx;
    const weight = (name: string) => block.tensors[`${name}.weight`]!;
    const qkNorm = config.modelType === 'gemma3_text' ? { q: weight('self_attn.q_norm'), k: weight('self_attn.k_norm') } : undefined;
    const normed = ctx.scratch('normed', hidden.length);
    await norm(backend, config.norm, weight('input_layernorm'), undefined, hidden, normed);
    const attention = await separateProjectionAttention(ctx, block, normed, qkNorm);
    await norm(backend, config.norm, weight('post_attention_layernorm'), undefined, attention, attention);
    await backend.addInPlace(hidden, attention);
    await norm(backend, config.norm, weight('pre_feedforward_layernorm'), undefined, hidden, normed);
    const mlp = await gatedMlp(ctx, block, normed, config.activation);
    await norm(backend, config.norm, weight('post_feedforward_layernorm'), undefined, mlp, mlp);
    await backend.addInPlace(hidden, mlp);
  },

  gguf: {
    architectures: {
      gemma2: { modelType: 'gemma2', interleavedRope: false },
      gemma3: { modelType: 'gemma3_text', interleavedRope: false },
    },
    layerNames: {
      ...llama.gguf!.layerNames,
      post_attention_norm: 'post_attention_layernorm',
      ffn_norm: 'pre_feedforward_layernorm',
      post_ffw_norm: 'post_feedforward_layernorm',
      attn_q_norm: 'self_attn.q_norm',
      attn_k_norm: 'self_attn.k_norm',
    },
    storedOffset: (name) => (name.endsWith('norm.weight') ? 1 : 0),
    parseConfig: parseGgufConfig,
    writing: { architecture: ggufArchitecture, biases: () => QKV_BIASES, unsupported: ggufUnsupported, keyValues: ggufKeyValues },
  },
};
