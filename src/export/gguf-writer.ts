/**
 * GGUF v3 writer, and the export of a (possibly structurally pruned) model to a GGUF file that
 * llama.cpp runs.
 *
 * Layout written: magic "GGUF", version 3, tensor count, key/value count, the key/values, the
 * tensor infos (name, dims in ggml order — the row-major shape reversed —, type, offset), padding to
 * the alignment (32), then each tensor's bytes, every one starting at a multiple of the alignment.
 * Tensors are produced lazily one at a time, so memory holds one tensor however large the model.
 *
 * Models whose layers all have the same shapes are written as llama.cpp's `llama` architecture.
 * Layers with different head counts or MLP widths need per-layer hyper-parameters: llama.cpp reads
 * `attention.head_count`, `attention.head_count_kv` and `feed_forward_length` as per-layer arrays
 * for every architecture, but only its `deci` architecture (DeciLM / Nemotron-NAS: the LLaMA block
 * with per-layer sizes) builds each layer's tensors with that layer's sizes; `llama` checks every
 * layer against layer 0. So non-uniform models are written as `deci`. Both use the interleaved
 * RoPE layout, so q/k rows are permuted back from Hugging Face's rotate-half layout.
 */
import * as fs from 'node:fs';
import { GgufValueType, openGguf, type GgufValue } from '../formats/gguf.js';
import { floatToHalfBits } from '../formats/binary.js';
import { GGML_TYPES, ggmlByteLength, type GgmlType } from '../formats/ggml-quants.js';
import type { CausalLM } from '../model/causal-lm.js';
import { writeAll, writeFileAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
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

export type GgufTensorType = 'F32' | 'F16' | 'Q8_0';

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

const TENSOR_TYPES: Record<GgufTensorType, GgmlType> = { F32: GGML_TYPES.F32, F16: GGML_TYPES.F16, Q8_0: GGML_TYPES.Q8_0 };

/** ggml's quantize_row_q8_0_ref: per 32 values, d = max|x|/127 stored as fp16, q = round(x/d). */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const blocks = values.length / 32;
  const out = new Uint8Array(blocks * 34);
  const scale = new Uint16Array(1);
  for (let block = 0; block < blocks; block++) {
    const x = values.subarray(block * 32, block * 32 + 32);
    let amax = 0;
    for (const v of x) amax = Math.max(amax, Math.abs(v));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    floatToHalfBits(Float32Array.of(d), scale);
    const at = block * 34;
    out[at] = scale[0]! & 0xff;
    out[at + 1] = scale[0]! >> 8;
    // C's roundf rounds half away from zero.
    for (let j = 0; j < 32; j++) {
      const scaled = Math.fround(x[j]! * id);
      out[at + 2 + j] = (Math.sign(scaled) * Math.round(Math.abs(scaled))) & 0xff;
    }
  }
  return out;
}

