/**
 * llm-compressor recipes (`--recipe FILE`, YAML or JSON), so its users can bring the recipes they
 * have. The layout is the one llm-compressor reads and writes (`Recipe.from_dict`,
 * `get_yaml_serializable_dict`): stages named `*_stage`, each with groups named `*_modifiers`,
 * each mapping a modifier class to its arguments:
 *
 *     sparsity_stage:
 *       run_type: oneshot
 *       sparsity_modifiers:
 *         SparseGPTModifier:
 *           sparsity: 0.5
 *           mask_structure: "2:4"
 *           targets: ["Linear"]
 *           ignore: ["re:.*lm_head"]
 *
 * Topiary runs one pruning modifier per recipe: SparseGPTModifier (method sparsegpt) or
 * WandaPruningModifier (wanda), with the arguments of llm-compressor's SparsityModifierBase:
 * `sparsity` (a number, or one per decoder layer), `mask_structure` ("0:0" unstructured, "N:M":
 * N of every M zeroed), `targets`, `ignore` (./selection.ts), `sparsity_profile`, `owl_m`,
 * `owl_lmbda`; SparseGPT's `block_size` and `dampening_frac` (options blocksize and damp, whose
 * defaults 128 and 0.01 are llm-compressor's too). Keys that only steer llm-compressor's own
 * machinery are accepted where Topiary already behaves so: `sequential_update` (Topiary is always
 * sequential), `offload_hessians` (memory placement), `preserve_sparsity_mask: false`,
 * `sequential_targets: null`, `index`, `group`. Any other key, stage entry or modifier is refused
 * in one line naming it and the file: silently dropping part of a recipe would prune differently
 * from what its author meant.
 */
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { TopiaryError } from '../util/errors.js';
import { parseJson, readTextFile, READ_LIMITS } from '../util/safe-fs.js';
import type { SparsityTarget } from './method.js';

/** Where the settings came from, as topiary.json records it. */
export interface RecipeSource {
  file: string;
  stage: string;
  modifier: string;
}

/** A recipe's pruning modifier in Topiary's terms. */
export interface RecipeRequest {
  method: string;
  target: SparsityTarget;
  /** One sparsity per decoder layer (the target then holds their mean). */
  layerSparsity?: number[];
  targets?: string[];
  ignore?: string[];
  /** `sparsity_profile` (llm-compressor knows "owl"): Topiary's --sparsity-profile. */
  sparsityProfile?: string;
  /** blocksize, damp, owlM, owlLambda: only those the recipe sets. */
  methodOptions: Record<string, number>;
  source: RecipeSource;
}

const MODIFIERS: Record<string, { method: string; keys: readonly string[] }> = {
  SparseGPTModifier: { method: 'sparsegpt', keys: ['block_size', 'dampening_frac', 'preserve_sparsity_mask', 'offload_hessians'] },
  WandaPruningModifier: { method: 'wanda', keys: [] },
};

const COMMON_KEYS = ['sparsity', 'sparsity_profile', 'mask_structure', 'owl_m', 'owl_lmbda', 'targets', 'ignore', 'sequential_update', 'sequential_targets', 'index', 'group'];

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

function readRecipeFile(file: string): unknown {
  const text = readTextFile(file, READ_LIMITS.json);
  if (file.toLowerCase().endsWith('.json')) return parseJson(text, file);
  try {
    return parseYaml(text, { prettyErrors: false });
  } catch (error) {
    throw new TopiaryError(`invalid YAML: ${(error as Error).message.split('\n')[0]}`, file);
  }
}

