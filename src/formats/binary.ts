/**
 * Byte-level helpers shared by the format readers and writers: opening a file for lazy reads,
 * reading an exact byte range, and the fp16/bf16 <-> fp32 conversions.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { TopiaryError } from '../util/errors.js';

if (os.endianness() !== 'LE') {
  // Every format here is little-endian and tensors are read straight into typed arrays.
  throw new Error('Topiary needs a little-endian machine');
}

/** Node refuses single reads of 2 GiB or more; larger ranges are read in pieces. */
const MAX_READ_CHUNK = 1 << 30;

/** Fills `target` from `fd` at `position`; a short read means the file is shorter than its header said. */
export function readExactly(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.length) {
    const wanted = Math.min(target.length - done, MAX_READ_CHUNK);
    const got = fs.readSync(fd, target, done, wanted, position + done);
    if (got === 0) {
      throw new TopiaryError(`file ends at byte ${position + done}, but ${target.length} bytes were expected at ${position}`, file);
    }
    done += got;
  }
}

/** Reads `count` little-endian fp32 values at `position` straight into a new array. */
export function readFloat32(fd: number, position: number, count: number, file: string): Float32Array {
  const out = new Float32Array(count);
  readExactly(fd, new Uint8Array(out.buffer), position, file);
  return out;
}

let halfTable: Float32Array | undefined;

/** fp16 bit pattern -> fp32 value, from a 64K-entry table (built once, 256 KiB). */
export function halfToFloatTable(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      const sign = bits & 0x8000 ? -1 : 1;
      const exponent = (bits >> 10) & 0x1f;
      const fraction = bits & 0x3ff;
      if (exponent === 0) halfTable[bits] = sign * fraction * 2 ** -24;
      else if (exponent === 31) halfTable[bits] = fraction ? NaN : sign * Infinity;
      else halfTable[bits] = sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
    }
  }
  return halfTable;
}

export function halfBitsToFloat(bits: Uint16Array): Float32Array {
  const table = halfToFloatTable();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

export function bfloat16BitsToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}

/** fp32 -> fp16 with round-to-nearest-even, overflow to infinity, subnormals kept (as numpy/torch do). */
export function floatToHalfBits(values: Float32Array, out: Uint16Array): void {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const x = words[i];
    const sign = (x >>> 16) & 0x8000;
    const exponent = (x >>> 23) & 0xff;
    let mantissa = x & 0x7fffff;
    if (exponent === 0xff) {
      out[i] = sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0);
      continue;
    }
    const halfExponent = exponent - 112;
    if (halfExponent >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    let shift: number;
    let rounded: number;
    if (halfExponent <= 0) {
      // Subnormal half: the value in units of 2^-24 is the full significand shifted right.
      shift = 14 - halfExponent;
      if (shift > 24) {
        out[i] = sign;
        continue;
      }
      mantissa |= 0x800000;
      rounded = mantissa >>> shift;
    } else {
      shift = 13;
      rounded = (halfExponent << 10) | (mantissa >>> 13);
    }
    const rest = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    if (rest > halfway || (rest === halfway && (rounded & 1))) rounded++;
    out[i] = sign | rounded;
  }
}

/** fp32 -> bf16 with round-to-nearest-even and quiet NaNs (ggml's and torch's rule). */
export function floatToBfloat16Bits(values: Float32Array, out: Uint16Array): void {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const x = words[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;
    else out[i] = Math.floor((x + 0x7fff + ((x >>> 16) & 1)) / 65536);
  }
}

export function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
