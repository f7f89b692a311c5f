/**
 * Phi-1/Phi-2 (model_type 'phi'): one LayerNorm feeds attention and the MLP in parallel, whose
 * outputs both join the residual stream; partial rotary; biases on every linear layer including
 * the LM head; a final LayerNorm; with qk_layernorm, a per-head LayerNorm on q and k. The attention output projection is `dense`, the MLP a plain
 * fc1 → act → fc2.
 */
import type { GgufMetadata } from '../../formats/gguf.js';
import { TopiaryError } from '../../util/errors.js';
import { separateProjectionAttention } from '../components/attention.js';
import { plainMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import {
  activationField,
  attentionShape,
  exportedHfConfig,
  HF_ACTIVATION_NAMES,
  layerSizesJson,
  numberField,
  positiveField,
  ropeBase,
  ropeParametersJson,
  sizeField,
  vocabularyFields,
  type Json,
  type ModelConfig,
} from '../config.js';
import type { Block, BlockContext, Family, GgufLayout } from './family.js';
import { ggufNumber, ggufVocabularyFields } from './llama.js';

/**
 * The object transformers reads the rope settings of Phi and Phi-3 from: rope_scaling when set
 * (older configs), else rope_parameters; fields it lacks come from the top level.
 */
export function ropeSettings(json: Json): Json | undefined {
  const settings = json.rope_scaling ?? json.rope_parameters;
  return typeof settings === 'object' && settings !== null ? (settings as Json) : undefined;
}

/** A rope field from ropeSettings, else the top level, else `fallback`. */
export function ropeField(json: Json, file: string, key: string, fallback: number): number {
  const settings = ropeSettings(json);
  return numberField(settings?.[key] !== undefined ? settings : json, file, key, fallback);
}

/** Features of each head that rotate: int(headDim · partial_rotary_factor), the factor defaulting per family. */
export function partialRotaryDim(json: Json, file: string, headDim: number, defaultFactor: number): number {
  const factor = ropeField(json, file, 'partial_rotary_factor', defaultFactor);
  const rotaryDim = Math.floor(headDim * factor);
  if (!(factor > 0 && factor <= 1) || rotaryDim < 2 || rotaryDim % 2 !== 0) {
    throw new TopiaryError(`field "partial_rotary_factor" (${factor}) should rotate an even number of the ${headDim} features of a head, not ${rotaryDim}`, file);
  }
  return rotaryDim;
}

function parseConfig(json: Json, file: string): ModelConfig {
  const shape = attentionShape(json, file);
  const { theta, scaling } = ropeBase(json, file);
  return {
    modelType: 'phi',
    ...shape,
    intermediateSize: sizeField(json, file, 'intermediate_size'),
    numLayers: sizeField(json, file, 'num_hidden_layers'),
    ...vocabularyFields(json, file, false),
    maxPositionEmbeddings: sizeField(json, file, 'max_position_embeddings', 2048),
    norm: { kind: 'layer', eps: positiveField(json, file, 'layer_norm_eps', 1e-5) },
    rope: { theta, scaling, rotaryDim: partialRotaryDim(json, file, shape.headDim, 0.5), layout: 'half' },
    attention: { scale: 1 / Math.sqrt(shape.headDim) },
    activation: activationField(json, file, 'hidden_act', 'gelu_new'),
    hfConfig: json,
  };
}

/**
 * Special token ids for a config.json built without a source one (GGUF): those known, the rest
 * null — transformers' Phi-3 defaults (32000) lie outside smaller vocabularies and fail to load.
 * A source config.json keeps its own (possibly lists of) ids.
 */
export function specialTokenFields(config: ModelConfig): Json {
  if (config.hfConfig) return {};
  return { bos_token_id: config.bosTokenId ?? null, eos_token_id: config.eosTokenId ?? null, pad_token_id: null };
}

/** The rope fields transformers reads from before rope_parameters: they would contradict it. */
export const SUPERSEDED_ROPE_FIELDS = ['rope_theta', 'rope_scaling', 'partial_rotary_factor'];

function toHfConfig(config: ModelConfig): Json {
  return exportedHfConfig(
    config,
    {
      architectures: ['PhiForCausalLM'],
      model_type: 'phi',
      ...layerSizesJson(config),
      // transformers derives hidden/heads without it: wrong once structured pruning removed heads.
      head_dim: config.headDim,
      layer_norm_eps: config.norm.eps,
      rope_parameters: ropeParametersJson(config),
      max_position_embeddings: config.maxPositionEmbeddings,
      tie_word_embeddings: config.tieWordEmbeddings,
      hidden_act: HF_ACTIVATION_NAMES[config.activation],
      ...specialTokenFields(config),
    },
    SUPERSEDED_ROPE_FIELDS,
  );
}

/**
 * The features of each head that rotate, as llama.cpp's converter records them for Phi-2 and Phi-3
 * (all of them when unsaid), checked to be an even number within the head.
 */
export function ggufRotaryDim(meta: GgufMetadata, arch: string, headDim: number, file: string): number {
  const rotaryDim = ggufNumber(meta, `${arch}.rope.dimension_count`, file, headDim);
  if (!Number.isInteger(headDim) || !Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
    throw new TopiaryError(`GGUF metadata "${arch}.rope.dimension_count" (${rotaryDim}) should be an even number of features up to the head size ${headDim}`, file);
  }
  return rotaryDim;
}

/**
 * llama.cpp's GPT-2, GPT-NeoX and Phi-2 run the tanh approximation of GELU (ggml_gelu), Topiary's
 * gelu_tanh: a model with a non-GELU activation cannot be written for them, and one with the exact
 * GELU runs with the approximation (they differ by under 2·10⁻⁴ per activation), said in a warning.
 */
export function tanhGeluUnsupported(config: ModelConfig, arch: string): string | undefined {
  return config.activation === 'gelu_tanh' || config.activation === 'gelu' ? undefined : `llama.cpp's ${arch} computes GELU, not this model's ${config.activation}`;
}

export function tanhGeluWarnings(config: ModelConfig, arch: string): string[] {
  return config.activation === 'gelu' ? [`llama.cpp's ${arch} computes the tanh approximation of the model's exact GELU`] : [];
}

/**
 * The config of a GGUF written by llama.cpp's converter (architecture phi2). The converter writes
 * 4·hidden as the MLP width and the query head count as the key/value one whatever the model has,
 * so both are read from the tensors.
 */
const parseGgufConfig: GgufLayout['parseConfig'] = (meta: GgufMetadata, arch, modelType, tensors, file) => {
  const num = (key: string, fallback?: number) => ggufNumber(meta, `${arch}.${key}`, file, fallback);
  const rowsOf = (name: string): number => {
    if (!tensors.has(name)) throw new TopiaryError(`the GGUF file has no tensor for "${name}"`, file);
    return tensors.shape(name)[0]!;
  };
  const layer0 = phi.layerPrefix(0);
  const hiddenSize = num('embedding_length');
  const numHeads = num('attention.head_count');
  const headDim = hiddenSize / numHeads;
  const rotaryDim = ggufRotaryDim(meta, arch, headDim, file);
  return {
    modelType,
    hiddenSize,
    intermediateSize: rowsOf(`${layer0}mlp.fc1.weight`),
    numLayers: num('block_count'),
    numHeads,
    numKvHeads: rowsOf(`${layer0}self_attn.k_proj.weight`) / headDim,
    headDim,
    ...ggufVocabularyFields(meta, () => rowsOf(phi.embedTokens)),
    maxPositionEmbeddings: num('context_length', 2048),
    tieWordEmbeddings: !tensors.has(phi.lmHead),
    norm: { kind: 'layer', eps: num('attention.layer_norm_epsilon', 1e-5) },
    rope: { theta: num('rope.freq_base', 10000), scaling: { type: 'none' }, rotaryDim, layout: 'half' },
    attention: { scale: 1 / Math.sqrt(headDim) },
    // llama.cpp's phi2 graph uses the tanh approximation (Phi-2's gelu_new).
    activation: 'gelu_tanh',
  };
};

export const phi: Family = {
  name: 'phi',
  modelTypes: ['phi'],
  hfArchitectures: { phi: 'PhiForCausalLM' },
  parseConfig,
  toHfConfig,
  embedTokens: 'model.embed_tokens.weight',
  finalNorm: 'model.final_layernorm',
  lmHead: 'lm_head.weight',
  layerPrefix: (layer) => `model.layers.${layer}.`,
  linears: [
    { role: 'q', name: 'self_attn.q_proj' },
    { role: 'k', name: 'self_attn.k_proj' },
    { role: 'v', name: 'self_attn.v_proj' },
    { role: 'o', name: 'self_attn.dense' },
    { role: 'fc1', name: 'mlp.fc1' },
    { role: 'fc2', name: 'mlp.fc2' },
  ],
  // Attention and the MLP read the same normed input; observed once per branch, as two groups.
  inputGroups: [['q', 'k', 'v'], ['o'], ['fc1'], ['fc2']],
  structure: { attention: { inputs: { q: 'q', k: 'k', v: 'v' }, output: 'o' }, mlp: { inputs: { up: 'fc1' }, output: 'fc2' } },

  async forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void> {
    const { backend, config } = ctx;
    const normed = ctx.scratch('normed', hidden.length);
    await norm(backend, config.norm, block.tensors['input_layernorm.weight']!, block.tensors['input_layernorm.bias'], hidden, normed);
    // With qk_layernorm, q and k get a per-head LayerNorm before RoPE.
    const qNorm = block.tensors['self_attn.q_layernorm.weight'];
    const qkNorm = qNorm && {
      q: qNorm,
      k: block.tensors['self_attn.k_layernorm.weight']!,
      qBias: block.tensors['self_attn.q_layernorm.bias']!,
      kBias: block.tensors['self_attn.k_layernorm.bias']!,
    };
    // Both branches read `normed`; the attention output joins the stream before the MLP runs
    // because both return their result in the same scratch buffer.
    await backend.addInPlace(hidden, await separateProjectionAttention(ctx, block, normed, qkNorm));
    await backend.addInPlace(hidden, await plainMlp(ctx, block, normed, config.activation, { up: 'fc1', down: 'fc2' }));
  },

  gguf: {
    // llama.cpp's phi2 rotates halves (NeoX style), as transformers does: q/k rows are stored as is.
    architectures: { phi2: { modelType: 'phi', interleavedRope: false } },
    layerNames: {
      attn_norm: 'input_layernorm',
      attn_q: 'self_attn.q_proj',
      attn_k: 'self_attn.k_proj',
      attn_v: 'self_attn.v_proj',
      attn_output: 'self_attn.dense',
      ffn_up: 'mlp.fc1',
      ffn_down: 'mlp.fc2',
    },
    // Files converted from Microsoft's original Phi-2 checkpoint fuse q, k and v as [q | k | v];
    // q has all the hidden size's rows, k and v share the rest.
    fusedLayerNames: {
      attn_qkv: (storedRows, meta, arch) => {
        const qRows = Number(meta[`${arch}.embedding_length`]);
        const kvRows = Math.floor((storedRows - qRows) / 2);
        return [
          { name: 'self_attn.q_proj', rows: qRows },
          { name: 'self_attn.k_proj', rows: kvRows },
          { name: 'self_attn.v_proj', rows: kvRows },
        ];
      },
    },
    parseConfig: parseGgufConfig,
    writing: {
      architecture: () => 'phi2',
      biases: () => 'any',
      unsupported: (config) => tanhGeluUnsupported(config, 'phi2') ?? (config.tieWordEmbeddings ? "llama.cpp's phi2 needs an untied output with a bias" : undefined),
      warnings: (config) => tanhGeluWarnings(config, 'phi2'),
    },
  },
};
