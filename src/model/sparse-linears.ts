/**
 * Compressing a model's pruned linear layers in memory, so that its forward pass runs on the
 * sparse kernels (Linear.sparse). A model read from a file stored sparse gets its compressed forms
 * from the reader; this serves a model pruned in memory, and benchmarks and tests that run one
 * model both ways.
 */
import { compressSparse, isTwoFour, sparseBytes } from '../backend/sparse.js';
import type { CausalLM } from './causal-lm.js';

export interface SparseLinearsSummary {
  /** Linear layers now carrying a compressed form, by layout. */
  bitmask: number;
  twoFour: number;
  /** Left dense: not sparse enough for the compressed form to pay. */
  dense: number;
  /** Bytes of the compressed layers' weights dense (F32) and compressed. */
  denseBytes: number;
  sparseBytes: number;
}

/**
 * Below this fraction of zeros a layer stays dense: the compressed form costs 1/8 byte of mask per
 * weight on top of the kept values, and its kernel does more per kept value than a dense one.
 */
export const MIN_SPARSITY = 0.25;

/**
 * Gives every linear layer of every block that is at least `minSparsity` zeros a compressed form:
 * 2:4 where every group of four inputs has at most two nonzeros, the bitmask form otherwise. The
 * blocks are read (and then kept) in memory. The embedding and the head stay dense.
 */
export function compressSparseLinears(model: CausalLM, minSparsity = MIN_SPARSITY): SparseLinearsSummary {
  const summary: SparseLinearsSummary = { bitmask: 0, twoFour: 0, dense: 0, denseBytes: 0, sparseBytes: 0 };
  for (let layer = 0; layer < model.numLayers; layer++) {
    const block = model.layer(layer);
    const linears = { ...block.linears };
    for (const [role, lin] of Object.entries(linears)) {
      const { weight, outFeatures: rows, inFeatures: cols } = lin;
      let zeros = 0;
      for (const value of weight) if (value === 0) zeros++;
      if (weight.length === 0 || zeros < minSparsity * weight.length) {
        summary.dense++;
        continue;
      }
      const layout = isTwoFour(weight, rows, cols) ? '2:4' : 'bitmask';
      const sparse = compressSparse(weight, rows, cols, layout);
      linears[role] = { ...lin, sparse };
      if (layout === '2:4') summary.twoFour++;
      else summary.bitmask++;
      summary.denseBytes += weight.byteLength;
      summary.sparseBytes += sparseBytes(sparse);
    }
    model.setLayer(layer, { ...block, linears });
  }
  return summary;
}
