import { describeBackend } from '../../backend/index.js';
import { resolveDataDir } from '../../data/datadir.js';
import { parseTaskList } from '../../eval/tasks/index.js';
import { evaluateTask, type TaskResult } from '../../eval/zeroshot.js';
import { loadModel } from '../../model/load.js';
import { formatTable } from '../../report/table.js';
import { writeFileContentAtomic } from '../../util/atomic.js';
import { checkOutputFile } from '../../util/output.js';
import { Progress } from '../progress.js';

export interface TasksEvalArgs {
  model: string;
  tasks: string;
  limit?: number;
  dataDir?: string;
  json: boolean;
  /** Also write the JSON result here (atomically); `topiary report` reads RUN_DIR/eval*.json. */
  out?: string;
}

/** What `eval --tasks` prints with --json and writes with --out; `topiary report` reads it back. */
export interface TasksEvalRecord {
  kind: 'zero-shot';
  model: string;
  /** Items per task, spread evenly through each file; null for all. */
  limit: number | null;
  tasks: TaskResult[];
  backend: string;
  seconds: number;
}

function percent(value: { value: number; stderr: number | null } | undefined): string {
  if (!value) return '—';
  return `${(value.value * 100).toFixed(2)} ± ${value.stderr === null ? '?' : (value.stderr * 100).toFixed(2)}`;
}

export function formatTaskResults(results: readonly TaskResult[]): string {
  const rows = results.map((r) => {
    const notes = [
      r.skipped.length > 0 ? `${r.skipped.length} skipped` : '',
      r.truncated > 0 ? `${r.truncated} left-truncated` : '',
    ].filter(Boolean);
    return [r.task, String(r.n), percent(r.metrics.acc), percent(r.metrics.acc_norm), `${r.seconds.toFixed(1)} s`, notes.join(', ')];
  });
  return formatTable(['task', 'n', 'acc % ± se', 'acc_norm % ± se', 'time', 'notes'], rows, ['left', 'right', 'right', 'right', 'right', 'left']);
}

export async function tasksEvalCommand(args: TasksEvalArgs): Promise<void> {
  const tasks = parseTaskList(args.tasks);
  if (args.out) checkOutputFile(args.out);
  const dataDir = resolveDataDir(args.dataDir);
  const started = performance.now();
  const model = await loadModel(args.model);
  const results: TaskResult[] = [];
  try {
    for (const task of tasks) {
      const progress = new Progress(task.name);
      results.push(
        await evaluateTask(model, task, dataDir, {
          ...(args.limit !== undefined ? { limit: args.limit } : {}),
          onProgress: (done, total) => progress.update(done, total, 'requests'),
        }),
      );
      progress.done();
    }
  } finally {
    model.source.close();
  }
  const record: TasksEvalRecord = {
    kind: 'zero-shot',
    model: args.model,
    limit: args.limit ?? null,
    tasks: results,
    backend: describeBackend(),
    seconds: (performance.now() - started) / 1000,
  };
  if (args.out) writeFileContentAtomic(args.out, JSON.stringify(record, null, 1) + '\n');
  if (args.json) {
    process.stdout.write(JSON.stringify(record) + '\n');
  } else {
    process.stdout.write(formatTaskResults(results) + '\n');
    const limitNote = args.limit !== undefined ? `, --limit ${args.limit} (items spread evenly through each file)` : '';
    process.stdout.write(`${record.seconds.toFixed(1)} s in all${limitNote}\n`);
  }
}
