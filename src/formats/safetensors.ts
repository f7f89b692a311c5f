/**
 * safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
 * shape and [begin, end) byte range in the data area, then the data area. Reading is lazy (only the
 * header at open); writing streams tensor by tensor. A folder is either sharded
 * (`model.safetensors.index.json` mapping tensor names to shard files) or holds `model.safetensors`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { firstNonFinite16, requireFinite } from '../util/finite.js';
import { TopiaryError } from '../util/errors.js';
import { writeAll, writeFileAtomic, writeFileContentAtomic } from '../util/atomic.js';
import { describeFsError, describeJsonError, openRegularFile, parseJson, readTextFile, READ_LIMITS, type ReadOptions } from '../util/safe-fs.js';
import { rowSpan, type RowRange, type TensorInfo, type TensorStore } from './tensors.js';
import {
  bfloat16BitsToFloat,
  floatToBfloat16Bits,
  floatToHalfBits,
  halfBitsToFloat,
  product,
  readExactly,
  readFloat32,
} from './binary.js';

/** Bytes per element of every dtype the format defines; only the float ones can be read as weights. */
const DTYPE_SIZES: Readonly<Record<string, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};
const READABLE_DTYPES = ['F32', 'F16', 'BF16', 'F64'];
/** The reference implementation's limit: a larger header is a corrupt or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;
export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

interface Entry extends TensorInfo {
  /** Absolute position of the tensor's first byte in its file. */
  position: number;
}

/** One .safetensors file: its parsed header, and a descriptor opened on the first read. */
class SafetensorsFile {
  private fd: number | undefined;

  private constructor(
    readonly file: string,
    readonly entries: Map<string, Entry>,
    readonly metadata: Record<string, string>,
    private readonly readOptions: ReadOptions,
  ) {}

  /** Opens `file`; with `within`, it must really lie in that folder (a shard of a model folder). */
  static open(file: string, readOptions: ReadOptions = {}): SafetensorsFile {
    const { fd, size } = openRegularFile(file, readOptions);
    try {
      const { entries, metadata } = parseHeader(fd, size, file);
      return new SafetensorsFile(file, entries, metadata, readOptions);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** The tensor's stored bytes as they are (bitmasks, integer shapes): bounded by the file's size, checked at open. */
  readBytes(entry: Entry): Uint8Array {
    this.fd ??= openRegularFile(this.file, this.readOptions).fd;
    const bytes = new Uint8Array(entry.byteLength);
    readExactly(this.fd, bytes, entry.position, this.file);
    return bytes;
  }

  read(entry: Entry, rows?: RowRange): Float32Array {
    this.fd ??= openRegularFile(this.file, this.readOptions).fd;
    const width = DTYPE_SIZES[entry.dtype]!;
    if (!READABLE_DTYPES.includes(entry.dtype)) {
      throw new TopiaryError(`tensor "${entry.name}" has dtype ${entry.dtype}; only ${READABLE_DTYPES.join(', ')} tensors can be read as weights`, this.file);
    }
    const { elements: count, byteOffset } = rowSpan(entry, rows, (cols) => cols * width, this.file);
    const position = entry.position + byteOffset;
    switch (entry.dtype) {
      case 'F32':
        return readFloat32(this.fd, position, count, this.file);
      case 'F16':
      case 'BF16': {
        const bits = new Uint16Array(count);
        readExactly(this.fd, new Uint8Array(bits.buffer), position, this.file);
        return entry.dtype === 'F16' ? halfBitsToFloat(bits) : bfloat16BitsToFloat(bits);
      }
      default: {
        const wide = new Float64Array(count);
        readExactly(this.fd, new Uint8Array(wide.buffer), position, this.file);
        return Float32Array.from(wide);
      }
    }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

function parseHeader(fd: number, fileSize: number, file: string): { entries: Map<string, Entry>; metadata: Record<string, string> } {
  const fail = (message: string): never => {
    throw new TopiaryError(`not a valid safetensors file: ${message}`, file);
  };
  if (fileSize < 8) fail(`only ${fileSize} bytes, too short for the 8-byte header length`);
  const lengthBytes = Buffer.alloc(8);
  readExactly(fd, lengthBytes, 0, file);
  const headerLength = lengthBytes.readBigUInt64LE(0);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLength} is over the ${MAX_HEADER_BYTES}-byte limit`);
  const headerBytes = Number(headerLength);
  if (8 + headerBytes > fileSize) fail(`header length ${headerBytes} runs past the end of the ${fileSize}-byte file`);
  const raw = Buffer.alloc(headerBytes);
  readExactly(fd, raw, 8, file);
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    fail(`header is ${describeJsonError(error)}`);
  }
  if (!isPlainObject(header)) return fail('header is not a JSON object');

  const dataStart = 8 + headerBytes;
  const dataSize = fileSize - dataStart;
  const entries = new Map<string, Entry>();
  const ranges: { name: string; begin: number; end: number }[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value, fail);
      continue;
    }
    if (!isPlainObject(value)) return fail(`entry "${name}" is not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_SIZES, dtype)) return fail(`tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isCount)) return fail(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
      return fail(`tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataSize) fail(`tensor "${name}" ends at byte ${end} of a ${dataSize}-byte data area`);
    const elements = product(shape as number[]);
    const expectedBytes = elements * DTYPE_SIZES[dtype];
    if (!Number.isSafeInteger(expectedBytes) || expectedBytes !== end - begin) {
      fail(`tensor "${name}" of shape [${shape.join(', ')}] and dtype ${dtype} needs ${expectedBytes} bytes, but its offsets span ${end - begin}`);
    }
    entries.set(name, { name, dtype, shape: shape as number[], byteLength: end - begin, position: dataStart + begin });
    ranges.push({ name, begin, end });
  }

