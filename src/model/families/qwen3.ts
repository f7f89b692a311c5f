/**
 * Qwen3: the LLaMA block (see ./llama.ts) with a per-head RMSNorm on q and k before RoPE, an
 * explicit head_dim (often not hidden/heads) and no q/k/v biases. Config, tensor names and GGUF
 * metadata are LLaMA's, plus the two norm tensors.
 */
import type { ModelConfig } from '../config.js';
import type { Family } from './family.js';
import { llama, llamaBlock, parseGgufConfig, QKV_BIASES, ropeAndWindowUnsupported } from './llama.js';

function toHfConfig(config: ModelConfig): Record<string, unknown> {
  return { ...llama.toHfConfig(config), architectures: [qwen3.hfArchitectures.qwen3], attention_bias: false };
}

export const qwen3: Family = {
  ...llama,
  name: 'qwen3',
  modelTypes: ['qwen3'],
  hfArchitectures: { qwen3: 'Qwen3ForCausalLM' },
  toHfConfig,
  forward: llamaBlock({ qkNorm: true }),
  gguf: {
    architectures: { qwen3: { modelType: 'qwen3', interleavedRope: false } },
    layerNames: { ...llama.gguf!.layerNames, attn_q_norm: 'self_attn.q_norm', attn_k_norm: 'self_attn.k_norm' },
    parseConfig: parseGgufConfig,
    writing: {
      architecture: () => 'qwen3',
      biases: () => QKV_BIASES,
      unsupported: (config) => ropeAndWindowUnsupported(config, 'qwen3'),
    },
  },
};
