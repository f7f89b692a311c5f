/**
 * Turns any supported model file into one canonical form: a ModelConfig plus tensors under
 * Hugging Face names and layouts (q/k rows in the "rotate half" RoPE layout). Formats stay
 * ignorant of architectures; this is the one place that maps a format's names to the model's.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openGguf } from '../formats/gguf.js';
import { ggufHyperparameters } from '../formats/gguf-hparams.js';
import { openLlama2c } from '../formats/llama2c.js';
import { decompressingStore, sparseStorageOf } from '../formats/compressed-tensors.js';
import { openSafetensors } from '../formats/safetensors.js';
import { readFinite, type SparseStorage, type TensorStore } from '../formats/tensors.js';
import { hasVocabMerges, tokenizerFromGguf, tokenizerFromJson, tokenizerFromLlama2cBin, tokenizerFromVocabMerges } from '../tokenizers/load.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { TopiaryError } from '../util/errors.js';
import { openRegularFile, readJsonObject } from '../util/safe-fs.js';
import type { ModelConfig } from './config.js';
import { convertRopeRows } from './components/rope.js';
import { familyFor, familyForGguf, type Family } from './families/index.js';
import type { GgufTensors, StoredForm } from './families/family.js';
import { ggufTensorNames } from './families/gguf-names.js';
import { llama } from './families/llama.js';

export interface ModelSource {
  format: 'safetensors' | 'gguf' | 'llama2c';
  /** The file or folder the user named. */
  path: string;
  config: ModelConfig;
  /** The code that runs this model. */
  family: Family;
  /** Where the config came from (config.json, or the model file itself), for error messages. */
  configFile: string;
  /** Canonical (Hugging Face) tensor names this source provides. */
  tensorNames(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  /** Stored dtype of a canonical tensor, for `inspect`. */
  dtype(name: string): string;
  /**
   * How the file stores a canonical matrix: 'dense', or compressed ('bitmask': any sparsity; '2:4':
   * at most two nonzeros in every group of four consecutive weights of a row of the canonical
   * [out, in] matrix). read() returns the dense values either way.
   */
  storage(name: string): TensorStorage;
  read(name: string): Float32Array;
  /**
   * Rows `rows` (ascending, distinct) of a 2-D tensor, packed in that order: the embedding rows a
   * batch of tokens needs, read without the rest of the table.
   */
  readRows(name: string, rows: readonly number[]): Float32Array;
  /** The tokenizer, or why there is none (the model can still run on token ids). */
  tokenizer: Tokenizer | { missing: string };
  close(): void;
}

export type TensorStorage = 'dense' | SparseStorage;

interface Mapping {
  storeName: string;
  /** Converts interleaved-RoPE rows to rotate-half rows, for `heads` heads. */
  unpermuteHeads?: number;
  /** Stored [in, out] (GPT-2's Conv1D): transposed to the canonical [out, in]. */
  transposed?: boolean;
  /** Reorders the stored [rows, cols] into the canonical row order (GGUF's layouts that differ from HF's). */
  reorderRows?: (data: Float32Array, rows: number, cols: number) => Float32Array;
  /** Stored with this added to every element (GGUF Gemma norms): subtracted on read. */
  offset?: number;
  /** Rows start..start+count−1 of a stored tensor that fuses several (GGUF Phi-2's attn_qkv). */
  rowRange?: { start: number; count: number };
  /** Stored in another shape or form than Hugging Face's (GGUF Mamba's A and conv1d). */
  form?: StoredForm;
}

/** data [rows, cols] → [cols, rows]. */
export function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

/** Whether `name` is a weight the family stores [in, out] (GPT-2's Conv1D). */
function isTransposed(family: Family, name: string): boolean {
  const layerTensor = /^.*?\.\d+\.(.*)\.weight$/.exec(name)?.[1];
  return layerTensor !== undefined && family.linears.some((spec) => spec.transposed && spec.name === layerTensor);
}

/** How canonical tensor `name` of `shape` is stored in a Hugging Face file of its family, and the conversion to that form. */
export function storedLayout(family: Family, name: string, shape: number[]): { shape: number[]; transposed: boolean; convert: (data: Float32Array) => Float32Array } {
  if (!isTransposed(family, name)) return { shape, transposed: false, convert: (data) => data };
  const [rows, cols] = shape as [number, number];
  return { shape: [cols, rows], transposed: true, convert: (data) => transpose(data, rows, cols) };
}

