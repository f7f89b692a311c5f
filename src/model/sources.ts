/**
 * Turns any supported model file into one canonical form: a ModelConfig plus tensors under
 * Hugging Face names and layouts (q/k rows in the "rotate half" RoPE layout). Formats stay
 * ignorant of architectures; this is the one place that maps a format's names to the model's.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openGguf } from '../formats/gguf.js';
import { ggufHyperparameters, type GgufHyperparameters } from '../formats/gguf-hparams.js';
import { openLlama2c } from '../formats/llama2c.js';
import { openSafetensors } from '../formats/safetensors.js';
import { readFinite, type TensorStore } from '../formats/tensors.js';
import { tokenizerFromGguf, tokenizerFromJson, tokenizerFromLlama2cBin } from '../tokenizers/load.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { TopiaryError } from '../util/errors.js';
import { openRegularFile, readJsonObject } from '../util/safe-fs.js';
import { parseHfConfig, type ModelConfig } from './config.js';
import { convertRopeRows } from './rope.js';

export interface ModelSource {
  format: 'safetensors' | 'gguf' | 'llama2c';
  /** The file or folder the user named. */
  path: string;
  config: ModelConfig;
  /** Where the config came from (config.json, or the model file itself), for error messages. */
  configFile: string;
  /** Canonical (Hugging Face) tensor names this source provides. */
  tensorNames(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  /** Stored dtype of a canonical tensor, for `inspect`. */
  dtype(name: string): string;
  read(name: string): Float32Array;
  /** The tokenizer, or why there is none (the model can still run on token ids). */
  tokenizer: Tokenizer | { missing: string };
  close(): void;
}

interface Mapping {
  storeName: string;
  /** Converts interleaved-RoPE rows to rotate-half rows, for `heads` heads. */
  unpermuteHeads?: number;
}

