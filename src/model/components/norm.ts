import type { Backend } from '../../backend/backend.js';
import type { NormSpec } from '../config.js';

/**
 * The model's norm on each row of x into out (may alias): RMSNorm (with Gemma's 1 + w) or
 * LayerNorm (with its bias when the model has one).
 */
export async function norm(backend: Backend, spec: NormSpec, weight: Float32Array, bias: Float32Array | undefined, x: Float32Array, out: Float32Array): Promise<void> {
  if (spec.kind === 'rms') await backend.rmsNorm(x, weight, spec.eps, out, spec.weightOffset);
  else await backend.layerNorm(x, weight, bias, spec.eps, out);
}
