/**
 * Weight matrices held compressed in memory, for the sparse kernels (Backend.sparseMatmul).
 *
 * W [rows, cols] keeps, for each row, one 16-bit mask per 16 columns — bit j of mask c is column
 * 16c + j, least significant bit first, so that a mask is an AVX-512 mask register for the
 * instruction that expands packed values into their lanes (VEXPANDPS) — and the row's nonzero
 * values packed in column order, row r starting at values[rowOffsets[r]]. Values are F32: the
 * kernels then reproduce the dense product to rounding, and a pruned model runs dense or sparse
 * with the same logits. A weight costs 4 bytes dense and 1/8 byte of mask plus 4 bytes per kept
 * value: 2.125 bytes at 50% sparsity, 1.325 at 70%.
 *
 * The 2:4 form is the same layout with exactly two mask bits set in every aligned group of four
 * columns (a group with fewer nonzeros keeps a stored zero), so every full mask holds eight values
 * and the kernel advances through them by a constant. Two-bit indices per kept value would cost
 * the same one bit per weight but need a permutation table to decode; the mask is decoded by the
 * expand instruction as it stands.
 */
import { TopiaryError } from '../util/errors.js';

export type SparseLayout = 'bitmask' | '2:4';

/** Columns covered by one mask. */
export const SPARSE_CHUNK = 16;

export interface SparseMatrix {
  layout: SparseLayout;
  rows: number;
  cols: number;
  /** rows · ceil(cols/16) masks, row by row; bits past the last column are clear. */
  masks: Uint16Array;
  /** The nonzero values (and, in 2:4, the zeros that fill a group to two), row by row in column order. */
  values: Float32Array;
  /** rows + 1 entries: row r's values are values[rowOffsets[r] .. rowOffsets[r + 1]). */
  rowOffsets: Int32Array;
}

export function chunksPerRow(cols: number): number {
  return Math.ceil(cols / SPARSE_CHUNK);
}

function popcount16(mask: number): number {
  let bits = mask - ((mask >> 1) & 0x5555);
  bits = (bits & 0x3333) + ((bits >> 2) & 0x3333);
  bits = (bits + (bits >> 4)) & 0x0f0f;
  return (bits + (bits >> 8)) & 0x1f;
}

/** Whether every aligned group of four columns of each row holds at most two nonzeros (and cols is a multiple of 4). */
export function isTwoFour(dense: Float32Array, rows: number, cols: number): boolean {
  if (cols % 4 !== 0) return false;
  for (let group = 0; group < (rows * cols) / 4; group++) {
    let nonzero = 0;
    for (let j = 0; j < 4; j++) if (dense[group * 4 + j] !== 0) nonzero++;
    if (nonzero > 2) return false;
  }
  return true;
}

/** Which columns of a row are kept: the nonzeros, and in 2:4 enough zeros to make two per group. */
function keptColumns(row: Float32Array, layout: SparseLayout): (col: number) => boolean {
  if (layout === 'bitmask') return (col) => row[col] !== 0;
  const kept = new Uint8Array(row.length);
  for (let group = 0; group < row.length; group += 4) {
    for (let j = 0; j < 4; j++) kept[group + j] = row[group + j] !== 0 ? 1 : 0;
    let fill = 2 - (kept[group]! + kept[group + 1]! + kept[group + 2]! + kept[group + 3]!);
    for (let j = 0; j < 4 && fill > 0; j++) {
      if (kept[group + j]) continue;
      kept[group + j] = 1;
      fill--;
    }
  }
  return (col) => kept[col] === 1;
}

/** Compresses a dense row-major [rows, cols] matrix. '2:4' needs isTwoFour(dense, rows, cols). */
export function compressSparse(dense: Float32Array, rows: number, cols: number, layout: SparseLayout): SparseMatrix {
  if (dense.length !== rows * cols) throw new TopiaryError(`compressSparse: ${dense.length} values are not ${rows}×${cols}`);
  if (layout === '2:4' && !isTwoFour(dense, rows, cols)) {
    throw new TopiaryError(`compressSparse: the ${rows}×${cols} matrix is not 2:4 sparse`);
  }
  const chunks = chunksPerRow(cols);
  const masks = new Uint16Array(rows * chunks);
  const rowOffsets = new Int32Array(rows + 1);
  const kept: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = dense.subarray(r * cols, (r + 1) * cols);
    const keeps = keptColumns(row, layout);
    for (let col = 0; col < cols; col++) {
      if (!keeps(col)) continue;
      masks[r * chunks + Math.floor(col / SPARSE_CHUNK)]! |= 1 << col % SPARSE_CHUNK;
      kept.push(row[col]!);
    }
    rowOffsets[r + 1] = kept.length;
  }
  if (kept.length > 0x7fffffff) throw new TopiaryError(`compressSparse: ${kept.length} values do not fit 32-bit offsets`);
  return { layout, rows, cols, masks, values: Float32Array.from(kept), rowOffsets };
}

