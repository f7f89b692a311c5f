/** Running exported GGUF files in a real llama.cpp: node-llama-cpp's prebuilt CPU binary (a development dependency). */
import assert from 'node:assert/strict';
import type { Token } from 'node-llama-cpp';
import { getBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';

/** node-llama-cpp (a development dependency), or undefined when it is not installed. */
export async function nodeLlamaCpp(): Promise<typeof import('node-llama-cpp') | undefined> {
  try {
    return await import('node-llama-cpp');
  } catch {
    return undefined;
  }
}

async function loadLlamaCppModel(lib: typeof import('node-llama-cpp'), file: string) {
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  return llama.loadModel({ modelPath: file });
}

/** llama.cpp's token ids of each text (no BOS, special tokens not parsed) and its BOS id, from the GGUF's own vocabulary. */
export async function llamaCppTokenize(lib: typeof import('node-llama-cpp'), file: string, texts: readonly string[]) {
  const model = await loadLlamaCppModel(lib, file);
  try {
    // Token ids are plain numbers behind node-llama-cpp's branded type.
    const ids = texts.map((text) => model.tokenize(text) as unknown as number[]);
    return { ids, bos: (model.tokens.bos ?? undefined) as unknown as number | undefined };
  } finally {
    await model.dispose();
  }
}

/** llama.cpp's full logits at every position of `tokens`, and the next-token NLL it implies. */
export async function llamaCppRun(lib: typeof import('node-llama-cpp'), file: string, tokens: number[]) {
  const model = await loadLlamaCppModel(lib, file);
  const context = await model.createContext({ contextSize: 256, batchSize: 256, threads: 2 });
  try {
    // Token ids are plain numbers behind node-llama-cpp's branded type.
    const ids = tokens as unknown as Token[];
    const output = await context.getSequence().controlledEvaluate(ids.map((token) => [token, { generateNext: { logits: true } }]));
    const logits = output.slice(0, -1).map((item) => item!.next.logits! as unknown as Map<number, number>);
    let nll = 0;
    logits.forEach((row, i) => {
      let max = -Infinity;
      for (const v of row.values()) max = Math.max(max, v);
      let sum = 0;
      for (const v of row.values()) sum += Math.exp(v - max);
      nll -= row.get(tokens[i + 1]!)! - max - Math.log(sum);
    });
    return { logits, nll };
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/**
 * Asserts llama.cpp's logits and NLL on `tokens` agree with Topiary's reading the same file. The
 * defaults suit fp32/fp16 weights; quantized ones need more (llama.cpp's CPU kernels quantize the
 * activations to 8 bits for quantized matrices, Topiary multiplies the dequantized weights in fp32).
 */
export async function assertLlamaCppAgrees(lib: typeof import('node-llama-cpp'), file: string, tokens: number[], tolerance = { logits: 0.1, nll: 1e-3 }) {
  const ours = await loadModel(file, { backend: getBackend() });
  const vocab = ours.config.vocabSize;
  const logits = await ours.logits([tokens]);
  const { nll } = await ours.windowNll([tokens]);
  const theirs = await llamaCppRun(lib, file, tokens);
  let maxDiff = 0;
  theirs.logits.forEach((row, i) => {
    assert.equal(row.size, vocab);
    for (const [token, value] of row) maxDiff = Math.max(maxDiff, Math.abs(value - logits[i * vocab + token]!));
  });
  // fp32 both ways, different summation orders: logits of magnitude ~20 agree to a few hundredths.
  assert.ok(maxDiff < tolerance.logits, `max |logit difference| ${maxDiff}`);
  assert.ok(Math.abs(theirs.nll - nll) / nll < tolerance.nll, `NLL llama.cpp ${theirs.nll} vs Topiary ${nll}`);
  return { topiaryNll: nll, llamaCppNll: theirs.nll, maxLogitDiff: maxDiff };
}