/** The canonical shape of the tensor `entry` maps to. */
function mappedShape(store: TensorStore, entry: Mapping): number[] {
  const shape = store.info(entry.storeName).shape;
  if (entry.form?.shape) return entry.form.shape(shape);
  if (entry.rowRange) return [entry.rowRange.count, ...shape.slice(1)];
  return entry.transposed ? [shape[1]!, shape[0]!] : shape;
}

function mappedSource(
  format: ModelSource['format'],
  userPath: string,
  configFile: string,
  config: ModelConfig,
  family: Family,
  store: TensorStore,
  mapping: Map<string, Mapping>,
  tokenizer: ModelSource['tokenizer'],
): ModelSource {
  const lookup = (name: string): Mapping => {
    const entry = mapping.get(name);
    if (!entry) throw new TopiaryError(`the model has no tensor "${name}"`, userPath);
    return entry;
  };
  const read = (name: string): Float32Array => {
    const entry = lookup(name);
    const [storedRows, cols = 1] = store.info(entry.storeName).shape as [number, number?];
    const { start, count: rows } = entry.rowRange ?? { start: 0, count: storedRows };
    const data = readFinite(store, entry.storeName, entry.rowRange && { first: start, count: rows });
    if (entry.transposed) return transpose(data, rows, cols);
    if (entry.reorderRows) return entry.reorderRows(data, rows, cols);
    if (entry.offset) return Float32Array.from(data, (value) => value - entry.offset!);
    if (entry.form?.values) return entry.form.values(data);
    if (!entry.unpermuteHeads) return data;
    return convertRopeRows(data, rows, cols, entry.unpermuteHeads, 'toRotateHalf');
  };
  return {
    format,
    path: userPath,
    configFile,
    config,
    family,
    tokenizer,
    tensorNames: () => [...mapping.keys()],
    has: (name) => mapping.has(name),
    shape: (name) => mappedShape(store, lookup(name)),
    dtype: (name) => store.info(lookup(name).storeName).dtype,
    storage(name) {
      const entry = lookup(name);
      const storage = store.info(entry.storeName).storage ?? 'dense';
      // Groups of four run along the stored rows: transposed, they are no longer 2:4 in the canonical rows.
      return storage === '2:4' && entry.transposed ? 'bitmask' : storage;
    },
    read,
    readRows(name, rows) {
      const entry = lookup(name);
      const [storedRows, cols = 1] = store.info(entry.storeName).shape as [number, number?];
      const { start, count } = entry.rowRange ?? { start: 0, count: storedRows };
      const out = new Float32Array(rows.length * cols);
      // Tensors stored in another layout are converted whole, then gathered.
      if (entry.transposed || entry.reorderRows || entry.offset || entry.form || entry.unpermuteHeads) {
        const whole = read(name);
        rows.forEach((row, i) => out.set(whole.subarray(row * cols, (row + 1) * cols), i * cols));
        return out;
      }
      // Each run of consecutive rows is one read.
      for (let i = 0; i < rows.length; ) {
        let end = i + 1;
        while (end < rows.length && rows[end] === rows[end - 1]! + 1) end++;
        const first = rows[i]!;
        if (first < 0 || rows[end - 1]! >= count) throw new TopiaryError(`rows ${first}..${rows[end - 1]} are outside tensor "${name}" of ${count} rows`, userPath);
        out.set(readFinite(store, entry.storeName, { first: start + first, count: end - i }), i * cols);
        i = end;
      }
      return out;
    },
    close: () => store.close(),
  };
}

function tryTokenizer(load: () => Tokenizer, what: string): ModelSource['tokenizer'] {
  try {
    return load();
  } catch (error) {
    if (error instanceof TopiaryError) return { missing: error.message };
    throw new TopiaryError(`could not read the tokenizer: ${(error as Error).message}`, what);
  }
}

