import type { ArchitectureSpec } from './spec.js';

/**
 * The LLaMA family in Hugging Face naming: pre-norm RMSNorm, RoPE, grouped-query attention,
 * SwiGLU MLP. Mistral and Qwen2 checkpoints use the same tensor names; Qwen2 adds q/k/v biases,
 * which the loader picks up wherever a `.bias` tensor is present.
 */
export const llama: ArchitectureSpec = {
  name: 'llama',
  modelTypes: ['llama', 'mistral', 'qwen2'],
  hfArchitectures: { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' },
  embedTokens: 'model.embed_tokens',
  finalNorm: 'model.norm',
  lmHead: 'lm_head',
  layerPrefix: (i) => `model.layers.${i}.`,
  attentionNorm: 'input_layernorm',
  mlpNorm: 'post_attention_layernorm',
  linears: {
    q: 'self_attn.q_proj',
    k: 'self_attn.k_proj',
    v: 'self_attn.v_proj',
    o: 'self_attn.o_proj',
    gate: 'mlp.gate_proj',
    up: 'mlp.up_proj',
    down: 'mlp.down_proj',
  },
};
