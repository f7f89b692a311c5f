/**
 * GPT-NeoX (Pythia): pre-norm LayerNorm with biases, partial rotary embeddings, multi-head
 * attention with one fused projection whose rows are interleaved per head ([q_h | k_h | v_h] for
 * each head h), a plain MLP, and usually a parallel residual (attention and MLP both read the
 * block's input). The head `embed_out` is untied unless tie_word_embeddings says otherwise.
 */
import type { GgufMetadata } from '../../formats/gguf.js';
import { TopiaryError } from '../../util/errors.js';
import { fusedProjectionAttention } from '../components/attention.js';
import { plainMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import {
  activationField,
  booleanField,
  evenHeadsShape,
  exportedHfConfig,
  HF_ACTIVATION_NAMES,
  parseRopeScaling,
  positiveField,
  ropeParametersJson,
  sizeField,
  specialTokenIdsJson,
  vocabularyFields,
  type Json,
  type ModelConfig,
  type RopeSpec,
} from '../config.js';
import { fusedPlainStructure, type Block, type BlockContext, type Family, type GgufTensors } from './family.js';
import { ggufNumber, ggufVocabularyFields } from './llama.js';
import { tanhGeluUnsupported, tanhGeluWarnings } from './phi.js';

const ATTENTION_ROLES = { qkv: 'query_key_value', output: 'dense' };
const MLP_ROLES = { up: 'dense_h_to_4h', down: 'dense_4h_to_h' };

/**
 * RoPE as transformers reads a GPT-NeoX config: rope_scaling, else rope_parameters, with the
 * base and rotary fraction falling back to Pythia's rotary_emb_base and rotary_pct.
 */
function parseRope(json: Json, file: string, headDim: number): RopeSpec {
  const raw = json.rope_scaling ?? json.rope_parameters;
  const parameters = raw !== null && typeof raw === 'object' ? (raw as Json) : {};
  const theta = positiveField(parameters, file, 'rope_theta', positiveField(json, file, 'rotary_emb_base', 10000));
  const fraction = positiveField(parameters, file, 'partial_rotary_factor', positiveField(json, file, 'rotary_pct', 0.25));
  const rotaryDim = Math.floor(headDim * fraction);
  checkRotaryDim(rotaryDim, headDim, `a rotary fraction of ${fraction} of the head size ${headDim} gives ${rotaryDim} rotary dimensions`, file);
  return { theta, scaling: parseRopeScaling(raw, file), rotaryDim, layout: 'half' };
}

function checkRotaryDim(rotaryDim: number, headDim: number, what: string, file: string): void {
  if (rotaryDim > headDim || rotaryDim % 2 !== 0 || rotaryDim <= 0) throw new TopiaryError(`${what}; a positive even number up to ${headDim} is needed`, file);
}

function parseConfig(json: Json, file: string): ModelConfig {
  const shape = evenHeadsShape(json, file);
  const { headDim } = shape;
  return {
    modelType: 'gpt_neox',
    ...shape,
    intermediateSize: sizeField(json, file, 'intermediate_size'),
    numLayers: sizeField(json, file, 'num_hidden_layers'),
    ...vocabularyFields(json, file, false),
    maxPositionEmbeddings: sizeField(json, file, 'max_position_embeddings', 2048),
    norm: { kind: 'layer', eps: positiveField(json, file, 'layer_norm_eps', 1e-5) },
    rope: parseRope(json, file, headDim),
    attention: { scale: 1 / Math.sqrt(headDim) },
    activation: activationField(json, file, 'hidden_act', 'gelu'),
    parallelResidual: booleanField(json, file, 'use_parallel_residual', true),
    hfConfig: json,
  };
}

/** Older rope fields the exported rope_parameters replace: transformers would read rope_scaling instead, and Pythia's names fill its gaps. */
const ROPE_FIELDS_SUPERSEDED = ['rope_scaling', 'rotary_pct', 'rotary_emb_base'];

function toHfConfig(config: ModelConfig): Json {
  return exportedHfConfig(config, {
    architectures: [gptNeox.hfArchitectures.gpt_neox],
    model_type: 'gpt_neox',
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    layer_norm_eps: config.norm.eps,
    hidden_act: typeof config.hfConfig?.hidden_act === 'string' ? config.hfConfig.hidden_act : HF_ACTIVATION_NAMES[config.activation],
    use_parallel_residual: config.parallelResidual ?? true,
    rope_parameters: ropeParametersJson(config),
    tie_word_embeddings: config.tieWordEmbeddings,
    ...specialTokenIdsJson(config),
  }, ROPE_FIELDS_SUPERSEDED);
}

function parseGgufConfig(meta: GgufMetadata, arch: string, modelType: string, tensors: GgufTensors, file: string): ModelConfig {
  const num = (key: string, fallback?: number) => ggufNumber(meta, `${arch}.${key}`, file, fallback);
  const hiddenSize = num('embedding_length');
  const numHeads = num('attention.head_count');
  if (hiddenSize % numHeads !== 0) throw new TopiaryError(`GGUF metadata: embedding_length (${hiddenSize}) is not a multiple of attention.head_count (${numHeads})`, file);
  const headDim = hiddenSize / numHeads;
  const rotaryDim = num('rope.dimension_count');
  checkRotaryDim(rotaryDim, headDim, `GGUF metadata: rope.dimension_count is ${rotaryDim}`, file);
  return {
    modelType,
    hiddenSize,
    intermediateSize: num('feed_forward_length'),
    numLayers: num('block_count'),
    numHeads,
    numKvHeads: numHeads,
    headDim,
    ...ggufVocabularyFields(meta, () => tensors.shape(gptNeox.embedTokens)[0]!),
    maxPositionEmbeddings: num('context_length', 2048),
    tieWordEmbeddings: !tensors.has(gptNeox.lmHead),
    norm: { kind: 'layer', eps: num('attention.layer_norm_epsilon', 1e-5) },
    rope: { theta: num('rope.freq_base', 10000), scaling: { type: 'none' }, rotaryDim, layout: 'half' },
    attention: { scale: 1 / Math.sqrt(headDim) },
    // GGUF does not record the activation: Pythia's is the exact GELU.
    activation: 'gelu',
    parallelResidual: meta[`${arch}.use_parallel_residual`] !== false,
  };
}

/** llama.cpp's fused q/k/v rows [q | k | v] (each heads·headDim) → Hugging Face's [q_h | k_h | v_h] per head. */
function qkvPerHead(data: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const block = (rows / (3 * heads)) * cols;
  const out = new Float32Array(data.length);
  for (let part = 0; part < 3; part++) {
    for (let h = 0; h < heads; h++) out.set(data.subarray((part * heads + h) * block, (part * heads + h + 1) * block), (h * 3 + part) * block);
  }
  return out;
}

/** The inverse of qkvPerHead: Hugging Face's per-head [q_h | k_h | v_h] rows → llama.cpp's [q | k | v]. */
function qkvBlocks(data: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const block = (rows / (3 * heads)) * cols;
  const out = new Float32Array(data.length);
  for (let part = 0; part < 3; part++) {
    for (let h = 0; h < heads; h++) out.set(data.subarray((h * 3 + part) * block, (h * 3 + part + 1) * block), (part * heads + h) * block);
  }
  return out;
}

/** Per head h the fused rows are [q_h | k_h | v_h]: gathers part `part` (0 q, 1 k, 2 v) of every head. */
function headPart(ctx: BlockContext, qkv: Float32Array, heads: number, part: number, purpose: string): Float32Array {
  const headDim = ctx.config.headDim;
  const out = ctx.scratch(purpose, ctx.rows * heads * headDim);
  for (let r = 0; r < ctx.rows; r++) {
    for (let h = 0; h < heads; h++) {
      const from = (r * heads + h) * 3 * headDim + part * headDim;
      out.set(qkv.subarray(from, from + headDim), (r * heads + h) * headDim);
    }
  }
  return out;
}

export const gptNeox: Family = {
  name: 'gpt_neox',
  modelTypes: ['gpt_neox'],
  hfArchitectures: { gpt_neox: 'GPTNeoXForCausalLM' },
  parseConfig,
  toHfConfig,
  embedTokens: 'gpt_neox.embed_in.weight',
  finalNorm: 'gpt_neox.final_layer_norm',
  lmHead: 'embed_out.weight',
  layerPrefix: (layer) => `gpt_neox.layers.${layer}.`,
  linears: [
    { role: ATTENTION_ROLES.qkv, name: 'attention.query_key_value' },
    { role: ATTENTION_ROLES.output, name: 'attention.dense' },
    { role: MLP_ROLES.up, name: 'mlp.dense_h_to_4h' },
    { role: MLP_ROLES.down, name: 'mlp.dense_4h_to_h' },
  ],
  inputGroups: [[ATTENTION_ROLES.qkv], [ATTENTION_ROLES.output], [MLP_ROLES.up], [MLP_ROLES.down]],
  structure: fusedPlainStructure(ATTENTION_ROLES, MLP_ROLES, 'per-head', 'GPT-NeoX ties the attention width to hidden_size (head size = hidden_size / num_attention_heads)'),

  async forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void> {
    const { backend, config } = ctx;
    const { tensors } = block;
    const attentionInput = ctx.scratch('normed', hidden.length);
    await norm(backend, config.norm, tensors['input_layernorm.weight']!, tensors['input_layernorm.bias'], hidden, attentionInput);
    const mlpNorm = (input: Float32Array, out: Float32Array) => norm(backend, config.norm, tensors['post_attention_layernorm.weight']!, tensors['post_attention_layernorm.bias'], input, out);
    // Parallel: the MLP reads the block's input, so normalise it before attention adds to it.
    const mlpInput = config.parallelResidual ? ctx.scratch('mlp input', hidden.length) : attentionInput;
    if (config.parallelResidual) await mlpNorm(hidden, mlpInput);
    const attention = await fusedProjectionAttention(ctx, block, attentionInput, ATTENTION_ROLES, (qkv, heads) => ({
      q: headPart(ctx, qkv, heads, 0, 'q'),
      k: headPart(ctx, qkv, heads, 1, 'k'),
      v: headPart(ctx, qkv, heads, 2, 'v'),
    }));
    await backend.addInPlace(hidden, attention);
    if (!config.parallelResidual) await mlpNorm(hidden, mlpInput);
    await backend.addInPlace(hidden, await plainMlp(ctx, block, mlpInput, config.activation, MLP_ROLES));
  },

  gguf: {
    architectures: { gptneox: { modelType: 'gpt_neox', interleavedRope: false } },
    layerNames: {
      attn_norm: 'input_layernorm',
      attn_qkv: 'attention.query_key_value',
      attn_output: 'attention.dense',
      ffn_norm: 'post_attention_layernorm',
      ffn_up: 'mlp.dense_h_to_4h',
      ffn_down: 'mlp.dense_4h_to_h',
    },
    rowsToHf: { attn_qkv: qkvPerHead },
    rowsFromHf: { attn_qkv: qkvBlocks },
    parseConfig: parseGgufConfig,
    writing: {
      architecture: () => 'gptneox',
      biases: () => 'any',
      unsupported: (config) =>
        tanhGeluUnsupported(config, 'gptneox') ??
        (config.tieWordEmbeddings ? "llama.cpp's gptneox needs an untied output" : config.rope!.scaling.type !== 'none' ? `${config.rope!.scaling.type} rope scaling is not written to GGUF yet` : undefined),
      warnings: (config) => tanhGeluWarnings(config, 'gptneox'),
      keyValues: (config) => [{ key: 'use_parallel_residual', type: 'bool', value: config.parallelResidual ?? true }],
    },
  },
};
