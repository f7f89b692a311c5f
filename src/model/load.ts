import type { Backend } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { CausalLM } from './causal-lm.js';
import { openModelSource } from './sources.js';

export interface LoadOptions {
  /** Defaults to the native backend (or TOPIARY_BACKEND). */
  backend?: Backend;
}

/**
 * Opens a model (Hugging Face folder, .gguf file or llama2.c checkpoint) of any supported family.
 * Weights are read lazily, one layer at a time, when first used.
 */
export async function loadModel(modelPath: string, options: LoadOptions = {}): Promise<CausalLM> {
  const source = openModelSource(modelPath);
  try {
    return new CausalLM(source, options.backend ?? getBackend());
  } catch (error) {
    source.close();
    throw error;
  }
}
