/**
 * The one correspondence between a family's Hugging Face tensor names and llama.cpp's GGUF names,
 * read in both directions: src/model/sources.ts maps a GGUF file's tensors to canonical names, and
 * src/export/gguf-writer.ts writes canonical tensors under their GGUF names.
 */
import type { Family } from './family.js';

export interface GgufTensorName {
  /** Name in a GGUF file: 'token_embd.weight', 'blk.3.attn_q.bias'. */
  gguf: string;
  /** Canonical (Hugging Face) name. */
  hf: string;
  /** For block tensors: the block and llama.cpp's name of the tensor within it ('attn_q'). */
  layer?: number;
  blockName?: string;
}

/** Every tensor the family can have in GGUF, weights, biases and bare block tensors (Mamba's ssm_a), outside the blocks first. */
export function ggufTensorNames(family: Family, numLayers: number): GgufTensorName[] {
  const names: GgufTensorName[] = [{ gguf: 'token_embd.weight', hf: family.embedTokens }];
  if (family.positionEmbeddings) names.push({ gguf: 'position_embd.weight', hf: family.positionEmbeddings });
  for (const kind of ['weight', 'bias']) names.push({ gguf: `output_norm.${kind}`, hf: `${family.finalNorm}.${kind}` });
  names.push({ gguf: 'output.weight', hf: family.lmHead }, { gguf: 'output.bias', hf: family.lmHead.replace(/\.weight$/, '.bias') });
  for (let layer = 0; layer < numLayers; layer++) {
    for (const [blockName, hfName] of Object.entries(family.gguf?.layerNames ?? {})) {
      for (const kind of ['weight', 'bias']) {
        names.push({ gguf: `blk.${layer}.${blockName}.${kind}`, hf: `${family.layerPrefix(layer)}${hfName}.${kind}`, layer, blockName });
      }
    }
    for (const [blockName, hfName] of Object.entries(family.gguf?.bareLayerNames ?? {})) {
      names.push({ gguf: `blk.${layer}.${blockName}`, hf: `${family.layerPrefix(layer)}${hfName}`, layer, blockName });
    }
  }
  return names;
}
