import * as fs from 'node:fs';
import { INDEX_FILE, SINGLE_FILE } from '../../formats/safetensors.js';
import { readRecipe } from '../../prune/recipe.js';
import { describeTarget, pruneModel, type PruneSettings, type PruneTarget } from '../../prune/run.js';
import { parseNameList } from '../../prune/selection.js';
import { findProfile } from '../../prune/budgets.js';
import { UsageError } from '../../util/errors.js';
import { explainInterruptedPrune } from '../interrupt.js';
import { Progress } from '../progress.js';

/** A number given on the command line; blank text is NaN, not the 0 that Number('') gives. */
export function parseNumber(value: unknown): number {
  const text = String(value).trim();
  return text === '' ? Number.NaN : Number(text);
}

/** `--sparsity 0.5`, `--pattern 2:4` or `--ratio 0.2`, exactly one of them. */
export function parseTarget(sparsity: unknown, pattern: unknown, ratio?: unknown): PruneTarget {
  const given = [sparsity, pattern, ratio].filter((value) => value !== undefined).length;
  if (given !== 1) throw new UsageError('give exactly one of --sparsity P, --pattern N:M or --ratio R');
  const fraction = (value: unknown, flag: string): number => {
    const parsed = parseNumber(value);
    if (!Number.isFinite(parsed) || parsed < 0 || parsed >= 1) throw new UsageError(`${flag} must be a number in [0, 1), got "${String(value)}"`);
    return parsed;
  };
  if (sparsity !== undefined) return { kind: 'unstructured', sparsity: fraction(sparsity, '--sparsity') };
  if (ratio !== undefined) return { kind: 'structured', ratio: fraction(ratio, '--ratio') };
  const match = /^(\d+):(\d+)$/.exec(String(pattern));
  if (!match) throw new UsageError(`--pattern must look like N:M (e.g. 2:4), got "${String(pattern)}"`);
  const n = Number(match[1]);
  const m = Number(match[2]);
  if (n <= 0 || n >= m) throw new UsageError(`--pattern ${n}:${m}: need 0 < N < M`);
  return { kind: 'nm', n, m };
}

/** `--option a=0.5 --option blocksize=64`: numbers and booleans are converted, the rest kept as text. */
export function parseMethodOptions(entries: readonly string[], permute: boolean): Record<string, number | boolean | string> {
  const options: Record<string, number | boolean | string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new UsageError(`--option expects KEY=VALUE, got "${entry}"`);
    const key = entry.slice(0, eq);
    // Option names are plain identifiers: this also keeps "__proto__" from vanishing into the prototype.
    if (!/^[A-Za-z][A-Za-z0-9]*$/.test(key)) throw new UsageError(`--option ${entry}: "${key}" is not an option name`);
    if (Object.hasOwn(options, key)) throw new UsageError(`--option ${key} is given twice`);
    const raw = entry.slice(eq + 1);
    options[key] = raw === 'true' ? true : raw === 'false' ? false : Number.isFinite(parseNumber(raw)) ? parseNumber(raw) : raw;
  }
  if (permute) options.permute = true;
  return options;
}

/** The prune flags that say what to prune and how; a recipe may stand for some of them. */
export interface WhatToPrune {
  method: string | undefined;
  sparsity: unknown;
  pattern: unknown;
  ratio: unknown;
  options: readonly string[];
  permute: boolean;
  layers: string | undefined;
  targets: string | undefined;
  ignore: string | undefined;
  recipe: string | undefined;
  sparsityProfile: string | undefined;
}

type Resolved = Pick<PruneSettings, 'method' | 'target' | 'methodOptions' | 'roles' | 'targets' | 'ignore' | 'layerSparsity' | 'recipe' | 'sparsityProfile'>;

/**
 * The method, target, options and selections from the flags, or from `--recipe` plus the flags it
 * leaves open. A setting comes from one place: a flag that repeats what the recipe sets is refused
 * (the same --method excepted), so no run quietly prefers one over the other.
 */
