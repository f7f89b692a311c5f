/**
 * The interface between the structured pipeline and a structured method. The pipeline owns the
 * layer loop, the statistics of the two inputs that decide what a unit is worth (the attention
 * output feeding the attention's output projection, 'o', and the MLP activation feeding the MLP's,
 * 'down', whatever the family calls them), the choice of how many units each
 * layer loses, the slicing and the export. A method only (1) scores the units of a layer and
 * (2) says how the output projections compensate for the removed inputs.
 */
import type { Backend } from '../../backend/backend.js';
import type { Block, Linear } from '../../model/causal-lm.js';
import type { LinearStats, StatKind } from '../method.js';
import type { MethodOptions } from '../pipeline.js';
import type { LayerGeometry, Projection } from './geometry.js';

export interface LayerContext {
  layer: number;
  weights: Block;
  /** The block's two output projections (also in `weights` under the family's roles). */
  projections: Record<Projection, Linear>;
  geometry: LayerGeometry;
  /** Statistics of o_proj's input (the attention heads' outputs). Always includes 'moments'. */
  attention: LinearStats;
  /** Statistics of down_proj's input (the MLP channels). Always includes 'moments'. */
  mlp: LinearStats;
  backend: Backend;
  options: MethodOptions;
}

/** Importance of every unit of a layer: higher is kept first. */
export interface UnitScores {
  groups: Float64Array;
  channels: Float64Array;
}

/** One output projection after compensation, and what the compensation did (for topiary.json). */
export interface Compensated {
  linear: Linear;
  report: Record<string, number | string>;
}

export interface StructuredMethod {
  readonly name: string;
  readonly description: string;
  /** The options it understands, each with its default and meaning for `--help`. */
  readonly options: Readonly<Record<string, string>>;
  /** Statistics needed on the o_proj / down_proj inputs beyond 'moments' (which is always gathered). */
  needs(options: MethodOptions): readonly StatKind[];
  /**
   * 'global': every layer is scored on the dense model first and the units of all layers compete
   * for the budget (scores must then compare across layers); 'uniform': every layer loses the same
   * share, each layer scored on the inputs produced by the already-pruned layers before it.
   */
  allocation(options: MethodOptions): 'global' | 'uniform';
  /** The --option that makes a 'global' allocation uniform (for a model whose format cannot hold uneven layers). */
  readonly uniformOption?: string;
  /**
   * Whether compensation adds biases to the output projections: where the family's have none, a
   * Hugging Face config cannot express them, so such results (like uneven layers) are written as GGUF.
   */
  readonly addsBias: boolean;
  /**
   * Scores and compensation read the weights alone (magnitude-sp): the run then gathers no
   * statistics and runs no forward pass, and the output errors are recorded as not measured.
   * Only for uniform allocation without layer removal, which need no dense pass either.
   */
  readonly dataFree?: boolean;
  /** Share of the target removed by dropping whole layers (COMP's coarse stage), 0 for none. */
  layerShare(options: MethodOptions): number;
  /** Null if the options are valid, else why not. */
  invalidOptions(options: MethodOptions): string | null;
  score(context: LayerContext): Promise<UnitScores>;
  /**
   * The output projection restricted to the `kept` input columns, compensated for the removed ones.
   * Called only when something was removed from that projection's input.
   */
  compensate(context: LayerContext, projection: Projection, kept: readonly number[]): Promise<Compensated>;
}
