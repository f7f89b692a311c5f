/**
 * Parity with Hugging Face transformers: the tiny random models of test/fixtures/tiny (made by
 * scripts/make_tiny_models.py) must give the logits transformers computed for the same windows.
 * The fixtures cover GQA and MHA, tied and untied heads, plain, linear and llama3 rope, Qwen2's
 * q/k/v biases with BF16 weights, Mistral, and both config.json rope layouts.
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { assertLogitParity, nativeBackend } from './parity.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'tiny');
const FIXTURE_NAMES = ['llama-gqa', 'llama-tied-llama3rope', 'llama-mha-linear-rope', 'qwen2', 'mistral'];

function checkParity(name: string, backend: Backend): Promise<void> {
  const dir = path.join(FIXTURES, name);
  const reference = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as {
    input_ids: number[][];
    logits: number[];
  };
  return assertLogitParity(name, dir, { inputIds: reference.input_ids, logits: reference.logits }, backend);
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
