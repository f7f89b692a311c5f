/**
 * Quantization of fp32 rows to ggml's block types, the inverse of ./ggml-quants.ts. Each follows
 * ggml's reference quantizer (ggml-quants.c, quantize_row_*_ref) step for step, rounding to fp32
 * wherever C does (Math.fround), so the bytes equal what llama.cpp writes: test/quantize.test.ts
 * checks Q8_0, Q4_0 and Q5_0 against the `gguf` Python package (gguf.quants) and every type against
 * ggml's own quantize_row_*_ref (called in node-llama-cpp's libggml-base), bit for bit.
 *
 * Rounding: C's roundf (Q8_0) rounds half away from zero; ggml's nearest_int (Q4_K) adds 1.5·2²³
 * in fp32 and so rounds half to even; Q4_0 and Q5_0 truncate x/d + 8.5 (16.5).
 */
import { floatToHalfBits, halfToFloatTable } from './binary.js';

/** fp32 `value` as ggml's fp16 bits (round to nearest even). */
function halfBits(value: number): number {
  const bits = new Uint16Array(1);
  floatToHalfBits(Float32Array.of(value), bits);
  return bits[0]!;
}

function putHalf(out: Uint8Array, at: number, value: number): number {
  const bits = halfBits(value);
  out[at] = bits & 0xff;
  out[at + 1] = bits >> 8;
  return halfToFloatTable()[bits]!;
}

/** Q8_0 (34 bytes per 32 values): d = max|x|/127 as fp16, q = roundf(x/d) as int8. */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const blocks = values.length / 32;
  const out = new Uint8Array(blocks * 34);
  for (let block = 0; block < blocks; block++) {
    const x = values.subarray(block * 32, block * 32 + 32);
    let amax = 0;
    for (const v of x) amax = Math.max(amax, Math.abs(v));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const at = block * 34;
    putHalf(out, at, d);
    for (let j = 0; j < 32; j++) {
      const scaled = Math.fround(x[j]! * id);
      out[at + 2 + j] = (Math.sign(scaled) * Math.round(Math.abs(scaled))) & 0xff;
    }
  }
  return out;
}

/** The value of largest magnitude in `x`, the first such (ggml's `amax < fabsf(v)` scan). */
function signedAbsMax(x: Float32Array): number {
  let amax = 0;
  let max = 0;
  for (const v of x) {
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/**
 * Q4_0 (18 bytes per 32 values) and Q5_0 (22 bytes): with h = 8 (4 bits) or 16 (5 bits), d = m/−h
 * for m the value of largest magnitude, q = min(2h − 1, trunc(x/d + h + 0.5)). After d (fp16),
 * Q5_0 stores a 32-bit word of every value's fifth bit (bit j for value j); then values j and
 * j + 16 share byte j, low nibble first. llama.cpp's quantize falls back to Q5_0 from Q4_K for rows
 * that are not whole super-blocks.
 */
function quantizeByLargestMagnitude(values: Float32Array, bits: 4 | 5): Uint8Array {
  const half = 1 << (bits - 1);
  const nibblesAt = bits === 4 ? 2 : 6;
  const blockBytes = nibblesAt + 16;
  const blocks = values.length / 32;
  const out = new Uint8Array(blocks * blockBytes);
  for (let block = 0; block < blocks; block++) {
    const x = values.subarray(block * 32, block * 32 + 32);
    const d = Math.fround(signedAbsMax(x) / -half);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const at = block * blockBytes;
    putHalf(out, at, d);
    const q = (j: number) => Math.min(2 * half - 1, Math.trunc(Math.fround(Math.fround(x[j]! * id) + half + 0.5)));
    let high = 0;
    for (let j = 0; j < 16; j++) {
      const low = q(j);
      const upper = q(j + 16);
      out[at + nibblesAt + j] = (low & 0xf) | ((upper & 0xf) << 4);
      high |= ((low >> 4) << j) | ((upper >> 4) << (j + 16));
    }
    if (bits === 5) new DataView(out.buffer, out.byteOffset + at + 2, 4).setUint32(0, high >>> 0, true);
  }
  return out;
}

export const quantizeQ4_0 = (values: Float32Array): Uint8Array => quantizeByLargestMagnitude(values, 4);
export const quantizeQ5_0 = (values: Float32Array): Uint8Array => quantizeByLargestMagnitude(values, 5);

/** ggml's nearest_int: fp32 round half to even. */
function nearestInt(value: number): number {
  return Math.fround(Math.fround(value) + 12582912) - 12582912;
}

/**
 * make_qkx2_quants(n = 32, nmax = 15, rmin = −1, rdelta = 0.1, nstep = 20, use_mad = false): the
 * scale and (negated) minimum of one sub-block minimising the weighted squared error over 21 trial
 * inverse scales, each refined by least squares; the levels go to `levels` (`trial`: scratch for 32).
 */
function subBlockScaleMin(x: Float32Array, weights: Float32Array, levels: Uint8Array, trial: Uint8Array): { scale: number; min: number } {
  const n = 32;
  const nmax = 15;
  const f = Math.fround;
  let min = x[0]!;
  let max = x[0]!;
  let sumW = weights[0]!;
  let sumX = f(sumW * x[0]!);
  for (let i = 1; i < n; i++) {
    if (x[i]! < min) min = x[i]!;
    if (x[i]! > max) max = x[i]!;
    sumW = f(sumW + weights[i]!);
    sumX = f(sumX + f(weights[i]! * x[i]!));
  }
  if (min > 0) min = 0;
  if (max === min) {
    levels.fill(0);
    return { scale: 0, min: -min };
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[i]! - min)))));
    levels[i] = l;
    const diff = f(f(f(scale * l) + min) - x[i]!);
    bestError = f(bestError + f(weights[i]! * f(diff * diff)));
  }
  for (let step = 0; step <= 20; step++) {
    iscale = f(f(f(-1 + f(0.1 * step)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[i]! - min)))));
      trial[i] = l;
      const w = weights[i]!;
      sumL = f(sumL + f(w * l));
      sumL2 = f(sumL2 + f(f(w * l) * l));
      sumXL = f(sumXL + f(f(w * l) * x[i]!));
    }
    const det = f(f(sumW * sumL2) - f(sumL * sumL));
    if (!(det > 0)) continue;
    let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / det);
    let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / det);
    if (thisMin > 0) {
      thisMin = 0;
      thisScale = f(sumXL / sumL2);
    }
    let error = 0;
    for (let i = 0; i < n; i++) {
      const diff = f(f(f(thisScale * trial[i]!) + thisMin) - x[i]!);
      error = f(error + f(weights[i]! * f(diff * diff)));
    }
    if (error < bestError) {
      levels.set(trial);
      bestError = error;
      scale = thisScale;
      min = thisMin;
    }
  }
  return { scale, min: -min };
}

