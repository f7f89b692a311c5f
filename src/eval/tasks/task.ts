/**
 * What a zero-shot task is to the scorer: items, each a set of (context, continuation) requests
 * with the index of the gold one. Every task module turns its data file into these items with the
 * prompt template lm-evaluation-harness uses (see README.md in this folder for the table).
 */
import { TopiaryError } from '../../util/errors.js';
import { describeJsonError, parseJson, readTextFile } from '../../util/safe-fs.js';

/** One log-likelihood request: the score of `continuation` given `context`. */
export interface TaskRequest {
  context: string;
  continuation: string;
}

export interface TaskItem {
  /** Position of the item in its data file (0-based), for messages. */
  index: number;
  /** One request per choice, in the data's choice order. */
  requests: TaskRequest[];
  gold: number;
  /**
   * The lengths acc_norm divides by: the harness's `len(choice)` (Python characters, i.e. code
   * points) of each choice text without the target delimiter.
   */
  choiceLengths: number[];
}

export type TaskMetric = 'acc' | 'acc_norm';

export interface LoadedTask {
  items: TaskItem[];
  /** Items left out, with why (never silently). */
  skipped: { index: number; reason: string }[];
}

export interface TaskDefinition {
  /** The harness's task name, used on the command line: arc_easy, piqa, ... */
  name: string;
  title: string;
  /** Data file, relative to the data directory. */
  file: string;
  /** The metrics the harness reports for this task. */
  metrics: readonly TaskMetric[];
  load(file: string): LoadedTask;
}

/** The harness's usual multiple-choice requests: one per choice, continuation " " + choice. */
export function choiceItem(index: number, context: string, choices: readonly string[], gold: number): TaskItem {
  return {
    index,
    requests: choices.map((choice) => ({ context, continuation: ` ${choice}` })),
    gold,
    choiceLengths: choices.map((choice) => [...choice].length),
  };
}

/** Thrown by item parsers; the loader adds the file and item index. */
export class ItemError extends Error {}

export function expectString(record: Record<string, unknown>, key: string): string {
  const value = record[key];
  if (typeof value !== 'string') throw new ItemError(`field "${key}" should be a string, found ${JSON.stringify(value) ?? 'nothing'}`);
  return value;
}

function asRecord(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ItemError(`should be a JSON object, found ${JSON.stringify(value)?.slice(0, 60)}`);
  return value as Record<string, unknown>;
}

/**
 * Parses every record with `parse`. A record that is not what the format promises is an error
 * naming the file and the item: a task file that half-parses would give a silently wrong score.
 */
function parseRecords(file: string, records: unknown[], parse: (record: Record<string, unknown>, index: number) => TaskItem): LoadedTask {
  const items = records.map((record, index) => {
    try {
      return parse(asRecord(record), index);
    } catch (error) {
      if (error instanceof ItemError) throw new TopiaryError(`item ${index}: ${error.message}`, file);
      throw error;
    }
  });
  if (items.length === 0) throw new TopiaryError('no items', file);
  return { items, skipped: [] };
}

/** A JSON array of records (the LLM-Adapters files). */
export function loadJsonArray(file: string, parse: (record: Record<string, unknown>, index: number) => TaskItem): LoadedTask {
  const records = parseJson(readTextFile(file), file);
  if (!Array.isArray(records)) throw new TopiaryError('should hold a JSON array of items', file);
  return parseRecords(file, records, parse);
}

/** One JSON record a line; blank lines are ignored, a bad line is an error naming its item. */
export function loadJsonLines(file: string, parse: (record: Record<string, unknown>, index: number) => TaskItem): LoadedTask {
  const records = readTextFile(file)
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line, index) => {
      try {
        return JSON.parse(line) as unknown;
      } catch (error) {
        throw new TopiaryError(`item ${index}: ${describeJsonError(error)}`, file);
      }
    });
  return parseRecords(file, records, parse);
}
