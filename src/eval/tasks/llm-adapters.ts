/**
 * The LLM-Adapters test files (arc, piqa, winogrande, openbookqa, social_iqa) keep each item as one
 * prompt: `instruction` holds the question and its numbered choices, `answer` the gold label
 * ("answer3", "solution2", "option1"). This parses them back, and proves the parse by rebuilding
 * the instruction from the parts: an item that does not round-trip exactly is an error, since a
 * choice split in the wrong place would score silently wrong.
 */
import { ItemError, expectString } from './task.js';

export interface AdapterLayout {
  /** Text before the question, e.g. "Please choose the correct answer to the question: ". */
  prefix: string;
  /** Choice label as written before each choice: "Answer" (Answer1: …), "Solution", "Option". */
  label: string;
  /** Between the question and the first choice. */
  beforeChoices: string;
  /** Between one choice and the next label. */
  betweenChoices: string;
  /** Between the last choice and "Answer format: ". */
  beforeFormat: string;
}

export interface AdapterItem {
  question: string;
  choices: string[];
  gold: number;
}

export function parseAdapterItem(record: Record<string, unknown>, layout: AdapterLayout): AdapterItem {
  const instruction = expectString(record, 'instruction');
  const answer = expectString(record, 'answer');
  const { prefix, label, beforeChoices, betweenChoices, beforeFormat } = layout;
  const lower = label.toLowerCase();
  if (!instruction.startsWith(prefix)) throw new ItemError(`instruction does not start with "${prefix.trim()}"`);

  const formatMarker = `${beforeFormat}Answer format: `;
  const formatAt = instruction.lastIndexOf(formatMarker);
  if (formatAt < 0) throw new ItemError('instruction has no "Answer format:" line');
  const labels = instruction.slice(formatAt + formatMarker.length).split('/');
  if (labels.length < 2 || labels.some((name, i) => name !== `${lower}${i + 1}`)) {
    throw new ItemError(`unexpected answer format "${instruction.slice(formatAt + formatMarker.length)}"`);
  }

  const firstMarker = `${beforeChoices}${label}1: `;
  const firstAt = instruction.indexOf(firstMarker, prefix.length);
  if (firstAt < 0 || firstAt > formatAt) throw new ItemError(`instruction has no "${label}1:" choice`);
  const question = instruction.slice(prefix.length, firstAt);
  const choices: string[] = [];
  let start = firstAt + firstMarker.length;
  for (let k = 2; k <= labels.length; k++) {
    const marker = `${betweenChoices}${label}${k}: `;
    const at = instruction.indexOf(marker, start);
    if (at < 0 || at > formatAt) throw new ItemError(`instruction has no "${label}${k}:" choice`);
    choices.push(instruction.slice(start, at));
    start = at + marker.length;
  }
  choices.push(instruction.slice(start, formatAt));

  const rebuilt =
    prefix + question + beforeChoices +
    choices.map((choice, i) => `${label}${i + 1}: ${choice}`).join(betweenChoices) +
    formatMarker + labels.join('/');
  if (rebuilt !== instruction) throw new ItemError('instruction does not split unambiguously into question and choices');

  const match = new RegExp(`^${lower}(\\d+)$`).exec(answer);
  const gold = match ? Number(match[1]) - 1 : -1;
  if (gold < 0 || gold >= choices.length) throw new ItemError(`answer "${answer}" is not one of ${labels.join('/')}`);
  return { question, choices, gold };
}

/** ARC, OpenBookQA and Social IQa: "Answer1: a Answer2: b …" on one line. */
export const ANSWER_LAYOUT: AdapterLayout = {
  prefix: 'Please choose the correct answer to the question: ',
  label: 'Answer',
  beforeChoices: '\n\n',
  betweenChoices: ' ',
  beforeFormat: '\n\n',
};

/** PIQA: "Solution1: …" and "Solution2: …" in paragraphs of their own. */
export const SOLUTION_LAYOUT: AdapterLayout = {
  prefix: 'Please choose the correct solution to the question: ',
  label: 'Solution',
  beforeChoices: '\n\n',
  betweenChoices: '\n\n',
  beforeFormat: '\n\n',
};

/** WinoGrande: "Option1: a Option2: b Answer format: option1/option2". */
export const OPTION_LAYOUT: AdapterLayout = {
  prefix: 'Please choose the correct answer to fill in the blank to complete the given sentence: ',
  label: 'Option',
  beforeChoices: '\n\n',
  betweenChoices: ' ',
  beforeFormat: ' ',
};
