/**
 * Writes a model as a Hugging Face folder that `transformers` loads: config.json,
 * model.safetensors (or shards and their index, as transformers splits them), and the tokenizer when one can be carried over. Tensors are streamed one at
 * a time from where they live (the source file, or a pruned layer's checkpoint), so memory stays
 * bounded by the largest tensor.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compressedMatrixTensors, scanSparseMatrix, sparsityConfigJson, type SparseStorage } from '../formats/compressed-tensors.js';
import { writeSafetensorsShards, type TensorToWrite } from '../formats/safetensors.js';
import type { CausalLM } from '../model/causal-lm.js';
import { configJson } from '../model/config.js';
import { storedLayout } from '../model/sources.js';
import { writeFileContentAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
import { READ_LIMITS, readRegularFile } from '../util/safe-fs.js';

export type ExportDtype = 'F32' | 'F16' | 'BF16';

export interface ExportOptions {
  dtype: ExportDtype;
  /** Supplies a replaced tensor (e.g. a pruned weight) by canonical name, or undefined to read it from the source. */
  override: (name: string) => (() => Float32Array) | undefined;
  /**
   * Store these matrices (canonical weight names) compressed, in the compressed-tensors convention:
   * sparse-24-bitmask when `pattern` is 2:4 and every matrix keeps at most two in each group of
   * four of its stored rows, sparse-bitmask otherwise.
   */
  sparse?: { matrices: readonly string[]; pattern?: { n: number; m: number } };
  /** Bytes of tensor data per safetensors shard (default 5·10⁹, transformers' "5GB"); one model.safetensors when all fit. */
  maxShardSize?: number;
}

/** How the sparse matrices were stored, for the run record. */
export interface SparseExport {
  storage: SparseStorage;
  /** compressed-tensors' sparsity_structure: the N:M pattern every matrix follows, or 'unstructured'. */
  structure: string;
  matrices: number;
}

/** Files carried over from a Hugging Face source folder, with their size limits. */
const CARRIED_OVER: Readonly<Record<string, number>> = {
  'tokenizer.json': READ_LIMITS.tokenizerJson,
  'vocab.json': READ_LIMITS.tokenizerJson,
  'merges.txt': READ_LIMITS.tokenizerJson,
  'tokenizer_config.json': READ_LIMITS.json,
  'special_tokens_map.json': READ_LIMITS.json,
  'tokenizer.model': READ_LIMITS.tokenizerBinary,
  'tokenizer.bin': READ_LIMITS.tokenizerBinary,
  'generation_config.json': READ_LIMITS.json,
};

/**
 * The tokenizer files to carry over, by file name (byte for byte: tokenizer.model and .bin are
 * binary). Only regular files that really lie in the source folder are copied: a link leading
 * elsewhere, or a FIFO, is left out and named in `warnings`.
 */
function tokenizerFiles(model: CausalLM): { files: Record<string, Buffer>; warnings: string[] } {
  const source = model.source;
  const files: Record<string, Buffer> = {};
  const warnings: string[] = [];
  const carryOver = (folder: string, name: string) => {
    const file = path.join(folder, name);
    if (!fs.existsSync(file)) return;
    try {
      files[name] = readRegularFile(file, CARRIED_OVER[name]!, { within: folder });
    } catch (error) {
      if (!(error instanceof TopiaryError)) throw error;
      warnings.push(`${name} not copied to the output: ${error.message}`);
    }
  };
  if (source.format === 'safetensors') {
    for (const name of Object.keys(CARRIED_OVER)) carryOver(source.path, name);
    return { files, warnings };
  }
  const tokenizer = source.tokenizer;
  if (!('missing' in tokenizer) && tokenizer.toHuggingFace) {
    const { tokenizer: json, config } = tokenizer.toHuggingFace();
    files['tokenizer.json'] = Buffer.from(JSON.stringify(json));
    files['tokenizer_config.json'] = Buffer.from(JSON.stringify(config, null, 2) + '\n');
  } else if (source.format === 'llama2c') {
    carryOver(path.dirname(source.path), 'tokenizer.bin');
  }
  return { files, warnings };
}

/** Values converted per piece when a tensor is copied in pieces (16 MiB of F32). */
const COPY_CHUNK_VALUES = 1 << 22;

/** The rows of tensor `name` [rows, cols] of the model's source, a few at a time. */
function* rowChunks(model: CausalLM, name: string, [rows, cols]: number[]): Iterable<Float32Array> {
  const step = Math.max(1, Math.floor(COPY_CHUNK_VALUES / cols!));
  for (let first = 0; first < rows!; first += step) {
    const count = Math.min(step, rows! - first);
    yield model.source.readRows(name, Array.from({ length: count }, (_, i) => first + i));
  }
}

type KeyPart = [0, number] | [1, string] | [1, string, number];

/** transformers' dot_natural_key: dot-separated parts, numbers numerically and before words, a word's trailing digits as a number. */
function dotNaturalKey(name: string): KeyPart[] {
  return name.split('.').map((part): KeyPart => {
    if (/^\d+$/.test(part)) return [0, Number(part)];
    const [, text, digits] = /^(.*?)(\d*)$/.exec(part)!;
    return digits ? [1, text!, Number(digits)] : [1, text!];
  });
}

