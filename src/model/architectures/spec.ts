/**
 * An architecture is data: where each tensor lives, not a forward pass. The decoder in
 * ../decoder.ts runs every architecture described this way.
 */
export type LinearRole = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

export const LINEAR_ROLES: readonly LinearRole[] = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

/**
 * Linear layers that read the same input, in the order the forward pass reaches them. Statistics
 * of a shared input are gathered once for the whole group.
 */
export const INPUT_GROUPS: readonly (readonly LinearRole[])[] = [['q', 'k', 'v'], ['o'], ['gate', 'up'], ['down']];

export interface ArchitectureSpec {
  name: string;
  /** Hugging Face `model_type` values this description covers. */
  modelTypes: string[];
  /** The `architectures` class name to write into an exported config.json, per model_type. */
  hfArchitectures: Record<string, string>;
  /** Tensor name prefixes (without `.weight` / `.bias`). */
  embedTokens: string;
  finalNorm: string;
  lmHead: string;
  layerPrefix: (layer: number) => string;
  attentionNorm: string;
  mlpNorm: string;
  linears: Record<LinearRole, string>;
}
