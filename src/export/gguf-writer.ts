/**
 * GGUF v3 writer, and the export of any model Topiary reads (structurally pruned ones included) to
 * a GGUF file that llama.cpp runs.
 *
 * Layout written: magic "GGUF", version 3, tensor count, key/value count, the key/values, the
 * tensor infos (name, dims in ggml order — the row-major shape reversed —, type, offset), padding to
 * the alignment (32), then each tensor's bytes, every one starting at a multiple of the alignment.
 * Tensors are produced lazily one at a time, so memory holds one tensor however large the model.
 *
 * Each family says how llama.cpp runs it (GgufLayout.writing in src/model/families): the
 * architecture, which biases that architecture loads, its extra metadata, and what it would compute
 * differently (refused). llama.cpp reads `attention.head_count`, `attention.head_count_kv` and
 * `feed_forward_length` as per-layer arrays for every architecture, but only `deci` (DeciLM /
 * Nemotron-NAS: the LLaMA block with per-layer sizes and optional biases on every projection)
 * builds each layer's tensors with that layer's sizes (llama.cpp src/models/deci.cpp; the others
 * size every layer from n_head()/n_ff() of layer 0). So LLaMA-block results with uneven layers, or
 * with biases their own architecture does not load (Qwen2's o/down), are written as `deci`; other
 * families' uneven results cannot be written. `llama` and `deci` rotate interleaved pairs, so q/k
 * rows are permuted back from Hugging Face's rotate-half layout for them.
 */
import * as fs from 'node:fs';
import { GgufValueType, openGguf, type GgufValue } from '../formats/gguf.js';
import { floatToHalfBits } from '../formats/binary.js';
import { quantizeQ4_0, quantizeQ4_K, quantizeQ5_0, quantizeQ8_0 } from '../formats/ggml-quantize.js';
import { GGML_TYPES, ggmlByteLength, type GgmlType } from '../formats/ggml-quants.js';
import type { CausalLM } from '../model/causal-lm.js';
import type { Family, GgufWriting } from '../model/families/family.js';
import { ggufTensorNames } from '../model/families/gguf-names.js';
import type { ModelSource } from '../model/sources.js';
import { writeAll, writeFileAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
import { firstNonFinite16, requireFinite } from '../util/finite.js';
import { convertRopeRows } from '../model/components/rope.js';
import type { GgufVocabulary } from '../tokenizers/gguf-export.js';
import { tokenKindToGguf } from '../tokenizers/score-merge.js';

const ALIGNMENT = 32;

/** One key/value; arrays give the type of their elements. */
export interface GgufKeyValue {
  key: string;
  type: GgufValueType;
  value: GgufValue;
  /** For `type` ARRAY: the element type (arrays of arrays are not written). */
  elementType?: GgufValueType;
}

export type GgufTensorType = 'F32' | 'F16' | 'Q8_0' | 'Q4_0' | 'Q5_0' | 'Q4_K';

export interface GgufTensorToWrite {
  name: string;
  /** Row-major (PyTorch) shape; GGUF stores it reversed. */
  shape: number[];
  type: GgufTensorType;
  data: () => Float32Array;
}

class ByteSink {
  private readonly chunks: Buffer[] = [];
  length = 0;
  push(buffer: Buffer): void {
    this.chunks.push(buffer);
    this.length += buffer.length;
  }
  u32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value);
    this.push(b);
  }
  u64(value: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    this.push(b);
  }
  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function writeScalar(sink: ByteSink, type: GgufValueType, value: GgufValue, key: string): void {
  const fail = () => {
    throw new TopiaryError(`GGUF key "${key}": cannot write ${JSON.stringify(value)} as ${GgufValueType[type]}`);
  };
  if (type === GgufValueType.STRING) {
    if (typeof value !== 'string') fail();
    sink.string(value as string);
    return;
  }
  if (type === GgufValueType.BOOL) {
    if (typeof value !== 'boolean') fail();
    sink.push(Buffer.from([value ? 1 : 0]));
    return;
  }
  if (typeof value !== 'number' && typeof value !== 'bigint') fail();
  const b = Buffer.alloc(type === GgufValueType.UINT64 || type === GgufValueType.INT64 || type === GgufValueType.FLOAT64 ? 8 : 4);
  const n = Number(value);
  switch (type) {
    case GgufValueType.UINT32: b.writeUInt32LE(n); break;
    case GgufValueType.INT32: b.writeInt32LE(n); break;
    case GgufValueType.FLOAT32: b.writeFloatLE(n); break;
    case GgufValueType.FLOAT64: b.writeDoubleLE(n); break;
    case GgufValueType.UINT64: b.writeBigUInt64LE(BigInt(value as number | bigint)); break;
    case GgufValueType.INT64: b.writeBigInt64LE(BigInt(value as number | bigint)); break;
    default: fail();
  }
  sink.push(b);
}

