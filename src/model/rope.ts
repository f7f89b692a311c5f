/**
 * Rotary position embeddings in Hugging Face's "rotate half" layout: within each head, feature i
 * pairs with feature i + headDim/2. Checkpoints stored in the interleaved layout (GGUF llama,
 * llama2.c) are converted to this layout when loaded (see sources.ts).
 */
import type { ModelConfig } from './config.js';

/** Inverse frequencies, computed in fp32 as transformers does, with the config's rope scaling applied. */
export function inverseFrequencies(config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const half = config.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.fround(config.ropeTheta ** Math.fround((2 * i) / config.headDim));
  const scaling = config.ropeScaling;
  if (scaling.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / scaling.factor;
  } else if (scaling.type === 'llama3') {
    // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend smoothly in between.
    const lowFreqWavelen = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
    const highFreqWavelen = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const freq = inv[i]!;
      const wavelen = (2 * Math.PI) / freq;
      if (wavelen > lowFreqWavelen) {
        inv[i] = freq / scaling.factor;
      } else if (wavelen >= highFreqWavelen) {
        const smooth =
          (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) /
          (scaling.highFreqFactor - scaling.lowFreqFactor);
        inv[i] = (1 - smooth) * (freq / scaling.factor) + smooth * freq;
      }
    }
  }
  return inv;
}

/** cos and sin tables [seqLen, headDim/2] for positions 0..seqLen-1. */
export interface RopeTable {
  seqLen: number;
  cos: Float32Array;
  sin: Float32Array;
}

export function ropeTable(invFreq: Float32Array, seqLen: number): RopeTable {
  const half = invFreq.length;
  const cos = new Float32Array(seqLen * half);
  const sin = new Float32Array(seqLen * half);
  for (let pos = 0; pos < seqLen; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * invFreq[i]!);
      cos[pos * half + i] = Math.cos(angle);
      sin[pos * half + i] = Math.sin(angle);
    }
  }
  return { seqLen, cos, sin };
}

/**
 * Rotates x [rows, heads·headDim] in place; row r is at position `firstPosition + r % seqLen`
 * (rows are windows of seqLen tokens stacked).
 */
export function applyRope(x: Float32Array, rows: number, heads: number, headDim: number, table: RopeTable, seqLen: number, firstPosition = 0): void {
  const half = headDim / 2;
  const width = heads * headDim;
  for (let r = 0; r < rows; r++) {
    const tableRow = (firstPosition + (r % seqLen)) * half;
    for (let h = 0; h < heads; h++) {
      const base = r * width + h * headDim;
      for (let i = 0; i < half; i++) {
        const c = table.cos[tableRow + i]!;
        const s = table.sin[tableRow + i]!;
        const x1 = x[base + i]!;
        const x2 = x[base + half + i]!;
        x[base + i] = x1 * c - x2 * s;
        x[base + half + i] = x2 * c + x1 * s;
      }
    }
  }
}

/**
 * Moves the rows of a q/k projection between the two RoPE layouts: 'toRotateHalf' takes the
 * interleaved layout (pairs 2i, 2i+1 rotate together: Meta, llama2.c, GGUF llama) to Hugging
 * Face's (pairs i, i + headDim/2); 'toInterleaved' is the inverse, for GGUF export.
 */
export function convertRopeRows(data: Float32Array, rows: number, cols: number, heads: number, direction: 'toRotateHalf' | 'toInterleaved'): Float32Array {
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const interleaved = (h * headDim + 2 * i + s) * cols;
        const rotateHalf = (h * headDim + s * half + i) * cols;
        const [from, to] = direction === 'toRotateHalf' ? [interleaved, rotateHalf] : [rotateHalf, interleaved];
        out.set(data.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}