function fromHfFolder(dir: string): ModelSource {
  const configFile = path.join(dir, 'config.json');
  if (!fs.existsSync(configFile)) throw new TopiaryError('not a model folder: config.json is missing', dir);
  const json = readJsonObject(configFile, { within: dir });
  if (typeof json.model_type !== 'string') throw new TopiaryError('missing required field "model_type"', configFile);
  const family = familyFor(json.model_type, configFile);
  const config = family.parseConfig(json, configFile);
  const sparse = sparseStorageOf(json, configFile);
  const files = openSafetensors(dir);
  const store = sparse ? decompressingStore(files, sparse) : files;
  const mapping = new Map<string, Mapping>();
  for (const info of store.list()) {
    const name = family.canonicalTensorName ? family.canonicalTensorName(info.name) : info.name;
    if (name !== undefined) mapping.set(name, { storeName: info.name, ...(isTransposed(family, name) ? { transposed: true } : {}) });
  }
  // tokenizer.bin is how models exported from llama2.c checkpoints carry their vocabulary.
  const tokenizerFile = path.join(dir, 'tokenizer.json');
  const llama2cTokenizer = path.join(dir, 'tokenizer.bin');
  const tokenizer = fs.existsSync(tokenizerFile)
    ? tryTokenizer(() => tokenizerFromJson(tokenizerFile), tokenizerFile)
    : fs.existsSync(llama2cTokenizer)
      ? tryTokenizer(() => tokenizerFromLlama2cBin(llama2cTokenizer, config.vocabSize), llama2cTokenizer)
      : hasVocabMerges(dir)
        ? tryTokenizer(() => tokenizerFromVocabMerges(dir), path.join(dir, 'vocab.json'))
        : { missing: `no tokenizer.json (nor vocab.json + merges.txt) in ${dir}` };
  return mappedSource('safetensors', dir, configFile, config, family, store, mapping, tokenizer);
}

function fromGguf(file: string): ModelSource {
  const store = openGguf(file);
  try {
    const meta = store.metadata;
    const arch = String(meta['general.architecture'] ?? '');
    const { family, modelType, interleavedRope } = familyForGguf(arch, file);
    const layout = family.gguf!;
    if (store.has('rope_freqs.weight')) throw new TopiaryError('GGUF files with a rope_freqs tensor (Llama 3.1 rope scaling) are not supported yet', file);
    // Every size in the header is bounded by the tensors present before anything loops over it.
    const { numLayers } = ggufHyperparameters(store, arch, { attention: !layout.noAttention });
    const perLayer = (key: string): number | undefined => {
      const value = meta[`${arch}.${key}`];
      return typeof value === 'number' ? value : undefined;
    };
    const mapping = new Map<string, Mapping>();
    const add = (hfName: string, storeName: string, unpermuteHeads?: number, reorderRows?: Mapping['reorderRows']) => {
      const offset = layout.storedOffset?.(hfName);
      const form = layout.storedForm?.(hfName);
      if (store.has(storeName)) mapping.set(hfName, { storeName, ...(unpermuteHeads ? { unpermuteHeads } : {}), ...(reorderRows ? { reorderRows } : {}), ...(offset ? { offset } : {}), ...(form ? { form } : {}) });
    };
    const headCount = (key: string, layer: number): number => {
      const value = meta[`${arch}.${key}`];
      return Array.isArray(value) ? Number(value[layer]) : (perLayer(key) ?? perLayer('attention.head_count')!);
    };
    for (const { gguf, hf, layer, blockName } of ggufTensorNames(family, numLayers)) {
      if (layer === undefined || blockName === undefined) {
        add(hf, gguf);
        continue;
      }
      const heads = !interleavedRope ? undefined : blockName === 'attn_q' ? headCount('attention.head_count', layer) : blockName === 'attn_k' ? headCount('attention.head_count_kv', layer) : undefined;
      const toHf = layout.rowsToHf?.[blockName];
      const reorderRows = toHf && ((data: Float32Array, rows: number, cols: number) => toHf(data, rows, cols, headCount('attention.head_count', layer)));
      add(hf, gguf, heads, reorderRows);
    }
    for (let layer = 0; layer < numLayers; layer++) {
      for (const [ggufName, split] of Object.entries(layout.fusedLayerNames ?? {})) {
        for (const kind of ['weight', 'bias']) {
          const storeName = `blk.${layer}.${ggufName}.${kind}`;
          if (!store.has(storeName)) continue;
          let start = 0;
          for (const part of split(store.info(storeName).shape[0]!, meta, arch)) {
            mapping.set(`${family.layerPrefix(layer)}${part.name}.${kind}`, { storeName, rowRange: { start, count: part.rows } });
            start += part.rows;
          }
        }
      }
    }
    const tensors: GgufTensors = {
      has: (name) => mapping.has(name),
      shape: (name) => mappedShape(store, mapping.get(name)!),
      readStored: (ggufName) => (store.has(ggufName) ? store.read(ggufName) : undefined),
    };
    const config = layout.parseConfig(meta, arch, modelType, tensors, file);
    const tokenizer = tryTokenizer(() => tokenizerFromGguf(meta), file);
    return mappedSource('gguf', file, file, config, family, store, mapping, tokenizer);
  } catch (error) {
    store.close();
    throw error;
  }
}

