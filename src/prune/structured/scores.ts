/** Small helpers the methods share to turn per-input-channel scores into unit scores. */
import { groupChannels, type LayerGeometry } from './geometry.js';

/** Σ_i |W_ij| (or W_ij² with `squared`) for every column j of a row-major rows×cols matrix. */
export function columnSums(weight: Float32Array, rows: number, cols: number, squared = false): Float64Array {
  const out = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const w = weight[base + c]!;
      out[c] += squared ? w * w : Math.abs(w);
    }
  }
  return out;
}

/** Σ_j |W_ij| for every row i. */
export function rowSums(weight: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += Math.abs(weight[r * cols + c]!);
    out[r] = sum;
  }
  return out;
}

/** A kv group's score from its o_proj input channels' scores, by mean or sum. */
export function groupScores(g: LayerGeometry, channelScores: ArrayLike<number>, reduce: 'mean' | 'sum'): Float64Array {
  return Float64Array.from({ length: g.groups }, (_, group) => {
    const channels = groupChannels(g, group);
    const sum = channels.reduce((s, c) => s + channelScores[c]!, 0);
    return reduce === 'mean' ? sum / channels.length : sum;
  });
}

/** (x − mean) / std over the entries (population std; all zeros when constant). */
export function standardize(values: Float64Array): Float64Array {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length;
  const std = Math.sqrt(variance);
  return values.map((v) => (std > 0 ? (v - mean) / std : 0));
}
