import * as path from 'node:path';
import { CHECKPOINT_DIR } from '../prune/checkpoint.js';
import type { Progress } from './progress.js';

/** What shells report for a command ended by Ctrl-C (128 + SIGINT). */
const INTERRUPTED_STATUS = 130;

/**
 * Ctrl-C during prune: one line saying that the finished layers are kept and how to continue,
 * then exit status 130 (the output folder's lock is removed on exit). Returns a function that
 * removes the handler once the run is over.
 */
export function explainInterruptedPrune(out: string, progress: Progress): () => void {
  const checkpoint = path.join(path.resolve(out), CHECKPOINT_DIR);
  const handler = () => {
    progress.log(`topiary: interrupted; finished layers are kept in ${checkpoint}: run the same command with --resume to continue`);
    process.exit(INTERRUPTED_STATUS);
  };
  process.on('SIGINT', handler);
  return () => process.off('SIGINT', handler);
}
