/** The two-way classification tasks scored as multiple choice over fixed answer words: BoolQ and RTE. */
import { ItemError, choiceItem, expectString, loadJsonLines, type TaskDefinition } from './task.js';

/** super_glue/boolq/default.yaml: "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"]. acc only. */
export const boolq: TaskDefinition = {
  name: 'boolq',
  title: 'BoolQ',
  file: 'tasks/boolq/boolq.jsonl',
  metrics: ['acc'],
  load: (file) =>
    loadJsonLines(file, (record, index) => {
      if (typeof record.answer !== 'boolean') throw new ItemError(`field "answer" should be true or false, found ${JSON.stringify(record.answer)}`);
      const context = `${expectString(record, 'passage')}\nQuestion: ${expectString(record, 'question')}?\nAnswer:`;
      return choiceItem(index, context, ['no', 'yes'], record.answer ? 1 : 0);
    }),
};

/**
 * glue/rte/default.yaml: "{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:", choices
 * ["True", "False"], target = label (0 = entailment → True). acc only.
 */
export const rte: TaskDefinition = {
  name: 'rte',
  title: 'RTE',
  file: 'tasks/rte/validation.jsonl',
  metrics: ['acc'],
  load: (file) =>
    loadJsonLines(file, (record, index) => {
      if (record.label !== 0 && record.label !== 1) throw new ItemError(`field "label" should be 0 or 1, found ${JSON.stringify(record.label)}`);
      const context = `${expectString(record, 'sentence1')}\nQuestion: ${expectString(record, 'sentence2')} True or False?\nAnswer:`;
      return choiceItem(index, context, ['True', 'False'], record.label);
    }),
};
