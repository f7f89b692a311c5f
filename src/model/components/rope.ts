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
  const wavelengthBase = (i: number) => Math.fround(theta ** Math.fround((2 * i) / rotaryDim));
  for (let i = 0; i < half; i++) inv[i] = 1 / wavelengthBase(i);
  if (scaling.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / scaling.factor;
  } else if (scaling.type === 'longrope') {
    const factors = usesLongFactors(scaling, positions) ? scaling.longFactor : scaling.shortFactor;
    for (let i = 0; i < half; i++) inv[i] = 1 / Math.fround(Math.fround(factors[i]!) * wavelengthBase(i));
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
  } else if (scaling.type === 'yarn') {
    // YaRN: dimensions that turn more than betaFast times over the original context keep their
    // frequency, those turning fewer than betaSlow times are interpolated (÷ factor), a linear
    // ramp blends the ones between.
    const correctionDim = (rotations: number) =>
      (rotaryDim * Math.log(scaling.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
    let low = correctionDim(scaling.betaFast);
    let high = correctionDim(scaling.betaSlow);
    if (scaling.truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
    low = Math.max(low, 0);
    high = Math.min(high, rotaryDim - 1);
    if (low === high) high += 0.001;
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(Math.max(Math.fround((i - low) / (high - low)), 0), 1);
      const extrapolation = Math.fround(1 - ramp);
      const interpolated = Math.fround(1 / Math.fround(scaling.factor * wavelengthBase(i)));
      inv[i] = Math.fround(interpolated * Math.fround(1 - extrapolation)) + Math.fround(inv[i]! * extrapolation);
    }
  }
  return inv;
}

/** What RoPE multiplies cos and sin by: YaRN's or LongRoPE's attention factor, 1 otherwise. */
export function ropeAttentionFactor(scaling: RopeScaling): number {
  return scaling.type === 'yarn' || scaling.type === 'longrope' ? scaling.attentionFactor : 1;
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
 * A model's RoPE tables, grown by doubling so decoding rebuilds them rarely: one for the global
 * setting (theta, scaling) and, for Gemma 3, one for its sliding-window layers' local setting.
 */
export class RopeTables {
  private readonly tables = new Map<'global' | 'local', { invFreq: Float32Array; attentionFactor: number; long: boolean; table?: RopeTable }>();
  constructor(private readonly spec: RopeSpec) {}

  /** The table of the global or local setting covering positions 0..positions−1. */
  forSetting(setting: 'global' | 'local', positions: number): RopeTable {
    const { rotaryDim, theta, scaling, localTheta, localScaling = { type: 'none' } } = this.spec;
    const [base, baseScaling] = setting === 'local' && localTheta !== undefined ? [localTheta, localScaling] : [theta, scaling];
    const long = usesLongFactors(baseScaling, positions);
    let entry = this.tables.get(setting);
    if (!entry || entry.long !== long) {
      entry = { invFreq: inverseFrequencies(rotaryDim, base, baseScaling, positions), attentionFactor: ropeAttentionFactor(baseScaling), long };
      this.tables.set(setting, entry);
    }
    if (!entry.table || entry.table.seqLen < positions) {
      entry.table = ropeTable(entry.invFreq, Math.max(positions, 2 * (entry.table?.seqLen ?? 0)), entry.attentionFactor);
    }
    return entry.table;
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