  // As the reference implementation requires: tensors tile the data area exactly, no overlaps, no holes.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  for (const range of ranges) {
    if (range.begin < covered) fail(`tensor "${range.name}" overlaps the tensor before it`);
    if (range.begin > covered) fail(`bytes ${covered}..${range.begin} of the data area belong to no tensor`);
    covered = range.end;
  }
  if (covered !== dataSize) fail(`the data area has ${dataSize} bytes but the tensors cover ${covered}`);
  return { entries, metadata };
}

function parseMetadata(value: unknown, fail: (message: string) => never): Record<string, string> {
  if (!isPlainObject(value)) return fail('__metadata__ is not an object');
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'string') fail(`__metadata__ value of "${key}" is not a string`);
  }
  return value as Record<string, string>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A safetensors file or folder: besides the float tensors as fp32, any tensor's raw bytes. */
export interface SafetensorsStore extends TensorStore {
  readonly format: 'safetensors';
  /** The stored little-endian bytes of tensor `name`, whatever its dtype. */
  readBytes(name: string): Uint8Array;
  /** The .safetensors file that holds tensor `name` (a shard, in a sharded folder), for error messages. */
  fileOf(name: string): string;
}

class SafetensorsFileStore implements SafetensorsStore {
  readonly format = 'safetensors' as const;
  private closed = false;

  constructor(
    readonly path: string,
    readonly metadata: Record<string, unknown>,
    private readonly files: SafetensorsFile[],
    /** Tensor name -> the file that holds it (for shards, as the index's weight_map says). */
    private readonly owners: Map<string, SafetensorsFile>,
  ) {}

  list(): TensorInfo[] {
    return [...this.owners].map(([name, owner]) => publicInfo(owner.entries.get(name)!));
  }

  has(name: string): boolean {
    return this.owners.has(name);
  }

  info(name: string): TensorInfo {
    return publicInfo(this.entry(name).entry);
  }

  read(name: string, rows?: RowRange): Float32Array {
    const { owner, entry } = this.openEntry(name);
    return owner.read(entry, rows);
  }

  readBytes(name: string): Uint8Array {
    const { owner, entry } = this.openEntry(name);
    return owner.readBytes(entry);
  }

  fileOf(name: string): string {
    return this.entry(name).owner.file;
  }

  private openEntry(name: string): { owner: SafetensorsFile; entry: Entry } {
    if (this.closed) throw new TopiaryError(`cannot read "${name}": the tensor store was closed`, this.path);
    return this.entry(name);
  }

  close(): void {
    this.closed = true;
    for (const file of this.files) file.close();
  }

