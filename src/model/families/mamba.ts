/**
 * Mamba (Hugging Face MambaForCausalLM, the `-hf` checkpoints such as state-spaces/mamba-130m-hf):
 * no attention and no positions; each block is RMSNorm → the selective state-space mixer
 * (../components/ssm.ts) added to the residual stream, then a final RMSNorm and the head, tied to
 * the embedding by default. The pruned linear layers are the mixer's in_proj, x_proj, dt_proj and
 * out_proj; conv1d, A_log and D stay dense. Generation carries each layer's conv history and scan
 * state in the cache instead of keys and values.
 */
import { selectiveSsm, SSM_ROLES } from '../components/ssm.js';
import { norm } from '../components/norm.js';
import { activationField, booleanField, FloatValue, HF_ACTIVATION_NAMES, positiveField, sizeField, specialTokenIdsJson, vocabularyFields, type Json, type ModelConfig } from '../config.js';
import { TopiaryError } from '../../util/errors.js';
import type { GgufMetadata } from '../../formats/gguf.js';
import type { Family, GgufTensors, StoredForm } from './family.js';
import { ggufNumber, ggufVocabularyFields } from './llama.js';

/** Mamba has no position limit; this is what llama.cpp's converter states as its context. */
const UNBOUNDED_CONTEXT = 1 << 20;

/** time_step_rank: a number, or "auto" for ⌈hidden/16⌉ (transformers' MambaConfig). */
function timeStepRank(json: Json, file: string, hiddenSize: number): number {
  return json.time_step_rank === 'auto' || json.time_step_rank === undefined ? Math.ceil(hiddenSize / 16) : sizeField(json, file, 'time_step_rank');
}

/** The scan's sizes, from config.json (parseConfig has checked them; a GGUF source's config is built with them). */
function ssmSizes(config: ModelConfig): { stateSize: number; convKernel: number; timeStepRank: number } {
  const json = config.hfConfig ?? {};
  return {
    stateSize: sizeField(json, 'config.json', 'state_size', 16),
    convKernel: sizeField(json, 'config.json', 'conv_kernel', 4),
    timeStepRank: timeStepRank(json, 'config.json', config.hiddenSize),
  };
}

function parseConfig(json: Json, file: string): ModelConfig {
  const hiddenSize = sizeField(json, file, 'hidden_size');
  const expand = positiveField(json, file, 'expand', 2);
  const innerSize = Math.trunc(expand * hiddenSize);
  if (innerSize < 1) throw new TopiaryError(`field "expand" (${expand}) leaves no inner channels`, file);
  // Read so that a malformed value is refused here; the sizes themselves come from the weights.
  sizeField(json, file, 'state_size', 16);
  sizeField(json, file, 'conv_kernel', 4);
  timeStepRank(json, file, hiddenSize);
  booleanField(json, file, 'use_conv_bias', true);
  return {
    modelType: 'mamba',
    hiddenSize,
    intermediateSize: innerSize,
    numLayers: sizeField(json, file, 'num_hidden_layers'),
    // No attention: no heads.
    numHeads: 0,
    numKvHeads: 0,
    headDim: 0,
    ...vocabularyFields(json, file, true),
    maxPositionEmbeddings: UNBOUNDED_CONTEXT,
    norm: { kind: 'rms', eps: positiveField(json, file, 'layer_norm_epsilon', 1e-5), weightOffset: 0 },
    attention: { scale: 1 },
    // The conv output's activation (hidden_act); the gate is always SiLU.
    activation: activationField(json, file, 'hidden_act', 'silu'),
    hfConfig: json,
  };
}

/** MambaConfig's float fields: transformers 5 refuses 1 where it expects 1.0, which JSON would write. */
const FLOAT_FIELDS = ['initializer_range', 'time_step_scale', 'time_step_min', 'time_step_max', 'time_step_floor'];

/**
 * The config from llama.cpp's `mamba` metadata, read through the config.json reader: the
 * config.json transformers would need is built from the metadata and the tensors present (biases).
 */
function parseGgufConfig(meta: GgufMetadata, arch: string, _modelType: string, tensors: GgufTensors, file: string): ModelConfig {
  const num = (key: string, fallback?: number) => ggufNumber(meta, `${arch}.${key}`, file, fallback);
  if (meta[`${arch}.ssm.dt_b_c_rms`] === true) throw new TopiaryError('Falcon-Mamba\'s RMSNorm of dt, B and C (ssm.dt_b_c_rms) is not supported', file);
  const hiddenSize = num('embedding_length');
  const innerSize = num('ssm.inner_size');
  if (innerSize % hiddenSize !== 0) throw new TopiaryError(`GGUF metadata "${arch}.ssm.inner_size" (${innerSize}) is not a whole multiple of the width ${hiddenSize}, as Hugging Face's expand must be`, file);
  const { vocabSize, bosTokenId, eosTokenId } = ggufVocabularyFields(meta, () => tensors.shape(mamba.embedTokens)[0]!);
  const firstLayer = mamba.layerPrefix(0);
  const json: Json = {
    model_type: 'mamba',
    hidden_size: hiddenSize,
    num_hidden_layers: num('block_count'),
    vocab_size: vocabSize,
    state_size: num('ssm.state_size'),
    conv_kernel: num('ssm.conv_kernel'),
    expand: innerSize / hiddenSize,
    intermediate_size: innerSize,
    time_step_rank: num('ssm.time_step_rank'),
    layer_norm_epsilon: num('attention.layer_norm_rms_epsilon', 1e-5),
    use_conv_bias: tensors.has(`${firstLayer}mixer.conv1d.bias`),
    use_bias: tensors.has(`${firstLayer}mixer.in_proj.bias`),
    tie_word_embeddings: !tensors.has(mamba.lmHead),
    ...(bosTokenId !== undefined ? { bos_token_id: bosTokenId } : {}),
    ...(eosTokenId !== undefined ? { eos_token_id: eosTokenId } : {}),
  };
  return parseConfig(json, file);
}

