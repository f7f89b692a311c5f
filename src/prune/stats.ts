/**
 * Accumulates, over calibration tokens, the statistics methods ask for on the input of a linear
 * group (linear layers sharing one input share one accumulator). Only the requested kinds are
 * gathered, in a single pass.
 */
import type { Backend } from '../backend/backend.js';
import type { LinearStats, StatKind } from './method.js';

export class StatsAccumulator {
  private readonly stats: LinearStats = { rows: 0 };

  constructor(
    readonly cols: number,
    kinds: ReadonlySet<StatKind>,
    private readonly backend: Backend,
  ) {
    if (kinds.has('sqNorm') || kinds.has('moments')) this.stats.sqNorm = new Float64Array(cols);
    if (kinds.has('moments')) this.stats.sum = new Float64Array(cols);
    if (kinds.has('gram')) this.stats.gram = new Float32Array(cols * cols);
  }

  async add(x: Float32Array, rows: number): Promise<void> {
    const { cols } = this;
    const { sqNorm, sum, gram } = this.stats;
    if (sqNorm) {
      for (let r = 0; r < rows; r++) {
        const base = r * cols;
        for (let c = 0; c < cols; c++) sqNorm[c] += x[base + c]! * x[base + c]!;
      }
    }
    if (sum) {
      for (let r = 0; r < rows; r++) {
        const base = r * cols;
        for (let c = 0; c < cols; c++) sum[c] += x[base + c]!;
      }
    }
    if (gram) await this.backend.syrk(x.subarray(0, rows * cols), rows, cols, gram);
    this.stats.rows += rows;
  }

  result(): LinearStats {
    return this.stats;
  }
}