function writeKeyValue(sink: ByteSink, kv: GgufKeyValue): void {
  sink.string(kv.key);
  sink.u32(kv.type);
  if (kv.type !== GgufValueType.ARRAY) {
    writeScalar(sink, kv.type, kv.value, kv.key);
    return;
  }
  if (!Array.isArray(kv.value) || kv.elementType === undefined || kv.elementType === GgufValueType.ARRAY) {
    throw new TopiaryError(`GGUF key "${kv.key}": an array needs a scalar element type`);
  }
  sink.u32(kv.elementType);
  sink.u64(kv.value.length);
  for (const item of kv.value) writeScalar(sink, kv.elementType, item, kv.key);
}

const TENSOR_TYPES: Record<GgufTensorType, GgmlType> = { F32: GGML_TYPES.F32, F16: GGML_TYPES.F16, Q8_0: GGML_TYPES.Q8_0, Q4_0: GGML_TYPES.Q4_0, Q5_0: GGML_TYPES.Q5_0, Q4_K: GGML_TYPES.Q4_K };

const QUANTIZERS = { Q8_0: quantizeQ8_0, Q4_0: quantizeQ4_0, Q5_0: quantizeQ5_0, Q4_K: quantizeQ4_K };

/** The tensor's bytes; refuses a NaN or infinity (or a value F16 cannot hold) rather than write it. */
function encodeTensor(tensor: GgufTensorToWrite, data: Float32Array, file: string): Uint8Array {
  requireFinite(data, `refusing to write tensor "${tensor.name}": it`, file);
  switch (tensor.type) {
    case 'F32':
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    case 'F16': {
      const bits = new Uint16Array(data.length);
      floatToHalfBits(data, bits);
      const overflow = firstNonFinite16(bits, 'F16');
      if (overflow >= 0) throw new TopiaryError(`refusing to write tensor "${tensor.name}": its value ${data[overflow]} at index ${overflow} does not fit F16`, file);
      return new Uint8Array(bits.buffer);
    }
    default:
      return QUANTIZERS[tensor.type](data);
  }
}

