/**
 * GPT-2: learned absolute positions, pre-norm LayerNorm with biases, multi-head attention with
 * one fused projection (`c_attn`, rows [q | k | v]) and a plain MLP. Every linear layer is a
 * Conv1D stored [in, out], read transposed. Checkpoints name tensors `transformer.h.0.…`, or
 * `h.0.…` as openai-community/gpt2 ships; both load, and export writes the prefixed names.
 */
import type { GgufMetadata } from '../../formats/gguf.js';
import { TopiaryError } from '../../util/errors.js';
import { fusedProjectionAttention } from '../components/attention.js';
import { columns } from '../components/linear.js';
import { plainMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import { activationField, booleanField, evenHeadsShape, exportedHfConfig, firstId, HF_ACTIVATION_NAMES, positiveField, sizeField, specialTokenIdsJson, type Json, type ModelConfig } from '../config.js';
import { fusedPlainStructure, type Block, type BlockContext, type Family, type GgufTensors } from './family.js';
import { ggufNumber, ggufVocabularyFields } from './llama.js';
import { tanhGeluUnsupported, tanhGeluWarnings } from './phi.js';

/** GPT-2's tokenizer: <|endoftext|> is both bos and eos. */
const ENDOFTEXT = 50256;

const ATTENTION_ROLES = { qkv: 'c_attn', output: 'c_proj' };
const MLP_ROLES = { up: 'c_fc', down: 'mlp_c_proj' };

function parseConfig(json: Json, file: string): ModelConfig {
  const shape = evenHeadsShape(json, file, { hidden: 'n_embd', heads: 'n_head' });
  const { hiddenSize, headDim } = shape;
  // Layer i's scores divided by i + 1 as well: one attention scale for all layers is all Topiary models.
  if (booleanField(json, file, 'scale_attn_by_inverse_layer_idx', false)) throw new TopiaryError('scale_attn_by_inverse_layer_idx true is not supported', file);
  return {
    modelType: 'gpt2',
    ...shape,
    intermediateSize: sizeField(json, file, 'n_inner', 4 * hiddenSize),
    numLayers: sizeField(json, file, 'n_layer'),
    vocabSize: sizeField(json, file, 'vocab_size'),
    maxPositionEmbeddings: sizeField(json, file, 'n_positions', 1024),
    tieWordEmbeddings: booleanField(json, file, 'tie_word_embeddings', true),
    bosTokenId: firstId(json.bos_token_id ?? ENDOFTEXT),
    eosTokenId: firstId(json.eos_token_id ?? ENDOFTEXT),
    norm: { kind: 'layer', eps: positiveField(json, file, 'layer_norm_epsilon', 1e-5) },
    // reorder_and_upcast_attn computes the same scores, in fp32 also when the model runs in fp16: nothing to do here.
    attention: { scale: booleanField(json, file, 'scale_attn_weights', true) ? 1 / Math.sqrt(headDim) : 1 },
    activation: activationField(json, file, 'activation_function', 'gelu_new'),
    hfConfig: json,
  };
}

function toHfConfig(config: ModelConfig): Json {
  return exportedHfConfig(config, {
    architectures: [gpt2.hfArchitectures.gpt2],
    model_type: 'gpt2',
    n_embd: config.hiddenSize,
    n_inner: config.intermediateSize,
    n_layer: config.numLayers,
    n_head: config.numHeads,
    vocab_size: config.vocabSize,
    n_positions: config.maxPositionEmbeddings,
    layer_norm_epsilon: config.norm.eps,
    activation_function: typeof config.hfConfig?.activation_function === 'string' ? config.hfConfig.activation_function : HF_ACTIVATION_NAMES[config.activation],
    scale_attn_weights: config.attention.scale !== 1,
    tie_word_embeddings: config.tieWordEmbeddings,
    ...specialTokenIdsJson(config),
  });
}

/** A config from the metadata llama.cpp's converter writes, the weights filling in what it gets wrong or leaves out. */
function parseGgufConfig(meta: GgufMetadata, arch: string, modelType: string, tensors: GgufTensors, file: string): ModelConfig {
  const num = (key: string, fallback?: number) => ggufNumber(meta, `${arch}.${key}`, file, fallback);
  const hiddenSize = num('embedding_length');
  const numHeads = num('attention.head_count');
  if (hiddenSize % numHeads !== 0) throw new TopiaryError(`GGUF metadata: embedding_length (${hiddenSize}) is not a multiple of attention.head_count (${numHeads})`, file);
  const mlpUp = `${gpt2.layerPrefix(0)}mlp.c_fc.weight`;
  if (!tensors.has(mlpUp) || !tensors.has(gpt2.positionEmbeddings!)) throw new TopiaryError('a GPT-2 GGUF file needs blk.0.ffn_up and position_embd tensors', file);
  const headDim = hiddenSize / numHeads;
  return {
    modelType,
    hiddenSize,
    // The converter writes 4·n_embd as feed_forward_length whatever n_inner says.
    intermediateSize: tensors.shape(mlpUp)[0]!,
    numLayers: num('block_count'),
    numHeads,
    numKvHeads: numHeads,
    headDim,
    ...ggufVocabularyFields(meta, () => tensors.shape(gpt2.embedTokens)[0]!),
    maxPositionEmbeddings: tensors.shape(gpt2.positionEmbeddings!)[0]!,
    tieWordEmbeddings: !tensors.has(gpt2.lmHead),
    norm: { kind: 'layer', eps: num('attention.layer_norm_epsilon', 1e-5) },
    attention: { scale: 1 / Math.sqrt(headDim) },
    // llama.cpp runs GPT-2 with the tanh GELU (gelu_new); GGUF has no field for another.
    activation: 'gelu_tanh',
  };
}

export const gpt2: Family = {
  name: 'gpt2',
  modelTypes: ['gpt2'],
  hfArchitectures: { gpt2: 'GPT2LMHeadModel' },
  parseConfig,
  toHfConfig,
  embedTokens: 'transformer.wte.weight',
  positionEmbeddings: 'transformer.wpe.weight',
  finalNorm: 'transformer.ln_f',
  lmHead: 'lm_head.weight',
  layerPrefix: (layer) => `transformer.h.${layer}.`,
  canonicalTensorName(name) {
    // Older checkpoints (openai-community/gpt2) carry each layer's causal mask as attn.bias and attn.masked_bias.
    if (/\.attn\.(masked_)?bias$/.test(name)) return undefined;
    return name.startsWith('transformer.') || name.startsWith('lm_head.') ? name : `transformer.${name}`;
  },
  linears: [
    { role: ATTENTION_ROLES.qkv, name: 'attn.c_attn', transposed: true },
    { role: ATTENTION_ROLES.output, name: 'attn.c_proj', transposed: true },
    { role: MLP_ROLES.up, name: 'mlp.c_fc', transposed: true },
    { role: MLP_ROLES.down, name: 'mlp.c_proj', transposed: true },
  ],
  inputGroups: [[ATTENTION_ROLES.qkv], [ATTENTION_ROLES.output], [MLP_ROLES.up], [MLP_ROLES.down]],
  structure: fusedPlainStructure(ATTENTION_ROLES, MLP_ROLES, 'blocks', 'GPT-2 ties the attention width to n_embd (head size = n_embd / n_head)'),

  async forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void> {
    const { backend, config } = ctx;
    const { tensors } = block;
    const normed = ctx.scratch('normed', hidden.length);
    await norm(backend, config.norm, tensors['ln_1.weight']!, tensors['ln_1.bias'], hidden, normed);
    const attention = await fusedProjectionAttention(ctx, block, normed, ATTENTION_ROLES, (qkv, heads) => {
      // Rows [q | k | v], each heads·headDim wide.
      const width = heads * config.headDim;
      return {
        q: columns(ctx, qkv, 3 * width, 0, width, 'q'),
        k: columns(ctx, qkv, 3 * width, width, width, 'k'),
        v: columns(ctx, qkv, 3 * width, 2 * width, width, 'v'),
      };
    });
    await backend.addInPlace(hidden, attention);
    await norm(backend, config.norm, tensors['ln_2.weight']!, tensors['ln_2.bias'], hidden, normed);
    await backend.addInPlace(hidden, await plainMlp(ctx, block, normed, config.activation, MLP_ROLES));
  },

  gguf: {
    architectures: { gpt2: { modelType: 'gpt2', interleavedRope: false } },
    // llama.cpp's converter transposes the Conv1D weights: GGUF holds them [out, in] already.
    layerNames: {
      attn_norm: 'ln_1',
      attn_qkv: 'attn.c_attn',
      attn_output: 'attn.c_proj',
      ffn_norm: 'ln_2',
      ffn_up: 'mlp.c_fc',
      ffn_down: 'mlp.c_proj',
    },
    parseConfig: parseGgufConfig,
    writing: {
      architecture: () => 'gpt2',
      biases: () => 'any',
      unsupported: (config) => tanhGeluUnsupported(config, 'gpt2'),
      warnings: (config) => tanhGeluWarnings(config, 'gpt2'),
    },
  },
};
