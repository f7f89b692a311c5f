/**
 * The cases of formats-fuzz.test.ts, run in a child process so that a hang is caught and named:
 * `node --import tsx test/fuzz-cases.ts FAMILY SEED COUNT DIR`. Prints `case N` as each case
 * starts and, at the end, `summary {"opened":..,"refused":..}`; a case that throws anything but a
 * TopiaryError, takes over CASE_MS, returns a non-finite tensor or lets memory grow past the
 * bounds prints `failure ...` (keeping its input in DIR) and exits 1.
 *
 * Families: byte mutations of a safetensors file, two GGUF files and a llama2.c checkpoint; byte
 * mutations of a sharded Hugging Face folder (either shard, the index or config.json); typed
 * value mutations of GGUF metadata; byte mutations of compressed sparse folders (sparse-bitmask and
 * sparse-24-bitmask: their model.safetensors or config.json); and structure or text mutations of tokenizer.json. Each case
 * goes through the real loader, up to reading the first layer. FUZZ_CASE=N runs case N alone and
 * keeps its input, to reproduce a failure.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GgufValueType, type GgufValue } from '../src/formats/gguf.js';
import { openTensors } from '../src/formats/open.js';
import { writeSafetensors } from '../src/formats/safetensors.js';
import { exportHfFolder } from '../src/export/hf-folder.js';
import { loadModel } from '../src/model/load.js';
import { tokenizerFromJson } from '../src/tokenizers/load.js';
import { TopiaryError } from '../src/util/errors.js';
import { firstNonFinite } from '../src/util/finite.js';
import { createRng, type Rng } from '../src/util/random.js';
import { repoRoot } from './helpers.js';
import { kv, TINY_GGUF_METADATA, tinyGgufTensors, writeTinyGguf, type KeyValue } from './tiny-gguf.js';

/** One case may take this long; the slowest legitimate ones (a tokenizer built from JSON) take ~20 ms. */
export const CASE_MS = 2000;
/** External (ArrayBuffer) memory and resident set allowed at any check: far above what these tiny inputs need. */
const MAX_ARRAY_BUFFER_BYTES = 256 * 2 ** 20;
const MAX_RSS_BYTES = 1536 * 2 ** 20;

export const FAMILIES = ['safetensors', 'small-gguf', 'quants-gguf', 'llama2c', 'sharded', 'gguf-metadata', 'tokenizer-json', 'sparse'] as const;
export type Family = (typeof FAMILIES)[number];

const fixtures = path.join(repoRoot, 'test', 'fixtures');
const tinyModel = path.join(fixtures, 'tiny', 'llama-gqa');
const INFLATED_VALUES = [0xffffffffn, 0x7fffffffn, 2n ** 32n, 2n ** 40n, 2n ** 53n, 2n ** 62n, 2n ** 63n, 2n ** 64n - 1n, 100_000_001n];

function mutateBytes(original: Buffer, rng: Rng): Buffer {
  const bytes = Buffer.from(original);
  switch (rng.int(4)) {
    case 0: {
      const flips = 1 + rng.int(8);
      for (let i = 0; i < flips; i++) bytes[rng.int(bytes.length)] ^= 1 + rng.int(255);
      return bytes;
    }
    case 1:
      return bytes.subarray(0, rng.int(bytes.length));
    case 2: {
      // Inflate a length-like field: 4 or 8 bytes in the header region become a huge value.
      const width = rng.next() < 0.5 ? 4 : 8;
      const headerRegion = Math.min(bytes.length, 512) - width;
      if (headerRegion <= 0) return bytes;
      const at = rng.int(headerRegion);
      const value = INFLATED_VALUES[rng.int(INFLATED_VALUES.length)]!;
      if (width === 8) bytes.writeBigUInt64LE(value, at);
      else bytes.writeUInt32LE(Number(value & 0xffffffffn), at);
      return bytes;
    }
    default: {
      const at = rng.int(bytes.length);
      const count = 1 + rng.int(8);
      return rng.next() < 0.5
        ? Buffer.concat([bytes.subarray(0, at), Buffer.alloc(count, rng.int(256)), bytes.subarray(at)])
        : Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + count)]);
    }
  }
}