/** Writes a GGUF v3 file atomically: key/values in the given order, tensors in the given order. */
export function writeGguf(file: string, keyValues: readonly GgufKeyValue[], tensors: readonly GgufTensorToWrite[]): void {
  const header = new ByteSink();
  header.u32(0x46554747);
  header.u32(3);
  header.u64(tensors.length);
  header.u64(keyValues.length);
  for (const kv of keyValues) writeKeyValue(header, kv);
  const sizes: number[] = [];
  let offset = 0;
  for (const tensor of tensors) {
    const type = TENSOR_TYPES[tensor.type];
    const elements = tensor.shape.reduce((a, b) => a * b, 1);
    if (tensor.shape.length === 0 || tensor.shape.length > 4 || !tensor.shape.every((d) => Number.isInteger(d) && d > 0)) {
      throw new TopiaryError(`tensor "${tensor.name}" has shape [${tensor.shape}], which GGUF cannot hold`, file);
    }
    if (tensor.shape[tensor.shape.length - 1]! % type.blockSize !== 0) {
      throw new TopiaryError(`tensor "${tensor.name}": rows of ${tensor.shape.at(-1)} values are not whole ${type.name} blocks`, file);
    }
    header.string(tensor.name);
    header.u32(tensor.shape.length);
    for (const dim of [...tensor.shape].reverse()) header.u64(dim);
    header.u32(type.id);
    header.u64(offset);
    const size = ggmlByteLength(type, elements);
    sizes.push(size);
    offset += Math.ceil(size / ALIGNMENT) * ALIGNMENT;
  }
  const headerBytes = header.bytes();
  const padding = (n: number) => new Uint8Array((ALIGNMENT - (n % ALIGNMENT)) % ALIGNMENT);
  writeFileAtomic(file, (fd) => {
    writeAll(fd, headerBytes);
    writeAll(fd, padding(headerBytes.length));
    tensors.forEach((tensor, i) => {
      const data = tensor.data();
      if (data.length !== tensor.shape.reduce((a, b) => a * b, 1)) {
        throw new TopiaryError(`tensor "${tensor.name}" has shape [${tensor.shape}] but ${data.length} values`, file);
      }
      writeAll(fd, encodeTensor(tensor, data, file));
      writeAll(fd, padding(sizes[i]!));
    });
  });
}


/** Types for metadata values carried over from a source GGUF (whose reader keeps values, not types). */
function inferKeyValue(key: string, value: GgufValue): GgufKeyValue | undefined {
  const scalarType = (v: GgufValue, floatKey: boolean): GgufValueType | undefined => {
    if (typeof v === 'string') return GgufValueType.STRING;
    if (typeof v === 'boolean') return GgufValueType.BOOL;
    if (typeof v === 'bigint') return GgufValueType.UINT64;
    if (typeof v === 'number') return floatKey || !Number.isInteger(v) ? GgufValueType.FLOAT32 : v < 0 ? GgufValueType.INT32 : GgufValueType.UINT32;
    return undefined;
  };
  const floatKey = key === 'tokenizer.ggml.scores';
  if (Array.isArray(value)) {
    const first = value[0];
    if (first === undefined || Array.isArray(first)) return undefined;
    // llama.cpp reads integer arrays (token types) as int32, as gguf-py writes them.
    let elementType = scalarType(first, floatKey)!;
    if (elementType === GgufValueType.UINT32) elementType = value.every((v) => Number.isInteger(v)) ? GgufValueType.INT32 : GgufValueType.FLOAT32;
    return { key, type: GgufValueType.ARRAY, elementType, value };
  }
  const type = scalarType(value, floatKey);
  return type === undefined ? undefined : { key, type, value };
}

/** The tensor types `topiary export --quant` offers. */
export const GGUF_QUANTS: readonly GgufTensorType[] = ['F32', 'F16', 'Q8_0', 'Q4_0', 'Q4_K'];

export interface GgufExportOptions {
  /**
   * Type of the 2-D tensors (weights, embeddings); 1-D ones (norms, biases) stay F32 as llama.cpp's
   * converter keeps them. A matrix whose rows are not whole blocks falls back (matrixType).
   */
  dtype: GgufTensorType;
  /** general.name. */
  name?: string;
}

interface LayerSizes {
  heads: number;
  kvHeads: number;
  ffn: number;
}

/**
 * tokenizer.ggml.* key/values for `vocabulary`, padded with unused `[PADn]` tokens to the model's
 * `vocabSize` embedding rows as convert_hf_to_gguf.py pads them, or why llama.cpp could not load it.
 */
