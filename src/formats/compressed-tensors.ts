/**
 * Sparse weights stored compressed, in the compressed-tensors convention that llm-compressor
 * writes and vLLM reads (compressed-tensors' sparse_bitmask.py and sparse_24_bitmask.py are the
 * reference). A matrix W [rows, cols] whose canonical tensor is `P.weight` is stored as:
 *
 * - `sparse-bitmask` (any pattern): `P.shape` I64 [2] = [rows, cols]; `P.compressed`, the kept
 *   values in row-major order, 1-D; `P.bitmask` U8 [rows, ceil(cols / 8)], bit c % 8 (least
 *   significant first: numpy.packbits(axis=-1, bitorder="little")) of byte ⌊c / 8⌋ of row r set
 *   when W[r, c] is kept; `P.row_offsets` I64 [rows], where each row's values start.
 * - `sparse-24-bitmask` (2:4): `P.shape` I64 [2, 1]; `P.compressed` [rows, cols / 2], the two kept
 *   values of each group of four in order; `P.bitmask` as above with exactly two bits per group.
 *
 * A weight is kept when its stored value (after rounding to F16/BF16) is not ±0, so a kept value
 * costs its bytes plus one bit of mask for every weight: at 50% in F16, 1.125 bytes per weight
 * against 2. Under 2:4 a group with fewer than two nonzeros keeps zeros to make up its two.
 * config.json names the format in `quantization_config` = {quant_method: "compressed-tensors",
 * version, sparsity_config: {format, targets, ignore, global_sparsity, sparsity_structure}}; a
 * quantization scheme (config_groups) beside it is not read by Topiary and is refused.
 *
 * Reading checks every count against the others before allocating the dense matrix: the shape
 * tensor against the bitmask's shape, the popcount against the number of values, the row offsets
 * against the per-row popcounts, two bits per group of four for 2:4, no bit past column cols.
 */
import { TopiaryError } from '../util/errors.js';
import { floatToBfloat16Bits, floatToHalfBits, product } from './binary.js';
import type { SafetensorsStore, TensorToWrite } from './safetensors.js';
import { rowSpan, type SparseStorage, type TensorInfo, type TensorStore } from './tensors.js';

export type { SparseStorage };

/** The compressed-tensors format name of each storage. */
export const SPARSE_FORMATS: Readonly<Record<SparseStorage, string>> = { bitmask: 'sparse-bitmask', '2:4': 'sparse-24-bitmask' };
/** The compressed-tensors version whose layout this follows (the last with the sparse compressors). */
export const COMPRESSED_TENSORS_VERSION = '0.14.0';

export type StoredFloat = 'F32' | 'F16' | 'BF16';
const FLOAT_DTYPES: readonly string[] = ['F32', 'F16', 'BF16'];

/** 1 where the value, stored as `dtype`, is not ±0: what a compressed matrix keeps. */
function keptMask(values: Float32Array, dtype: StoredFloat): Uint8Array {
  const kept = new Uint8Array(values.length);
  if (dtype === 'F32') {
    for (let i = 0; i < values.length; i++) kept[i] = values[i] !== 0 ? 1 : 0;
    return kept;
  }
  const bits = new Uint16Array(values.length);
  (dtype === 'F16' ? floatToHalfBits : floatToBfloat16Bits)(values, bits);
  for (let i = 0; i < bits.length; i++) kept[i] = (bits[i]! & 0x7fff) !== 0 ? 1 : 0;
  return kept;
}

/** How many weights a matrix keeps, and whether each group of m consecutive weights in a row keeps at most n. */
export function scanSparseMatrix(values: Float32Array, rows: number, cols: number, dtype: StoredFloat, nm?: { n: number; m: number }): { kept: number; fitsNm: boolean } {
  const mask = keptMask(values, dtype);
  let kept = 0;
  for (const bit of mask) kept += bit;
  let fitsNm = nm !== undefined && cols % nm.m === 0;
  for (let start = 0; fitsNm && start < rows * cols; start += nm!.m) {
    let inGroup = 0;
    for (let i = start; i < start + nm!.m; i++) inGroup += mask[i]!;
    fitsNm = inGroup <= nm!.n;
  }
  return { kept, fitsNm };
}

interface Compressed {
  values: Float32Array;
  bitmask: Uint8Array;
  rowOffsets: BigInt64Array;
}