  private entry(name: string): { owner: SafetensorsFile; entry: Entry } {
    const owner = this.owners.get(name);
    if (!owner) throw new TopiaryError(`no tensor named "${name}"`, this.path);
    return { owner, entry: owner.entries.get(name)! };
  }
}

function publicInfo(entry: Entry): TensorInfo {
  return { name: entry.name, dtype: entry.dtype, shape: [...entry.shape], byteLength: entry.byteLength };
}

/** Opens a .safetensors file, or a folder holding a sharded index or a single model.safetensors. */
export function openSafetensors(target: string): SafetensorsStore {
  let isFolder: boolean;
  try {
    isFolder = fs.statSync(target).isDirectory();
  } catch (error) {
    throw new TopiaryError(describeFsError(error, 'cannot open'), target);
  }
  if (!isFolder) return singleFileStore(target, target);
  const indexPath = path.join(target, INDEX_FILE);
  if (fs.existsSync(indexPath)) return shardedStore(target, indexPath);
  const singlePath = path.join(target, SINGLE_FILE);
  if (fs.existsSync(singlePath)) return singleFileStore(target, singlePath, { within: target });
  throw new TopiaryError(`folder has neither ${INDEX_FILE} nor ${SINGLE_FILE}`, target);
}

function singleFileStore(storePath: string, file: string, readOptions: ReadOptions = {}): SafetensorsStore {
  const opened = SafetensorsFile.open(file, readOptions);
  const owners = new Map([...opened.entries.keys()].map((name) => [name, opened]));
  return new SafetensorsFileStore(storePath, { ...opened.metadata }, [opened], owners);
}

function shardedStore(folder: string, indexPath: string): SafetensorsStore {
  const fail = (message: string): never => {
    throw new TopiaryError(`invalid shard index: ${message}`, indexPath);
  };
  const index = parseJson(readTextFile(indexPath, READ_LIMITS.json, { within: folder }), indexPath);
  if (!isPlainObject(index) || !isPlainObject(index.weight_map)) return fail('no "weight_map" object');
  const shards = new Map<string, SafetensorsFile>();
  const owners = new Map<string, SafetensorsFile>();
  try {
    for (const [name, shardName] of Object.entries(index.weight_map)) {
      // Shards must sit in the folder itself: an index must not point readers anywhere else.
      if (typeof shardName !== 'string' || shardName !== path.basename(shardName) || shardName === '..' || shardName === '.') {
        fail(`tensor "${name}" maps to ${JSON.stringify(shardName)}, which is not a file name in the folder`);
      }
      let shard = shards.get(shardName as string);
      if (!shard) {
        shard = SafetensorsFile.open(path.join(folder, shardName as string), { within: folder });
        shards.set(shardName as string, shard);
      }
      if (!shard.entries.has(name)) fail(`tensor "${name}" is not in its shard ${shardName}`);
      owners.set(name, shard);
    }
  } catch (error) {
    for (const shard of shards.values()) shard.close();
    throw error;
  }
  const shardMetadata = Object.assign({}, ...[...shards.values()].map((shard) => shard.metadata));
  const indexMetadata = isPlainObject(index.metadata) ? index.metadata : {};
  return new SafetensorsFileStore(folder, { ...shardMetadata, ...indexMetadata }, [...shards.values()], owners);
}

/** The values of a tensor to write: floats, or bytes (U8) and 64-bit integers (I64) stored as they are. */
export type TensorValues = Float32Array | Uint8Array | BigInt64Array;

/**
 * Float values produced a piece at a time (a large embedding copied from its source a few rows at
 * a time): the pieces, in order, make up the tensor.
 */
export interface ChunkedValues {
  chunks: () => Iterable<Float32Array>;
}

export interface TensorToWrite {
  name: string;
  /** Row-major (PyTorch) shape; product(shape) must equal data.length. */
  shape: number[];
  /**
   * The values, or a function producing them when the tensor's turn comes: with functions, only
   * one tensor is in memory at a time however large the model.
   */
  data: TensorValues | (() => TensorValues) | ChunkedValues;
  /**
   * Stored type; floats are stored as F32 (the default, lossless) or rounded to nearest even
   * F16/BF16; U8 takes a Uint8Array (bitmasks), I64 a BigInt64Array (shapes, offsets).
   */
  dtype?: 'F32' | 'F16' | 'BF16' | 'U8' | 'I64';
}