/**
 * The compressed form of a matrix stored as compressed-tensors stores it ('sparse-bitmask',
 * 'sparse-24-bitmask'): `bitmask` [rows, ceil(cols/8)] bytes, bit b of byte j being column 8j + b
 * (numpy.packbits with bitorder 'little'), and the kept values row by row. Pairs of bytes are
 * exactly this module's 16-bit masks, so nothing is decompressed. Row offsets are counted from the
 * masks; a mask that disagrees with the values is an error naming the problem.
 */
export function sparseFromPackedBitmask(layout: SparseLayout, rows: number, cols: number, bitmask: Uint8Array, values: Float32Array): SparseMatrix {
  const bytesPerRow = Math.ceil(cols / 8);
  if (bitmask.length !== rows * bytesPerRow) throw new TopiaryError(`a ${rows}×${cols} bitmask needs ${rows * bytesPerRow} bytes, not ${bitmask.length}`);
  const chunks = chunksPerRow(cols);
  const masks = new Uint16Array(rows * chunks);
  const rowOffsets = new Int32Array(rows + 1);
  for (let r = 0; r < rows; r++) {
    let count = 0;
    for (let c = 0; c < chunks; c++) {
      const low = bitmask[r * bytesPerRow + 2 * c]!;
      const high = 2 * c + 1 < bytesPerRow ? bitmask[r * bytesPerRow + 2 * c + 1]! : 0;
      const mask = low | (high << 8);
      masks[r * chunks + c] = mask;
      count += popcount16(mask);
    }
    rowOffsets[r + 1] = rowOffsets[r]! + count;
  }
  const matrix: SparseMatrix = { layout, rows, cols, masks, values, rowOffsets };
  const problem = sparseMatrixProblem(matrix) ?? (values.length === rowOffsets[rows] ? undefined : `${values.length} values, the bitmask has ${rowOffsets[rows]} bits set`);
  if (problem) throw new TopiaryError(`${layout} matrix ${rows}×${cols}: ${problem}`);
  return matrix;
}

/** The dense row-major [rows, cols] matrix back. */
export function decompressSparse(matrix: SparseMatrix): Float32Array {
  const { rows, cols, masks, values, rowOffsets } = matrix;
  const chunks = chunksPerRow(cols);
  const dense = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let next = rowOffsets[r]!;
    for (let c = 0; c < chunks; c++) {
      for (let bit = 0; bit < SPARSE_CHUNK; bit++) if (masks[r * chunks + c]! & (1 << bit)) dense[r * cols + c * SPARSE_CHUNK + bit] = values[next++]!;
    }
  }
  return dense;
}

/** Bytes the compressed matrix occupies (masks, values, row offsets). */
export function sparseBytes(matrix: SparseMatrix): number {
  return matrix.masks.byteLength + matrix.values.byteLength + matrix.rowOffsets.byteLength;
}

/**
 * What is wrong with a compressed matrix, or undefined: the kernels read exactly what the masks and
 * offsets say, so these must agree before any native code trusts them.
 */
export function sparseMatrixProblem(matrix: SparseMatrix): string | undefined {
  const { layout, rows, cols, masks, values, rowOffsets } = matrix;
  if (layout !== 'bitmask' && layout !== '2:4') return `unknown layout '${String(layout)}'`;
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) return `bad shape ${rows}×${cols}`;
  if (!(masks instanceof Uint16Array) || !(values instanceof Float32Array) || !(rowOffsets instanceof Int32Array)) {
    return 'masks, values and rowOffsets must be a Uint16Array, a Float32Array and an Int32Array';
  }
  if (layout === '2:4' && cols % 4 !== 0) return `2:4 needs a multiple of 4 columns, not ${cols}`;
  const chunks = chunksPerRow(cols);
  if (masks.length !== rows * chunks) return `${masks.length} masks, expected ${rows}×${chunks}`;
  if (rowOffsets.length !== rows + 1 || rowOffsets[0] !== 0) return `rowOffsets must have ${rows + 1} entries starting at 0`;
  const tailBits = cols % SPARSE_CHUNK === 0 ? 0 : 0xffff & ~((1 << cols % SPARSE_CHUNK) - 1);
  for (let r = 0; r < rows; r++) {
    let count = 0;
    for (let c = 0; c < chunks; c++) {
      const mask = masks[r * chunks + c]!;
      if (c === chunks - 1 && (mask & tailBits) !== 0) return `row ${r} has mask bits past column ${cols}`;
      if (layout === '2:4') {
        for (let group = 0; group < SPARSE_CHUNK && c * SPARSE_CHUNK + group < cols; group += 4) {
          if (popcount16((mask >> group) & 0xf) !== 2) return `row ${r}, columns ${c * SPARSE_CHUNK + group}+: a 2:4 group must have exactly two entries`;
        }
      }
      count += popcount16(mask);
    }
    if (rowOffsets[r + 1]! - rowOffsets[r]! !== count) return `row ${r} has ${count} mask bits but ${rowOffsets[r + 1]! - rowOffsets[r]!} values`;
  }
  if (values.length < rowOffsets[rows]!) return `${values.length} values, the masks need ${rowOffsets[rows]}`;
  return undefined;
}