function compress(dense: Float32Array, rows: number, cols: number, storage: SparseStorage, dtype: StoredFloat): Compressed {
  const mask = keptMask(dense, dtype);
  if (storage === '2:4') {
    // Two positions per group of four: the nonzeros, then the first zeros to make up two.
    for (let start = 0; start < mask.length; start += 4) {
      let inGroup = mask[start]! + mask[start + 1]! + mask[start + 2]! + mask[start + 3]!;
      for (let i = start; inGroup < 2; i++) {
        if (!mask[i]) {
          mask[i] = 1;
          inGroup++;
        }
      }
    }
  }
  let count = 0;
  for (const bit of mask) count += bit;
  const bytesPerRow = Math.ceil(cols / 8);
  const bitmask = new Uint8Array(rows * bytesPerRow);
  const rowOffsets = new BigInt64Array(rows);
  const values = new Float32Array(count);
  let next = 0;
  for (let r = 0; r < rows; r++) {
    rowOffsets[r] = BigInt(next);
    for (let c = 0; c < cols; c++) {
      if (!mask[r * cols + c]) continue;
      bitmask[r * bytesPerRow + (c >> 3)]! |= 1 << (c & 7);
      values[next++] = dense[r * cols + c]!;
    }
  }
  return { values, bitmask, rowOffsets };
}

/**
 * The tensors that store matrix `name` (`P.weight`, [rows, cols] as stored) compressed in `dtype`,
 * `kept` being scanSparseMatrix's count (the header needs it before the values are computed). `dense` is called once, when the first of them is
 * written, and its compressed form is dropped after the last.
 */
export function compressedMatrixTensors(
  name: string,
  rows: number,
  cols: number,
  kept: number,
  storage: SparseStorage,
  dtype: StoredFloat,
  dense: () => Float32Array,
): TensorToWrite[] {
  const prefix = name.replace(/\.weight$/, '');
  const stored = storage === '2:4' ? (rows * cols) / 2 : kept;
  let memo: Compressed | undefined;
  const part = <T>(pick: (compressed: Compressed) => T, last = false) => (): T => {
    memo ??= compress(dense(), rows, cols, storage, dtype);
    if (memo.values.length !== stored) {
      throw new TopiaryError(`internal error: "${name}" keeps ${memo.values.length} weights when written and ${stored} when counted`);
    }
    const picked = pick(memo);
    if (last) memo = undefined;
    return picked;
  };
  const shape = BigInt64Array.from([BigInt(rows), BigInt(cols)]);
  const bitmaskShape = [rows, Math.ceil(cols / 8)];
  if (storage === '2:4') {
    return [
      { name: `${prefix}.shape`, shape: [2, 1], dtype: 'I64', data: shape },
      { name: `${prefix}.compressed`, shape: [rows, cols / 2], dtype, data: part((c) => c.values) },
      { name: `${prefix}.bitmask`, shape: bitmaskShape, dtype: 'U8', data: part((c) => c.bitmask, true) },
    ];
  }
  return [
    { name: `${prefix}.shape`, shape: [2], dtype: 'I64', data: shape },
    { name: `${prefix}.compressed`, shape: [stored], dtype, data: part((c) => c.values) },
    { name: `${prefix}.bitmask`, shape: bitmaskShape, dtype: 'U8', data: part((c) => c.bitmask) },
    { name: `${prefix}.row_offsets`, shape: [rows], dtype: 'I64', data: part((c) => c.rowOffsets, true) },
  ];
}

/** config.json's `quantization_config` for a model whose `targets` (module names) are stored as `storage`. */
export function sparsityConfigJson(storage: SparseStorage, targets: string[], globalSparsity: number, structure: string): Record<string, unknown> {
  return {
    quant_method: 'compressed-tensors',
    version: COMPRESSED_TENSORS_VERSION,
    sparsity_config: {
      format: SPARSE_FORMATS[storage],
      targets,
      ignore: [],
      global_sparsity: globalSparsity,
      sparsity_structure: structure,
    },
    transform_config: {},
  };
}

/**
 * The sparse storage config.json declares, or undefined for a dense model (no compressed-tensors
 * quantization_config, or its sparsity format "dense"). Quantized compressed-tensors models and
 * unknown formats are refused.
 */
