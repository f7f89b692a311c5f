/**
 * llama2.c checkpoints (fp32 only), as written by llama2.c's export.py:
 * - legacy: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
 *   vocab_size means an untied classifier), then the weights in this order: token embedding, all
 *   attention norms, all wq, wk, wv, wo, all ffn norms, all w1, w2, w3, final norm, the RoPE tables
 *   freq_cis_real/imag (seq_len x head_size/2 each; skipped), and the classifier if untied.
 * - version 1: u32 magic "ak42", int32 version 1, the same 7 int32 (vocab_size positive), a uint8
 *   shared-classifier flag, zero padding to 256 bytes; then the norms first (all attention norms,
 *   all ffn norms, final norm), token embedding, all wq, wk, wv, wo, w1, w2, w3, classifier if untied.
 * Tensors get llama2.c's PyTorch names and shapes; the file size must match the header exactly.
 */
import * as fs from 'node:fs';
import { TopiaryError } from '../util/errors.js';
import { rowSpan, type RowRange, type TensorInfo, type TensorStore } from './tensors.js';
import { openRegularFile } from '../util/safe-fs.js';
import { product, readExactly, readFloat32 } from './binary.js';

export const LLAMA2C_MAGIC = 0x616b3432; // "ak42" as written by struct.pack('I', ...)
const LEGACY_HEADER_BYTES = 7 * 4;
const V1_HEADER_BYTES = 256;

