/**
 * ggml's tensor types (ids, block sizes, bytes per block) and dequantization of the common ones to
 * fp32, following the semantics of ggml's reference dequantize_row_* functions. Arithmetic is
 * rounded to fp32 at the same steps as the reference (Math.fround), so results match bit for bit.
 */
import { bfloat16BitsToFloat, halfToFloatTable } from './binary.js';

export interface GgmlType {
  /** The id stored in GGUF tensor infos. */
  id: number;
  name: string;
  /** Elements per block: a row's length must be a multiple of it. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

function types<T extends Record<string, [number, number, number]>>(table: T): { readonly [K in keyof T]: GgmlType } {
  const out: Record<string, GgmlType> = {};
  for (const [name, [id, blockSize, typeSize]] of Object.entries(table)) out[name] = Object.freeze({ id, name, blockSize, typeSize });
  return Object.freeze(out) as { readonly [K in keyof T]: GgmlType };
}

/** Every type ggml defines as of GGUF v3 (name: [id, block size, type size]), for readers and writers. */
export const GGML_TYPES = types({
  F32: [0, 1, 4], F16: [1, 1, 2], Q4_0: [2, 32, 18], Q4_1: [3, 32, 20], Q5_0: [6, 32, 22], Q5_1: [7, 32, 24],
  Q8_0: [8, 32, 34], Q8_1: [9, 32, 40], Q2_K: [10, 256, 84], Q3_K: [11, 256, 110], Q4_K: [12, 256, 144],
  Q5_K: [13, 256, 176], Q6_K: [14, 256, 210], Q8_K: [15, 256, 292], IQ2_XXS: [16, 256, 66], IQ2_XS: [17, 256, 74],
  IQ3_XXS: [18, 256, 98], IQ1_S: [19, 256, 50], IQ4_NL: [20, 32, 18], IQ3_S: [21, 256, 110], IQ2_S: [22, 256, 82],
  IQ4_XS: [23, 256, 136], I8: [24, 1, 1], I16: [25, 1, 2], I32: [26, 1, 4], I64: [27, 1, 8], F64: [28, 1, 8],
  IQ1_M: [29, 256, 56], BF16: [30, 1, 2], TQ1_0: [34, 256, 54], TQ2_0: [35, 256, 66], MXFP4: [39, 32, 17],
});

const TYPES_BY_ID = new Map(Object.values(GGML_TYPES).map((type) => [type.id, type]));

export function ggmlTypeFromId(id: number): GgmlType | undefined {
  return TYPES_BY_ID.get(id);
}

/** Bytes taken by `elements` values of `type` (elements must be a whole number of blocks). */
export function ggmlByteLength(type: GgmlType, elements: number): number {
  return (elements / type.blockSize) * type.typeSize;
}

type Dequantizer = (src: Uint8Array, out: Float32Array) => void;

const QK_K = 256;

function dequantizeF32(src: Uint8Array, out: Float32Array): void {
  new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(src);
}

function dequantizeF16(src: Uint8Array, out: Float32Array): void {
  const table = halfToFloatTable();
  for (let i = 0; i < out.length; i++) out[i] = table[src[2 * i] | (src[2 * i + 1] << 8)];
}

function dequantizeBF16(src: Uint8Array, out: Float32Array): void {
  const bits = new Uint16Array(out.length);
  for (let i = 0; i < out.length; i++) bits[i] = src[2 * i] | (src[2 * i + 1] << 8);
  out.set(bfloat16BitsToFloat(bits));
}

/** Q8_0: per 32 values, an fp16 scale d and 32 int8 q; x = q * d. */
function dequantizeQ8_0(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  for (let block = 0, at = 0; at < out.length; block += 34, at += 32) {
    const d = half[src[block] | (src[block + 1] << 8)];
    for (let j = 0; j < 32; j++) out[at + j] = ((src[block + 2 + j] << 24) >> 24) * d;
  }
}

/** Q4_0: fp16 d, then 16 bytes whose low nibbles are values 0..15 and high nibbles 16..31; x = (q - 8) * d. */
function dequantizeQ4_0(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  for (let block = 0, at = 0; at < out.length; block += 18, at += 32) {
    const d = half[src[block] | (src[block + 1] << 8)];
    for (let j = 0; j < 16; j++) {
      const byte = src[block + 2 + j];
      out[at + j] = ((byte & 0x0f) - 8) * d;
      out[at + j + 16] = ((byte >> 4) - 8) * d;
    }
  }
}

/** Q4_1: fp16 d and m, then nibbles as in Q4_0; x = q * d + m. */
function dequantizeQ4_1(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  for (let block = 0, at = 0; at < out.length; block += 20, at += 32) {
    const d = half[src[block] | (src[block + 1] << 8)];
    const m = half[src[block + 2] | (src[block + 3] << 8)];
    for (let j = 0; j < 16; j++) {
      const byte = src[block + 4 + j];
      out[at + j] = Math.fround((byte & 0x0f) * d) + m;
      out[at + j + 16] = Math.fround((byte >> 4) * d) + m;
    }
  }
}

/**
 * Q4_K: super-blocks of 256 = 8 sub-blocks of 32. fp16 d and dmin, 12 bytes packing eight 6-bit
 * scales and eight 6-bit mins, then 128 bytes of nibbles (each 32-byte run holds two sub-blocks:
 * low nibbles first). x = d * scale * q - dmin * min.
 */
function dequantizeQ4_K(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  const scales = new Uint8Array(8);
  const mins = new Uint8Array(8);
  for (let block = 0, at = 0; at < out.length; block += 144, at += QK_K) {
    const d = half[src[block] | (src[block + 1] << 8)];
    const dmin = half[src[block + 2] | (src[block + 3] << 8)];
    const packed = block + 4;
    for (let j = 0; j < 8; j++) {
      if (j < 4) {
        scales[j] = src[packed + j] & 63;
        mins[j] = src[packed + j + 4] & 63;
      } else {
        scales[j] = (src[packed + j + 4] & 0x0f) | ((src[packed + j - 4] >> 6) << 4);
        mins[j] = (src[packed + j + 4] >> 4) | ((src[packed + j] >> 6) << 4);
      }
    }
    const qs = block + 16;
    for (let chunk = 0; chunk < 4; chunk++) {
      const d1 = Math.fround(d * scales[2 * chunk]);
      const m1 = Math.fround(dmin * mins[2 * chunk]);
      const d2 = Math.fround(d * scales[2 * chunk + 1]);
      const m2 = Math.fround(dmin * mins[2 * chunk + 1]);
      const base = at + chunk * 64;
      for (let l = 0; l < 32; l++) {
        const byte = src[qs + chunk * 32 + l];
        out[base + l] = Math.fround(d1 * (byte & 0x0f)) - m1;
        out[base + l + 32] = Math.fround(d2 * (byte >> 4)) - m2;
      }
    }
  }
}

/**
 * Q6_K: super-blocks of 256. 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales (one
 * per 16 values), fp16 d. Each half (128 values) interleaves four 32-value groups. x = d * scale * (q - 32).
 */
function dequantizeQ6_K(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  for (let block = 0, at = 0; at < out.length; block += 210, at += QK_K) {
    const d = half[src[block + 208] | (src[block + 209] << 8)];
    for (let n = 0; n < 2; n++) {
      const ql = block + n * 64;
      const qh = block + 128 + n * 32;
      const sc = block + 192 + n * 8;
      const base = at + n * 128;
      for (let l = 0; l < 32; l++) {
        const group = l >> 4;
        const high = src[qh + l];
        const low0 = src[ql + l];
        const low1 = src[ql + l + 32];
        const q1 = ((low0 & 0x0f) | ((high & 3) << 4)) - 32;
        const q2 = ((low1 & 0x0f) | (((high >> 2) & 3) << 4)) - 32;
        const q3 = ((low0 >> 4) | (((high >> 4) & 3) << 4)) - 32;
        const q4 = ((low1 >> 4) | (((high >> 6) & 3) << 4)) - 32;
        out[base + l] = Math.fround(d * ((src[sc + group] << 24) >> 24)) * q1;
        out[base + l + 32] = Math.fround(d * ((src[sc + group + 2] << 24) >> 24)) * q2;
        out[base + l + 64] = Math.fround(d * ((src[sc + group + 4] << 24) >> 24)) * q3;
        out[base + l + 96] = Math.fround(d * ((src[sc + group + 6] << 24) >> 24)) * q4;
      }
    }
  }
}

/** Q5_0: fp16 d, a 32-bit word of fifth bits (bit j for value j), then Q4_0's nibbles; x = (q - 16) * d. */
function dequantizeQ5_0(src: Uint8Array, out: Float32Array): void {
  const half = halfToFloatTable();
  for (let block = 0, at = 0; at < out.length; block += 22, at += 32) {
    const d = half[src[block] | (src[block + 1] << 8)];
    const high = (src[block + 2] | (src[block + 3] << 8) | (src[block + 4] << 16) | (src[block + 5] << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const byte = src[block + 6 + j];
      out[at + j] = (((byte & 0x0f) | (((high >>> j) & 1) << 4)) - 16) * d;
      out[at + j + 16] = (((byte >> 4) | (((high >>> (j + 16)) & 1) << 4)) - 16) * d;
    }
  }
}

const DEQUANTIZERS: ReadonlyMap<GgmlType, Dequantizer> = new Map([
  [GGML_TYPES.F32, dequantizeF32],
  [GGML_TYPES.F16, dequantizeF16],
  [GGML_TYPES.BF16, dequantizeBF16],
  [GGML_TYPES.Q8_0, dequantizeQ8_0],
  [GGML_TYPES.Q4_0, dequantizeQ4_0],
  [GGML_TYPES.Q4_1, dequantizeQ4_1],
  [GGML_TYPES.Q5_0, dequantizeQ5_0],
  [GGML_TYPES.Q4_K, dequantizeQ4_K],
  [GGML_TYPES.Q6_K, dequantizeQ6_K],
]);

export function canDequantize(type: GgmlType): boolean {
  return DEQUANTIZERS.has(type);
}

/**
 * Dequantizes `elements` values stored as `type` in `src` (exactly ggmlByteLength(type, elements)
 * bytes). The caller checks canDequantize first.
 */
export function dequantize(type: GgmlType, src: Uint8Array, elements: number): Float32Array {
  const dequantizer = DEQUANTIZERS.get(type);
  if (!dequantizer) throw new Error(`no dequantizer for ggml type ${type.name}`);
  if (elements % type.blockSize !== 0 || src.length !== ggmlByteLength(type, elements)) {
    throw new Error(`${type.name}: ${src.length} bytes do not hold ${elements} values`);
  }
  const out = new Float32Array(elements);
  dequantizer(src, out);
  return out;
}