class Failure extends Error {}

function checkFinite(data: Float32Array, what: string): void {
  if (firstNonFinite(data) >= 0) throw new Failure(`${what} came back with a non-finite value`);
}

/** A store opened directly, every tensor read (non-finite values are data at this level; model loaders refuse them). */
function readStore(file: string): void {
  const size = fs.statSync(file).size;
  const store = openTensors(file);
  try {
    for (const info of store.list()) {
      if (info.byteLength > size) throw new Failure(`${info.name} claims ${info.byteLength} bytes of a ${size}-byte file`);
      store.read(info.name);
    }
  } finally {
    store.close();
  }
}

/** A model through the real loader, up to its first layer, and its tokenizer on a short text. */
async function readModel(modelPath: string): Promise<void> {
  const model = await loadModel(modelPath);
  try {
    checkFinite(model.source.read('model.embed_tokens.weight'), 'the embedding');
    const layer = model.layer(0);
    for (const [role, linear] of Object.entries(layer.linears)) checkFinite(linear.weight, role);
    const tokenizer = model.source.tokenizer;
    if (!('missing' in tokenizer)) tokenizer.decode(tokenizer.encode('Hello world, 123!'));
  } finally {
    model.source.close();
  }
}

/** Values a metadata field is set to: the absurd ones, and types it should not have. */
const NUMBERS = [0, 1, 2, 3, 4, 16, 64, 160, 255, 256, -1, 64.5, 2 ** 31, 2 ** 32 - 1, 2 ** 53, 1e9, 1e308, -1e308, Number.NaN, Number.POSITIVE_INFINITY];
const STRINGS = ['', 'llama', 'gpt2', 'qwen2', 'deci', 'x'.repeat(300), '__proto__', '<s>'];

function randomScalar(rng: Rng): KeyValue {
  const n = NUMBERS[rng.int(NUMBERS.length)]!;
  switch (rng.int(8)) {
    case 0: return kv(GgufValueType.UINT32, Number.isInteger(n) && n >= 0 && n < 2 ** 32 ? n : 2 ** 32 - 1);
    case 1: return kv(GgufValueType.INT32, Number.isInteger(n) && Math.abs(n) < 2 ** 31 ? n : -(2 ** 31));
    case 2: return kv(GgufValueType.UINT64, BigInt.asUintN(64, BigInt(Number.isInteger(n) && n >= 0 ? n : 2 ** 53) * BigInt(1 + rng.int(4096))));
    case 3: return kv(GgufValueType.INT64, -BigInt(rng.int(2 ** 31)) * 2n ** 32n);
    case 4: return kv(GgufValueType.FLOAT32, n);
    case 5: return kv(GgufValueType.FLOAT64, n);
    case 6: return kv(GgufValueType.BOOL, rng.next() < 0.5);
    default: return kv(GgufValueType.STRING, STRINGS[rng.int(STRINGS.length)]!);
  }
}

function randomArray(rng: Rng, like?: GgufValue): KeyValue {
  if (Array.isArray(like) && like.length > 0 && rng.next() < 0.5) {
    // Keep the array's type, change its length or an element.
    const items = [...like];
    if (rng.next() < 0.5) items.length = rng.int(items.length + 3);
    else items[rng.int(items.length)] = items[rng.int(items.length)]!;
    const element = typeof items.find((v) => v !== undefined) === 'string' ? GgufValueType.STRING : GgufValueType.INT32;
    return kv(GgufValueType.ARRAY, Array.from(items, (v) => v ?? (element === GgufValueType.STRING ? '' : 0)), element);
  }
  const length = rng.int(5);
  if (rng.next() < 0.5) return kv(GgufValueType.ARRAY, Array.from({ length }, () => STRINGS[rng.int(STRINGS.length)]!), GgufValueType.STRING);
  return kv(GgufValueType.ARRAY, Array.from({ length }, () => [0, 1, 2, 4, -1, 64, 2 ** 31 - 1][rng.int(7)]!), GgufValueType.INT32);
}