function tokenizerKeyValues(vocabulary: GgufVocabulary, vocabSize: number): GgufKeyValue[] | { unsupported: string } {
  const tokens = [...vocabulary.tokens];
  const kinds = [...vocabulary.kinds];
  const scores = vocabulary.scores && [...vocabulary.scores];
  if (tokens.length > vocabSize) return { unsupported: `the tokenizer has ${tokens.length} tokens, the model's embedding ${vocabSize} rows` };
  // llama.cpp looks up the newline of a SentencePiece vocabulary when loading it, and fails without one.
  if (vocabulary.model === 'llama' && !tokens.includes('<0x0A>') && !tokens.includes('\n')) {
    return { unsupported: 'the SentencePiece-style vocabulary has no newline token (<0x0A>), without which llama.cpp does not load it' };
  }
  for (let id = tokens.length; id < vocabSize; id++) {
    tokens.push(`[PAD${id}]`);
    kinds.push('unused');
    scores?.push(-1000);
  }
  const key = (name: string) => `tokenizer.ggml.${name}`;
  const array = (name: string, elementType: GgufValueType, value: GgufValue): GgufKeyValue => ({ key: key(name), type: GgufValueType.ARRAY, elementType, value });
  const keyValues: GgufKeyValue[] = [
    { key: key('model'), type: GgufValueType.STRING, value: vocabulary.model },
    { key: key('pre'), type: GgufValueType.STRING, value: vocabulary.pre },
    array('tokens', GgufValueType.STRING, tokens),
  ];
  if (scores) keyValues.push(array('scores', GgufValueType.FLOAT32, scores));
  keyValues.push(array('token_type', GgufValueType.INT32, kinds.map(tokenKindToGguf)));
  if (vocabulary.merges) keyValues.push(array('merges', GgufValueType.STRING, vocabulary.merges));
  const ids = { bos_token_id: vocabulary.bosId, eos_token_id: vocabulary.eosId, unknown_token_id: vocabulary.unknownId, padding_token_id: vocabulary.paddingId };
  for (const [name, id] of Object.entries(ids)) if (id !== undefined) keyValues.push({ key: key(name), type: GgufValueType.UINT32, value: id });
  keyValues.push(
    { key: key('add_bos_token'), type: GgufValueType.BOOL, value: vocabulary.addBos },
    { key: key('add_space_prefix'), type: GgufValueType.BOOL, value: vocabulary.addSpacePrefix },
  );
  return keyValues;
}

export interface GgufExportResult {
  architecture: string;
  bytes: number;
  /** How many tensors were written in each type (1-D ones and fallbacks stay in higher precision). */
  tensorTypes: Partial<Record<GgufTensorType, number>>;
  /** What the file lacks or may do differently from Topiary, e.g. why it has no tokenizer. */
  warnings: string[];
}


/**
 * The type of a matrix with rows of `cols` values, as llama.cpp's quantize chooses it
 * (tensor_type_fallback): rows that are not whole Q4_K super-blocks of 256 take Q5_0 (SmolLM2's
 * 576-wide rows do), and rows that are not whole blocks of 32 take F16.
 */
function matrixType(requested: GgufTensorType, cols: number): GgufTensorType {
  const type = requested === 'Q4_K' && cols % 256 !== 0 ? 'Q5_0' : requested;
  return cols % TENSOR_TYPES[type].blockSize === 0 ? type : 'F16';
}

/** llama.cpp's general.file_type for each type (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_0, MOSTLY_Q5_0, MOSTLY_Q4_K_S). */
const FILE_TYPES: Record<GgufTensorType, number> = { F32: 0, F16: 1, Q8_0: 7, Q4_0: 2, Q5_0: 8, Q4_K: 14 };

/** What a result will be, for checks before it exists: blocks of different shapes, biases added to these roles. */
export interface ExpectedResult {
  unevenLayers?: boolean;
  addedBiasRoles?: readonly string[];
}

interface Plan {
  arch: string;
  writing: GgufWriting;
  /** The architecture rotates interleaved pairs (llama, deci): q/k rows are permuted from rotate-half. */
  interleaved: boolean;
  /** Per-layer sizes, for an architecture that takes them (deci). */
  perLayer: boolean;
}

