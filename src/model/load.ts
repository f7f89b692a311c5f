import type { Backend } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { architectureFor } from './architectures/index.js';
import { CausalLM } from './decoder.js';
import { openModelSource } from './sources.js';

export interface LoadOptions {
  /** Defaults to the native backend (or TOPIARY_BACKEND). */
  backend?: Backend;
}

/**
 * Opens a model (Hugging Face folder, .gguf file or llama2.c checkpoint). Weights are read lazily,
 * one layer at a time, when first used.
 */
export async function loadModel(modelPath: string, options: LoadOptions = {}): Promise<CausalLM> {
  const source = openModelSource(modelPath);
  try {
    const spec = architectureFor(source.config.modelType, source.configFile);
    return new CausalLM(source, spec, options.backend ?? getBackend());
  } catch (error) {
    source.close();
    throw error;
  }
}
