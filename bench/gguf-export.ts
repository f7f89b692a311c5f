/**
 * `topiary export --to gguf` on SmolLM2-135M (the Q4_1 GGUF from scripts/fetch-smollm2.sh): file
 * size at F16, Q8_0 and Q4_K, export time, and the negative log-likelihood per token of a short
 * WikiText-2 test slice as llama.cpp (node-llama-cpp's prebuilt CPU binary) computes it from each
 * file beside Topiary's on the same file. Writes bench/results/gguf-export-smollm2.json.
 *
 * Usage: node --import tsx bench/gguf-export.ts [--windows 4] [--seqlen 128]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { wikitext2Text } from '../src/data/corpora.js';
import { exportGguf, type GgufTensorType } from '../src/export/gguf-writer.js';
import { loadModel } from '../src/model/load.js';
import { cacheDir, testDataDir } from '../test/helpers.js';
import { llamaCppRun } from '../test/llama-cpp.js';
import { machineDescription, printTable } from './machine.js';

const { values } = parseArgs({ options: { windows: { type: 'string', default: '4' }, seqlen: { type: 'string', default: '128' } } });
const windowCount = Number(values.windows);
const seqlen = Number(values.seqlen);
const source = path.join(cacheDir, 'SmolLM2-135M-Instruct.Q4_1.gguf');
const lib = await import('node-llama-cpp');

const model = await loadModel(source, { backend: getBackend() });
const ids = model.tokenizer.encode(wikitext2Text(testDataDir, 'test').slice(0, 40_000), { addBos: false });
const windows = Array.from({ length: windowCount }, (_, w) => ids.slice(w * seqlen, (w + 1) * seqlen));
const predicted = windows.length * (seqlen - 1);

/** NLL per predicted token of the windows in Topiary and in llama.cpp, from `file`. */
async function nllPerToken(file: string) {
  const ours = await loadModel(file, { backend: getBackend() });
  let topiary = 0;
  let llamaCpp = 0;
  for (const window of windows) {
    topiary += (await ours.windowNll([window])).nll;
    llamaCpp += (await llamaCppRun(lib, file, window)).nll;
  }
  ours.source.close();
  return { topiary: topiary / predicted, llamaCpp: llamaCpp / predicted };
}

const rows: Record<string, unknown>[] = [{ file: path.basename(source), bytes: fs.statSync(source).size, nll: await nllPerToken(source) }];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'topiary-gguf-export-'));
try {
  for (const quant of ['F16', 'Q8_0', 'Q4_K'] as GgufTensorType[]) {
    const file = path.join(dir, `smollm2-${quant}.gguf`);
    const started = performance.now();
    const written = exportGguf(model, file, { dtype: quant });
    const seconds = (performance.now() - started) / 1000;
    rows.push({ file: `export --quant ${quant}`, bytes: written.bytes, exportSeconds: seconds, tensorTypes: written.tensorTypes, nll: await nllPerToken(file) });
    fs.rmSync(file);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
printTable(
  ['file', 'MiB', 'tensor types', 'NLL/token llama.cpp', 'NLL/token Topiary', 'export s'],
  rows.map((row) => {
    const nll = row.nll as { topiary: number; llamaCpp: number };
    const types = row.tensorTypes ? Object.entries(row.tensorTypes as Record<string, number>).map(([t, n]) => `${n} ${t}`).join(', ') : 'source';
    return [row.file as string, mib(row.bytes as number), types, nll.llamaCpp.toFixed(4), nll.topiary.toFixed(4), row.exportSeconds ? (row.exportSeconds as number).toFixed(1) : '-'];
  }),
);
const result = { machine: machineDescription(), loadAverage: os.loadavg(), slice: { corpus: 'wikitext2 test', windows: windowCount, seqlen, predictedTokens: predicted }, rows };
fs.writeFileSync(path.join(import.meta.dirname, 'results', 'gguf-export-smollm2.json'), JSON.stringify(result, null, 2) + '\n');
