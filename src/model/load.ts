import type { Backend } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { CausalLM } from './causal-lm.js';
import { resolveModelPath, type HubOptions } from './hub.js';
import { openModelSource } from './sources.js';

export interface LoadOptions {
  /** Defaults to the native backend (or TOPIARY_BACKEND). */
  backend?: Backend;
  /** Progress of a download when `modelPath` is a Hugging Face Hub id missing from the local cache. */
  onDownload?: HubOptions['onProgress'];
}

/**
 * Opens a model (Hugging Face folder, .gguf file, llama2.c checkpoint, or a Hugging Face Hub id
 * `org/name[@revision]` — see hub.ts) of any supported family. Weights are read lazily, one layer
 * at a time, when first used.
 */
export async function loadModel(modelPath: string, options: LoadOptions = {}): Promise<CausalLM> {
  const source = openModelSource(await resolveModelPath(modelPath, options.onDownload ? { onProgress: options.onDownload } : {}));
  try {
    return new CausalLM(source, options.backend ?? getBackend());
  } catch (error) {
    source.close();
    throw error;
  }
}