function mutateMetadata(rng: Rng): Record<string, KeyValue | undefined> {
  const keys = [...Object.keys(TINY_GGUF_METADATA), 'tokenizer.ggml.merges', 'tokenizer.ggml.pre', 'tokenizer.ggml.unknown_token_id', 'general.alignment'];
  const overrides: Record<string, KeyValue | undefined> = {};
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const key = keys[rng.int(keys.length)]!;
    const action = rng.int(4);
    overrides[key] = action === 0 ? undefined : action === 1 ? randomArray(rng, TINY_GGUF_METADATA[key]?.value) : randomScalar(rng);
  }
  return overrides;
}

/** Values a tokenizer.json field is set to: absurd ids and sizes, hostile patterns, wrong types. */
const JSON_VALUES: unknown[] = [
  null, true, 0, -1, 1e9, 2 ** 53, 64.5, '', 'a', 'x'.repeat(5000), [], {}, [1e9], { Regex: '(\\w+\\s?)*$' }, { Regex: '.*.*.*x' },
  { Regex: '\\p{L}+' }, { Regex: '(' }, { String: 'a' }, { type: 'Replace', pattern: { String: 'a' }, content: 'b'.repeat(5000) },
  { type: 'Sequence', normalizers: [] }, { type: 'Split', pattern: { Regex: '(a|aa)*b' }, behavior: 'Isolated', invert: false },
  { type: 'NFKC' }, { type: 'Unknown' }, { id: 1e9, content: '<x>', special: true }, '__proto__',
];

/** Replaces one randomly chosen value in the tree (not inside the large vocabulary and merges, mostly). */
function mutateJson(root: Record<string, unknown>, rng: Rng): void {
  const nodes: [Record<string, unknown> | unknown[], string | number][] = [];
  const collect = (node: unknown, depth: number) => {
    if (typeof node !== 'object' || node === null || depth > 6) return;
    const entries: [string | number, unknown][] = Array.isArray(node) ? node.slice(0, 40).map((v, i) => [i, v]) : Object.entries(node).slice(0, 60);
    for (const [key, value] of entries) {
      nodes.push([node as Record<string, unknown>, key]);
      collect(value, depth + 1);
    }
  };
  collect(root, 0);
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const [parent, key] = nodes[rng.int(nodes.length)]!;
    const value = structuredClone(JSON_VALUES[rng.int(JSON_VALUES.length)]);
    if (rng.next() < 0.15 && !Array.isArray(parent)) delete (parent as Record<string, unknown>)[key as string];
    else (parent as Record<string | number, unknown>)[key] = value;
  }
}

/** Writes a sharded copy of the tiny model (two shards and an index) in `dir`. */
function writeShardedModel(dir: string): Record<string, Buffer> {
  fs.mkdirSync(dir, { recursive: true });
  const store = openTensors(path.join(tinyModel, 'model.safetensors'));
  const tensors = store.list().map((info) => ({ name: info.name, shape: info.shape, data: store.read(info.name) }));
  store.close();
  const half = Math.ceil(tensors.length / 2);
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const name = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(path.join(dir, name), shard);
    for (const t of shard) weightMap[t.name] = name;
  });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  fs.copyFileSync(path.join(tinyModel, 'config.json'), path.join(dir, 'config.json'));
  return Object.fromEntries(fs.readdirSync(dir).map((file) => [file, fs.readFileSync(path.join(dir, file))]));
}

/**
 * The tiny model with two in every four weights of its linear layers zeroed, written as a
 * sparse-bitmask and a sparse-24-bitmask folder in `dir`; their files by folder.
 */