/** GGUF block name of each linear layer of the family (the inverse of the family's layerNames). */
function linearGgufNames(family: Family): Map<string, string> {
  const byHfName = new Map(Object.entries(family.gguf?.layerNames ?? {}).map(([gguf, hf]) => [hf, gguf]));
  return new Map(family.linears.flatMap((spec) => (byHfName.has(spec.name) ? [[spec.role, byHfName.get(spec.name)!] as const] : [])));
}

/** Whether the blocks' linear layers differ in shape, and which carry biases (GGUF block names). */
function observedResult(source: ModelSource): { uneven: boolean; biases: Set<string> } {
  const { family, config } = source;
  const ggufNames = linearGgufNames(family);
  let uneven = false;
  const biases = new Set<string>();
  for (const spec of family.linears) {
    const name = (layer: number, kind: string) => `${family.layerPrefix(layer)}${spec.name}.${kind}`;
    for (let layer = 0; layer < config.numLayers; layer++) {
      if (source.shape(name(layer, 'weight')).join('x') !== source.shape(name(0, 'weight')).join('x')) uneven = true;
      if (source.has(name(layer, 'bias')) && ggufNames.has(spec.role)) biases.add(ggufNames.get(spec.role)!);
    }
  }
  return { uneven, biases };
}

function planFor(model: CausalLM, expected: ExpectedResult = {}): Plan | { unsupported: string } {
  const { config, family, source } = model;
  const writing = family.gguf?.writing;
  if (!writing) return { unsupported: `llama.cpp has no architecture for ${config.modelType} models` };
  const reason = writing.unsupported?.(config);
  if (reason) return { unsupported: reason };
  const observed = observedResult(source);
  const uneven = observed.uneven || expected.unevenLayers === true;
  const ggufNames = linearGgufNames(family);
  for (const role of expected.addedBiasRoles ?? []) if (ggufNames.has(role)) observed.biases.add(ggufNames.get(role)!);
  const natural = writing.architecture(config);
  const loaded = writing.biases(config);
  const unloaded = loaded === 'any' ? [] : [...observed.biases].filter((name) => !loaded.includes(name));
  const interleaved = (arch: string) => family.gguf!.architectures[arch]?.interleavedRope ?? false;
  if (!uneven && unloaded.length === 0) return { arch: natural, writing, interleaved: interleaved(natural), perLayer: false };
  if (writing.unevenArchitecture) return { arch: writing.unevenArchitecture, writing, interleaved: interleaved(writing.unevenArchitecture), perLayer: true };
  return {
    unsupported: uneven
      ? `llama.cpp loads per-layer head counts and MLP widths only for its deci architecture (the LLaMA block), so a ${config.modelType} model with uneven layers cannot be written as GGUF`
      : `llama.cpp's ${natural} architecture does not load biases on ${unloaded.join(', ')}`,
  };
}

/**
 * Why llama.cpp could not run `model` — or the result of pruning it, as `expected` describes — as
 * this writer would write it, or undefined if it can. Checked before any work starts.
 */
export function ggufUnsupported(model: CausalLM, expected?: ExpectedResult): string | undefined {
  const plan = planFor(model, expected);
  return 'unsupported' in plan ? plan.unsupported : undefined;
}

/** Heads, key/value heads and MLP width of every block, from the tensors (LLaMA block: q, k and gate projections). */
function layerSizes(model: CausalLM): LayerSizes[] {
  const { config, source } = model;
  return Array.from({ length: config.numLayers }, (_, layer) => {
    const rows = (role: string) => source.shape(`${model.linearName(layer, role)}.weight`)[0]!;
    return { heads: rows('q') / config.headDim, kvHeads: rows('k') / config.headDim, ffn: rows('gate') };
  });
}

