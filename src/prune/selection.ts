/**
 * Which linear layers an unstructured or N:M run prunes: `--layers` roles, and `--targets` /
 * `--ignore` lists in llm-compressor's convention, so its users' lists work unchanged.
 *
 * An entry of `--targets` or `--ignore` is, as llm-compressor's `match_targets` and
 * `match_class` read it:
 * - a module path, compared whole: `model.layers.3.self_attn.q_proj`;
 * - `re:PATTERN`, a regular expression matched from the start of the path (Python's `re.match`:
 *   anchored at the start, not at the end, so `re:.*q_proj` ends anywhere after q_proj);
 * - a class name: `Linear` (every linear layer) or `Conv1D` (GPT-2's, which Hugging Face stores
 *   transposed).
 * Paths are the canonical Hugging Face names the family defines (src/model/families), whatever
 * file the model was read from. An entry that names a module containing linear layers (a block
 * `model.layers.3`, `model.layers.3.mlp`, or `re:model.layers.\d+$`) selects every linear layer
 * inside it, as llm-compressor's modifiers prune every prunable layer of the layers their targets
 * name. Embeddings and the LM head are never pruned, so `re:.*lm_head` in an ignore list (common in
 * recipes) simply matches nothing.
 *
 * How they combine: a linear layer is pruned when its role is in `--layers` (default: all), some
 * `--targets` entry matches it (default: all) and no `--ignore` entry does. Requests that
 * contradict themselves are refused rather than half-honoured: a targets entry that matches
 * nothing, or only roles `--layers` leaves out; a `--layers` role that no target reaches; a
 * selection left empty.
 */
import type { CausalLM } from '../model/causal-lm.js';
import { UsageError } from '../util/errors.js';

export interface SelectionRequest {
  /** `--layers`: roles of the family. */
  roles?: readonly string[];
  /** `--targets`: names, `re:` patterns or class names; what may be pruned. */
  targets?: readonly string[];
  /** `--ignore`: names, `re:` patterns or class names never pruned. */
  ignore?: readonly string[];
}

export interface Selection {
  /** The roles pruned in at least one block, in the family's order. */
  roles: readonly string[];
  /** The roles pruned in each block. */
  layerRoles: readonly (readonly string[])[];
  /** Number of matrices selected. */
  matrices: number;
}

/**
 * Splits a comma-separated list; commas inside (), [] or {} (a pattern's `{1,3}`) or after a
 * backslash do not split, so regular expressions survive.
 */
export function parseNameList(text: string, flag: string): string[] {
  const entries: string[] = [];
  let depth = 0;
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\' && i + 1 < text.length) {
      current += c + text[++i];
      continue;
    }
    if ('([{'.includes(c)) depth++;
    if (')]}'.includes(c)) depth = Math.max(0, depth - 1);
    if (c === ',' && depth === 0) {
      entries.push(current.trim());
      current = '';
    } else {
      current += c;
    }
  }
  entries.push(current.trim());
  const empty = entries.findIndex((entry) => entry === '' || entry === 're:');
  if (empty >= 0) throw new UsageError(`${flag} has an empty entry (${JSON.stringify(text)})`);
  return entries;
}

type Matcher = (path: string, className: string) => boolean;

/** One entry as llm-compressor reads it (see the file comment). */
function matcher(entry: string, flag: string): Matcher {
  if (entry.startsWith('re:')) {
    // Python's named groups, (?P<name>…) and (?P=name), in JavaScript's spelling.
    const source = entry.slice(3).replace(/\(\?P</g, '(?<').replace(/\(\?P=(\w+)\)/g, '\\k<$1>');
    let pattern: RegExp;
    try {
      pattern = new RegExp(`^(?:${source})`);
    } catch (error) {
      throw new UsageError(`${flag} "${entry}": not a regular expression (${(error as Error).message.replace(/^Invalid regular expression: /, '')})`);
    }
    return (path) => pattern.test(path);
  }
  return (path, className) => path === entry || className === entry;
}

/** A linear layer's path and every module path containing it, down from the block prefix. */
function pathsOf(name: string): string[] {
  const parts = name.split('.');
  return parts.map((_, i) => parts.slice(0, i + 1).join('.'));
}

export function selectLinears(model: CausalLM, request: SelectionRequest): Selection {
  const { family } = model;
  const roles = request.roles ?? model.roles;
  const unknown = roles.find((role) => !model.roles.includes(role));
  if (unknown !== undefined) throw new UsageError(`unknown layer "${unknown}" for the ${family.name} family (choose from ${model.roles.join(', ')})`);
  const repeated = roles.find((role, i) => roles.indexOf(role) !== i);
  if (repeated !== undefined) throw new UsageError(`layer "${repeated}" is named twice in --layers`);

  const targets = (request.targets ?? []).map((entry) => ({ entry, matches: matcher(entry, '--targets') }));
  const ignore = (request.ignore ?? []).map((entry) => ({ entry, matches: matcher(entry, '--ignore') }));
  const classOf = (role: string) => (family.linears.find((spec) => spec.role === role)!.transposed ? 'Conv1D' : 'Linear');
  const hits = (entry: { matches: Matcher }, name: string, className: string) => pathsOf(name).some((p, i, all) => entry.matches(p, i === all.length - 1 ? className : ''));

  const targetRoles = targets.map(() => new Set<string>());
  const layerRoles: string[][] = [];
  for (let layer = 0; layer < model.numLayers; layer++) {
    const selected: string[] = [];
    for (const role of model.roles) {
      const name = model.linearName(layer, role);
      const className = classOf(role);
      let targeted = targets.length === 0;
      targets.forEach((target, i) => {
        if (hits(target, name, className)) {
          targetRoles[i]!.add(role);
          targeted = true;
        }
      });
      if (targeted && roles.includes(role) && !ignore.some((entry) => hits(entry, name, className))) selected.push(role);
    }
    layerRoles.push(selected);
  }

  targets.forEach(({ entry }, i) => {
    const reached = [...targetRoles[i]!];
    if (reached.length === 0) {
      throw new UsageError(`--targets "${entry}" matches no linear layer of this ${family.name} model (its layers are named like ${model.linearName(0, model.roles[0]!)}; class names: Linear${family.linears.some((spec) => spec.transposed) ? ', Conv1D' : ''})`);
    }
    if (request.roles && !reached.some((role) => roles.includes(role))) {
      throw new UsageError(`--targets "${entry}" matches only ${reached.join(', ')} layers, which --layers ${roles.join(',')} leaves out`);
    }
  });
  if (request.roles && targets.length > 0) {
    const unreached = roles.find((role) => !targetRoles.some((set) => set.has(role)));
    if (unreached !== undefined) throw new UsageError(`--layers names ${unreached}, but no ${unreached} layer matches --targets`);
  }
  const matrices = layerRoles.reduce((sum, list) => sum + list.length, 0);
  if (matrices === 0) throw new UsageError('no linear layer left to prune: --ignore excludes everything the other selections allow');
  const union = model.roles.filter((role) => layerRoles.some((list) => list.includes(role)));
  return { roles: union, layerRoles, matrices };
}
