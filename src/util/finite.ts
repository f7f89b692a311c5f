/**
 * NaN and infinity checks. A non-finite weight silently poisons everything downstream (pruning
 * scores, Hessians, perplexity), so Topiary refuses them where tensors are read and written, and
 * refuses to report a non-finite result as if it were a measurement.
 */
import { TopiaryError } from './errors.js';

/** Index of the first NaN or ±Infinity in `values`, or -1. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    // v - v is 0 for every finite v, NaN for NaN and ±Infinity.
    if (v - v !== 0) return i;
  }
  return -1;
}

/** Returns `values`, or throws a TopiaryError saying that `what` holds a NaN or infinity, and where. */
export function requireFinite<T extends ArrayLike<number>>(values: T, what: string, file?: string): T {
  const at = firstNonFinite(values);
  if (at >= 0) throw new TopiaryError(`${what} has ${values[at]} at index ${at} of ${values.length}`, file);
  return values;
}

/** Returns `value`, or throws a TopiaryError saying that `what` came out as NaN or infinite. */
export function requireFiniteNumber(value: number, what: string, file?: string): number {
  if (!Number.isFinite(value)) throw new TopiaryError(`${what} is ${value}: the model produced non-finite numbers`, file);
  return value;
}

/** Exponent bits of the 16-bit float formats: all ones is an infinity or a NaN. */
const EXPONENT_MASK = { F16: 0x7c00, BF16: 0x7f80 } as const;

/** Index of the first infinity or NaN among F16 or BF16 bit patterns (e.g. an fp32 value too large for F16), or -1. */
export function firstNonFinite16(bits: Uint16Array, dtype: 'F16' | 'BF16'): number {
  const mask = EXPONENT_MASK[dtype];
  for (let i = 0; i < bits.length; i++) if ((bits[i]! & mask) === mask) return i;
  return -1;
}