function encodeTensor(tensor: GgufTensorToWrite, data: Float32Array): Uint8Array {
  switch (tensor.type) {
    case 'F32':
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    case 'F16': {
      const bits = new Uint16Array(data.length);
      floatToHalfBits(data, bits);
      return new Uint8Array(bits.buffer);
    }
    case 'Q8_0':
      return quantizeQ8_0(data);
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
      writeAll(fd, encodeTensor(tensor, data));
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

export interface GgufExportOptions {
  /** Type of the 2-D weights; norms and biases are always F32. Q8_0 falls back to F16 for rows not a multiple of 32. */
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
  /** What the file lacks or may do differently from Topiary, e.g. why it has no tokenizer. */
  warnings: string[];
}

/**
 * Why llama.cpp could not run `model` as this writer would write it, or undefined if it can: the
 * writer knows the LLaMA block (as `llama`, or `deci` for uneven layers) without a sliding window
 * and with no rope scaling but linear. Checked before any pruning work starts.
 */
export function ggufUnsupported(model: CausalLM): string | undefined {
  const { config, family } = model;
  if (family.name !== 'llama' || !['llama', 'mistral'].includes(config.modelType)) return `the GGUF writer knows the llama and mistral layouts, not "${config.modelType}"`;
  if (config.attention.layerTypes) return 'sliding-window attention is not written to GGUF yet';
  const scaling = config.rope?.scaling.type ?? 'none';
  if (scaling !== 'none' && scaling !== 'linear') return `${scaling} rope scaling is not written to GGUF yet`;
  return undefined;
}

/**
 * Exports `model` (its source's tensors, whatever their per-layer sizes) to a GGUF file llama.cpp
 * loads. The tokenizer is carried over from a GGUF source (every `tokenizer.*` key) and converted
 * from any other (llama2.c tokenizer.bin, tokenizer.json) that GGUF can express; otherwise the file
 * has none (Topiary still runs it on token ids) and a warning says why.
 */
export function exportGguf(model: CausalLM, file: string, options: GgufExportOptions): GgufExportResult {
  const { config, source, family } = model;
  const unsupported = ggufUnsupported(model);
  if (unsupported) throw new TopiaryError(`cannot write GGUF: ${unsupported}`, source.path);
  const layerNames = family.gguf!.layerNames;
  const hd = config.headDim;
  const sizes: LayerSizes[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const shape = (role: 'q' | 'k' | 'gate') => source.shape(`${model.linearName(layer, role)}.weight`);
    sizes.push({ heads: shape('q')[0]! / hd, kvHeads: shape('k')[0]! / hd, ffn: shape('gate')[0]! });
  }
  const uniform = sizes.every((s) => s.heads === sizes[0]!.heads && s.kvHeads === sizes[0]!.kvHeads && s.ffn === sizes[0]!.ffn);
  const arch = uniform ? 'llama' : 'deci';
  const u32 = (key: string, value: number): GgufKeyValue => ({ key: `${arch}.${key}`, type: GgufValueType.UINT32, value });
  const f32 = (key: string, value: number): GgufKeyValue => ({ key: `${arch}.${key}`, type: GgufValueType.FLOAT32, value });
  const perLayer = (key: string, pick: (s: LayerSizes) => number): GgufKeyValue =>
    uniform ? u32(key, pick(sizes[0]!)) : { key: `${arch}.${key}`, type: GgufValueType.ARRAY, elementType: GgufValueType.INT32, value: sizes.map(pick) };

  const keyValues: GgufKeyValue[] = [
    { key: 'general.architecture', type: GgufValueType.STRING, value: arch },
    { key: 'general.name', type: GgufValueType.STRING, value: options.name ?? 'topiary export' },
    { key: 'general.file_type', type: GgufValueType.UINT32, value: { F32: 0, F16: 1, Q8_0: 7 }[options.dtype] },
    u32('block_count', config.numLayers),
    u32('context_length', config.maxPositionEmbeddings),
    u32('embedding_length', config.hiddenSize),
    perLayer('feed_forward_length', (s) => s.ffn),
    perLayer('attention.head_count', (s) => s.heads),
    perLayer('attention.head_count_kv', (s) => s.kvHeads),
    u32('attention.key_length', hd),
    u32('attention.value_length', hd),
    u32('rope.dimension_count', hd),
    f32('rope.freq_base', config.rope!.theta),
    f32('attention.layer_norm_rms_epsilon', config.norm.eps),
    u32('vocab_size', config.vocabSize),
  ];
  const scaling = config.rope!.scaling;
  if (scaling.type === 'linear') {
    keyValues.push({ key: `${arch}.rope.scaling.type`, type: GgufValueType.STRING, value: 'linear' }, f32('rope.scaling.factor', scaling.factor));
  }
  const warnings: string[] = [];
  if (source.format === 'gguf') {
    const original = openGguf(source.path);
    try {
      for (const [key, value] of Object.entries(original.metadata)) {
        if (!key.startsWith('tokenizer.')) continue;
        const kv = inferKeyValue(key, value);
        if (kv) keyValues.push(kv);
      }
    } finally {
      original.close();
    }
  } else {
    const tokenizer = source.tokenizer;
    const vocabulary =
      'missing' in tokenizer ? { unsupported: tokenizer.missing } : (tokenizer.toGguf?.() ?? { unsupported: `a ${tokenizer.source} tokenizer has no GGUF form` });
    const tokenizerKvs = 'unsupported' in vocabulary ? vocabulary : tokenizerKeyValues(vocabulary, config.vocabSize);
    if ('unsupported' in tokenizerKvs) {
      warnings.push(`written without a tokenizer (llama.cpp cannot tokenize text with it): ${tokenizerKvs.unsupported}`);
    } else {
      keyValues.push(...tokenizerKvs);
      warnings.push(...(vocabulary as GgufVocabulary).warnings);
    }
  }

  const weightType = (cols: number): GgufTensorType => (options.dtype === 'Q8_0' && cols % 32 !== 0 ? 'F16' : options.dtype);
  const tensors: GgufTensorToWrite[] = [];
  const add = (ggufName: string, hfName: string, permuteHeads?: number) => {
    const shape = source.shape(hfName);
    const twoD = shape.length === 2;
    tensors.push({
      name: ggufName,
      shape,
      type: twoD ? weightType(shape[1]!) : 'F32',
      data: () => {
        const data = source.read(hfName);
        return permuteHeads ? convertRopeRows(data, shape[0]!, shape[1] ?? 1, permuteHeads, 'toInterleaved') : data;
      },
    });
  };
  add('token_embd.weight', family.embedTokens);
  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = family.layerPrefix(layer);
    for (const [ggufName, hfName] of Object.entries(layerNames)) {
      for (const kind of ['weight', 'bias']) {
        const name = `${prefix}${hfName}.${kind}`;
        if (!source.has(name)) continue;
        const heads = ggufName === 'attn_q' ? sizes[layer]!.heads : ggufName === 'attn_k' ? sizes[layer]!.kvHeads : undefined;
        add(`blk.${layer}.${ggufName}.${kind}`, name, heads);
      }
    }
  }
  add('output_norm.weight', `${family.finalNorm}.weight`);
  if (!config.tieWordEmbeddings && source.has(family.lmHead)) add('output.weight', family.lmHead);
  writeGguf(file, keyValues, tensors);
  return { architecture: arch, bytes: fs.statSync(file).size, warnings };
}