/** Elements converted per write when narrowing to 16 bits, so memory stays bounded for huge tensors. */
const CONVERT_CHUNK = 1 << 20;

/**
 * Writes tensors (in the given order) to a .safetensors file atomically, streaming each tensor's
 * bytes instead of building the whole file in memory. NaN and infinities, and values the stored
 * type cannot hold, are refused unless `allowNonFinite` (for tests of the format's rounding
 * itself): a model file that holds one is broken, not a result.
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata?: Record<string, string>, options: { allowNonFinite?: boolean } = {}): void {
  // No prototype, so a tensor named like an Object method (or __proto__) is just a key.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw new TopiaryError(`metadata value of "${key}" must be a string`, file);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const tensor of tensors) {
    const dtype = tensor.dtype ?? 'F32';
    if (!tensor.name || tensor.name === '__metadata__' || Object.hasOwn(header, tensor.name)) {
      throw new TopiaryError(`cannot write tensor named ${JSON.stringify(tensor.name)}: empty, reserved or duplicate`, file);
    }
    if (!['F32', 'F16', 'BF16', 'U8', 'I64'].includes(dtype)) throw new TopiaryError(`cannot write tensor "${tensor.name}" as ${dtype}`, file);
    if (!tensor.shape.every(isCount) || (ArrayBuffer.isView(tensor.data) && product(tensor.shape) !== tensor.data.length)) {
      throw new TopiaryError(`tensor "${tensor.name}" has shape [${tensor.shape.join(', ')}] but ${valueCount(tensor)} values`, file);
    }
    const byteLength = product(tensor.shape) * DTYPE_SIZES[dtype];
    header[tensor.name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data area starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));

  writeFileAtomic(file, (fd) => {
    writeAll(fd, lengthBytes);
    writeAll(fd, headerBytes);
    for (const tensor of tensors) writeTensorData(fd, tensor, file, options.allowNonFinite === true);
  });
}

function valueCount(tensor: TensorToWrite): string {
  return ArrayBuffer.isView(tensor.data) ? String(tensor.data.length) : 'a lazy';
}

function writeTensorData(fd: number, tensor: TensorToWrite, file: string, allowNonFinite: boolean): void {
  const parts: Iterable<TensorValues> = ArrayBuffer.isView(tensor.data) ? [tensor.data] : 'chunks' in tensor.data ? tensor.data.chunks() : [tensor.data()];
  const count = product(tensor.shape);
  const mismatch = (values: number) => new TopiaryError(`tensor "${tensor.name}" has shape [${tensor.shape.join(', ')}] but ${values} values`, file);
  let written = 0;
  for (const part of parts) {
    if (written + part.length > count) throw mismatch(written + part.length);
    writeValues(fd, tensor, part, written, file, allowNonFinite);
    written += part.length;
  }
  if (written !== count) throw mismatch(written);
}

/** Writes `data`, the values of `tensor` from element `first` on, in its stored type. */
function writeValues(fd: number, tensor: TensorToWrite, data: TensorValues, first: number, file: string, allowNonFinite: boolean): void {
  const dtype = tensor.dtype ?? 'F32';
  const expected = dtype === 'U8' ? Uint8Array : dtype === 'I64' ? BigInt64Array : Float32Array;
  if (!(data instanceof expected)) throw new TopiaryError(`tensor "${tensor.name}" is stored as ${dtype} but its values are a ${data.constructor.name}`, file);
  if (!(data instanceof Float32Array) || dtype === 'F32') {
    if (data instanceof Float32Array && !allowNonFinite) requireFinite(data, `refusing to write tensor "${tensor.name}": it`, file);
    writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return;
  }
  if (!allowNonFinite) requireFinite(data, `refusing to write tensor "${tensor.name}": it`, file);
  const narrow = dtype === 'F16' ? floatToHalfBits : floatToBfloat16Bits;
  const bits = new Uint16Array(Math.min(CONVERT_CHUNK, data.length));
  for (let start = 0; start < data.length; start += CONVERT_CHUNK) {
    const chunk = data.subarray(start, Math.min(start + CONVERT_CHUNK, data.length));
    const out = bits.subarray(0, chunk.length);
    narrow(chunk, out);
    const overflow = firstNonFinite16(out, dtype as 'F16' | 'BF16');
    if (overflow >= 0 && !allowNonFinite) {
      throw new TopiaryError(`refusing to write tensor "${tensor.name}": its value ${chunk[overflow]} at index ${first + start + overflow} does not fit ${dtype}`, file);
    }
    writeAll(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  }
}

/** transformers' default shard limit (huggingface_hub's MAX_SHARD_SIZE, "5GB"). */
export const DEFAULT_MAX_SHARD_SIZE = 5e9;

/** The decimal units huggingface_hub's parse_size_to_int takes ("5GB" is 5·10⁹ bytes). */
const SIZE_UNITS: Readonly<Record<string, number>> = { KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 };

/**
 * A shard size as transformers' `max_shard_size` takes it: a number with a unit KB, MB, GB or TB
 * (decimal, any case, "1.5GB" allowed), or a plain whole number of bytes. Returns undefined for
 * anything else, or a size below one byte.
 */
export function parseShardSize(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]B)?$/i.exec(text.trim());
  if (!match) return undefined;
  const unit = match[2]?.toUpperCase();
  if (unit === undefined && match[1]!.includes('.')) return undefined;
  const bytes = Math.floor(Number(match[1]) * (unit === undefined ? 1 : SIZE_UNITS[unit]!));
  return Number.isSafeInteger(bytes) && bytes >= 1 ? bytes : undefined;
}

