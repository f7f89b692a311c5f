/**
 * Parity with Hugging Face transformers: the tiny random models of test/fixtures/tiny (made by
 * scripts/make_tiny_models.py) must give the logits transformers computed for the same windows.
 * The fixtures cover GQA and MHA, tied and untied heads, plain, linear and llama3 rope, Qwen2's
 * q/k/v biases with BF16 weights, Mistral, and both config.json rope layouts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { getBackend } from '../src/backend/index.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { loadModel } from '../src/model/load.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'tiny');
const FIXTURE_NAMES = ['llama-gqa', 'llama-tied-llama3rope', 'llama-mha-linear-rope', 'qwen2', 'mistral'];
/** max |ours − transformers| / max |transformers|. */
const TOLERANCE = 1e-4;

interface Reference {
  input_ids: number[][];
  logits: number[];
}

interface WorstDifference {
  relative: number;
  index: number;
}

/** The largest |actual − expected| relative to max |expected|; NaN or Infinity counts as infinitely wrong. */
function worstRelativeDifference(actual: Float32Array, expected: number[]): WorstDifference {
  let scale = 0;
  for (const value of expected) scale = Math.max(scale, Math.abs(value));
  let worst: WorstDifference = { relative: 0, index: -1 };
  for (let i = 0; i < expected.length; i++) {
    const difference = Math.abs(actual[i]! - expected[i]!);
    const relative = Number.isFinite(difference) ? difference / scale : Infinity;
    if (relative > worst.relative) worst = { relative, index: i };
  }
  return worst;
}

async function checkParity(name: string, backend: Backend): Promise<void> {
  const dir = path.join(FIXTURES, name);
  const reference = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
  const model = await loadModel(dir, { backend });
  const logits = await model.logits(reference.input_ids);

  assert.equal(logits.length, reference.logits.length, `${name}: logits length`);
  const windowTokens = reference.input_ids[0]!.length;
  const vocab = reference.logits.length / (reference.input_ids.length * windowTokens);
  const { relative, index } = worstRelativeDifference(logits, reference.logits);
  const row = Math.floor(index / vocab);
  assert.ok(
    relative <= TOLERANCE,
    `${name} on ${backend.info.name}: worst relative difference ${relative.toExponential(3)} > ${TOLERANCE} ` +
      `(window ${Math.floor(row / windowTokens)}, position ${row % windowTokens}, token ${index % vocab}: ` +
      `ours ${logits[index]}, transformers ${reference.logits[index]})`,
  );
}

/** The native backend, or why it is unavailable (the addon has not been built). */
function nativeBackend(): Backend | string {
  try {
    return getBackend('native');
  } catch (error) {
    return (error as Error).message;
  }
}

const reference = new ReferenceBackend();
const native = nativeBackend();

for (const name of FIXTURE_NAMES) {
  test(`${name}: logits match transformers (reference backend)`, () => checkParity(name, reference));
  test(`${name}: logits match transformers (native backend)`, async (t) => {
    if (typeof native === 'string') {
      t.skip(native);
      return;
    }
    await checkParity(name, native);
  });
}