export function sparseStorageOf(config: Record<string, unknown>, configFile: string): SparseStorage | undefined {
  const section = config.quantization_config;
  if (section === undefined || section === null) return undefined;
  const fail = (message: string): never => {
    throw new TopiaryError(`quantization_config: ${message}`, configFile);
  };
  if (typeof section !== 'object' || Array.isArray(section)) return fail('is not an object');
  const { quant_method: method, sparsity_config: sparsity, config_groups: groups } = section as Record<string, unknown>;
  if (method !== 'compressed-tensors') return fail(`quant_method ${JSON.stringify(method)} is not supported (only compressed-tensors sparse formats are)`);
  if (groups !== undefined && groups !== null && (typeof groups !== 'object' || Object.keys(groups).length > 0)) {
    return fail('quantized compressed-tensors models (config_groups) are not supported, only the sparse formats');
  }
  if (sparsity === undefined || sparsity === null) return undefined;
  if (typeof sparsity !== 'object' || Array.isArray(sparsity)) return fail('sparsity_config is not an object');
  const format = (sparsity as Record<string, unknown>).format;
  if (format === 'dense') return undefined;
  const storage = (Object.keys(SPARSE_FORMATS) as SparseStorage[]).find((key) => SPARSE_FORMATS[key] === format);
  if (!storage) return fail(`sparsity format ${JSON.stringify(format)} is not supported (${Object.values(SPARSE_FORMATS).join(', ')} or dense)`);
  return storage;
}

interface CompressedEntry {
  info: TensorInfo & { storage: SparseStorage };
  prefix: string;
  rows: number;
  cols: number;
  /** Number of stored values. */
  kept: number;
}

const PARTS = ['shape', 'compressed', 'bitmask', 'row_offsets'];

/**
 * `store` with every compressed matrix shown as its dense `P.weight` (its parts hidden), read by
 * decompressing. Shapes and dtypes of all parts are checked here, at open.
 */
export function decompressingStore(store: SafetensorsStore, storage: SparseStorage): TensorStore {
  const compressed = new Map<string, CompressedEntry>();
  const hidden = new Set<string>();
  try {
    for (const { name } of store.list()) {
      if (!name.endsWith('.bitmask')) continue;
      const entry = checkParts(store, name.slice(0, -'.bitmask'.length), storage);
      compressed.set(entry.info.name, entry);
      for (const part of PARTS) hidden.add(`${entry.prefix}.${part}`);
    }
  } catch (error) {
    store.close();
    throw error;
  }
  const dense = (name: string) => !hidden.has(name) && store.has(name);
  const copy = (entry: CompressedEntry): TensorInfo => ({ ...entry.info, shape: [...entry.info.shape] });
  return {
    format: store.format,
    path: store.path,
    metadata: store.metadata,
    // In file order, each compressed matrix where its bitmask is.
    list: () =>
      store.list().flatMap((info) => {
        const entry = info.name.endsWith('.bitmask') ? compressed.get(`${info.name.slice(0, -'.bitmask'.length)}.weight`) : undefined;
        return entry ? [copy(entry)] : hidden.has(info.name) ? [] : [info];
      }),
    has: (name) => compressed.has(name) || dense(name),
    info(name) {
      const entry = compressed.get(name);
      if (entry) return copy(entry);
      if (!dense(name)) throw new TopiaryError(`no tensor named "${name}"`, store.path);
      return store.info(name);
    },
    read(name, rows) {
      const entry = compressed.get(name);
      if (entry) {
        // The whole matrix is decompressed (row offsets would allow less; only embeddings are read by rows).
        const { elements, byteOffset } = rowSpan(entry.info, rows, (cols) => cols, store.fileOf(`${entry.prefix}.bitmask`));
        const matrix = decompress(store, entry);
        return rows ? matrix.slice(byteOffset, byteOffset + elements) : matrix;
      }
      if (!dense(name)) throw new TopiaryError(`no tensor named "${name}"`, store.path);
      return store.read(name, rows);
    },
    close: () => store.close(),
  };
}