export function readRecipe(file: string): RecipeRequest {
  const fail = (message: string): never => {
    throw new TopiaryError(message, file);
  };
  const recipe = readRecipeFile(file);
  if (!isObject(recipe)) fail('a recipe is a mapping of stages (e.g. sparsity_stage: {sparsity_modifiers: {SparseGPTModifier: {...}}})');
  const found: { stage: string; modifier: string; args: Json }[] = [];
  for (const [stageKey, stage] of Object.entries(recipe as Json)) {
    if (!stageKey.endsWith('_stage') || !isObject(stage)) fail(`unknown key "${stageKey}" at the top of the recipe (expected stages named *_stage)`);
    for (const [groupKey, group] of Object.entries(stage as Json)) {
      if (groupKey === 'run_type') {
        if (group !== 'oneshot') fail(`${stageKey}: run_type ${JSON.stringify(group)} (Topiary prunes in one shot: run_type oneshot)`);
        continue;
      }
      if (!groupKey.endsWith('_modifiers') || !isObject(group)) fail(`unknown key "${groupKey}" in ${stageKey} (expected run_type or groups named *_modifiers)`);
      for (const [modifier, args] of Object.entries(group as Json)) {
        if (!Object.hasOwn(MODIFIERS, modifier)) fail(`${stageKey}.${groupKey}: modifier "${modifier}" is not one Topiary runs (${Object.keys(MODIFIERS).join(' or ')})`);
        if (!isObject(args)) fail(`${stageKey}.${groupKey}.${modifier}: the arguments should be a mapping`);
        found.push({ stage: stageKey, modifier, args: args as Json });
      }
    }
  }
  if (found.length !== 1) fail(found.length === 0 ? 'no pruning modifier (SparseGPTModifier or WandaPruningModifier) in the recipe' : `${found.length} pruning modifiers; Topiary runs one per prune`);
  const { stage, modifier, args } = found[0]!;
  const where = `${modifier} (${stage})`;
  const bad = (key: string, expected: string): never => fail(`${where}: ${key} ${JSON.stringify(args[key])} should be ${expected}`);

  const known = [...COMMON_KEYS, ...MODIFIERS[modifier]!.keys];
  const unknown = Object.keys(args).find((key) => !known.includes(key));
  if (unknown !== undefined) fail(`unknown key "${unknown}" in ${where} (known: ${known.join(', ')})`);

  const fraction = (value: unknown) => typeof value === 'number' && value >= 0 && value < 1;
  const mask = args.mask_structure ?? '0:0';
  const nm = typeof mask === 'string' ? /^(\d+):(\d+)$/.exec(mask) : null;
  if (!nm) return bad('mask_structure', 'a string "N:M" ("0:0" for unstructured)');
  const [n, m] = [Number(nm[1]), Number(nm[2])];
  if (!(n === 0 && m === 0) && !(n > 0 && n < m)) bad('mask_structure', '"0:0" or "N:M" with 0 < N < M');
  const { sparsity } = args;
  let target: SparsityTarget;
  let layerSparsity: number[] | undefined;
  if (n > 0) {
    target = { kind: 'nm', n, m };
    if (sparsity !== undefined && sparsity !== null && sparsity !== n / m) bad('sparsity', `${n / m} or absent: mask_structure ${n}:${m} zeroes ${n} of every ${m} weights`);
  } else if (fraction(sparsity)) {
    target = { kind: 'unstructured', sparsity: sparsity as number };
  } else if (Array.isArray(sparsity) && sparsity.length > 0 && sparsity.every(fraction)) {
    layerSparsity = sparsity as number[];
    target = { kind: 'unstructured', sparsity: layerSparsity.reduce((a, b) => a + b, 0) / layerSparsity.length };
  } else {
    return bad('sparsity', 'a number in [0, 1) or a list of them, one per decoder layer');
  }

  const names = (key: 'targets' | 'ignore'): string[] | undefined => {
    const value = args[key];
    if (value === undefined || value === null) return undefined;
    const list = typeof value === 'string' ? [value] : value;
    if (!Array.isArray(list) || !list.every((entry) => typeof entry === 'string' && entry !== '')) return bad(key, 'a name or a list of names');
    return list as string[];
  };
  const methodOptions: Record<string, number> = {};
  const option = (key: string, name: string, valid: (value: number) => boolean, expected: string) => {
    const value = args[key];
    if (value === undefined || value === null) return;
    if (typeof value !== 'number' || !valid(value)) bad(key, expected);
    methodOptions[name] = value as number;
  };
  option('block_size', 'blocksize', (v) => Number.isInteger(v) && v >= 1, 'a positive integer');
  option('dampening_frac', 'damp', (v) => Number.isFinite(v) && v >= 0, 'a number ≥ 0');

  const profile = args.sparsity_profile;
  if (profile !== undefined && profile !== null && typeof profile !== 'string') bad('sparsity_profile', 'a profile name such as "owl"');
  const owl = [profile === 'owl', args.owl_m !== undefined && args.owl_m !== null, args.owl_lmbda !== undefined && args.owl_lmbda !== null];
  // llm-compressor's rule: sparsity_profile "owl", owl_m and owl_lmbda come together or not at all.
  if (owl.some(Boolean) && !owl.every(Boolean)) fail(`${where}: give all of sparsity_profile "owl", owl_m and owl_lmbda, or none`);
  option('owl_m', 'owlM', (v) => Number.isFinite(v) && v > 0, 'a positive number');
  option('owl_lmbda', 'owlLambda', (v) => Number.isFinite(v) && v >= 0, 'a number ≥ 0');
  if (args.preserve_sparsity_mask === true) fail(`${where}: preserve_sparsity_mask true is not supported (Topiary prunes dense models)`);
  if (args.sequential_targets !== undefined && args.sequential_targets !== null) fail(`${where}: sequential_targets is not supported (Topiary always runs the model decoder block by block)`);
  for (const key of ['sequential_update', 'offload_hessians', 'preserve_sparsity_mask']) {
    if (args[key] !== undefined && typeof args[key] !== 'boolean') bad(key, 'true or false');
  }

  const targets = names('targets');
  const ignore = names('ignore');
  return {
    method: MODIFIERS[modifier]!.method,
    target,
    ...(layerSparsity ? { layerSparsity } : {}),
    ...(targets ? { targets } : {}),
    ...(ignore ? { ignore } : {}),
    ...(typeof profile === 'string' ? { sparsityProfile: profile } : {}),
    methodOptions,
    source: { file: path.resolve(file), stage, modifier },
  };
}