function fromLlama2c(file: string): ModelSource {
  const store = openLlama2c(file);
  const meta = store.metadata as { dim: number; hiddenDim: number; nLayers: number; nHeads: number; nKvHeads: number; vocabSize: number; seqLen: number; sharedClassifier: boolean };
  const mapping = new Map<string, Mapping>();
  const add = (hfName: string, storeName: string, unpermuteHeads?: number) =>
    mapping.set(hfName, { storeName, ...(unpermuteHeads ? { unpermuteHeads } : {}) });
  add('model.embed_tokens.weight', 'tok_embeddings.weight');
  add('model.norm.weight', 'norm.weight');
  if (!meta.sharedClassifier) add('lm_head.weight', 'output.weight');
  for (let layer = 0; layer < meta.nLayers; layer++) {
    const hf = `model.layers.${layer}.`;
    const l2 = `layers.${layer}.`;
    add(`${hf}input_layernorm.weight`, `${l2}attention_norm.weight`);
    add(`${hf}post_attention_layernorm.weight`, `${l2}ffn_norm.weight`);
    add(`${hf}self_attn.q_proj.weight`, `${l2}attention.wq.weight`, meta.nHeads);
    add(`${hf}self_attn.k_proj.weight`, `${l2}attention.wk.weight`, meta.nKvHeads);
    add(`${hf}self_attn.v_proj.weight`, `${l2}attention.wv.weight`);
    add(`${hf}self_attn.o_proj.weight`, `${l2}attention.wo.weight`);
    add(`${hf}mlp.gate_proj.weight`, `${l2}feed_forward.w1.weight`);
    add(`${hf}mlp.down_proj.weight`, `${l2}feed_forward.w2.weight`);
    add(`${hf}mlp.up_proj.weight`, `${l2}feed_forward.w3.weight`);
  }
  const headDim = meta.dim / meta.nHeads;
  const config: ModelConfig = {
    modelType: 'llama',
    hiddenSize: meta.dim,
    intermediateSize: meta.hiddenDim,
    numLayers: meta.nLayers,
    numHeads: meta.nHeads,
    numKvHeads: meta.nKvHeads,
    headDim,
    vocabSize: meta.vocabSize,
    maxPositionEmbeddings: meta.seqLen,
    tieWordEmbeddings: meta.sharedClassifier,
    bosTokenId: 1,
    eosTokenId: 2,
    norm: { kind: 'rms', eps: 1e-5, weightOffset: 0 },
    rope: { theta: 10000, scaling: { type: 'none' }, rotaryDim: headDim, layout: 'half' },
    attention: { scale: 1 / Math.sqrt(headDim) },
    activation: 'silu',
  };
  const tokenizerFile = path.join(path.dirname(file), 'tokenizer.bin');
  const tokenizer = fs.existsSync(tokenizerFile)
    ? tryTokenizer(() => tokenizerFromLlama2cBin(tokenizerFile, meta.vocabSize), tokenizerFile)
    : { missing: `no tokenizer.bin beside ${file}` };
  return mappedSource('llama2c', file, file, config, llama, store, mapping, tokenizer);
}

/** Opens a model: a Hugging Face folder, a .gguf file, or a llama2.c checkpoint. */
export function openModelSource(modelPath: string): ModelSource {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(modelPath);
  } catch {
    throw new TopiaryError('no such file or folder', modelPath);
  }
  // A folder prune wrote as GGUF (uneven blocks or added biases) holds model.gguf and no config.json.
  if (stat.isDirectory()) {
    const gguf = path.join(modelPath, 'model.gguf');
    return !fs.existsSync(path.join(modelPath, 'config.json')) && fs.existsSync(gguf) ? fromGguf(gguf) : fromHfFolder(modelPath);
  }
  const head = Buffer.alloc(4);
  const { fd } = openRegularFile(modelPath);
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head.toString('latin1') === 'GGUF') return fromGguf(modelPath);
  if (modelPath.endsWith('.safetensors')) {
    return fromHfFolder(path.dirname(modelPath));
  }
  if (modelPath.endsWith('.bin')) return fromLlama2c(modelPath);
  throw new TopiaryError('unrecognised model file (expected a Hugging Face folder, a .gguf file or a llama2.c .bin checkpoint)', modelPath);
}
