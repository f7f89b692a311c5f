/**
 * Phi-3 and Phi-4-mini (model_type 'phi3'): the LLaMA block with fused projections — qkv_proj
 * holds [q | k | v], gate_up_proj holds [gate | up] — pruned as stored. Partial rotary
 * (Phi-4-mini rotates 3/4 of each head), LongRoPE (the 128k-context models) and a sliding window
 * on every layer when one is set.
 */
import type { GgufMetadata } from '../../formats/gguf.js';
import { TopiaryError } from '../../util/errors.js';
import { fusedProjectionAttention } from '../components/attention.js';
import { columns } from '../components/linear.js';
import { fusedGatedMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import {
  activationField,
  attentionShape,
  exportedHfConfig,
  HF_ACTIVATION_NAMES,
  layerSizesJson,
  positiveField,
  ropeParametersJson,
  sizeField,
  vocabularyFields,
  type Json,
  type ModelConfig,
  type RopeScaling,
} from '../config.js';
import type { Block, BlockContext, Family, GgufLayout } from './family.js';
import { ggufNumber, parseGgufConfig as llamaGgufConfig, slidingLayers } from './llama.js';
import { ggufRotaryDim, partialRotaryDim, ropeField, ropeSettings, specialTokenFields, SUPERSEDED_ROPE_FIELDS } from './phi.js';

/**
 * Phi-3's rope scaling as transformers reads it: none, or LongRoPE (also under its old names "su"
 * and "yarn"). The original context is the top-level original_max_position_embeddings (4096 by
 * default, even when the rope object names another); the attention factor defaults to
 * √(1 + ln(s)/ln(original)) for s = `factor`, else max_position_embeddings / original, above 1.
 */
function phi3RopeScaling(json: Json, file: string, rotaryDim: number, maxPositionEmbeddings: number): RopeScaling {
  const settings = ropeSettings(json);
  const key = json.rope_scaling != null ? 'rope_scaling' : 'rope_parameters';
  const type = settings?.rope_type ?? settings?.type ?? 'default';
  if (!settings || type === 'default') return { type: 'none' };
  if (type !== 'longrope' && type !== 'su' && type !== 'yarn') {
    throw new TopiaryError(`${key} type ${JSON.stringify(type)} is not one Phi-3 has (default, longrope)`, file);
  }
  const factors = (field: string): number[] => {
    const value = settings[field];
    if (!Array.isArray(value) || value.length !== rotaryDim / 2 || !value.every((x) => typeof x === 'number' && x > 0 && Number.isFinite(x))) {
      throw new TopiaryError(`field "${key}.${field}" should list ${rotaryDim / 2} positive numbers (one per rotated frequency)`, file);
    }
    return value as number[];
  };
  const original = sizeField(json, file, 'original_max_position_embeddings', 4096);
  const factor = positiveField(settings, file, 'factor', maxPositionEmbeddings / original);
  return {
    type: 'longrope',
    shortFactor: factors('short_factor'),
    longFactor: factors('long_factor'),
    originalMaxPositionEmbeddings: original,
    attentionFactor: positiveField(settings, file, 'attention_factor', longRopeAttentionFactor(factor, original)),
  };
}

/** LongRoPE's default attention factor for a context extended `factor` times beyond `original`. */
function longRopeAttentionFactor(factor: number, original: number): number {
  return factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original));
}