async function writeSparseModels(dir: string): Promise<Record<string, Record<string, Buffer>>> {
  const model = await loadModel(tinyModel);
  const linears = model.source.tensorNames().filter((name) => /_proj\.weight$/.test(name));
  const halved = (name: string) => () => model.source.read(name).map((value, i) => (i % 4 < 2 ? 0 : value));
  const folders: Record<string, Record<string, Buffer>> = {};
  for (const [name, pattern] of [['bitmask', undefined], ['2of4', { n: 2, m: 4 }]] as const) {
    const out = path.join(dir, name);
    exportHfFolder(model, out, { dtype: 'F16', override: (tensor) => (linears.includes(tensor) ? halved(tensor) : undefined), sparse: { matrices: linears, ...(pattern ? { pattern } : {}) } });
    folders[out] = Object.fromEntries(fs.readdirSync(out).map((file) => [file, fs.readFileSync(path.join(out, file))]));
  }
  model.source.close();
  return folders;
}

/** A seed safetensors file of three dtypes, and a llama2.c checkpoint of one tiny layer. */
function writeSeedFiles(dir: string): { safetensors: string; llama2c: string } {
  const rng = createRng(1);
  const safetensors = path.join(dir, 'seed.safetensors');
  writeSafetensors(safetensors, [
    { name: 'a', shape: [3, 4], data: Float32Array.from({ length: 12 }, () => rng.normal()) },
    { name: 'b', shape: [5], data: Float32Array.from({ length: 5 }, () => rng.normal()), dtype: 'F16' },
    { name: 'c', shape: [2, 3], data: Float32Array.from({ length: 6 }, () => rng.normal()), dtype: 'BF16' },
  ], { note: 'fuzz seed' });
  // dim 4, hidden 6, 1 layer, 2 heads, 1 kv head, vocab -3 (untied), seq_len 2: 160 floats.
  const llama2c = path.join(dir, 'seed.bin');
  fs.writeFileSync(llama2c, Buffer.concat([Buffer.from(new Int32Array([4, 6, 1, 2, 1, -3, 2]).buffer), Buffer.alloc(160 * 4, 0x3f)]));
  return { safetensors, llama2c };
}

/** Builds case `i` of `family` in `dir` and returns the path to load and how to load it. */
async function caseMaker(family: Family, dir: string): Promise<(rng: Rng, i: number) => { input: string; run: () => Promise<void> | void }> {
  const seeds = writeSeedFiles(dir);
  const byteFamily = (seed: string, load: (file: string) => Promise<void> | void) => {
    const original = fs.readFileSync(seed);
    const extension = path.extname(seed);
    return (rng: Rng, i: number) => {
      // A fresh name each time: overwriting (truncating) a file is several times slower on most disks.
      const input = path.join(dir, `mutant-${i}${extension}`);
      fs.writeFileSync(input, mutateBytes(original, rng));
      return { input, run: () => load(input) };
    };
  };
  switch (family) {
    case 'safetensors':
      return byteFamily(seeds.safetensors, readStore);
    case 'small-gguf':
      return byteFamily(path.join(fixtures, 'formats', 'small.gguf'), readStore);
    case 'quants-gguf':
      return byteFamily(path.join(fixtures, 'formats', 'quants.gguf'), readStore);
    case 'llama2c':
      return byteFamily(seeds.llama2c, readModel);
    case 'sharded': {
      const model = path.join(dir, 'sharded');
      const originals = writeShardedModel(model);
      const names = Object.keys(originals);
      let previous: string | undefined;
      return (rng) => {
        // Restore the file mutated last, then mutate one.
        if (previous) fs.writeFileSync(path.join(model, previous), originals[previous]!);
        previous = names[rng.int(names.length)]!;
        fs.writeFileSync(path.join(model, previous), mutateBytes(originals[previous]!, rng));
        return { input: model, run: () => readModel(model) };
      };
    }
    case 'sparse': {
      const folders = await writeSparseModels(dir);
      let previous: { folder: string; file: string } | undefined;
      return (rng) => {
        if (previous) fs.writeFileSync(path.join(previous.folder, previous.file), folders[previous.folder]![previous.file]!);
        const folder = Object.keys(folders)[rng.int(2)]!;
        // Mostly the weights, where the bitmasks and counts are.
        const file = rng.next() < 0.9 ? 'model.safetensors' : 'config.json';
        previous = { folder, file };
        fs.writeFileSync(path.join(folder, file), mutateBytes(folders[folder]![file]!, rng));
        return { input: folder, run: () => readModel(folder) };
      };
    }
    case 'gguf-metadata': {
      const tensors = await tinyGgufTensors(dir);
      return (rng, i) => {
        const input = path.join(dir, `mutant-${i}.gguf`);
        writeTinyGguf(input, tensors, mutateMetadata(rng));
        return { input, run: () => readModel(input) };
      };
    }
    case 'tokenizer-json': {
      const sources = ['tiny_bytelevel', 'tiny_llama'].map((name) => fs.readFileSync(path.join(fixtures, 'tokenizers', name, 'tokenizer.json'), 'utf8'));
      return (rng, i) => {
        const input = path.join(dir, `mutant-${i}`, 'tokenizer.json');
        fs.mkdirSync(path.dirname(input));
        const source = sources[rng.int(sources.length)]!;
        let text: string;
        if (rng.next() < 0.2) {
          text = mutateBytes(Buffer.from(source), rng).toString('latin1');
        } else {
          const json = JSON.parse(source) as Record<string, unknown>;
          mutateJson(json, rng);
          text = JSON.stringify(json);
        }
        fs.writeFileSync(input, text);
        return {
          input,
          run() {
            const tokenizer = tokenizerFromJson(input, {});
            tokenizer.decode(tokenizer.encode('Hello world, 123! aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.'));
          },
        };
      };
    }
  }
}

