/** Every model family Topiary runs, and the lookups by Hugging Face model_type and GGUF architecture. */
import { TopiaryError } from '../../util/errors.js';
import type { Family } from './family.js';
import { gemma } from './gemma.js';
import { gpt2 } from './gpt2.js';
import { gptNeox } from './gpt-neox.js';
import { llama } from './llama.js';
import { mamba } from './mamba.js';
import { opt } from './opt.js';
import { phi } from './phi.js';
import { phi3 } from './phi3.js';
import { qwen3 } from './qwen3.js';

export const FAMILIES: readonly Family[] = [llama, qwen3, gemma, opt, gptNeox, gpt2, phi, phi3, mamba];

export const supportedModelTypes = (): string[] => FAMILIES.flatMap((family) => family.modelTypes);

export function familyFor(modelType: string, file: string): Family {
  const family = FAMILIES.find((f) => f.modelTypes.includes(modelType));
  if (!family) throw new TopiaryError(`unsupported model type "${modelType}" (supported: ${supportedModelTypes().join(', ')})`, file);
  return family;
}

/** The family reading GGUF architecture `arch`, and the model_type it becomes. */
export function familyForGguf(arch: string, file: string): { family: Family; modelType: string; interleavedRope: boolean } {
  for (const family of FAMILIES) {
    const known = family.gguf?.architectures[arch];
    if (known) return { family, ...known };
  }
  const supported = FAMILIES.flatMap((f) => Object.keys(f.gguf?.architectures ?? {}));
  throw new TopiaryError(`unsupported GGUF architecture "${arch}" (supported: ${supported.join(', ')})`, file);
}

export type { Block, BlockContext, Family, InputObserver, Linear, LinearSpec } from './family.js';