function storedBytes(tensor: TensorToWrite): number {
  return product(tensor.shape) * DTYPE_SIZES[tensor.dtype ?? 'F32']!;
}

/**
 * The shards, as groups of tensor names, in huggingface_hub's split_state_dict_into_shards_factory
 * order (what transformers' save_pretrained uses): tensors are taken in order into the current
 * shard, which is closed when the next tensor would take it over `maxShardSize`; a tensor larger
 * than the limit is closed at once in a shard of its own, placed before the shard still filling.
 * Decided from shapes and dtypes alone, before a byte is written.
 */
export function planShards(tensors: readonly TensorToWrite[], maxShardSize: number): string[][] {
  const shards: string[][] = [];
  let current: string[] = [];
  let currentBytes = 0;
  for (const tensor of tensors) {
    const bytes = storedBytes(tensor);
    if (bytes > maxShardSize) {
      shards.push([tensor.name]);
      continue;
    }
    if (currentBytes + bytes > maxShardSize) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(tensor.name);
    currentBytes += bytes;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

/**
 * Writes tensors into `dir` as transformers does: `model.safetensors` when they fit in one shard,
 * else `model-0000k-of-0000n.safetensors` shards of at most `maxShardSize` bytes of data each (a
 * larger tensor alone in its shard) and `model.safetensors.index.json` (metadata.total_size,
 * weight_map). Each shard is written atomically, streamed a tensor at a time; the caller publishes
 * the folder as a whole. Returns the files written.
 */
export function writeSafetensorsShards(dir: string, tensors: TensorToWrite[], metadata: Record<string, string>, maxShardSize = DEFAULT_MAX_SHARD_SIZE): string[] {
  const shards = planShards(tensors, maxShardSize);
  if (shards.length <= 1) {
    const file = path.join(dir, SINGLE_FILE);
    writeSafetensors(file, tensors, metadata);
    return [file];
  }
  const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
  if (byName.size !== tensors.length) throw new TopiaryError('cannot write two tensors of the same name', dir);
  const digits = (count: number) => String(count).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  for (const [i, names] of shards.entries()) {
    const shardName = `model-${digits(i + 1)}-of-${digits(shards.length)}.safetensors`;
    const file = path.join(dir, shardName);
    writeSafetensors(file, names.map((name) => byName.get(name)!), metadata);
    for (const name of names) weightMap[name] = shardName;
    files.push(file);
  }
  const totalSize = tensors.reduce((sum, tensor) => sum + storedBytes(tensor), 0);
  // As transformers writes it: keys sorted, two-space indent, a final newline.
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((name) => [name, weightMap[name]]));
  const indexFile = path.join(dir, INDEX_FILE);
  writeFileContentAtomic(indexFile, JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2) + '\n');
  return [...files, indexFile];
}