function checkParts(store: SafetensorsStore, prefix: string, storage: SparseStorage): CompressedEntry {
  const bitmaskName = `${prefix}.bitmask`;
  const file = store.fileOf(bitmaskName);
  const fail = (message: string): never => {
    throw new TopiaryError(`compressed tensor "${prefix}": ${message}`, file);
  };
  const need = (part: string): TensorInfo => (store.has(`${prefix}.${part}`) ? store.info(`${prefix}.${part}`) : fail(`has a bitmask but no "${prefix}.${part}"`));
  const shapeInfo = need('shape');
  const values = need('compressed');
  const bitmask = need('bitmask');
  if (store.has(`${prefix}.weight`)) fail(`is stored both dense ("${prefix}.weight") and compressed`);
  if (shapeInfo.dtype !== 'I64' || product(shapeInfo.shape) !== 2) fail(`its shape tensor should be two I64 values, is ${shapeInfo.dtype} [${shapeInfo.shape.join(', ')}]`);
  const shapeBytes = store.readBytes(`${prefix}.shape`);
  const view = new DataView(shapeBytes.buffer, shapeBytes.byteOffset, shapeBytes.byteLength);
  const [rows, cols] = [view.getBigInt64(0, true), view.getBigInt64(8, true)].map((value) => (value > 0n && value <= 2n ** 31n ? Number(value) : fail(`its shape tensor holds ${value}, not a positive size`))) as [number, number];
  if (!FLOAT_DTYPES.includes(values.dtype)) fail(`its values are ${values.dtype}, not ${FLOAT_DTYPES.join(', ')}`);
  const bytesPerRow = Math.ceil(cols / 8);
  if (bitmask.dtype !== 'U8' || bitmask.shape.length !== 2 || bitmask.shape[0] !== rows || bitmask.shape[1] !== bytesPerRow) {
    fail(`its bitmask is ${bitmask.dtype} [${bitmask.shape.join(', ')}], a [${rows}, ${cols}] matrix needs U8 [${rows}, ${bytesPerRow}]`);
  }
  let kept: number;
  if (storage === '2:4') {
    if (cols % 4 !== 0) fail(`2:4 storage needs a multiple of 4 columns, the shape tensor says ${cols}`);
    if (values.shape.length !== 2 || values.shape[0] !== rows || values.shape[1] !== cols / 2) fail(`2:4 values of a [${rows}, ${cols}] matrix should be [${rows}, ${cols / 2}], are [${values.shape.join(', ')}]`);
    kept = (rows * cols) / 2;
  } else {
    const offsets = need('row_offsets');
    if (offsets.dtype !== 'I64' || offsets.shape.length !== 1 || offsets.shape[0] !== rows) fail(`its row_offsets are ${offsets.dtype} [${offsets.shape.join(', ')}], should be I64 [${rows}]`);
    if (values.shape.length !== 1 || values.shape[0]! > rows * cols) fail(`its values should be 1-D and at most ${rows * cols}, are [${values.shape.join(', ')}]`);
    kept = values.shape[0]!;
  }
  const byteLength = PARTS.filter((part) => store.has(`${prefix}.${part}`)).reduce((sum, part) => sum + store.info(`${prefix}.${part}`).byteLength, 0);
  return { info: { name: `${prefix}.weight`, dtype: values.dtype, shape: [rows, cols], byteLength, storage }, prefix, rows, cols, kept };
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, byte) => byte.toString(2).replaceAll('0', '').length);

function decompress(store: SafetensorsStore, entry: CompressedEntry): Float32Array {
  const { prefix, rows, cols, kept, info } = entry;
  const fail = (message: string): never => {
    throw new TopiaryError(`compressed tensor "${prefix}": ${message}`, store.fileOf(`${prefix}.bitmask`));
  };
  const bitmask = store.readBytes(`${prefix}.bitmask`);
  const bytesPerRow = Math.ceil(cols / 8);
  // Bits past column cols in each row's last byte must be clear, or they would count as kept.
  const padding = cols % 8 === 0 ? 0 : 0xff & ~((1 << (cols % 8)) - 1);
  const offsets = info.storage === 'bitmask' ? store.readBytes(`${prefix}.row_offsets`) : undefined;
  const offsetView = offsets && new DataView(offsets.buffer, offsets.byteOffset, offsets.byteLength);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    if (offsetView && offsetView.getBigInt64(r * 8, true) !== BigInt(total)) fail(`row_offsets[${r}] is ${offsetView.getBigInt64(r * 8, true)}, the bitmask puts that row's values at ${total}`);
    const row = bitmask.subarray(r * bytesPerRow, (r + 1) * bytesPerRow);
    if (row[bytesPerRow - 1]! & padding) fail(`bitmask row ${r} has bits set past column ${cols}`);
    for (const byte of row) total += POPCOUNT[byte]!;
    if (info.storage === '2:4') {
      // Group g is the low (even g) or high (odd g) half of byte ⌊g / 2⌋.
      for (let group = 0; group < cols / 4; group++) {
        if (POPCOUNT[(row[group >> 1]! >> ((group & 1) * 4)) & 0x0f] !== 2) fail(`bitmask row ${r} has a group of four without exactly two kept weights`);
      }
    }
  }
  if (total !== kept) fail(`the bitmask keeps ${total} weights but ${kept} values are stored`);
  const values = store.read(`${prefix}.compressed`);
  const dense = new Float32Array(rows * cols);
  let next = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (bitmask[r * bytesPerRow + (c >> 3)]! & (1 << (c & 7))) dense[r * cols + c] = values[next++]!;
    }
  }
  return dense;
}
