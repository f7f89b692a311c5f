/**
 * The question-answering tasks of LLM-Adapters' files whose harness template is a question and a
 * choice per request: ARC-Easy, ARC-Challenge, OpenBookQA, PIQA, Social IQa.
 */
import { ANSWER_LAYOUT, SOLUTION_LAYOUT, parseAdapterItem, type AdapterLayout } from './llm-adapters.js';
import { choiceItem, loadJsonArray, type TaskDefinition, type TaskMetric } from './task.js';

function adapterTask(
  name: string,
  title: string,
  folder: string,
  layout: AdapterLayout,
  metrics: readonly TaskMetric[],
  template: (question: string) => string,
): TaskDefinition {
  return {
    name,
    title,
    file: `tasks/${folder}/llm_adapters_test.json`,
    metrics,
    load: (file) =>
      loadJsonArray(file, (record, index) => {
        const { question, choices, gold } = parseAdapterItem(record, layout);
        return choiceItem(index, template(question), choices, gold);
      }),
  };
}

const ACC_AND_NORM = ['acc', 'acc_norm'] as const;

/** arc_easy.yaml / arc_challenge.yaml: doc_to_text "Question: {{question}}\nAnswer:". */
export const arcEasy = adapterTask('arc_easy', 'ARC-Easy', 'arc_easy', ANSWER_LAYOUT, ACC_AND_NORM, (q) => `Question: ${q}\nAnswer:`);
export const arcChallenge = adapterTask('arc_challenge', 'ARC-Challenge', 'arc_challenge', ANSWER_LAYOUT, ACC_AND_NORM, (q) => `Question: ${q}\nAnswer:`);

/** openbookqa.yaml: doc_to_text is the bare question_stem (the "main" config has no fact). */
export const openbookqa = adapterTask('openbookqa', 'OpenBookQA', 'openbookqa', ANSWER_LAYOUT, ACC_AND_NORM, (q) => q);

/** piqa.yaml: "Question: {{goal}}\nAnswer:", choices [sol1, sol2]. */
export const piqa = adapterTask('piqa', 'PIQA', 'piqa', SOLUTION_LAYOUT, ACC_AND_NORM, (goal) => `Question: ${goal}\nAnswer:`);

/**
 * siqa.yaml: "Q: {{context}} {{question}}\nA:". LLM-Adapters wrote "{context} {question}" as one
 * string, which is exactly what the template puts between "Q: " and "\nA:". The harness reports acc only.
 */
export const socialIqa = adapterTask('social_iqa', 'Social IQa', 'social_iqa', ANSWER_LAYOUT, ['acc'], (q) => `Q: ${q}\nA:`);
