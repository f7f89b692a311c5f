/**
 * Calibration windows as files, so a run's exact windows can be kept, fed back (`--calib
 * tokens:FILE`) or handed to another tool. Two formats, chosen by the file name:
 *
 * - `.npy`: NumPy's format, int32 [windows, seqlen] in C order (what `np.save` writes for such an
 *   array). Read back: int32 or int64, little-endian, C order, format versions 1 to 3. The NumPy
 *   header can hold nothing else, so no provenance travels with it.
 * - anything else: JSON. Written as an object `{"format": "topiary-calibration-windows",
 *   "version": 1, "tokenizer": …, "corpus": …, "seed": …, "windows": [[ids], …]}`, one window per
 *   line; read back either that object or a plain list of lists of ids.
 *
 * Either file is untrusted input: every check failure is one line naming the file, and nothing is
 * allocated from a size the file claims before the file is known to hold it.
 */
import { createHash } from 'node:crypto';
import { writeFileContentAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
import { parseJson, readRegularFile, READ_LIMITS } from '../util/safe-fs.js';

const JSON_FORMAT = 'topiary-calibration-windows';

/** Where the windows were drawn from, carried through the JSON file so a round trip is byte-identical. */
export interface WindowsProvenance {
  /** The tokenizer that produced the ids (its source and vocabulary size). */
  tokenizer?: { source: string; vocabSize: number };
  /** The corpus spec the windows were drawn from (c4, wikitext2, text:FILE). */
  corpus?: string;
  seed?: number;
}

export interface TokenWindowsFile {
  windows: number[][];
  provenance: WindowsProvenance;
  /** sha256 of the ids as little-endian int32, whatever the file format: the windows' identity. */
  sha256: string;
}

const isNpy = (file: string) => file.toLowerCase().endsWith('.npy');

/** sha256 of the windows as little-endian int32 (what the checkpoint fingerprint and the record use). */
export function windowsDigest(windows: readonly (readonly number[])[]): string {
  const hash = createHash('sha256');
  for (const window of windows) hash.update(new Uint8Array(Int32Array.from(window).buffer));
  return hash.digest('hex');
}

/** Writes `windows` to `file` (.npy as int32, otherwise JSON with `provenance`), atomically. */
export function writeTokenWindows(file: string, windows: readonly (readonly number[])[], provenance: WindowsProvenance): void {
  writeFileContentAtomic(file, isNpy(file) ? npyBytes(windows) : jsonText(windows, provenance));
}

function jsonText(windows: readonly (readonly number[])[], provenance: WindowsProvenance): string {
  const header: Record<string, unknown> = { format: JSON_FORMAT, version: 1, ...provenance };
  const lines = windows.map((window) => `  ${JSON.stringify(window)}`);
  return `${JSON.stringify(header).slice(0, -1)},\n "windows": [\n${lines.join(',\n')}\n ]\n}\n`;
}

function npyBytes(windows: readonly (readonly number[])[]): Uint8Array {
  const rows = windows.length;
  const cols = windows[0]?.length ?? 0;
  // NumPy pads the header with spaces so the data starts at a multiple of 64, ending with "\n".
  let header = `{'descr': '<i4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  const unpadded = 10 + header.length + 1;
  header += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + rows * cols * 4);
  out.set([0x93, ...Buffer.from('NUMPY'), 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(Buffer.from(header, 'latin1'), 10);
  const data = new DataView(out.buffer, 10 + header.length);
  windows.forEach((window, r) => window.forEach((id, c) => data.setInt32((r * cols + c) * 4, id, true)));
  return out;
}

/**
 * Reads windows written by `writeTokenWindows`, NumPy or any tool writing a list of lists, and
 * checks them: at least one window, all of one length, every id an integer in [0, vocabSize).
 */
export function readTokenWindows(file: string, vocabSize: number): TokenWindowsFile {
  const bytes = readRegularFile(file, READ_LIMITS.json);
  const fail = (message: string): never => {
    throw new TopiaryError(message, file);
  };
  const npy = bytes.subarray(0, 6).equals(NPY_MAGIC);
  if (isNpy(file) && !npy) fail('not a NumPy .npy file (no \\x93NUMPY magic)');
  const { windows, provenance } = npy ? readNpy(bytes, fail) : readJson(bytes, file, fail);
  if (windows.length === 0) fail('holds no calibration window');
  const seqlen = windows[0]!.length;
  if (seqlen < 2) fail(`windows of ${seqlen} token(s): a calibration window needs at least 2`);
  windows.forEach((window, w) => {
    if (window.length !== seqlen) fail(`window ${w} has ${window.length} tokens, window 0 has ${seqlen}: all windows must be of one length`);
    window.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) fail(`window ${w}, token ${t}: ${String(id)} is not a token id of this model (0 to ${vocabSize - 1})`);
    });
  });
  return { windows, provenance, sha256: windowsDigest(windows) };
}

const NPY_MAGIC = Buffer.from([0x93, ...Buffer.from('NUMPY')]);

function readJson(bytes: Buffer, file: string, fail: (message: string) => never): { windows: number[][]; provenance: WindowsProvenance } {
  const value = parseJson(bytes.toString('utf8'), file);
  const isObject = typeof value === 'object' && value !== null && !Array.isArray(value);
  const json = value as Record<string, unknown>;
  if (isObject && json.format !== JSON_FORMAT) fail(`a JSON object whose "format" is not "${JSON_FORMAT}" (expected that, or a list of lists of token ids)`);
  if (isObject && json.version !== 1) fail(`calibration windows version ${JSON.stringify(json.version)}; this Topiary reads version 1`);
  const windows = isObject ? json.windows : value;
  if (!Array.isArray(windows) || !windows.every((window) => Array.isArray(window))) fail('expected a list of lists of token ids');
  const provenance: WindowsProvenance = {};
  if (isObject) {
    const { tokenizer, corpus, seed } = json;
    const tokenizerJson = tokenizer as Record<string, unknown> | undefined;
    if (tokenizer !== undefined && !(typeof tokenizerJson?.source === 'string' && Number.isInteger(tokenizerJson.vocabSize))) fail('"tokenizer" should be {"source": string, "vocabSize": integer}');
    if (corpus !== undefined && typeof corpus !== 'string') fail('"corpus" should be a string');
    if (seed !== undefined && !Number.isInteger(seed)) fail('"seed" should be an integer');
    if (tokenizerJson) provenance.tokenizer = { source: tokenizerJson.source as string, vocabSize: tokenizerJson.vocabSize as number };
    if (corpus !== undefined) provenance.corpus = corpus as string;
    if (seed !== undefined) provenance.seed = seed as number;
  }
  return { windows: windows as number[][], provenance };
}

/** A NumPy header dict: `{'descr': '<i8', 'fortran_order': False, 'shape': (2, 5), }`, parsed strictly. */
function parseNpyHeader(text: string, fail: (message: string) => never): { descr: string; fortranOrder: boolean; shape: number[] } {
  const bad = (): never => fail('malformed .npy header (expected {\'descr\': ..., \'fortran_order\': ..., \'shape\': (...)})');
  const fields = new Map<string, string>();
  const body = /^\{(.*)\}\s*$/s.exec(text)?.[1] ?? bad();
  const field = /\s*'(\w+)'\s*:\s*('[^']*'|True|False|\([\d\s,]*\))\s*(,|$)/y;
  while (field.lastIndex < body.trimEnd().length) {
    const match = field.exec(body) ?? bad();
    if (fields.has(match[1]!)) bad();
    fields.set(match[1]!, match[2]!);
    if (match[3] === '') break;
  }
  if (fields.size !== 3 || !fields.has('descr') || !fields.has('fortran_order') || !fields.has('shape')) bad();
  const descr = fields.get('descr')!;
  const shapeText = fields.get('shape')!;
  if (!descr.startsWith("'") || !shapeText.startsWith('(')) bad();
  const shape = shapeText
    .slice(1, -1)
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .map(Number);
  if (!shape.every((n) => Number.isSafeInteger(n))) bad();
  return { descr: descr.slice(1, -1), fortranOrder: fields.get('fortran_order') === 'True', shape };
}

function readNpy(bytes: Buffer, fail: (message: string) => never): { windows: number[][]; provenance: WindowsProvenance } {
  if (bytes.length < 10) fail('truncated .npy header');
  const major = bytes[6]!;
  if (major < 1 || major > 3) fail(`.npy format version ${major}.${bytes[7]} (this Topiary reads 1.0 to 3.0)`);
  const lengthBytes = major === 1 ? 2 : 4;
  const headerStart = 8 + lengthBytes;
  if (bytes.length < headerStart) fail('truncated .npy header');
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) fail(`the .npy header claims ${headerLength} bytes; the file has ${bytes.length - headerStart} after the preamble`);
  const { descr, fortranOrder, shape } = parseNpyHeader(bytes.subarray(headerStart, dataStart).toString(major === 3 ? 'utf8' : 'latin1'), fail);
  const itemSize = descr === '<i4' ? 4 : descr === '<i8' ? 8 : fail(`dtype '${descr}' (calibration windows are int32 '<i4' or int64 '<i8')`);
  if (fortranOrder) fail('Fortran-ordered array (save a C-ordered one: np.ascontiguousarray)');
  if (shape.length !== 2) fail(`shape (${shape.join(', ')}): calibration windows are a 2-D array [windows, seqlen]`);
  const [rows, cols] = shape as [number, number];
  const dataBytes = bytes.length - dataStart;
  // Compared as the file's size divided out, so a hostile shape never overflows a product.
  if (cols === 0 || rows === 0 || rows > dataBytes / itemSize / cols || rows * cols * itemSize !== dataBytes) {
    fail(`shape (${rows}, ${cols}) of ${itemSize}-byte ids needs ${rows * cols * itemSize} bytes of data; the file has ${dataBytes}`);
  }
  const data = new DataView(bytes.buffer, bytes.byteOffset + dataStart, dataBytes);
  const windows: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const window = new Array<number>(cols);
    for (let c = 0; c < cols; c++) {
      const at = (r * cols + c) * itemSize;
      if (itemSize === 4) {
        window[c] = data.getInt32(at, true);
      } else {
        // int64: ids this large are out of any vocabulary anyway; the high word says whether it fits a double exactly.
        const high = data.getInt32(at + 4, true);
        const low = data.getUint32(at, true);
        window[c] = high === 0 ? low : high === -1 && low >= 2 ** 31 ? low - 2 ** 32 : high * 2 ** 32 + low;
      }
    }
    windows.push(window);
  }
  return { windows, provenance: {} };
}