function parseConfig(json: Json, file: string): ModelConfig {
  const shape = attentionShape(json, file);
  const numLayers = sizeField(json, file, 'num_hidden_layers');
  const maxPositionEmbeddings = sizeField(json, file, 'max_position_embeddings', 4096);
  const rotaryDim = partialRotaryDim(json, file, shape.headDim, 1);
  const sliding = slidingLayers(json, file, numLayers);
  return {
    modelType: 'phi3',
    ...shape,
    intermediateSize: sizeField(json, file, 'intermediate_size'),
    numLayers,
    ...vocabularyFields(json, file, false),
    maxPositionEmbeddings,
    norm: { kind: 'rms', eps: positiveField(json, file, 'rms_norm_eps', 1e-5), weightOffset: 0 },
    rope: {
      theta: ropeField(json, file, 'rope_theta', 10000),
      scaling: phi3RopeScaling(json, file, rotaryDim, maxPositionEmbeddings),
      rotaryDim,
      layout: 'half',
    },
    attention: {
      scale: 1 / Math.sqrt(shape.headDim),
      ...(sliding?.includes('sliding') ? { layerTypes: sliding, slidingWindow: sizeField(json, file, 'sliding_window') } : {}),
    },
    activation: activationField(json, file, 'hidden_act', 'silu'),
    hfConfig: json,
  };
}

function toHfConfig(config: ModelConfig): Json {
  return exportedHfConfig(
    config,
    {
      architectures: ['Phi3ForCausalLM'],
      model_type: 'phi3',
      ...layerSizesJson(config),
      // transformers derives hidden/heads without it: wrong once structured pruning removed heads.
      head_dim: config.headDim,
      rms_norm_eps: config.norm.eps,
      rope_parameters: ropeParametersJson(config),
      max_position_embeddings: config.maxPositionEmbeddings,
      // transformers takes LongRoPE's original context from here, not from rope_parameters.
      ...(config.rope?.scaling.type === 'longrope' ? { original_max_position_embeddings: config.rope.scaling.originalMaxPositionEmbeddings } : {}),
      sliding_window: config.attention.slidingWindow ?? null,
      tie_word_embeddings: config.tieWordEmbeddings,
      hidden_act: HF_ACTIVATION_NAMES[config.activation],
      ...specialTokenFields(config),
    },
    SUPERSEDED_ROPE_FIELDS,
  );
}

/** qkv_proj's output columns are three blocks [q | k | v] (GPT-NeoX interleaves per head instead). */
function splitQkvBlocks(ctx: BlockContext, qkv: Float32Array, heads: number, kvHeads: number): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const qWidth = heads * ctx.config.headDim;
  const kvWidth = kvHeads * ctx.config.headDim;
  const width = qWidth + 2 * kvWidth;
  return {
    q: columns(ctx, qkv, width, 0, qWidth, 'q'),
    k: columns(ctx, qkv, width, qWidth, kvWidth, 'k'),
    v: columns(ctx, qkv, width, qWidth + kvWidth, kvWidth, 'v'),
  };
}

/**
 * The config of a GGUF written by llama.cpp's converter: the LLaMA metadata (a sliding_window of 0
 * meaning none, as for Phi-3 itself), the rotated part of each head, and LongRoPE's factors, which
 * the converter stores as the tensors rope_factors_short/long with the attention factor and the
 * original context in the metadata.
 */
const parseGgufConfig: GgufLayout['parseConfig'] = (meta: GgufMetadata, arch, modelType, tensors, file) => {
  const config = llamaGgufConfig(meta, arch, modelType, tensors, file);
  const rotaryDim = ggufRotaryDim(meta, arch, config.headDim, file);
  const shortFactor = tensors.readStored('rope_factors_short.weight');
  const longFactor = tensors.readStored('rope_factors_long.weight');
  if (!shortFactor && !longFactor) return { ...config, rope: { ...config.rope!, rotaryDim } };
  if (shortFactor?.length !== rotaryDim / 2 || longFactor?.length !== rotaryDim / 2) {
    throw new TopiaryError(`the tensors rope_factors_short and rope_factors_long should both hold ${rotaryDim / 2} factors (one per rotated frequency)`, file);
  }
  const original = ggufNumber(meta, `${arch}.rope.scaling.original_context_length`, file);
  const factor = config.maxPositionEmbeddings / original;
  const scaling: RopeScaling = {
    type: 'longrope',
    shortFactor: Array.from(shortFactor),
    longFactor: Array.from(longFactor),
    originalMaxPositionEmbeddings: original,
    attentionFactor: ggufNumber(meta, `${arch}.rope.scaling.attn_factor`, file, longRopeAttentionFactor(factor, original)),
  };
  return { ...config, rope: { ...config.rope!, rotaryDim, scaling } };
};

