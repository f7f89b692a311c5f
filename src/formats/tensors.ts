import { TopiaryError } from '../util/errors.js';
import { requireFinite } from '../util/finite.js';

/**
 * What every weight format reader provides: the tensors of a file (or sharded folder) by name,
 * read lazily, one at a time, dequantized to fp32. Readers know bytes, not architectures: names
 * are the file's own (GGUF's `blk.0.attn_q.weight`, HF's `model.layers.0...`).
 */
export interface TensorInfo {
  name: string;
  /** The stored type: 'F32', 'F16', 'BF16', 'Q4_1', ... */
  dtype: string;
  /** Row-major (PyTorch) order: a linear layer's weight is [out, in]. GGUF's ne[] reversed. */
  shape: number[];
  /** Bytes the tensor occupies in its file. */
  byteLength: number;
  /**
   * Set when the file stores the matrix compressed (src/formats/compressed-tensors.ts): 'bitmask'
   * for any sparsity, '2:4' when every group of four consecutive weights in a row holds at most
   * two nonzeros. read() still returns the dense values.
   */
  storage?: SparseStorage;
}

/** Rows first..first+count−1 of a tensor's leading dimension. */
export interface RowRange {
  first: number;
  count: number;
}

/**
 * The element and byte offset of `rows` in a tensor of `shape` stored `rowBytes` bytes a row;
 * refuses a range outside the tensor.
 */
export function rowSpan(info: TensorInfo, rows: RowRange | undefined, rowBytes: (cols: number) => number, file: string): { elements: number; byteOffset: number; byteLength: number } {
  const [leading = 1, ...rest] = info.shape;
  const cols = rest.reduce((a, b) => a * b, 1);
  if (!rows) return { elements: leading * cols, byteOffset: 0, byteLength: info.byteLength };
  const { first, count } = rows;
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0 || first + count > leading) {
    throw new TopiaryError(`rows ${first}..${first + count - 1} are outside tensor "${info.name}" of ${leading} rows`, file);
  }
  return { elements: count * cols, byteOffset: first * rowBytes(cols), byteLength: count * rowBytes(cols) };
}

/** How a sparse matrix is stored: a bitmask of kept weights, or 2:4 (two kept in every four). */
export type SparseStorage = 'bitmask' | '2:4';

export interface TensorStore {
  readonly format: 'safetensors' | 'gguf' | 'llama2c';
  /** The file or folder the tensors come from (for error messages and reports). */
  readonly path: string;
  /** Metadata: GGUF key/values, safetensors `__metadata__`, llama2.c header fields. */
  readonly metadata: Record<string, unknown>;
  list(): TensorInfo[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /**
   * Reads one tensor and converts it to fp32, or with `rows` only rows first..first+count−1 of its
   * leading dimension (the embedding rows a batch of tokens needs, without the whole table).
   * Throws TopiaryError naming the file on any problem.
   */
  read(name: string, rows?: RowRange): Float32Array;
  close(): void;
}

/**
 * Reads a tensor of a model and refuses it if it holds a NaN or infinity, naming the tensor and
 * the file: what comes from a downloaded model must be finite before any method or metric sees it.
 */
export function readFinite(store: TensorStore, name: string, rows?: RowRange): Float32Array {
  return requireFinite(store.read(name, rows), `tensor "${name}"`, store.path);
}
