/**
 * Every pruning method by its command-line name: the unstructured / N:M ones here, the structured
 * ones in ../structured. Adding a method is one line in its list.
 */
import { UsageError } from '../../util/errors.js';
import type { UnstructuredMethod } from '../method.js';
import { STRUCTURED_METHODS } from '../structured/index.js';
import type { StructuredMethod } from '../structured/method.js';
import { apt } from './apt.js';
import { magnitude } from './magnitude.js';
import { ria } from './ria.js';
import { sparsegpt } from './sparsegpt.js';
import { wanda } from './wanda.js';

export const METHODS: readonly UnstructuredMethod[] = [magnitude, wanda, sparsegpt, ria, apt];

export type FoundMethod = { kind: 'unstructured'; method: UnstructuredMethod } | { kind: 'structured'; method: StructuredMethod };

export function findMethod(name: string): FoundMethod {
  const unstructured = METHODS.find((m) => m.name === name);
  if (unstructured) return { kind: 'unstructured', method: unstructured };
  const structured = STRUCTURED_METHODS.find((m) => m.name === name);
  if (structured) return { kind: 'structured', method: structured };
  const all = [...METHODS, ...STRUCTURED_METHODS].map((m) => m.name).join(', ');
  throw new UsageError(`unknown method "${name}" (available: ${all})`);
}
