/** The zero-shot tasks Topiary knows, by the names lm-evaluation-harness gives them. */
import { UsageError } from '../../util/errors.js';
import { boolq, rte } from './glue.js';
import { hellaswag } from './hellaswag.js';
import { arcChallenge, arcEasy, openbookqa, piqa, socialIqa } from './multiple-choice.js';
import type { TaskDefinition } from './task.js';
import { winogrande } from './winogrande.js';

export type { LoadedTask, TaskDefinition, TaskItem, TaskMetric, TaskRequest } from './task.js';

export const TASKS: readonly TaskDefinition[] = [boolq, piqa, hellaswag, winogrande, arcEasy, arcChallenge, openbookqa, rte, socialIqa];

/** `arc_easy,piqa` → their definitions, in the order given; "all" means every task. */
export function parseTaskList(list: string): TaskDefinition[] {
  const names = list.split(',').map((name) => name.trim()).filter((name) => name !== '');
  if (names.length === 0) throw new UsageError('--tasks needs at least one task name');
  if (names.length === 1 && names[0] === 'all') return [...TASKS];
  const chosen = names.map((name) => {
    const task = TASKS.find((t) => t.name === name);
    if (!task) throw new UsageError(`unknown task "${name}" (choose from ${TASKS.map((t) => t.name).join(', ')}, or all)`);
    return task;
  });
  return chosen.filter((task, i) => chosen.indexOf(task) === i);
}