export const phi3: Family = {
  name: 'phi3',
  modelTypes: ['phi3'],
  hfArchitectures: { phi3: 'Phi3ForCausalLM' },
  parseConfig,
  toHfConfig,
  embedTokens: 'model.embed_tokens.weight',
  finalNorm: 'model.norm',
  lmHead: 'lm_head.weight',
  layerPrefix: (layer) => `model.layers.${layer}.`,
  linears: [
    { role: 'qkv', name: 'self_attn.qkv_proj' },
    { role: 'o', name: 'self_attn.o_proj' },
    { role: 'gate_up', name: 'mlp.gate_up_proj' },
    { role: 'down', name: 'mlp.down_proj' },
  ],
  inputGroups: [['qkv'], ['o'], ['gate_up'], ['down']],
  structure: { attention: { inputs: { qkv: 'qkv', layout: 'blocks' }, output: 'o' }, mlp: { inputs: { gateUp: 'gate_up' }, output: 'down' } },

  async forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void> {
    const { backend, config } = ctx;
    const normed = ctx.scratch('normed', hidden.length);
    await norm(backend, config.norm, block.tensors['input_layernorm.weight']!, undefined, hidden, normed);
    await backend.addInPlace(hidden, await fusedProjectionAttention(ctx, block, normed, { qkv: 'qkv', output: 'o' }, (qkv, heads, kvHeads) => splitQkvBlocks(ctx, qkv, heads, kvHeads)));
    await norm(backend, config.norm, block.tensors['post_attention_layernorm.weight']!, undefined, hidden, normed);
    await backend.addInPlace(hidden, await fusedGatedMlp(ctx, block, normed, config.activation, { gateUp: 'gate_up', down: 'down' }));
  },

  gguf: {
    // llama.cpp's phi3 rotates halves (NeoX style), as transformers does: q/k rows are stored as is.
    architectures: { phi3: { modelType: 'phi3', interleavedRope: false } },
    layerNames: {
      attn_norm: 'input_layernorm',
      ffn_norm: 'post_attention_layernorm',
      attn_qkv: 'self_attn.qkv_proj',
      attn_output: 'self_attn.o_proj',
      // The fused [gate | up] projection keeps llama.cpp's name for the up projection.
      ffn_up: 'mlp.gate_up_proj',
      ffn_down: 'mlp.down_proj',
    },
    parseConfig: parseGgufConfig,
    writing: {
      architecture: () => 'phi3',
      biases: () => ['attn_qkv'],
      unsupported(config) {
        if (config.attention.layerTypes?.includes('sliding')) return "llama.cpp's phi3 runs without its sliding window (disabled there)";
        const scaling = config.rope!.scaling.type;
        return scaling === 'none' || scaling === 'longrope' ? undefined : `${scaling} rope scaling is not written to GGUF yet`;
      },
      keyValues(config) {
        const scaling = config.rope!.scaling;
        if (scaling.type !== 'longrope') return [];
        return [
          { key: 'rope.scaling.original_context_length', type: 'u32', value: scaling.originalMaxPositionEmbeddings },
          { key: 'rope.scaling.attn_factor', type: 'f32', value: scaling.attentionFactor },
        ];
      },
      // As the converter: LongRoPE's per-frequency factors are tensors.
      extraTensors(config) {
        const scaling = config.rope!.scaling;
        if (scaling.type !== 'longrope') return [];
        return [
          { name: 'rope_factors_long.weight', data: Float32Array.from(scaling.longFactor) },
          { name: 'rope_factors_short.weight', data: Float32Array.from(scaling.shortFactor) },
        ];
      },
    },
  },
};
