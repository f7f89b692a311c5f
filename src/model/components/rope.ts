/**
 * Rotary position embeddings. Within each head only the first `rotaryDim` features rotate (partial
 * rotary: Phi, GPT-NeoX); the rest pass through. Layout 'half' is Hugging Face's rotate-half
 * (feature i pairs with i + rotaryDim/2); 'interleaved' pairs 2i with 2i+1 (GPT-J style).
 * Checkpoints stored interleaved but read by HF as rotate-half (GGUF llama, llama2.c) are
 * converted when loaded (convertRopeRows below, used by ../sources.ts).
 */
import type { RopeScaling, RopeSpec } from '../config.js';

/**
 * Inverse frequencies, computed in fp32 as transformers does, with the rope scaling applied for a
 * forward pass over positions 0..positions−1 (only LongRoPE depends on it).
 */
export function inverseFrequencies(rotaryDim: number, theta: number, scaling: RopeScaling, positions = 0): Float32Array {
  const half = rotaryDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.fround(theta ** Math.fround((2 * i) / rotaryDim));
  if (scaling.type === 'longrope') {
    const factors = usesLongFactors(scaling, positions) ? scaling.longFactor : scaling.shortFactor;
    for (let i = 0; i < half; i++) inv[i] = 1 / Math.fround(Math.fround(factors[i]!) * Math.fround(theta ** Math.fround((2 * i) / rotaryDim)));
  } else if (scaling.type === 'linear') {
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

/** LongRoPE switches to its long factors once a forward pass reaches beyond the original context. */
function usesLongFactors(scaling: RopeScaling, positions: number): boolean {
  return scaling.type === 'longrope' && positions > scaling.originalMaxPositionEmbeddings;
}

/** cos and sin tables [seqLen, rotaryDim/2] for positions 0..seqLen-1. */
export interface RopeTable {
  seqLen: number;
  cos: Float32Array;
  sin: Float32Array;
}

export function ropeTable(invFreq: Float32Array, seqLen: number, attentionFactor = 1): RopeTable {
  const half = invFreq.length;
  const cos = new Float32Array(seqLen * half);
  const sin = new Float32Array(seqLen * half);
  for (let pos = 0; pos < seqLen; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * invFreq[i]!);
      cos[pos * half + i] = Math.cos(angle) * attentionFactor;
      sin[pos * half + i] = Math.sin(angle) * attentionFactor;
    }
  }
  return { seqLen, cos, sin };
}

/**
 * The tables of one rope setting, grown by doubling so decoding rebuilds them rarely. A model
 * holds one per distinct theta (Gemma 3's local layers use another base than its global ones).
 */
export class RopeTables {
  private readonly tables = new Map<number, { invFreq: Float32Array; long: boolean; table?: RopeTable }>();
  constructor(private readonly spec: RopeSpec) {}

  /** The table for base `theta` covering positions 0..positions−1. */
  forTheta(theta: number, positions: number): RopeTable {
    const { rotaryDim, scaling } = this.spec;
    const long = usesLongFactors(scaling, positions);
    let entry = this.tables.get(theta);
    if (!entry || entry.long !== long) {
      entry = { invFreq: inverseFrequencies(rotaryDim, theta, scaling, positions), long };
      this.tables.set(theta, entry);
    }
    if (!entry.table || entry.table.seqLen < positions) {
      const attentionFactor = scaling.type === 'longrope' ? scaling.attentionFactor : 1;
      entry.table = ropeTable(entry.invFreq, Math.max(positions, 2 * (entry.table?.seqLen ?? 0)), attentionFactor);
    }
    return entry.table;
  }
}

export interface RopeApplication {
  rows: number;
  heads: number;
  headDim: number;
  rotaryDim: number;
  seqLen: number;
  /** Position of the first row of each window. */
  firstPosition: number;
  layout: 'half' | 'interleaved';
}

/**
 * Rotates x [rows, heads·headDim] in place; row r is at position `firstPosition + r % seqLen`
 * (rows are windows of seqLen tokens stacked).
 */
export function applyRope(x: Float32Array, table: RopeTable, options: RopeApplication): void {
  const { rows, heads, headDim, rotaryDim, seqLen, firstPosition, layout } = options;
  const half = rotaryDim / 2;
  const width = heads * headDim;
  // Partner offsets within a head: rotate-half pairs i with i + half, interleaved 2i with 2i + 1.
  const stride = layout === 'half' ? 1 : 2;
  const partner = layout === 'half' ? half : 1;
  for (let r = 0; r < rows; r++) {
    const tableRow = (firstPosition + (r % seqLen)) * half;
    for (let h = 0; h < heads; h++) {
      const base = r * width + h * headDim;
      for (let i = 0; i < half; i++) {
        const c = table.cos[tableRow + i]!;
        const s = table.sin[tableRow + i]!;
        const a = base + i * stride;
        const x1 = x[a]!;
        const x2 = x[a + partner]!;
        x[a] = x1 * c - x2 * s;
        x[a + partner] = x2 * c + x1 * s;
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
