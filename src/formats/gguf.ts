/**
 * GGUF (v2/v3) reader. Layout: magic "GGUF", u32 version, u64 tensor count, u64 key/value count,
 * the key/values, the tensor infos (name, dims, type, offset), then, aligned to `general.alignment`
 * (default 32), the data area. Opening parses only the header, streaming it through a small buffer;
 * every count and length is checked against the bytes left in the file before anything is allocated.
 */
import * as fs from 'node:fs';
import { TopiaryError } from '../util/errors.js';
import { rowSpan, type RowRange, type TensorInfo, type TensorStore } from './tensors.js';
import { openRegularFile } from '../util/safe-fs.js';
import { product, readExactly, readFloat32 } from './binary.js';
import { GGML_TYPES, canDequantize, dequantize, ggmlByteLength, ggmlTypeFromId, type GgmlType } from './ggml-quants.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most 4 dimensions. */
const MAX_DIMS = 4;
/** Arrays of arrays are legal but never deep in practice; a bound keeps hostile nesting off the stack. */
const MAX_ARRAY_NESTING = 4;
const HEADER_CHUNK = 1 << 20;

export enum GgufValueType {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}

/** Fewest bytes one value of each type can take, used to bound counts before reading them. */
const MIN_VALUE_BYTES: Record<GgufValueType, number> = {
  [GgufValueType.UINT8]: 1, [GgufValueType.INT8]: 1, [GgufValueType.UINT16]: 2, [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4, [GgufValueType.INT32]: 4, [GgufValueType.FLOAT32]: 4, [GgufValueType.BOOL]: 1,
  [GgufValueType.STRING]: 8, [GgufValueType.ARRAY]: 12, [GgufValueType.UINT64]: 8, [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

/** A metadata value: numbers (u64/i64 outside the safe range stay bigint), strings, booleans, arrays of them. */
export type GgufValue = number | bigint | string | boolean | GgufValue[];
export type GgufMetadata = Readonly<Record<string, GgufValue>>;

/** Reads the header sequentially through a buffer refilled from the file, never past its end. */
class HeaderReader {
  private buffer = Buffer.alloc(0);
  private bufferStart = 0;
  position = 0;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(
    private readonly fd: number,
    private readonly file: string,
    readonly fileSize: number,
    readonly fail: (message: string) => never,
  ) {}

  get remaining(): number {
    return this.fileSize - this.position;
  }

  /** Makes `n` bytes at the current position available and returns their offset in the buffer. */
  private take(n: number, what: string): number {
    if (n > this.remaining) this.fail(`truncated: ${what} needs ${n} bytes at offset ${this.position}, but the file ends at ${this.fileSize}`);
    if (this.position + n > this.bufferStart + this.buffer.length) {
      const length = Math.min(Math.max(n, HEADER_CHUNK), this.remaining);
      this.buffer = Buffer.alloc(length);
      readExactly(this.fd, this.buffer, this.position, this.file);
      this.bufferStart = this.position;
    }
    const at = this.position - this.bufferStart;
    this.position += n;
    return at;
  }

  /** The next `n` bytes, as a view that stays valid until the next read. */
  private bytes(n: number, what: string): Buffer {
    const at = this.take(n, what);
    return this.buffer.subarray(at, at + n);
  }

  u8(what: string): number { return this.bytes(1, what).readUInt8(0); }
  i8(what: string): number { return this.bytes(1, what).readInt8(0); }
  u16(what: string): number { return this.bytes(2, what).readUInt16LE(0); }
  i16(what: string): number { return this.bytes(2, what).readInt16LE(0); }
  u32(what: string): number { return this.bytes(4, what).readUInt32LE(0); }
  i32(what: string): number { return this.bytes(4, what).readInt32LE(0); }
  f32(what: string): number { return this.bytes(4, what).readFloatLE(0); }
  f64(what: string): number { return this.bytes(8, what).readDoubleLE(0); }
  u64(what: string): bigint { return this.bytes(8, what).readBigUInt64LE(0); }
  i64(what: string): bigint { return this.bytes(8, what).readBigInt64LE(0); }

  /** A u64 that must fit a JS number (counts, lengths, dims, offsets). */
  size(what: string): number {
    const value = this.u64(what);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${value} is impossibly large`);
    return Number(value);
  }

  /** A u64 count of items each at least `minBytes` long, which must fit in what is left of the file. */
  count(what: string, minBytes: number): number {
    const n = this.size(what);
    if (n * minBytes > this.remaining) this.fail(`${what} ${n} cannot fit in the ${this.remaining} bytes left in the file`);
    return n;
  }

  string(what: string): string {
    const length = this.count(`length of ${what}`, 1);
    const bytes = this.bytes(length, what);
    try {
      return this.decoder.decode(bytes);
    } catch {
      return this.fail(`${what} is not valid UTF-8`);
    }
  }
}

function readValue(reader: HeaderReader, type: number, what: string, depth: number): GgufValue {
  switch (type) {
    case GgufValueType.UINT8: return reader.u8(what);
    case GgufValueType.INT8: return reader.i8(what);
    case GgufValueType.UINT16: return reader.u16(what);
    case GgufValueType.INT16: return reader.i16(what);
    case GgufValueType.UINT32: return reader.u32(what);
    case GgufValueType.INT32: return reader.i32(what);
    case GgufValueType.FLOAT32: return reader.f32(what);
    case GgufValueType.FLOAT64: return reader.f64(what);
    case GgufValueType.BOOL: return reader.u8(what) !== 0;
    case GgufValueType.STRING: return reader.string(what);
    case GgufValueType.UINT64: return safeNumber(reader.u64(what));
    case GgufValueType.INT64: return safeNumber(reader.i64(what));
    case GgufValueType.ARRAY: {
      if (depth >= MAX_ARRAY_NESTING) reader.fail(`${what} nests arrays more than ${MAX_ARRAY_NESTING} deep`);
      const elementType = reader.u32(`element type of ${what}`);
      if (!(elementType in MIN_VALUE_BYTES)) reader.fail(`${what} has unknown element type ${elementType}`);
      const length = reader.count(`length of ${what}`, MIN_VALUE_BYTES[elementType as GgufValueType]);
      const items: GgufValue[] = new Array(length);
      for (let i = 0; i < length; i++) items[i] = readValue(reader, elementType, what, depth + 1);
      return items;
    }
    default:
      return reader.fail(`${what} has unknown value type ${type}`);
  }
}

function safeNumber(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

interface GgufEntry extends TensorInfo {
  type: GgmlType;
  /** Absolute position of the tensor's first byte. */
  position: number;
  elements: number;
}

class GgufStore implements TensorStore {
  readonly format = 'gguf' as const;
  private fd: number | undefined;

  constructor(
    readonly path: string,
    fd: number,
    readonly version: number,
    readonly metadata: Record<string, GgufValue>,
    private readonly entries: Map<string, GgufEntry>,
  ) {
    this.fd = fd;
  }

  list(): TensorInfo[] {
    return [...this.entries.values()].map(publicInfo);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    return publicInfo(this.entry(name));
  }

  read(name: string, rows?: RowRange): Float32Array {
    const entry = this.entry(name);
    if (this.fd === undefined) throw new TopiaryError(`cannot read "${name}": the tensor store was closed`, this.path);
    if (!canDequantize(entry.type)) {
      throw new TopiaryError(`tensor "${name}" has ggml type ${entry.type.name}, which Topiary cannot dequantize`, this.path);
    }
    // A row is whole blocks (checked when the file was opened), so any row range is too.
    const { elements, byteOffset, byteLength } = rowSpan(publicInfo(entry), rows, (cols) => ggmlByteLength(entry.type, cols), this.path);
    const position = entry.position + byteOffset;
    if (entry.type === GGML_TYPES.F32) return readFloat32(this.fd, position, elements, this.path);
    const bytes = new Uint8Array(byteLength);
    readExactly(this.fd, bytes, position, this.path);
    return dequantize(entry.type, bytes, elements);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private entry(name: string): GgufEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new TopiaryError(`no tensor named "${name}"`, this.path);
    return entry;
  }
}

function publicInfo(entry: GgufEntry): TensorInfo {
  return { name: entry.name, dtype: entry.dtype, shape: [...entry.shape], byteLength: entry.byteLength };
}

/** Opens a GGUF file lazily: the header now, each tensor's bytes when it is read. */
export function openGguf(file: string): TensorStore & { readonly version: number; readonly metadata: Record<string, GgufValue> } {
  const { fd, size } = openRegularFile(file);
  try {
    const { version, metadata, entries } = parseGguf(fd, size, file);
    return new GgufStore(file, fd, version, metadata, entries);
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

function parseGguf(fd: number, fileSize: number, file: string) {
  const fail = (message: string): never => {
    throw new TopiaryError(`not a valid GGUF file: ${message}`, file);
  };
  const reader = new HeaderReader(fd, file, fileSize, fail);
  if (fileSize < 4 || reader.u32('magic') !== GGUF_MAGIC) fail('bad magic (expected "GGUF")');
  const version = reader.u32('version');
  if (version !== 2 && version !== 3) {
    if (version === 0x02000000 || version === 0x03000000) fail('big-endian GGUF files are not supported');
    fail(`version ${version} is not supported (only 2 and 3)`);
  }
  // A tensor info is at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes; a key/value 8 + 4 + 1.
  const tensorCount = reader.count('tensor count', 24);
  const kvCount = reader.count('key/value count', 13);

  const values = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = reader.string(`key ${i}`);
    if (values.has(key)) fail(`duplicate key "${key}"`);
    const type = reader.u32(`value type of "${key}"`);
    values.set(key, readValue(reader, type, `value of "${key}"`, 0));
  }
  const metadata: Record<string, GgufValue> = Object.fromEntries(values);
  const alignment = values.get('general.alignment') ?? DEFAULT_ALIGNMENT;
  if (typeof alignment !== 'number' || !Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0 || alignment > 1 << 30) {
    fail(`general.alignment ${String(alignment)} is not a power of two`);
  }
  const align = alignment as number;

  const infos: { name: string; dims: number[]; type: GgmlType; offset: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = reader.string(`name of tensor ${i}`);
    if (names.has(name)) fail(`duplicate tensor "${name}"`);
    names.add(name);
    const nDims = reader.u32(`dimension count of "${name}"`);
    if (nDims > MAX_DIMS) fail(`tensor "${name}" has ${nDims} dimensions (at most ${MAX_DIMS})`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(reader.size(`dimension ${d} of "${name}"`));
    const typeId = reader.u32(`type of "${name}"`);
    const type = ggmlTypeFromId(typeId);
    if (!type) fail(`tensor "${name}" has unknown ggml type id ${typeId}`);
    const offset = reader.size(`data offset of "${name}"`);
    if (offset % align !== 0) fail(`tensor "${name}" data offset ${offset} is not a multiple of the alignment ${align}`);
    infos.push({ name, dims, type: type!, offset });
  }
  const dataStart = Math.ceil(reader.position / align) * align;
  const dataSize = fileSize - dataStart;

  const entries = new Map<string, GgufEntry>();
  for (const { name, dims, type, offset } of infos) {
    const elements = product(dims);
    if (!Number.isSafeInteger(elements)) fail(`tensor "${name}" has ${dims.join(' x ')} elements, impossibly many`);
    if ((dims[0] ?? 1) % type.blockSize !== 0) {
      fail(`tensor "${name}" rows of ${dims[0]} values are not whole ${type.name} blocks of ${type.blockSize}`);
    }
    const byteLength = ggmlByteLength(type, elements);
    if (offset + byteLength > dataSize) {
      fail(`tensor "${name}" (${byteLength} bytes at data offset ${offset}) runs past the end of the file`);
    }
    entries.set(name, {
      name, dtype: type.name, shape: [...dims].reverse(), byteLength, type, elements, position: dataStart + offset,
    });
  }
  const byOffset = [...entries.values()].sort((a, b) => a.position - b.position);
  for (let i = 1; i < byOffset.length; i++) {
    const before = byOffset[i - 1];
    if (byOffset[i].position < before.position + before.byteLength) fail(`tensors "${before.name}" and "${byOffset[i].name}" overlap`);
  }
  return { version, metadata, entries };
}
