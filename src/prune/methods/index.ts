/** Every unstructured / N:M method by its command-line name. Adding a method is one line here. */
import { UsageError } from '../../util/errors.js';
import type { UnstructuredMethod } from '../method.js';
import { apt } from './apt.js';
import { magnitude } from './magnitude.js';
import { ria } from './ria.js';
import { sparsegpt } from './sparsegpt.js';
import { wanda } from './wanda.js';

export const METHODS: readonly UnstructuredMethod[] = [magnitude, wanda, sparsegpt, ria, apt];

export function methodByName(name: string): UnstructuredMethod {
  const method = METHODS.find((m) => m.name === name);
  if (!method) throw new UsageError(`unknown method "${name}" (available: ${METHODS.map((m) => m.name).join(', ')})`);
  return method;
}