/**
 * Q4_K (144 bytes per 256 values): eight sub-blocks of 32, each with a 6-bit scale and 6-bit minimum
 * relative to the super-block's fp16 d and dmin; x ≈ d·sc·q − dmin·m with 4-bit q. Layout: d, dmin,
 * 12 bytes of packed scales/minimums, 128 bytes of nibbles (per 64 values: low nibbles the first 32,
 * high nibbles the next 32). quantize_row_q4_K_ref.
 */
export function quantizeQ4_K(values: Float32Array): Uint8Array {
  const f = Math.fround;
  const blocks = values.length / 256;
  const out = new Uint8Array(blocks * 144);
  const levels = new Uint8Array(256);
  const weights = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  const trial = new Uint8Array(32);
  for (let block = 0; block < blocks; block++) {
    const x = values.subarray(block * 256, block * 256 + 256);
    const at = block * 144;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const sub = x.subarray(32 * j, 32 * j + 32);
      let sumX2 = 0;
      for (const v of sub) sumX2 = f(sumX2 + f(v * v));
      const avX = f(Math.sqrt(f(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = f(avX + Math.abs(sub[l]!));
      const { scale, min } = subBlockScaleMin(sub, weights, levels.subarray(32 * j, 32 * j + 32), trial);
      scales[j] = scale;
      mins[j] = min;
      if (scales[j]! > maxScale) maxScale = scales[j]!;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
    const packed = out.subarray(at + 4, at + 16);
    for (let j = 0; j < 8; j++) {
      // C stores nearest_int's int in a uint8_t before MIN: wrap to 8 bits first.
      const ls = Math.min(63, nearestInt(f(invScale * scales[j]!)) & 0xff);
      const lm = Math.min(63, nearestInt(f(invMin * mins[j]!)) & 0xff);
      if (j < 4) {
        packed[j] = ls;
        packed[j + 4] = lm;
      } else {
        packed[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        packed[j - 4] = packed[j - 4]! | ((ls >> 4) << 6);
        packed[j] = packed[j]! | ((lm >> 4) << 6);
      }
    }
    const d = putHalf(out, at, f(maxScale / 63));
    const dmin = putHalf(out, at + 2, f(maxMin / 63));
    for (let j = 0; j < 8; j++) {
      const sc = j < 4 ? packed[j]! & 63 : (packed[j + 4]! & 0xf) | ((packed[j - 4]! >> 6) << 4);
      const m = j < 4 ? packed[j + 4]! & 63 : (packed[j + 4]! >> 4) | ((packed[j]! >> 6) << 4);
      const dj = f(d * sc);
      if (dj === 0) continue;
      const dm = f(dmin * m);
      for (let i = 0; i < 32; i++) levels[32 * j + i] = Math.max(0, Math.min(15, nearestInt(f(f(x[32 * j + i]! + dm) / dj))));
    }
    const qs = out.subarray(at + 16, at + 144);
    for (let j = 0, q = 0; j < 256; j += 64, q += 32) {
      for (let l = 0; l < 32; l++) qs[q + l] = levels[j + l]! | (levels[j + l + 32]! << 4);
    }
  }
  return out;
}