export interface Llama2cMetadata {
  version: 0 | 1;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

interface Entry extends TensorInfo {
  position: number;
}

/** One run of same-kind tensors in file order: either a single tensor or one per layer. */
interface Segment {
  /** Name, with {i} for the layer index when `perLayer`. */
  name: string;
  shape: number[];
  perLayer?: boolean;
  /** Stored in the file but not exposed (the RoPE tables). */
  skip?: boolean;
}

function segments(meta: Llama2cMetadata): Segment[] {
  const { dim, hiddenDim, nHeads, nKvHeads, vocabSize, seqLen } = meta;
  const headSize = dim / nHeads;
  const kvDim = headSize * nKvHeads;
  const layer = (name: string, shape: number[]): Segment => ({ name: `layers.{i}.${name}.weight`, shape, perLayer: true });
  const embedding: Segment = { name: 'tok_embeddings.weight', shape: [vocabSize, dim] };
  const attentionNorm = layer('attention_norm', [dim]);
  const ffnNorm = layer('ffn_norm', [dim]);
  const finalNorm: Segment = { name: 'norm.weight', shape: [dim] };
  const projections = [
    layer('attention.wq', [dim, dim]),
    layer('attention.wk', [kvDim, dim]),
    layer('attention.wv', [kvDim, dim]),
    layer('attention.wo', [dim, dim]),
  ];
  const ffn = [layer('feed_forward.w1', [hiddenDim, dim]), layer('feed_forward.w2', [dim, hiddenDim]), layer('feed_forward.w3', [hiddenDim, dim])];
  const classifier: Segment[] = meta.sharedClassifier ? [] : [{ name: 'output.weight', shape: [vocabSize, dim] }];
  if (meta.version === 1) return [attentionNorm, ffnNorm, finalNorm, embedding, ...projections, ...ffn, ...classifier];
  // Integer division, as llama2.c's run.c skips the tables.
  const ropeTable = (name: string): Segment => ({ name, shape: [seqLen, Math.floor(headSize / 2)], skip: true });
  return [
    embedding, attentionNorm, ...projections, ffnNorm, ...ffn, finalNorm,
    ropeTable('freq_cis_real'), ropeTable('freq_cis_imag'), ...classifier,
  ];
}

function readHeader(fd: number, size: number, file: string): { meta: Llama2cMetadata; dataStart: number } {
  const fail = (message: string): never => {
    throw new TopiaryError(`not a valid llama2.c checkpoint: ${message}`, file);
  };
  if (size < LEGACY_HEADER_BYTES) fail(`only ${size} bytes, too short for a header`);
  const head = Buffer.alloc(Math.min(size, V1_HEADER_BYTES));
  readExactly(fd, head, 0, file);
  const isV1 = head.readUInt32LE(0) === LLAMA2C_MAGIC;
  if (isV1) {
    if (size < V1_HEADER_BYTES) fail(`only ${size} bytes, too short for the 256-byte version 1 header`);
    const version = head.readInt32LE(4);
    if (version !== 1) fail(`version ${version} is not supported (only legacy and version 1 fp32 exports)`);
  }
  const base = isV1 ? 8 : 0;
  const ints = Array.from({ length: 7 }, (_, i) => head.readInt32LE(base + 4 * i));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = ints;
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];
  ints.forEach((value, i) => {
    if (value === 0 || (value < 0 && names[i] !== 'vocab_size') || (value < 0 && isV1)) fail(`${names[i]} is ${value}`);
  });
  if (dim % nHeads !== 0) fail(`dim ${dim} is not a multiple of n_heads ${nHeads}`);
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) fail(`n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  const sharedFlag = isV1 ? head.readUInt8(36) : rawVocab > 0 ? 1 : 0;
  if (sharedFlag > 1) fail(`shared-classifier flag is ${sharedFlag}`);
  const meta: Llama2cMetadata = {
    version: isV1 ? 1 : 0, dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(rawVocab), seqLen,
    sharedClassifier: sharedFlag === 1,
  };
  return { meta, dataStart: isV1 ? V1_HEADER_BYTES : LEGACY_HEADER_BYTES };
}

class Llama2cStore implements TensorStore {
  readonly format = 'llama2c' as const;
  private fd: number | undefined;

  constructor(
    readonly path: string,
    fd: number,
    readonly metadata: Llama2cMetadata & Record<string, unknown>,
    private readonly entries: Map<string, Entry>,
  ) {
    this.fd = fd;
  }

  list(): TensorInfo[] {
    return [...this.entries.values()].map(({ name, dtype, shape, byteLength }) => ({ name, dtype, shape: [...shape], byteLength }));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const { dtype, shape, byteLength } = this.entry(name);
    return { name, dtype, shape: [...shape], byteLength };
  }

  read(name: string, rows?: RowRange): Float32Array {
    const entry = this.entry(name);
    if (this.fd === undefined) throw new TopiaryError(`cannot read "${name}": the tensor store was closed`, this.path);
    const { elements, byteOffset } = rowSpan(entry, rows, (cols) => cols * 4, this.path);
    return readFloat32(this.fd, entry.position + byteOffset, elements, this.path);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private entry(name: string): Entry {
    const entry = this.entries.get(name);
    if (!entry) throw new TopiaryError(`no tensor named "${name}"`, this.path);
    return entry;
  }
}

/** Opens a llama2.c checkpoint (legacy or version 1) lazily. */
export function openLlama2c(file: string): TensorStore & { readonly metadata: Llama2cMetadata } {
  const { fd, size } = openRegularFile(file);
  try {
    const { meta, dataStart } = readHeader(fd, size, file);
    const layout = segments(meta);
    // Sizes first, so a lying header (say 2^31 layers) is refused before any per-layer work.
    const segmentBytes = layout.map((segment) => product(segment.shape) * 4);
    const expectedSize = layout.reduce((total, segment, k) => total + segmentBytes[k] * (segment.perLayer ? meta.nLayers : 1), dataStart);
    if (expectedSize !== size) {
      throw new TopiaryError(
        `not a valid llama2.c checkpoint: its header (${describe(meta)}) implies ${expectedSize} bytes, but the file has ${size}`,
        file,
      );
    }
    const entries = new Map<string, Entry>();
    let position = dataStart;
    layout.forEach((segment, k) => {
      for (let i = 0; i < (segment.perLayer ? meta.nLayers : 1); i++) {
        const name = segment.name.replace('{i}', String(i));
        if (!segment.skip) entries.set(name, { name, dtype: 'F32', shape: segment.shape, byteLength: segmentBytes[k], position });
        position += segmentBytes[k];
      }
    });
    return new Llama2cStore(file, fd, { ...meta }, entries);
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

function describe(meta: Llama2cMetadata): string {
  return `version ${meta.version}, dim ${meta.dim}, hidden ${meta.hiddenDim}, ${meta.nLayers} layers, ` +
    `${meta.nHeads}/${meta.nKvHeads} heads, vocab ${meta.vocabSize}, seq_len ${meta.seqLen}`;
}

/** Whether `file` opens as a llama2.c checkpoint (legacy files have no magic: their size must match the header). */
export function isLlama2cCheckpoint(file: string): boolean {
  try {
    openLlama2c(file).close();
    return true;
  } catch (error) {
    if (error instanceof TopiaryError) return false;
    throw error;
  }
}