/** llama.cpp stores A = −exp(A_log) and the conv1d weight without its middle axis of 1. */
function storedForm(name: string): StoredForm | undefined {
  if (name.endsWith('.mixer.A_log')) return { values: (stored) => stored.map((a) => Math.log(-a)), storedValues: (aLog) => aLog.map((a) => -Math.exp(a)) };
  if (name.endsWith('.mixer.conv1d.weight')) return { shape: ([channels, kernel]) => [channels!, 1, kernel!], storedShape: ([channels, , kernel]) => [channels!, kernel!] };
  return undefined;
}

/**
 * What llama.cpp's mamba (src/models/mamba.cpp, build_mamba_layer) would compute differently:
 * it builds only d_inner = 2 × hidden, requires the conv1d bias, and always applies SiLU after the
 * conv (GGUF has no key for another activation).
 */
function ggufUnsupported(config: ModelConfig): string | undefined {
  if (config.intermediateSize !== 2 * config.hiddenSize) {
    return `llama.cpp's mamba builds only an expansion factor of 2 (d_inner = 2 × hidden), this model has d_inner ${config.intermediateSize} for hidden ${config.hiddenSize}`;
  }
  if (config.hfConfig?.use_conv_bias === false) return "llama.cpp's mamba requires the conv1d bias this model has not (use_conv_bias false)";
  if (config.activation !== 'silu') return `llama.cpp's mamba computes SiLU after the conv, not this model's ${config.activation}`;
  return undefined;
}

function toHfConfig(config: ModelConfig): Json {
  const source = config.hfConfig ?? {};
  const floats = FLOAT_FIELDS.filter((key) => typeof source[key] === 'number').map((key) => [key, new FloatValue(source[key] as number)]);
  return {
    ...source,
    ...Object.fromEntries(floats),
    architectures: [mamba.hfArchitectures.mamba],
    model_type: 'mamba',
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    vocab_size: config.vocabSize,
    layer_norm_epsilon: new FloatValue(config.norm.eps),
    hidden_act: HF_ACTIVATION_NAMES[config.activation],
    tie_word_embeddings: config.tieWordEmbeddings,
    ...specialTokenIdsJson(config),
  };
}

export const mamba: Family = {
  name: 'mamba',
  modelTypes: ['mamba'],
  hfArchitectures: { mamba: 'MambaForCausalLM' },
  parseConfig,
  toHfConfig,
  embedTokens: 'backbone.embeddings.weight',
  finalNorm: 'backbone.norm_f',
  lmHead: 'lm_head.weight',
  layerPrefix: (layer) => `backbone.layers.${layer}.`,
  linears: [
    { role: SSM_ROLES.input, name: 'mixer.in_proj' },
    { role: SSM_ROLES.selection, name: 'mixer.x_proj' },
    { role: SSM_ROLES.timeStep, name: 'mixer.dt_proj' },
    { role: SSM_ROLES.output, name: 'mixer.out_proj' },
  ],
  inputGroups: [[SSM_ROLES.input], [SSM_ROLES.selection], [SSM_ROLES.timeStep], [SSM_ROLES.output]],

  async forward(block, hidden, ctx) {
    const normed = ctx.scratch('normed', hidden.length);
    await norm(ctx.backend, ctx.config.norm, block.tensors['norm.weight']!, undefined, hidden, normed);
    const names = { convWeight: 'mixer.conv1d.weight', convBias: 'mixer.conv1d.bias', aLog: 'mixer.A_log', d: 'mixer.D' };
    await ctx.backend.addInPlace(hidden, await selectiveSsm(ctx, block, normed, names));
  },

  gguf: {
    architectures: { mamba: { modelType: 'mamba', interleavedRope: false } },
    layerNames: {
      attn_norm: 'norm',
      ssm_in: 'mixer.in_proj',
      ssm_conv1d: 'mixer.conv1d',
      ssm_x: 'mixer.x_proj',
      ssm_dt: 'mixer.dt_proj',
      ssm_out: 'mixer.out_proj',
    },
    bareLayerNames: { ssm_a: 'mixer.A_log', ssm_d: 'mixer.D' },
    storedForm,
    noAttention: true,
    parseConfig: parseGgufConfig,
    writing: {
      architecture: () => 'mamba',
      // Of the mixer's linear layers llama.cpp loads only dt_proj's bias (use_bias false in every released Mamba).
      biases: () => ['ssm_dt'],
      unsupported: ggufUnsupported,
      // ggml's ssm_conv takes the conv weight only in F32, as the converter keeps it.
      fullPrecision: ['ssm_conv1d'],
      keyValues: (config) => {
        const { stateSize, convKernel, timeStepRank } = ssmSizes(config);
        return [
          { key: 'ssm.conv_kernel', type: 'u32', value: convKernel },
          { key: 'ssm.inner_size', type: 'u32', value: config.intermediateSize },
          { key: 'ssm.state_size', type: 'u32', value: stateSize },
          { key: 'ssm.time_step_rank', type: 'u32', value: timeStepRank },
          { key: 'ssm.dt_b_c_rms', type: 'bool', value: false },
        ];
      },
    },
  },
};
