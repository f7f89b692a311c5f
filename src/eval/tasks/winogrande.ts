/**
 * WinoGrande by the harness's partial scoring (preprocess_winogrande.py): for each option, the
 * context is the sentence up to the blank with the option in it, and the continuation — the same
 * for both options — is " " + the rest of the sentence after "_", stripped. The option that makes
 * the rest more likely wins. The harness reports acc only.
 */
import { OPTION_LAYOUT, parseAdapterItem } from './llm-adapters.js';
import { ItemError, loadJsonArray, type TaskDefinition, type TaskItem } from './task.js';

export function winograndeItem(index: number, sentence: string, options: readonly string[], gold: number): TaskItem {
  const blank = sentence.indexOf('_');
  if (blank < 0) throw new ItemError('sentence has no "_" blank');
  if (sentence.indexOf('_', blank + 1) >= 0) throw new ItemError('sentence has more than one "_" blank');
  const continuation = ` ${sentence.slice(blank + 1).trim()}`;
  return {
    index,
    requests: options.map((option) => ({ context: sentence.slice(0, blank) + option, continuation })),
    gold,
    // acc_norm is not reported for WinoGrande; the harness's choice strings are the contexts.
    choiceLengths: options.map((option) => [...(sentence.slice(0, blank) + option)].length),
  };
}

export const winogrande: TaskDefinition = {
  name: 'winogrande',
  title: 'WinoGrande',
  file: 'tasks/winogrande/llm_adapters_test.json',
  metrics: ['acc'],
  load: (file) =>
    loadJsonArray(file, (record, index) => {
      const { question, choices, gold } = parseAdapterItem(record, OPTION_LAYOUT);
      if (choices.length !== 2) throw new ItemError(`expected 2 options, found ${choices.length}`);
      return winograndeItem(index, question, choices, gold);
    }),
};