/** The tokenizer key/values of `source`, or why it has none. */
function tokenizerOf(source: ModelSource, vocabSize: number): { keyValues: GgufKeyValue[]; warnings: string[] } {
  if (source.format === 'gguf') {
    const original = openGguf(source.path);
    try {
      const keyValues = Object.entries(original.metadata).flatMap(([key, value]) => (key.startsWith('tokenizer.') ? [inferKeyValue(key, value)].filter((kv) => kv !== undefined) : []));
      return { keyValues, warnings: keyValues.length > 0 ? [] : [`written without a tokenizer: ${source.path} has none`] };
    } finally {
      original.close();
    }
  }
  const tokenizer = source.tokenizer;
  const vocabulary = 'missing' in tokenizer ? { unsupported: tokenizer.missing } : (tokenizer.toGguf?.() ?? { unsupported: `a ${tokenizer.source} tokenizer has no GGUF form` });
  const keyValues = 'unsupported' in vocabulary ? vocabulary : tokenizerKeyValues(vocabulary, vocabSize);
  if ('unsupported' in keyValues) return { keyValues: [], warnings: [`written without a tokenizer (llama.cpp cannot tokenize text with it): ${keyValues.unsupported}`] };
  return { keyValues, warnings: [...(vocabulary as GgufVocabulary).warnings] };
}

const ARCH_VALUE_TYPES = { u32: GgufValueType.UINT32, f32: GgufValueType.FLOAT32, bool: GgufValueType.BOOL } as const;

/**
 * Exports `model` (its source's tensors, whatever their per-layer sizes) to a GGUF file llama.cpp
 * loads, under llama.cpp's architecture for its family (`deci` for LLaMA-block results it cannot
 * otherwise hold). Tensor names are the family's GGUF names read backwards
 * (src/model/families/gguf-names.ts), with the converter's transformations undone on read redone:
 * q/k rows interleaved for interleaved-RoPE architectures, GPT-NeoX's q/k/v regrouped, Gemma's
 * norms stored as 1 + w, Mamba's A as −exp(A_log) and its conv1d weight squeezed to 2-D. Streams tensor by tensor into an atomic write.
 *
 * The tokenizer is carried over from a GGUF source (every `tokenizer.*` key) and converted from any
 * other (llama2.c tokenizer.bin, tokenizer.json) that GGUF can express; otherwise the file has
 * none (Topiary still runs it on token ids; llama.cpp needs one to load it) and a warning says why.
 */
