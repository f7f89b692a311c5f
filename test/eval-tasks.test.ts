/**
 * Task loaders: the (context, continuation) requests of real items against strings written out by
 * hand from lm-evaluation-harness's task definitions, the item counts of the standard splits, and
 * clear errors on malformed files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TASKS, parseTaskList, type TaskDefinition, type TaskItem } from '../src/eval/tasks/index.js';
import { preprocessHellaswag, pythonCapitalize } from '../src/eval/tasks/hellaswag.js';
import { winograndeItem } from '../src/eval/tasks/winogrande.js';
import { TopiaryError } from '../src/util/errors.js';
import { tempDir, testDataDir } from './helpers.js';

const loaded = new Map<string, TaskItem[]>();
function items(name: string): TaskItem[] {
  if (!loaded.has(name)) {
    const task = TASKS.find((t) => t.name === name)!;
    loaded.set(name, task.load(path.join(testDataDir, task.file)).items);
  }
  return loaded.get(name)!;
}

function expectItem(item: TaskItem, context: string | string[], continuations: string | string[], gold: number): void {
  const contexts = Array.isArray(context) ? context : (continuations as string[]).map(() => context);
  const conts = Array.isArray(continuations) ? continuations : contexts.map(() => continuations);
  assert.deepEqual(
    item.requests,
    contexts.map((c, i) => ({ context: c, continuation: conts[i] })),
  );
  assert.equal(item.gold, gold);
}

test('every task loads its standard split, and every LLM-Adapters instruction round-trips', () => {
  const expected: Record<string, number> = {
    boolq: 2474, piqa: 1838, hellaswag: 1000, winogrande: 1267, arc_easy: 2376,
    arc_challenge: 1172, openbookqa: 500, rte: 277, social_iqa: 1954,
  };
  assert.deepEqual(TASKS.map((t) => t.name).sort(), Object.keys(expected).sort());
  for (const [name, count] of Object.entries(expected)) {
    const list = items(name);
    assert.equal(list.length, count, name);
    for (const item of list) {
      assert.ok(item.gold >= 0 && item.gold < item.requests.length, `${name} item ${item.index}`);
      assert.equal(item.choiceLengths.length, item.requests.length);
    }
  }
  // ARC has a few 3- and 5-choice questions; the count comes from each item's answer format.
  const sizes = new Set(items('arc_easy').map((item) => item.requests.length));
  assert.deepEqual([...sizes].sort(), [3, 4, 5]);
});

test('ARC: "Question: {{question}}\\nAnswer:" with " {{choice}}"', () => {
  expectItem(
    items('arc_easy')[0]!,
    'Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:',
    [
      ' Sunlight is the source of energy for nearly all ecosystems.',
      ' Most ecosystems are found on land instead of in water.',
      ' Carbon dioxide is more available than other gases.',
      ' The producers in all ecosystems are plants.',
    ],
    0,
  );
  expectItem(
    items('arc_easy')[1]!,
    'Question: Which piece of safety equipment is used to keep mold spores from entering the respiratory system?\nAnswer:',
    [' safety goggles', ' breathing mask', ' rubber gloves', ' lead apron'],
    1,
  );
  expectItem(
    items('arc_challenge')[0]!,
    'Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:',
    [' Planetary density will decrease.', ' Planetary years will become longer.', ' Planetary days will become shorter.', ' Planetary gravity will become stronger.'],
    2,
  );
  // acc_norm divides by the choice's length without the delimiter.
  assert.deepEqual(items('arc_easy')[1]!.choiceLengths, [14, 14, 13, 10]);
});

test('PIQA: "Question: {{goal}}\\nAnswer:" with " {{sol}}", whitespace inside solutions kept', () => {
  expectItem(
    items('piqa')[1]!,
    'Question: dresser\nAnswer:',
    [' replace drawer with bobby pin ', ' finish, woodgrain with  bobby pin '],
    1,
  );
  expectItem(
    items('piqa')[0]!,
    "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
    [
      ' Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.',
      ' Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish.',
    ],
    0,
  );
});

test('OpenBookQA: the bare question_stem with " {{choice}}"', () => {
  expectItem(items('openbookqa')[1]!, 'There is most likely going to be fog around:', [' a marsh', ' a tundra', ' the plains', ' a desert'], 0);
});

test('Social IQa: "Q: {{context}} {{question}}\\nA:" with " {{answer}}"', () => {
  expectItem(
    items('social_iqa')[1]!,
    'Q: Sydney walked past a homeless woman asking for change but did not have any money they could give to her. Sydney felt bad afterwards. How would you describe Sydney?\nA:',
    [' sympathetic', ' like a person who was unable to help', ' incredulous'],
    0,
  );
});

test('WinoGrande: partial scoring — option substituted into the context, the rest after "_" the continuation', () => {
  expectItem(
    items('winogrande')[0]!,
    ['Sarah was a much better surgeon than Maria so Sarah', 'Sarah was a much better surgeon than Maria so Maria'],
    ' always got the easier cases.',
    1,
  );
  expectItem(
    items('winogrande')[1]!,
    ['Sarah was a much better surgeon than Maria so Sarah', 'Sarah was a much better surgeon than Maria so Maria'],
    ' always got the harder cases.',
    0,
  );
  // The suffix is stripped, then the target delimiter " " put in front.
  const item = winograndeItem(0, 'The cup fell because _  was too slippery. ', ['it', 'the table'], 0);
  assert.deepEqual(item.requests, [
    { context: 'The cup fell because it', continuation: ' was too slippery.' },
    { context: 'The cup fell because the table', continuation: ' was too slippery.' },
  ]);
});

test('HellaSwag: preprocess(activity_label: ctx_a + ctx_b.capitalize()) and preprocessed endings', () => {
  expectItem(
    items('hellaswag')[0]!,
    'Pole vault: Pole vault is a sport where you run with a pole and stop and swing your body. A few women',
    [' go down a rock and stop.', ' watch from around a pole vault.', ' are in the wading pool.', ' are in the gym practicing to do this pole vault, trying to do their best.'],
    3,
  );
  // A WikiHow item: " [title]" → ". ", other bracketed tags dropped, double spaces halved, empty ctx_b.
  expectItem(
    items('hellaswag')[3]!,
    "Sports and Fitness: How to bowl the leg spinner's variations. To bowl a googly, you grip the ball the same as you would for a leg break but hold it so your palm faces away from you. As you bowl, you bring your elbow close to your head and cock your wrist so that back of your hand faces the batsman. You spin the ball by rotating the fingers.",
    [
      "  If you're outside, the batsman only looks at the batsman as they dribble.. If you're inside, the batsman lets you line up the batsman with you.",
      ' Bring your wrist back towards your head so that the ball is back in front of your body and your fist will be holding the ball. A barbell is not needed for this style of bowl.',
      ' If done properly, the ball should turn from off to leg for right handers. If the batsman comes out of his crease and misses the googly, he can be stumped.',
      '  Only let the ball hit your side as you come out of the ball, not your core. Remember to rotate your wrist so your hand reaches over your head, not away from it.',
    ],
    2,
  );
  assert.equal(pythonCapitalize('the WOMAN'), 'The woman');
  assert.equal(pythonCapitalize(''), '');
  assert.equal(preprocessHellaswag('  a [title] b [step]  c  '), 'a. b  c'); // as Python's replace: "   " → "  "
});

test('BoolQ: "{{passage}}\\nQuestion: {{question}}?\\nAnswer:" with " no"/" yes"', () => {
  const lines = fs.readFileSync(path.join(testDataDir, 'tasks/boolq/boolq.jsonl'), 'utf8').split('\n');
  for (const index of [0, 1237]) {
    const raw = JSON.parse(lines[index]!) as { passage: string; question: string; answer: boolean };
    expectItem(items('boolq')[index]!, `${raw.passage}\nQuestion: ${raw.question}?\nAnswer:`, [' no', ' yes'], raw.answer ? 1 : 0);
  }
  assert.equal(items('boolq')[1237]!.gold, 0);
  assert.ok(items('boolq')[1237]!.requests[0]!.context.endsWith('\nQuestion: does ethanol take more energy make that produces?\nAnswer:'));
});

test('RTE: "{{sentence1}}\\nQuestion: {{sentence2}} True or False?\\nAnswer:", label 0 → " True"', () => {
  expectItem(
    items('rte')[1]!,
    'Yet, we now are discovering that antibiotics are losing their effectiveness against illness. Disease-causing bacteria are mutating faster than we can come up with new antibiotics to fight the new variations.\nQuestion: Bacteria is winning the war against antibiotics. True or False?\nAnswer:',
    [' True', ' False'],
    0,
  );
  expectItem(
    items('rte')[0]!,
    'Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the Christopher Reeve Foundation.\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:',
    [' True', ' False'],
    1,
  );
});

test('task lists: names, "all", duplicates, unknown names', () => {
  assert.deepEqual(parseTaskList('piqa, arc_easy,piqa').map((t) => t.name), ['piqa', 'arc_easy']);
  assert.equal(parseTaskList('all').length, 9);
  assert.throws(() => parseTaskList('arc_easy,mmlu'), /unknown task "mmlu"/);
  assert.throws(() => parseTaskList(' , '), /at least one task/);
});

function loadFrom(task: TaskDefinition, content: string): () => unknown {
  const file = path.join(tempDir('topiary-tasks-'), path.basename(task.file));
  fs.writeFileSync(file, content);
  return () => task.load(file);
}

function taskNamed(name: string): TaskDefinition {
  return TASKS.find((t) => t.name === name)!;
}

test('malformed task files: a clear error naming the file and the item', () => {
  const arc = taskNamed('arc_easy');
  const good = {
    instruction: 'Please choose the correct answer to the question: Q?\n\nAnswer1: a Answer2: b\n\nAnswer format: answer1/answer2',
    input: '',
    output: 'the correct answer is answer1',
    answer: 'answer1',
  };
  const cases: [TaskDefinition, string, RegExp][] = [
    [arc, '{not json', /invalid JSON at position 1/],
    [arc, '{"a": 1}', /should hold a JSON array/],
    [arc, '[]', /no items/],
    [arc, JSON.stringify([good, { ...good, answer: 'answer3' }]), /item 1: answer "answer3" is not one of answer1\/answer2/],
    [arc, JSON.stringify([good, { ...good, instruction: good.instruction.replace('Answer2: b', 'b') }]), /item 1: instruction has no "Answer2:" choice/],
    [arc, JSON.stringify([{ ...good, instruction: 'What?' }]), /item 0: instruction does not start with/],
    [arc, JSON.stringify([{ ...good, instruction: good.instruction.replace('Answer format: answer1/answer2', 'Answer format: a/b') }]), /item 0: unexpected answer format/],
    [arc, JSON.stringify([good, 7]), /item 1: should be a JSON object/],
    [arc, JSON.stringify([{ ...good, answer: 3 }]), /item 0: field "answer" should be a string/],
    [taskNamed('winogrande'), JSON.stringify([{ instruction: 'Please choose the correct answer to fill in the blank to complete the given sentence: no blank here\n\nOption1: a Option2: b Answer format: option1/option2', answer: 'option1' }]), /item 0: sentence has no "_" blank/],
    [taskNamed('hellaswag'), '{"activity_label":"x","ctx_a":"a","ctx_b":"b","endings":["c","d"],"label":1}\n{"activity_label":"x"', /item 1: invalid JSON/],
    [taskNamed('hellaswag'), '{"activity_label":"x","ctx_a":"a","ctx_b":"b","endings":["c","d"],"label":5}', /item 0: label 5 is outside the 2 endings/],
    [taskNamed('boolq'), '{"question":"q","passage":"p","answer":"yes"}', /item 0: field "answer" should be true or false/],
    [taskNamed('rte'), '{"sentence1":"a","sentence2":"b","label":2}', /item 0: field "label" should be 0 or 1/],
  ];
  for (const [task, content, message] of cases) {
    const load = loadFrom(task, content);
    assert.throws(load, (error: unknown) => {
      assert.ok(error instanceof TopiaryError, `${String(error)} should be a TopiaryError`);
      assert.match(error.message, message);
      assert.ok(error.message.includes(path.basename(task.file)), `the message names the file: ${error.message}`);
      return true;
    });
  }
  assert.throws(() => taskNamed('piqa').load('/nonexistent/piqa.json'), /no such file/);
});
