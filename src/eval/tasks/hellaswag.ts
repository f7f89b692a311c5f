/**
 * HellaSwag (original jsonl) as the harness's hellaswag/utils.py builds it: query =
 * preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()), choices = preprocess(ending),
 * continuation " " + choice. acc and acc_norm.
 */
import { ItemError, choiceItem, expectString, loadJsonLines, type TaskDefinition } from './task.js';

/** The harness's cleanup of WikiHow artefacts: strip, " [title]" → ". ", drop "[…]", "  " → " ". */
export function preprocessHellaswag(text: string): string {
  return text.trim().replaceAll(' [title]', '. ').replace(/\[.*?\]/g, '').replaceAll('  ', ' ');
}

/** Python's str.capitalize(): first character upper-cased, the rest lower-cased. */
export function pythonCapitalize(text: string): string {
  const [first, ...rest] = [...text];
  return first === undefined ? '' : first.toUpperCase() + rest.join('').toLowerCase();
}

function label(record: Record<string, unknown>): number {
  const value = typeof record.label === 'string' && /^\d+$/.test(record.label) ? Number(record.label) : record.label;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new ItemError(`field "label" should be an integer, found ${JSON.stringify(record.label)}`);
  return value;
}

export const hellaswag: TaskDefinition = {
  name: 'hellaswag',
  title: 'HellaSwag',
  file: 'tasks/hellaswag/hellaswag.jsonl',
  metrics: ['acc', 'acc_norm'],
  load: (file) =>
    loadJsonLines(file, (record, index) => {
      const endings = record.endings;
      if (!Array.isArray(endings) || endings.length < 2 || endings.some((e) => typeof e !== 'string')) {
        throw new ItemError('field "endings" should be an array of strings');
      }
      const gold = label(record);
      if (gold < 0 || gold >= endings.length) throw new ItemError(`label ${gold} is outside the ${endings.length} endings`);
      const context = `${expectString(record, 'ctx_a')} ${pythonCapitalize(expectString(record, 'ctx_b'))}`;
      const query = preprocessHellaswag(`${expectString(record, 'activity_label')}: ${context}`);
      return choiceItem(index, query, (endings as string[]).map(preprocessHellaswag), gold);
    }),
};