export function exportGguf(model: CausalLM, file: string, options: GgufExportOptions): GgufExportResult {
  const { config, source, family } = model;
  const plan = planFor(model);
  if ('unsupported' in plan) throw new TopiaryError(`cannot write GGUF: ${plan.unsupported}`, source.path);
  const { arch, writing } = plan;
  const layout = family.gguf!;
  const sizes = plan.perLayer ? layerSizes(model) : undefined;
  const u32 = (key: string, value: number): GgufKeyValue => ({ key: `${arch}.${key}`, type: GgufValueType.UINT32, value });
  const f32 = (key: string, value: number): GgufKeyValue => ({ key: `${arch}.${key}`, type: GgufValueType.FLOAT32, value });
  const perLayer = (key: string, pick: (s: LayerSizes) => number, uniform: number): GgufKeyValue =>
    sizes ? { key: `${arch}.${key}`, type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: sizes.map(pick) } : u32(key, uniform);

  // An architecture without attention states no heads and no MLP width, as its converter writes 0 for both.
  const blockSizes = layout.noAttention
    ? [u32('feed_forward_length', 0), u32('attention.head_count', 0)]
    : [
        perLayer('feed_forward_length', (s) => s.ffn, config.intermediateSize),
        perLayer('attention.head_count', (s) => s.heads, config.numHeads),
        perLayer('attention.head_count_kv', (s) => s.kvHeads, config.numKvHeads),
        u32('attention.key_length', config.headDim),
        u32('attention.value_length', config.headDim),
      ];
  const keyValues: GgufKeyValue[] = [
    { key: 'general.architecture', type: GgufValueType.STRING, value: arch },
    { key: 'general.name', type: GgufValueType.STRING, value: options.name ?? 'topiary export' },
    { key: 'general.file_type', type: GgufValueType.UINT32, value: FILE_TYPES[options.dtype] },
    u32('block_count', config.numLayers),
    u32('context_length', config.maxPositionEmbeddings),
    u32('embedding_length', config.hiddenSize),
    ...blockSizes,
    config.norm.kind === 'rms' ? f32('attention.layer_norm_rms_epsilon', config.norm.eps) : f32('attention.layer_norm_epsilon', config.norm.eps),
    u32('vocab_size', config.vocabSize),
  ];
  if (config.rope) {
    keyValues.push(u32('rope.dimension_count', config.rope.rotaryDim), f32('rope.freq_base', config.rope.theta));
    const scaling = config.rope.scaling;
    if (scaling.type === 'linear') keyValues.push({ key: `${arch}.rope.scaling.type`, type: GgufValueType.STRING, value: 'linear' }, f32('rope.scaling.factor', scaling.factor));
  }
  for (const kv of writing.keyValues?.(config) ?? []) {
    keyValues.push(
      kv.type === 'bool[]'
        ? { key: `${arch}.${kv.key}`, type: GgufValueType.ARRAY, elementType: GgufValueType.BOOL, value: kv.value as boolean[] }
        : { key: `${arch}.${kv.key}`, type: ARCH_VALUE_TYPES[kv.type], value: kv.value },
    );
  }
  const tokenizer = tokenizerOf(source, config.vocabSize);
  keyValues.push(...tokenizer.keyValues);
  const warnings = [...tokenizer.warnings, ...(writing.warnings?.(config) ?? [])];

  const tensors: GgufTensorToWrite[] = [];
  for (const { gguf, hf, layer, blockName } of ggufTensorNames(family, config.numLayers)) {
    if (!source.has(hf)) continue;
    if (gguf === 'output.weight' && config.tieWordEmbeddings) continue;
    const form = layout.storedForm?.(hf);
    const shape = form?.storedShape?.(source.shape(hf)) ?? source.shape(hf);
    const [rows, cols = 1] = shape as [number, number?];
    const headsOf = (s: LayerSizes | undefined, key: 'heads' | 'kvHeads') => s?.[key] ?? (key === 'heads' ? config.numHeads : config.numKvHeads);
    const permuteHeads = plan.interleaved && layer !== undefined && (blockName === 'attn_q' || blockName === 'attn_k') ? headsOf(sizes?.[layer], blockName === 'attn_q' ? 'heads' : 'kvHeads') : undefined;
    const regroup = blockName && layout.rowsFromHf?.[blockName];
    const offset = layout.storedOffset?.(hf) ?? 0;
    // As the converter: 1-D tensors, tensors named without `.weight` (Mamba's ssm_a) and those the family's kernels take only in F32 stay F32.
    const fullPrecision = shape.length !== 2 || !gguf.endsWith('.weight') || (blockName !== undefined && writing.fullPrecision?.includes(blockName));
    tensors.push({
      name: gguf,
      shape,
      type: fullPrecision ? 'F32' : matrixType(options.dtype, cols),
      data: () => {
        const data = source.read(hf);
        if (permuteHeads) return convertRopeRows(data, rows, cols, permuteHeads, 'toInterleaved');
        if (regroup) return regroup(data, rows, cols, config.numHeads);
        if (form?.storedValues) return form.storedValues(data);
        return offset ? Float32Array.from(data, (value) => value + offset) : data;
      },
    });
  }
  for (const extra of writing.extraTensors?.(config) ?? []) tensors.push({ name: extra.name, shape: [extra.data.length], type: 'F32', data: () => extra.data });
  writeGguf(file, keyValues, tensors);
  const tensorTypes: Partial<Record<GgufTensorType, number>> = {};
  for (const tensor of tensors) tensorTypes[tensor.type] = (tensorTypes[tensor.type] ?? 0) + 1;
  return { architecture: arch, bytes: fs.statSync(file).size, tensorTypes, warnings };
}
