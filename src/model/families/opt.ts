/**
 * Meta's OPT: learned absolute positions (looked up at p + 2), LayerNorm, multi-head attention
 * and a plain fc1 → activation → fc2 MLP, with biases throughout. OPT-350m normalizes after each
 * residual add instead of before each sublayer, has no final norm, and embeds words in a narrower
 * space (word_embed_proj_dim) projected to and from the hidden size by project_in/project_out.
 */
import { TopiaryError } from '../../util/errors.js';
import { separateProjectionAttention } from '../components/attention.js';
import { plainMlp } from '../components/mlp.js';
import { norm } from '../components/norm.js';
import { activationField, booleanField, evenHeadsShape, HF_ACTIVATION_NAMES, sizeField, specialTokenIdsJson, vocabularyFields, type Json, type ModelConfig } from '../config.js';
import type { Block, BlockContext, Family } from './family.js';

/** OPT's LayerNorms use PyTorch's default epsilon; config.json has no field for it. */
const LAYER_NORM_EPS = 1e-5;
/** Position p reads row p + 2 of embed_positions (fairseq reserved the first rows for padding). */
const POSITION_OFFSET = 2;
const MLP_ROLES = { up: 'fc1', down: 'fc2' };

function parseConfig(json: Json, file: string): ModelConfig {
  if (!booleanField(json, file, 'layer_norm_elementwise_affine', true)) {
    throw new TopiaryError('layer_norm_elementwise_affine false (LayerNorms without weights) is not supported', file);
  }
  const shape = evenHeadsShape(json, file);
  const { hiddenSize, headDim } = shape;
  const wordEmbeddingSize = sizeField(json, file, 'word_embed_proj_dim', hiddenSize);
  const postNorm = !booleanField(json, file, 'do_layer_norm_before', true);
  // Old checkpoints drop the final norm of a pre-norm model with this flag; post-norm models never have one.
  const noFinalNorm = postNorm || booleanField(json, file, '_remove_final_layer_norm', false);
  return {
    modelType: 'opt',
    ...shape,
    intermediateSize: sizeField(json, file, 'ffn_dim'),
    numLayers: sizeField(json, file, 'num_hidden_layers'),
    ...vocabularyFields(json, file, true),
    maxPositionEmbeddings: sizeField(json, file, 'max_position_embeddings', 2048),
    norm: { kind: 'layer', eps: LAYER_NORM_EPS },
    // OPT scales q (after its bias) by 1/√headDim before the dot product: the same scores.
    attention: { scale: 1 / Math.sqrt(headDim) },
    activation: activationField(json, file, 'activation_function', 'relu'),
    positionOffset: POSITION_OFFSET,
    ...(wordEmbeddingSize !== hiddenSize ? { wordEmbeddingSize } : {}),
    ...(postNorm ? { postNorm } : {}),
    ...(noFinalNorm ? { noFinalNorm } : {}),
    hfConfig: json,
  };
}

function toHfConfig(config: ModelConfig): Json {
  return {
    ...config.hfConfig,
    architectures: [opt.hfArchitectures.opt],
    model_type: 'opt',
    hidden_size: config.hiddenSize,
    ffn_dim: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    word_embed_proj_dim: config.wordEmbeddingSize ?? config.hiddenSize,
    do_layer_norm_before: !config.postNorm,
    _remove_final_layer_norm: config.noFinalNorm === true && !config.postNorm,
    activation_function: HF_ACTIVATION_NAMES[config.activation],
    tie_word_embeddings: config.tieWordEmbeddings,
    ...specialTokenIdsJson(config),
  };
}

/** LayerNorm `name` of the block (weight and bias) on x into out (may alias). */
function layerNorm(ctx: BlockContext, block: Block, name: string, x: Float32Array, out: Float32Array): Promise<void> {
  return norm(ctx.backend, ctx.config.norm, block.tensors[`${name}.weight`]!, block.tensors[`${name}.bias`], x, out);
}

export const opt: Family = {
  name: 'opt',
  modelTypes: ['opt'],
  hfArchitectures: { opt: 'OPTForCausalLM' },
  parseConfig,
  toHfConfig,
  embedTokens: 'model.decoder.embed_tokens.weight',
  positionEmbeddings: 'model.decoder.embed_positions.weight',
  finalNorm: 'model.decoder.final_layer_norm',
  embedProjection: 'model.decoder.project_in.weight',
  headProjection: 'model.decoder.project_out.weight',
  lmHead: 'lm_head.weight',
  layerPrefix: (layer) => `model.decoder.layers.${layer}.`,
  // facebook/opt-125m and opt-350m were saved from OPTModel, without the `model.` prefix.
  canonicalTensorName: (name) => (name.startsWith('decoder.') ? `model.${name}` : name),
  linears: [
    { role: 'q', name: 'self_attn.q_proj' },
    { role: 'k', name: 'self_attn.k_proj' },
    { role: 'v', name: 'self_attn.v_proj' },
    { role: 'o', name: 'self_attn.out_proj' },
    { role: 'fc1', name: 'fc1' },
    { role: 'fc2', name: 'fc2' },
  ],
  inputGroups: [['q', 'k', 'v'], ['o'], ['fc1'], ['fc2']],
  structure: {
    attention: { inputs: { q: 'q', k: 'k', v: 'v' }, output: 'o', fixedHeads: 'OPT ties the attention width to hidden_size (head size = hidden_size / num_attention_heads)' },
    mlp: { inputs: { up: MLP_ROLES.up }, output: MLP_ROLES.down },
  },

  async forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void> {
    const { backend, config } = ctx;
    if (config.postNorm) {
      await backend.addInPlace(hidden, await separateProjectionAttention(ctx, block, hidden));
      await layerNorm(ctx, block, 'self_attn_layer_norm', hidden, hidden);
      await backend.addInPlace(hidden, await plainMlp(ctx, block, hidden, config.activation, MLP_ROLES));
      await layerNorm(ctx, block, 'final_layer_norm', hidden, hidden);
      return;
    }
    const normed = ctx.scratch('normed', hidden.length);
    await layerNorm(ctx, block, 'self_attn_layer_norm', hidden, normed);
    await backend.addInPlace(hidden, await separateProjectionAttention(ctx, block, normed));
    await layerNorm(ctx, block, 'final_layer_norm', hidden, normed);
    await backend.addInPlace(hidden, await plainMlp(ctx, block, normed, config.activation, MLP_ROLES));
  },
};
