import { UsageError } from '../../util/errors.js';
import { comp } from './comp.js';
import { flap } from './flap.js';
import { magnitudeSp } from './magnitude-sp.js';
import type { StructuredMethod } from './method.js';
import { wandaSp } from './wanda-sp.js';

/** Every structured method by its command-line name. */
export const STRUCTURED_METHODS: readonly StructuredMethod[] = [flap, comp, wandaSp, magnitudeSp];

export function structuredMethodByName(name: string): StructuredMethod {
  const method = STRUCTURED_METHODS.find((m) => m.name === name);
  if (!method) throw new UsageError(`unknown structured method "${name}" (choose from ${STRUCTURED_METHODS.map((m) => m.name).join(', ')})`);
  return method;
}