async function main(): Promise<void> {
  const [family, seedText, countText, dir] = process.argv.slice(2) as [Family, string, string, string];
  if (!FAMILIES.includes(family)) throw new Error(`unknown family ${family}`);
  const makeCase = await caseMaker(family, dir);
  const rng = createRng(Number(seedText));
  let opened = 0;
  let refused = 0;
  // FUZZ_CASE=N reproduces one case: the others are generated (the random sequence stays the same) but not run.
  const only = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
  for (let i = 0; i < Number(countText); i++) {
    const { input, run } = makeCase(rng, i);
    if (only !== undefined && i !== only) {
      if (family !== 'sharded' && family !== 'sparse') fs.rmSync(input, { recursive: true, force: true });
      continue;
    }
    process.stdout.write(`case ${i}\n`);
    const started = performance.now();
    try {
      await run();
      opened++;
    } catch (error) {
      const ours = error instanceof TopiaryError && !(error instanceof Failure);
      if (!ours || error.message.includes('\n') || !error.message.includes(path.basename(input))) {
        fs.cpSync(input, `${input}.failing`, { recursive: true });
        process.stdout.write(`failure ${family} case ${i} (seed ${seedText}), input kept at ${input}.failing: ${(error as Error).stack}\n`);
        process.exit(1);
      }
      if (only !== undefined) process.stdout.write(`refused ${i}: ${(error as Error).message}\n`);
      refused++;
    }
    const ms = performance.now() - started;
    if (ms > CASE_MS) {
      process.stdout.write(`failure ${family} case ${i} (seed ${seedText}) took ${ms.toFixed(0)} ms, input at ${input}\n`);
      process.exit(1);
    }
    if (family !== 'sharded' && family !== 'sparse' && only === undefined) fs.rmSync(input, { recursive: true, force: true });
    if (i % 100 === 0) {
      const { arrayBuffers, rss } = process.memoryUsage();
      if (arrayBuffers > MAX_ARRAY_BUFFER_BYTES || rss > MAX_RSS_BYTES) {
        process.stdout.write(`failure ${family} case ${i}: memory grew to ${arrayBuffers} bytes of array buffers, ${rss} resident\n`);
        process.exit(1);
      }
    }
  }
  process.stdout.write(`summary ${JSON.stringify({ opened, refused })}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename ?? '')) await main();