/** Python's ordering of lists and tuples: element by element, a prefix first. */
function comparePython(a: readonly unknown[], b: readonly unknown[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const [x, y] = [a[i], b[i]];
    const order = Array.isArray(x) ? comparePython(x, y as unknown[]) : x === y ? 0 : (x as string | number) < (y as string | number) ? -1 : 1;
    if (order !== 0) return order;
  }
  return a.length - b.length;
}

/**
 * The order transformers 5 saves a loaded model's tensors in (revert_weight_conversion sorts the
 * state dict by dot_natural_key), which decides its shards: model.layers.2 before model.layers.10.
 */
export function transformersSaveOrder(names: readonly string[]): string[] {
  const keys = new Map(names.map((name) => [name, dotNaturalKey(name)]));
  return [...names].sort((a, b) => comparePython(keys.get(a)!, keys.get(b)!));
}

/** Writes the folder; `warnings` name source files that were not carried over, and why. */
export function exportHfFolder(
  model: CausalLM,
  outDir: string,
  options: ExportOptions,
): { files: string[]; bytes: number; warnings: string[]; sparse?: SparseExport } {
  fs.mkdirSync(outDir, { recursive: true });
  const blocksRoot = model.family.layerPrefix(0).replace(/0\.$/, '');
  const names = model.source.tensorNames().filter((name) => !(model.config.tieWordEmbeddings && name === model.family.lmHead));
  const dense = transformersSaveOrder(names)
    .map((name) => {
      const stored = storedLayout(model.family, name, model.source.shape(name));
      const override = options.override(name);
      const data = override ?? (() => model.source.read(name));
      // A tensor outside the blocks copied as it is (an embedding of 128k rows, say) is read a few
      // rows at a time; a block's tensors are at most a layer's size.
      const copied = !override && !stored.transposed && stored.shape.length === 2 && !name.startsWith(blocksRoot) ? { chunks: () => rowChunks(model, name, stored.shape) } : undefined;
      return { name, shape: stored.shape, values: () => stored.convert(data()), copied };
    });
  const sparse = options.sparse && planSparse(dense, options.sparse, options.dtype);
  const tensors = dense.flatMap(({ name, shape, values, copied }): TensorToWrite[] => {
    const kept = sparse?.kept.get(name);
    if (kept === undefined) return [{ name, shape, dtype: options.dtype, data: copied ?? values }];
    return compressedMatrixTensors(name, shape[0]!, shape[1]!, kept, sparse!.storage, options.dtype, values);
  });
  const written = writeSafetensorsShards(outDir, tensors, { format: 'pt' }, options.maxShardSize);
  // transformers 5 reads `dtype` ahead of `torch_dtype`: both name the written weights' dtype, so
  // a source config's own (float16 for a half-precision checkpoint) never survives into the export.
  const dtype = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[options.dtype];
  const config: Record<string, unknown> = { ...model.family.toHfConfig(model.config), torch_dtype: dtype, dtype };
  if (sparse) {
    const targets = [...sparse.kept.keys()].map((name) => name.replace(/\.weight$/, ''));
    config.quantization_config = sparsityConfigJson(sparse.storage, targets, sparse.globalSparsity, sparse.structure);
  }
  const configFile = path.join(outDir, 'config.json');
  writeFileContentAtomic(configFile, configJson(config));
  written.push(configFile);
  const tokenizer = tokenizerFiles(model);
  for (const [name, content] of Object.entries(tokenizer.files)) {
    const file = path.join(outDir, name);
    writeFileContentAtomic(file, content);
    written.push(file);
  }
  return {
    files: written,
    bytes: written.reduce((sum, file) => sum + fs.statSync(file).size, 0),
    warnings: tokenizer.warnings,
    ...(sparse ? { sparse: { storage: sparse.storage, structure: sparse.structure, matrices: sparse.kept.size } } : {}),
  };
}

/**
 * Reads each matrix to store compressed once, before writing: the file's header needs each one's
 * kept count, and the format depends on whether all of them follow the N:M pattern in their
 * stored rows (a permuted N:M mask, or GPT-2's [in, out] storage, does not).
 */
function planSparse(
  tensors: { name: string; shape: number[]; values: () => Float32Array }[],
  request: NonNullable<ExportOptions['sparse']>,
  dtype: ExportDtype,
): { storage: SparseStorage; structure: string; kept: Map<string, number>; globalSparsity: number } {
  const wanted = new Set(request.matrices);
  const kept = new Map<string, number>();
  let fitsPattern = request.pattern !== undefined;
  let zeros = 0;
  let parameters = 0;
  for (const { name, shape, values } of tensors) {
    parameters += shape.reduce((a, b) => a * b, 1);
    if (!wanted.has(name)) continue;
    if (shape.length !== 2) throw new TopiaryError(`internal error: "${name}" of shape [${shape}] cannot be stored as a sparse matrix`);
    const [rows, cols] = shape as [number, number];
    const scan = scanSparseMatrix(values(), rows, cols, dtype, request.pattern);
    kept.set(name, scan.kept);
    fitsPattern &&= scan.fitsNm;
    zeros += rows * cols - scan.kept;
  }
  const pattern = request.pattern;
  const structure = fitsPattern && pattern ? `${pattern.n}:${pattern.m}` : 'unstructured';
  return { storage: structure === '2:4' ? '2:4' : 'bitmask', structure, kept, globalSparsity: zeros / Math.max(parameters, 1) };
}
