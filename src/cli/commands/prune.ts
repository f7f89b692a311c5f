import { describeTarget, pruneModel, type PruneSettings, type PruneTarget } from '../../prune/run.js';
import { UsageError } from '../../util/errors.js';
import { explainInterruptedPrune } from '../interrupt.js';
import { Progress } from '../progress.js';

/** `--sparsity 0.5`, `--pattern 2:4` or `--ratio 0.2`, exactly one of them. */
export function parseTarget(sparsity: unknown, pattern: unknown, ratio?: unknown): PruneTarget {
  const given = [sparsity, pattern, ratio].filter((value) => value !== undefined).length;
  if (given !== 1) throw new UsageError('give exactly one of --sparsity P, --pattern N:M or --ratio R');
  const fraction = (value: unknown, flag: string): number => {
    const parsed = typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
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
    const raw = entry.slice(eq + 1);
    options[key] = raw === 'true' ? true : raw === 'false' ? false : raw !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  }
  if (permute) options.permute = true;
  return options;
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
      `wrote ${summary.out} (${summary.format === 'gguf' ? 'model.gguf' : 'model.safetensors, config.json'}, topiary.json)\n`,
  );
}
