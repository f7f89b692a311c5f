/**
 * Opens any supported weight file or folder, recognising the format by its first bytes (or, for a
 * folder, by its safetensors files) rather than by its name.
 */
import * as fs from 'node:fs';
import { TopiaryError } from '../util/errors.js';
import type { TensorStore } from './tensors.js';
import { describeFsError, openRegularFile } from '../util/safe-fs.js';
import { readExactly } from './binary.js';
import { GGUF_MAGIC, openGguf } from './gguf.js';
import { LLAMA2C_MAGIC, isLlama2cCheckpoint, openLlama2c } from './llama2c.js';
import { MAX_HEADER_BYTES, openSafetensors } from './safetensors.js';

export type TensorFormat = TensorStore['format'];

/** Which format `target` holds, or undefined if none is recognised. */
export function detectFormat(target: string): TensorFormat | undefined {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(target);
  } catch (error) {
    throw new TopiaryError(describeFsError(error, 'cannot open'), target);
  }
  if (stat.isDirectory()) return 'safetensors';
  const { fd, size } = openRegularFile(target);
  const head = Buffer.alloc(Math.min(size, 9));
  try {
    readExactly(fd, head, 0, target);
  } finally {
    fs.closeSync(fd);
  }
  if (head.length >= 4 && head.readUInt32LE(0) === GGUF_MAGIC) return 'gguf';
  if (head.length >= 4 && head.readUInt32LE(0) === LLAMA2C_MAGIC) return 'llama2c';
  // safetensors: a plausible u64 header length, then the JSON header's opening brace. (A legacy
  // llama2.c header cannot match: its second int, hidden_dim, makes that u64 at least 2^32.)
  if (head.length === 9 && head[8] === 0x7b && head.readBigUInt64LE(0) <= BigInt(MAX_HEADER_BYTES)) return 'safetensors';
  if (isLlama2cCheckpoint(target)) return 'llama2c';
  return undefined;
}

/** Opens a safetensors file or folder, a GGUF file or a llama2.c checkpoint. */
export function openTensors(target: string): TensorStore {
  switch (detectFormat(target)) {
    case 'safetensors':
      return openSafetensors(target);
    case 'gguf':
      return openGguf(target);
    case 'llama2c':
      return openLlama2c(target);
    default:
      throw new TopiaryError('unknown weight format (expected safetensors, GGUF or a llama2.c checkpoint)', target);
  }
}