export function resolveWhatToPrune(flags: WhatToPrune): Resolved {
  const methodOptions = parseMethodOptions(flags.options, flags.permute);
  const selections = {
    ...(flags.layers !== undefined ? { roles: flags.layers.split(',').map((s) => s.trim()) } : {}),
    ...(flags.targets !== undefined ? { targets: parseNameList(flags.targets, '--targets') } : {}),
    ...(flags.ignore !== undefined ? { ignore: parseNameList(flags.ignore, '--ignore') } : {}),
  };
  const profile = flags.sparsityProfile !== undefined ? { sparsityProfile: findProfile(flags.sparsityProfile).name } : {};
  if (flags.recipe === undefined) {
    if (typeof flags.method !== 'string' || flags.method === '') throw new UsageError('--method is required (or --recipe FILE)');
    return { method: flags.method, target: parseTarget(flags.sparsity, flags.pattern, flags.ratio), methodOptions, ...selections, ...profile };
  }
  const recipe = readRecipe(flags.recipe);
  const { modifier } = recipe.source;
  if (flags.method !== undefined && flags.method !== recipe.method) throw new UsageError(`--method ${flags.method} contradicts the recipe's ${modifier} (${recipe.method})`);
  const given = (['sparsity', 'pattern', 'ratio'] as const).find((flag) => flags[flag] !== undefined);
  if (given) throw new UsageError(`--${given} with --recipe: the recipe's sparsity and mask_structure set the target`);
  for (const key of ['targets', 'ignore'] as const) {
    if (selections[key] && recipe[key]) throw new UsageError(`--${key} with --recipe, whose ${modifier} sets ${key} too: give them in one place`);
  }
  const repeated = Object.keys(recipe.methodOptions).find((key) => Object.hasOwn(methodOptions, key));
  if (repeated) throw new UsageError(`--option ${repeated} with --recipe, whose ${modifier} sets it too: give it in one place`);
  if (recipe.sparsityProfile !== undefined && flags.sparsityProfile !== undefined) {
    throw new UsageError(`--sparsity-profile with --recipe, whose ${modifier} sets sparsity_profile too: give it in one place`);
  }
  return {
    method: recipe.method,
    target: recipe.target,
    methodOptions: { ...methodOptions, ...recipe.methodOptions },
    ...selections,
    ...(recipe.targets ? { targets: recipe.targets } : {}),
    ...(recipe.ignore ? { ignore: recipe.ignore } : {}),
    ...(recipe.layerSparsity ? { layerSparsity: recipe.layerSparsity } : {}),
    ...(recipe.sparsityProfile !== undefined ? { sparsityProfile: findProfile(recipe.sparsityProfile).name } : profile),
    recipe: recipe.source,
  };
}

/** model.safetensors, or how many shards beside their index. */
function weightFiles(dir: string): string {
  const shards = fs.readdirSync(dir).filter((name) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(name)).length;
  return shards > 0 ? `${shards} model-…-of-${String(shards).padStart(5, '0')}.safetensors shards, ${INDEX_FILE}` : SINGLE_FILE;
}

export async function pruneCommand(settings: Omit<PruneSettings, 'onEvent'>, json: boolean): Promise<void> {
  const progress = new Progress(`prune ${settings.method} ${describeTarget(settings.target)}`);
  const stopExplaining = explainInterruptedPrune(settings.out, progress);
  const summary = await pruneModel({
    ...settings,
    onEvent(event) {
      switch (event.kind) {
        case 'calibration':
          for (const note of event.notes) progress.log(`calibration: ${note}`);
          break;
        case 'export-warning':
          progress.log(`warning: ${event.message}`);
          break;
        case 'resumed': {
          const dense = event.scored > 0 ? ` and the dense pass of ${event.scored} block(s)` : '';
          progress.log(`resumed: ${event.layers} finished block(s)${dense} restored from the checkpoint`);
          break;
        }
        case 'stage':
          progress.update(event.layer, event.layers, `layer ${event.layer + 1}: ${event.stage} ${event.done}/${event.total}`);
          break;
        case 'layer-done':
          progress.update(event.report.layer + 1, event.layers, `layer ${event.report.layer + 1} took ${event.report.seconds.toFixed(1)} s`);
          break;
        case 'export-warning':
          progress.log(`warning: ${event.message}`);
          break;
      }
    },
  }).finally(stopExplaining);
  progress.done();
  if (json) {
    process.stdout.write(JSON.stringify(summary) + '\n');
    return;
  }
  const what =
    summary.kind === 'structured'
      ? `removed ${(summary.sparsity * 100).toFixed(2)}% of the decoder parameters (${summary.paramsBefore} → ${summary.paramsAfter}` +
        `${summary.layersRemoved > 0 ? `, ${summary.layersRemoved} whole layer(s)` : ''})`
      : `sparsity ${(summary.sparsity * 100).toFixed(2)}% of the pruned matrices`;
  process.stdout.write(
    `pruned ${summary.layers} layers with ${summary.method} (${summary.target}): ${what}, ${summary.seconds.toFixed(1)} s, peak memory ${summary.peak_rss_mb} MiB\n` +
      `wrote ${summary.out} (${summary.format === 'gguf' ? 'model.gguf' : `${weightFiles(summary.out)}, config.json`}, topiary.json)\n`,
  );
}