function mappedSource(
  format: ModelSource['format'],
  userPath: string,
  configFile: string,
  config: ModelConfig,
  store: TensorStore,
  mapping: Map<string, Mapping>,
  tokenizer: ModelSource['tokenizer'],
): ModelSource {
  const lookup = (name: string): Mapping => {
    const entry = mapping.get(name);
    if (!entry) throw new TopiaryError(`the model has no tensor "${name}"`, userPath);
    return entry;
  };
  return {
    format,
    path: userPath,
    configFile,
    config,
    tokenizer,
    tensorNames: () => [...mapping.keys()],
    has: (name) => mapping.has(name),
    shape: (name) => store.info(lookup(name).storeName).shape,
    dtype: (name) => store.info(lookup(name).storeName).dtype,
    read(name) {
      const entry = lookup(name);
      const data = readFinite(store, entry.storeName);
      if (!entry.unpermuteHeads) return data;
      const [rows, cols = 1] = store.info(entry.storeName).shape as [number, number?];
      return convertRopeRows(data, rows, cols, entry.unpermuteHeads, 'toRotateHalf');
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
  const config = parseHfConfig(readJsonObject(configFile, { within: dir }), configFile);
  const store = openSafetensors(dir);
  const mapping = new Map<string, Mapping>();
  for (const info of store.list()) mapping.set(info.name, { storeName: info.name });
  // tokenizer.bin is how models exported from llama2.c checkpoints carry their vocabulary.
  const tokenizerFile = path.join(dir, 'tokenizer.json');
  const llama2cTokenizer = path.join(dir, 'tokenizer.bin');
  const tokenizer = fs.existsSync(tokenizerFile)
    ? tryTokenizer(() => tokenizerFromJson(tokenizerFile), tokenizerFile)
    : fs.existsSync(llama2cTokenizer)
      ? tryTokenizer(() => tokenizerFromLlama2cBin(llama2cTokenizer, config.vocabSize), llama2cTokenizer)
      : { missing: `no tokenizer.json in ${dir}` };
  return mappedSource('safetensors', dir, configFile, config, store, mapping, tokenizer);
}

/** GGUF tensor names of the llama-family block, and their Hugging Face counterparts (also used by the GGUF writer). */
export const GGUF_LAYER_NAMES: Record<string, string> = {
  attn_norm: 'input_layernorm',
  ffn_norm: 'post_attention_layernorm',
  attn_q: 'self_attn.q_proj',
  attn_k: 'self_attn.k_proj',
  attn_v: 'self_attn.v_proj',
  attn_output: 'self_attn.o_proj',
  ffn_gate: 'mlp.gate_proj',
  ffn_up: 'mlp.up_proj',
  ffn_down: 'mlp.down_proj',
};

/** GGUF architectures we read, and whether llama.cpp stored their q/k rows interleaved. */
const GGUF_ARCHITECTURES: Record<string, { modelType: string; interleavedRope: boolean }> = {
  llama: { modelType: 'llama', interleavedRope: true },
  mistral: { modelType: 'mistral', interleavedRope: true },
  qwen2: { modelType: 'qwen2', interleavedRope: false },
  // The LLaMA block with per-layer head counts and MLP widths: how structurally pruned models are stored.
  deci: { modelType: 'llama', interleavedRope: true },
};

function fromGguf(file: string): ModelSource {
  const store = openGguf(file);
  const meta = store.metadata;
  const arch = String(meta['general.architecture'] ?? '');
  const known = GGUF_ARCHITECTURES[arch];
  if (!known) {
    store.close();
    throw new TopiaryError(`unsupported architecture "${arch}" (supported: ${Object.keys(GGUF_ARCHITECTURES).join(', ')})`, file);
  }
  let hp: GgufHyperparameters;
  try {
    hp = ggufHyperparameters(store, arch);
  } catch (error) {
    store.close();
    throw error;
  }
  const mapping = new Map<string, Mapping>();
  const add = (hfName: string, storeName: string, unpermuteHeads?: number) => {
    if (store.has(storeName)) mapping.set(hfName, { storeName, ...(unpermuteHeads ? { unpermuteHeads } : {}) });
  };
  add('model.embed_tokens.weight', 'token_embd.weight');
  add('model.norm.weight', 'output_norm.weight');
  add('lm_head.weight', 'output.weight');
  for (let layer = 0; layer < hp.numLayers; layer++) {
    for (const [ggufName, hfName] of Object.entries(GGUF_LAYER_NAMES)) {
      for (const kind of ['weight', 'bias']) {
        const heads = !known.interleavedRope ? undefined : ggufName === 'attn_q' ? hp.headsPerLayer[layer] : ggufName === 'attn_k' ? hp.kvHeadsPerLayer[layer] : undefined;
        add(`model.layers.${layer}.${hfName}.${kind}`, `blk.${layer}.${ggufName}.${kind}`, heads);
      }
    }
  }
  if (store.has('rope_freqs.weight')) {
    store.close();
    throw new TopiaryError('GGUF files with a rope_freqs tensor (Llama 3.1 rope scaling) are not supported yet', file);
  }
  const config: ModelConfig = {
    modelType: known.modelType,
    hiddenSize: hp.hiddenSize,
    intermediateSize: Math.max(...hp.ffnPerLayer),
    numLayers: hp.numLayers,
    numHeads: Math.max(...hp.headsPerLayer),
    numKvHeads: Math.max(...hp.kvHeadsPerLayer),
    headDim: hp.headDim,
    vocabSize: hp.vocabSize,
    rmsNormEps: hp.rmsNormEps,
    ropeTheta: hp.ropeTheta,
    ropeScaling: { type: 'none' },
    maxPositionEmbeddings: hp.contextLength,
    tieWordEmbeddings: !store.has('output.weight'),
    bosTokenId: hp.bosTokenId,
    eosTokenId: hp.eosTokenId,
  };
  const tokenizer = tryTokenizer(() => tokenizerFromGguf(meta), file);
  return mappedSource('gguf', file, file, config, store, mapping, tokenizer);
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
  const config: ModelConfig = {
    modelType: 'llama',
    hiddenSize: meta.dim,
    intermediateSize: meta.hiddenDim,
    numLayers: meta.nLayers,
    numHeads: meta.nHeads,
    numKvHeads: meta.nKvHeads,
    headDim: meta.dim / meta.nHeads,
    vocabSize: meta.vocabSize,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: { type: 'none' },
    maxPositionEmbeddings: meta.seqLen,
    tieWordEmbeddings: meta.sharedClassifier,
    bosTokenId: 1,
    eosTokenId: 2,
  };
  const tokenizerFile = path.join(path.dirname(file), 'tokenizer.bin');
  const tokenizer = fs.existsSync(tokenizerFile)
    ? tryTokenizer(() => tokenizerFromLlama2cBin(tokenizerFile, meta.vocabSize), tokenizerFile)
    : { missing: `no tokenizer.bin beside ${file}` };
  return mappedSource('llama2c', file, file, config, store, mapping, tokenizer);
}

/** Opens a model: a Hugging Face folder, a .gguf file, or a llama2.c checkpoint. */
export function openModelSource(modelPath: string): ModelSource {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(modelPath);
  } catch {
    throw new TopiaryError('no such file or folder', modelPath);
  }
  if (stat.isDirectory()) return fromHfFolder(modelPath);
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
