import { TopiaryError } from '../../util/errors.js';
import { llama } from './llama.js';
import type { ArchitectureSpec } from './spec.js';

export const ARCHITECTURES: readonly ArchitectureSpec[] = [llama];

export function architectureFor(modelType: string, file: string): ArchitectureSpec {
  const spec = ARCHITECTURES.find((a) => a.modelTypes.includes(modelType));
  if (!spec) {
    const known = ARCHITECTURES.flatMap((a) => a.modelTypes).join(', ');
    throw new TopiaryError(`unsupported architecture "${modelType}" (supported: ${known})`, file);
  }
  return spec;
}

export type { ArchitectureSpec, LinearRole } from './spec.js';
export { LINEAR_ROLES, INPUT_GROUPS } from './spec.js';
