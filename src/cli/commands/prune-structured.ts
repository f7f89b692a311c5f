import { pruneModelStructured, type StructuredPruneSettings } from '../../prune/structured/run.js';
import { explainInterruptedPrune } from '../interrupt.js';
import { Progress } from '../progress.js';

/** `topiary prune --method flap|comp|wanda-sp|magnitude-sp --ratio R`: progress and the one-line summary. */
export async function pruneStructuredCommand(settings: Omit<StructuredPruneSettings, 'onEvent'>, json: boolean): Promise<void> {
  const progress = new Progress(`prune ${settings.method} ratio ${settings.ratio}`);
  const stopExplaining = explainInterruptedPrune(settings.out, progress);
  const summary = await pruneModelStructured({
    ...settings,
    onEvent(event) {
      if (event.kind === 'calibration') {
        for (const note of event.notes) progress.log(`calibration: ${note}`);
      } else if (event.kind === 'export-warning') {
        progress.log(`warning: ${event.message}`);
      } else if (event.kind === 'resumed') {
        const dense = event.scored > 0 ? ` and the dense pass of ${event.scored} layer(s)` : '';
        progress.log(`resumed: ${event.layers} finished layer(s)${dense} restored from the checkpoint`);
      } else {
        progress.update(event.layer, event.layers, `layer ${event.layer + 1}: ${event.stage}`);
      }
    },
  }).finally(stopExplaining);
  progress.done();
  if (json) {
    process.stdout.write(JSON.stringify(summary) + '\n');
    return;
  }
  process.stdout.write(
    `pruned with ${summary.method}: removed ${(summary.achievedRatio * 100).toFixed(2)}% of the decoder parameters ` +
      `(target ${(summary.ratio * 100).toFixed(1)}%; ${summary.paramsBefore} → ${summary.paramsAfter}` +
      `${summary.layersRemoved > 0 ? `, ${summary.layersRemoved} whole layer(s)` : ''}), ${summary.seconds.toFixed(1)} s, peak memory ${summary.peak_rss_mb} MiB\n` +
      `wrote ${summary.out} (${summary.format === 'gguf' ? 'model.gguf' : 'model.safetensors, config.json'}, topiary.json)\n`,
  );
}
