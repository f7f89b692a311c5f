/**
 * The interface between the layer-wise pipeline and a pruning method. The pipeline owns the layer
 * loop, activation capture and statistics; a method only turns one linear layer's weight plus the
 * statistics it asked for into a pruned weight. Adding a method never touches the pipeline.
 */
import type { Backend } from '../backend/backend.js';

/** Statistics a method can ask for, accumulated over all calibration tokens in one pass. */
export type StatKind =
  /** Σ_rows x_j² per input feature (‖X_j‖₂² — Wanda, RIA). */
  | 'sqNorm'
  /** XᵀX, d_in×d_in, unscaled sum over rows (SparseGPT, APT, COMP). */
  | 'gram'
  /** Σ x_j and Σ x_j² per feature, for mean and variance (FLAP). */
  | 'moments';

export interface LinearStats {
  /** Number of token rows accumulated. */
  rows: number;
  /** Present when 'sqNorm' or 'moments' was asked for: Σ x_j² (fp64 accumulation). */
  sqNorm?: Float64Array;
  /** Present when 'moments' was asked for: Σ x_j. */
  sum?: Float64Array;
  /** Present when 'gram' was asked for: XᵀX (fp32, full symmetric). */
  gram?: Float32Array;
}

export type SparsityTarget =
  /**
   * `zeros`, when given (a non-uniform layer budget, see ./budgets.ts), is the exact number of
   * weights to prune in this matrix, and `sparsity` is then zeros / size; without it every range
   * the method selects in loses floor(sparsity · range size).
   */
  | { kind: 'unstructured'; sparsity: number; zeros?: number }
  /** In every group of m consecutive inputs of a row, n weights are zeroed (2:4, 4:8). */
  | { kind: 'nm'; n: number; m: number };

export interface LinearPruneInput {
  /** The linear layer's full name, e.g. 'model.layers.3.mlp.down_proj'. */
  name: string;
  /** d_out × d_in row-major. The method may modify it in place and return it. */
  weight: Float32Array;
  rows: number;
  cols: number;
  stats: LinearStats;
  target: SparsityTarget;
  backend: Backend;
  /** Method options parsed from the command line (e.g. { a: 0.5, permute: true, blockSize: 128 }). */
  options: Readonly<Record<string, number | boolean | string>>;
}

export interface LinearPruneResult {
  /** The pruned weight (zeros exactly where pruned), d_out × d_in. */
  weight: Float32Array;
  /** Method-specific numbers for topiary.json (e.g. loss estimate, kept score, damping used). */
  report: Record<string, number | string | boolean | number[]>;
}

export interface UnstructuredMethod {
  readonly name: string;
  /** One-line description for `--help`. */
  readonly description: string;
  /** The method options it understands (`--option KEY=VALUE`); anything else is refused. */
  /** The options it understands (`--option KEY=VALUE`), each with its default and meaning for `--help`; anything else is refused. */
  readonly options: Readonly<Record<string, string>>;
  /** Statistics of each pruned linear layer's input the method needs (may be empty). */
  readonly needs: readonly StatKind[];
  /** Null if the method can produce this target with these options, else the reason it cannot. */
  unsupported(target: SparsityTarget, options: Readonly<Record<string, number | boolean | string>>): string | null;
  prune(input: LinearPruneInput): Promise<LinearPruneResult>;
}
