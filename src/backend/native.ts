import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TopiaryError } from '../util/errors.js';
import { sparseMatrixProblem, type SparseMatrix } from './sparse.js';
import { ACTIVATIONS, type Activation, type AttentionOptions, type Backend, type BackendInfo, type EliminationPlan, type FloatArray, type NmRefinementPlan, type GemmOptions, type RopeOptions, type ScanInputs, type SequenceOptions } from './backend.js';

/**
 * The functions native/topiary_native.c exports: typed arrays first, then numbers and booleans.
 * They trust their arguments completely (sizes, strides, matching element types): every check
 * happens here first. Each returns a promise, already settled when the call was small enough to
 * run on the calling thread.
 */
interface NativeAddon {
  gemm(
    a: FloatArray, b: FloatArray, c: FloatArray,
    m: number, n: number, k: number, transA: boolean, transB: boolean,
    alpha: number, beta: number, lda: number, ldb: number, ldc: number,
  ): Promise<void>;
  syrk(x: Float32Array, h: Float32Array, n: number, d: number, alpha: number): Promise<void>;
  cholesky(a: FloatArray, n: number, upper: boolean): Promise<boolean>;
  invertSpd(a: FloatArray, n: number): Promise<boolean>;
  symmetricEigenvalues(a: FloatArray, w: FloatArray, n: number): Promise<boolean>;
  triangularSolve(t: FloatArray, b: FloatArray, n: number, nrhs: number, upper: boolean, transpose: boolean): Promise<void>;
  /** mode 0: removals per row (as fp64 counts); 1: N:M best subset; 2: N:M greedy. */
  eliminateRows(gamma: Float64Array, block: Float64Array, removals: Float64Array, losses: Float64Array, rows: number, size: number, mode: number, n: number, m: number): Promise<boolean>;
  /** Resolves with nothing; rounds[0] ← the rounds run. */
  refineNmOrder(channels: Float32Array, order: Uint32Array, rounds: Float64Array, rows: number, cols: number, n: number, m: number, blockGroups: number, maxRounds: number, kept: number): Promise<void>;
  causalAttention(
    q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
    windows: number, seqLen: number, numHeads: number, numKvHeads: number, headDim: number, scale: number, pastLength: number,
    slidingWindow: number, softCap: number, // 0: none
  ): Promise<void>;
  /** kind: the activation's index in ACTIVATIONS. */
  activation(x: Float32Array, out: Float32Array, kind: number): Promise<void>;
  gatedActivation(gate: Float32Array, up: Float32Array, out: Float32Array, kind: number): Promise<void>;
  rmsNorm(x: Float32Array, weight: Float32Array, out: Float32Array, eps: number, weightOffset: number): Promise<void>;
  /** An empty bias array means no bias. */
  layerNorm(x: Float32Array, weight: Float32Array, bias: Float32Array, out: Float32Array, eps: number): Promise<void>;
  addBias(y: Float32Array, bias: Float32Array): Promise<void>;
  addInPlace(a: Float32Array, b: Float32Array): Promise<void>;
  softCap(x: Float32Array, cap: number): Promise<void>;
  rope(
    x: Float32Array, cos: Float32Array, sin: Float32Array,
    rows: number, heads: number, headDim: number, rotaryDim: number, seqLen: number, firstPosition: number, interleaved: boolean,
  ): Promise<void>;
  tokenLogProbs(logits: Float32Array, targets: Int32Array, out: Float64Array, vocab: number): Promise<void>;
  /** fixed: values per full mask in the 2:4 form (8), 0 for bitmask. */
  sparseMatmul(
    x: Float32Array, y: Float32Array, masks: Uint16Array, values: Float32Array, rowOffsets: Int32Array,
    m: number, rows: number, cols: number, fixed: number,
  ): Promise<void>;
  /** '' reports the sparse kernels' instruction set; 'auto', 'avx512', 'avx2', 'scalar' choose one the CPU has. Returns the one in use. */
  sparseIsa(request: string): string;
  /** An empty bias array means no bias. */
  causalConv1d(
    x: Float32Array, weight: Float32Array, bias: Float32Array, history: Float32Array, out: Float32Array,
    windows: number, seqLen: number, channels: number, kernel: number,
  ): Promise<void>;
  selectiveScan(
    x: Float32Array, delta: Float32Array, a: Float32Array, b: Float32Array, cmat: Float32Array, d: Float32Array,
    state: Float32Array, out: Float32Array, windows: number, seqLen: number, channels: number, stateSize: number,
  ): Promise<void>;
  setThreads(threads: number): void;
  getThreads(): number;
  /** OpenBLAS build configuration and the core kernel chosen at run time. */
  info(): string;
}

const ADDON_RELATIVE_PATH = path.join('native', 'build', 'Release', 'topiary_native.node');

/** The addon lives in the package root; this module runs from src/backend (tsx) or dist/src/backend. */
function findAddon(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, ADDON_RELATIVE_PATH);
    if (fs.existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** Loads the addon, or says why it could not be loaded. */
export function loadNativeBackend(): { backend: NativeBackend; reason?: undefined } | { backend?: undefined; reason: string } {
  const addonPath = findAddon();
  if (!addonPath) return { reason: `${ADDON_RELATIVE_PATH} has not been built` };
  try {
    const addon = createRequire(import.meta.url)(addonPath) as NativeAddon;
    return { backend: new NativeBackend(addon) };
  } catch (error) {
    return { reason: `${addonPath} failed to load: ${(error as Error).message}` };
  }
}

function fail(operation: string, problem: string): never {
  throw new TopiaryError(`backend ${operation}: ${problem}`);
}

function checkDimensions(operation: string, dims: Record<string, number>): void {
  for (const [name, value] of Object.entries(dims)) {
    if (!Number.isSafeInteger(value) || value < 0) fail(operation, `${name} must be a non-negative integer, got ${value}`);
  }
}

function checkFloatArray(operation: string, name: string, array: unknown): asserts array is FloatArray {
  if (!(array instanceof Float32Array) && !(array instanceof Float64Array)) {
    fail(operation, `${name} must be a Float32Array or Float64Array`);
  }
}

function checkFloat32(operation: string, arrays: Record<string, unknown>): void {
  for (const [name, array] of Object.entries(arrays)) {
    if (!(array instanceof Float32Array)) fail(operation, `${name} must be a Float32Array`);
  }
}

function checkSameType(operation: string, arrays: Record<string, FloatArray>): void {
  const entries = Object.entries(arrays);
  for (const [name, array] of entries) {
    checkFloatArray(operation, name, array);
    if (array.constructor !== entries[0][1].constructor) {
      fail(operation, `${name} is a ${array.constructor.name} but ${entries[0][0]} is a ${entries[0][1].constructor.name}`);
    }
  }
}

/** A rows×cols matrix stored with row stride ld must fit inside the array. */
function checkMatrix(operation: string, name: string, array: FloatArray, rows: number, cols: number, ld: number): void {
  checkDimensions(operation, { [`ld${name}`]: ld });
  if (ld < Math.max(1, cols)) fail(operation, `leading dimension of ${name} (${ld}) is smaller than its width ${cols}`);
  const needed = rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
  if (array.length < needed) {
    fail(operation, `${name} has ${array.length} elements but a ${rows}×${cols} matrix with row stride ${ld} needs ${needed}`);
  }
}

function checkTokenLogProbs(logits: Float32Array, targets: Int32Array, vocab: number, out: Float64Array): void {
  const operation = 'tokenLogProbs';
  checkDimensions(operation, { vocab });
  checkFloat32(operation, { logits });
  if (!(targets instanceof Int32Array)) fail(operation, 'targets must be an Int32Array');
  if (!(out instanceof Float64Array)) fail(operation, 'out must be a Float64Array');
  if (vocab === 0 && targets.length > 0) fail(operation, 'vocab must be positive');
  if (logits.length < targets.length * vocab) fail(operation, `logits hold ${logits.length} values, need ${targets.length}×${vocab}`);
  if (out.length < targets.length) fail(operation, `out holds ${out.length} values, need ${targets.length}`);
  for (const target of targets) if (target < 0 || target >= vocab) fail(operation, `target ${target} is outside [0, ${vocab})`);
}

function checkFiniteScalar(operation: string, name: string, value: number): void {
  if (!Number.isFinite(value)) fail(operation, `${name} must be a finite number, got ${value}`);
}

function checkPositive(operation: string, name: string, value: number): void {
  if (!(value > 0) || !Number.isFinite(value)) fail(operation, `${name} must be a positive finite number, got ${value}`);
}

function activationIndex(operation: string, kind: Activation): number {
  const index = ACTIVATIONS.indexOf(kind);
  if (index < 0) fail(operation, `unknown activation '${String(kind)}' (known: ${ACTIVATIONS.join(', ')})`);
  return index;
}

function checkSameLength(operation: string, arrays: Record<string, Float32Array>): void {
  checkFloat32(operation, arrays);
  const lengths = Object.values(arrays).map((array) => array.length);
  if (lengths.some((length) => length !== lengths[0])) {
    fail(operation, `${Object.keys(arrays).join(', ')} must have the same length (got ${lengths.join(', ')})`);
  }
}

/** `x` (and `out`, if given) hold whole rows of the per-feature vector's width. */
function checkRows(operation: string, x: Float32Array, vectorName: string, vector: Float32Array, out: Float32Array = x): void {
  if (vector.length === 0 || x.length % vector.length !== 0 || out.length !== x.length) {
    fail(operation, `x (${x.length}) and out (${out.length}) must hold whole rows of ${vectorName}'s width ${vector.length}`);
  }
}

function checkRope(x: Float32Array, cos: Float32Array, sin: Float32Array, options: RopeOptions): void {
  const operation = 'rope';
  const { rows, heads, headDim, rotaryDim, seqLen, firstPosition, layout } = options;
  checkDimensions(operation, { rows, heads, headDim, rotaryDim, seqLen, firstPosition });
  checkFloat32(operation, { x, cos, sin });
  if (layout !== 'half' && layout !== 'interleaved') fail(operation, `layout must be 'half' or 'interleaved', got ${String(layout)}`);
  if (rotaryDim % 2 !== 0 || rotaryDim > headDim) fail(operation, `rotaryDim (${rotaryDim}) must be even and at most headDim (${headDim})`);
  if (x.length !== rows * heads * headDim) fail(operation, `x holds ${x.length} values, not ${rows}×${heads}×${headDim}`);
  if (rows > 0 && seqLen === 0) fail(operation, 'seqLen must be positive');
  const positions = firstPosition + Math.min(rows, seqLen);
  const needed = positions * (rotaryDim / 2);
  if (cos.length < needed || sin.length < needed) {
    fail(operation, `cos (${cos.length}) and sin (${sin.length}) must cover ${positions} positions of ${rotaryDim / 2} angles`);
  }
}

export type SparseIsa = 'avx512' | 'avx2' | 'scalar';

/** Compressed matrices already checked (their arrays are never changed after compression). */
const checkedSparse = new WeakSet<SparseMatrix>();

function checkSparseMatmul(x: Float32Array, w: SparseMatrix, y: Float32Array, rows: number): void {
  const operation = 'sparseMatmul';
  checkDimensions(operation, { rows });
  checkFloat32(operation, { x, y });
  if (!checkedSparse.has(w)) {
    const problem = sparseMatrixProblem(w);
    if (problem) fail(operation, `bad compressed matrix: ${problem}`);
    checkedSparse.add(w);
  }
  if (x.length < rows * w.cols) fail(operation, `x holds ${x.length} values, need ${rows}×${w.cols}`);
  if (y.length < rows * w.rows) fail(operation, `y holds ${y.length} values, need ${rows}×${w.rows}`);
}

/** Each array must hold exactly the named number of values. */
function checkLengths(operation: string, arrays: Record<string, [Float32Array, number, string]>): void {
  for (const [name, [array, expected, shape]] of Object.entries(arrays)) {
    if (array.length !== expected) fail(operation, `${name} holds ${array.length} values, not ${shape} = ${expected}`);
  }
}

/** Whether two typed arrays share any memory. */
function overlap(a: Float32Array, b: Float32Array): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function checkSequence(operation: string, options: SequenceOptions, extra: Record<string, number> = {}): { rows: number } {
  const { windows, seqLen, channels } = options;
  checkDimensions(operation, { windows, seqLen, channels, ...extra });
  return { rows: windows * seqLen };
}

/** The OpenBLAS-backed backend; construct it through `getBackend()`. */
export class NativeBackend implements Backend {
  constructor(private readonly addon: NativeAddon) {}

  get info(): BackendInfo {
    return { name: 'native', threads: this.addon.getThreads(), library: this.addon.info() };
  }

  setThreads(threads: number): void {
    if (!Number.isSafeInteger(threads) || threads < 1) fail('setThreads', `thread count must be a positive integer, got ${threads}`);
    this.addon.setThreads(threads);
  }

  gemm<T extends FloatArray>(a: T, b: T, c: T, options: GemmOptions): Promise<void> {
    const { m, n, k, transA = false, transB = false, alpha = 1, beta = 0 } = options;
    const lda = options.lda ?? Math.max(1, transA ? m : k);
    const ldb = options.ldb ?? Math.max(1, transB ? k : n);
    const ldc = options.ldc ?? Math.max(1, n);
    checkDimensions('gemm', { m, n, k });
    checkSameType('gemm', { a, b, c });
    checkFiniteScalar('gemm', 'alpha', alpha);
    checkFiniteScalar('gemm', 'beta', beta);
    checkMatrix('gemm', 'A', a, transA ? k : m, transA ? m : k, lda);
    checkMatrix('gemm', 'B', b, transB ? n : k, transB ? k : n, ldb);
    checkMatrix('gemm', 'C', c, m, n, ldc);
    if (m === 0 || n === 0) return Promise.resolve();
    return this.addon.gemm(a, b, c, m, n, k, transA, transB, alpha, beta, lda, ldb, ldc);
  }

  sparseMatmul(x: Float32Array, w: SparseMatrix, y: Float32Array, rows: number): Promise<void> {
    checkSparseMatmul(x, w, y, rows);
    if (rows === 0 || w.rows === 0) return Promise.resolve();
    if (w.cols === 0) {
      y.fill(0, 0, rows * w.rows);
      return Promise.resolve();
    }
    const fixed = w.layout === '2:4' ? 8 : 0;
    return this.addon.sparseMatmul(x, y, w.masks, w.values, w.rowOffsets, rows, w.rows, w.cols, fixed);
  }

  /** The instruction set the sparse kernels use. */
  get sparseIsa(): SparseIsa {
    return this.addon.sparseIsa('') as SparseIsa;
  }

  /** Forces the sparse kernels onto `isa` ('auto': the best the CPU has), so tests reach every path; false if the CPU lacks it. */
  useSparseIsa(isa: SparseIsa | 'auto'): boolean {
    return this.addon.sparseIsa(isa) === isa || isa === 'auto';
  }

  syrk(x: Float32Array, n: number, d: number, h: Float32Array, alpha = 1): Promise<void> {
    checkDimensions('syrk', { n, d });
    checkFloat32('syrk', { x, h });
    checkFiniteScalar('syrk', 'alpha', alpha);
    checkMatrix('syrk', 'X', x, n, d, Math.max(1, d));
    checkMatrix('syrk', 'H', h, d, d, Math.max(1, d));
    if (n === 0 || d === 0) return Promise.resolve();
    return this.addon.syrk(x, h, n, d, alpha);
  }

  cholesky(a: FloatArray, n: number, uplo: 'upper' | 'lower'): Promise<boolean> {
    this.checkSquare('cholesky', a, n);
    if (uplo !== 'upper' && uplo !== 'lower') fail('cholesky', `uplo must be 'upper' or 'lower', got ${String(uplo)}`);
    if (n === 0) return Promise.resolve(true);
    return this.addon.cholesky(a, n, uplo === 'upper');
  }

  invertSpd(a: FloatArray, n: number): Promise<boolean> {
    this.checkSquare('invertSpd', a, n);
    if (n === 0) return Promise.resolve(true);
    return this.addon.invertSpd(a, n);
  }

  symmetricEigenvalues<T extends FloatArray>(a: T, n: number, w: T): Promise<boolean> {
    this.checkSquare('symmetricEigenvalues', a, n);
    checkFloatArray('symmetricEigenvalues', 'w', w);
    if (w.constructor !== a.constructor) fail('symmetricEigenvalues', 'a and w must have the same element type');
    checkMatrix('symmetricEigenvalues', 'w', w, 1, n, Math.max(1, n));
    if (n === 0) return Promise.resolve(true);
    return this.addon.symmetricEigenvalues(a, w, n);
  }

  triangularSolve(
    t: FloatArray,
    b: FloatArray,
    n: number,
    nrhs: number,
    uplo: 'upper' | 'lower',
    transpose: boolean,
  ): Promise<void> {
    checkDimensions('triangularSolve', { n, nrhs });
    checkSameType('triangularSolve', { t, b });
    if (uplo !== 'upper' && uplo !== 'lower') fail('triangularSolve', `uplo must be 'upper' or 'lower', got ${String(uplo)}`);
    checkMatrix('triangularSolve', 'T', t, n, n, Math.max(1, n));
    checkMatrix('triangularSolve', 'B', b, n, nrhs, Math.max(1, nrhs));
    if (n === 0 || nrhs === 0) return Promise.resolve();
    return this.addon.triangularSolve(t, b, n, nrhs, uplo === 'upper', transpose);
  }

  eliminateRows(gamma: Float64Array, block: Float64Array, rows: number, size: number, plan: EliminationPlan, losses: Float64Array): Promise<boolean> {
    checkDimensions('eliminateRows', { rows, size });
    if (!(gamma instanceof Float64Array) || !(block instanceof Float64Array) || !(losses instanceof Float64Array)) fail('eliminateRows', 'gamma, block and losses must be Float64Arrays');
    checkMatrix('eliminateRows', 'gamma', gamma, size, size, Math.max(1, size));
    checkMatrix('eliminateRows', 'block', block, rows, size, Math.max(1, size));
    if (losses.length < rows) fail('eliminateRows', `losses holds ${losses.length} values, fewer than ${rows} rows`);
    if (plan.kind === 'counts') {
      if (plan.removals.length < rows || plan.removals.subarray(0, rows).some((count) => count > size)) fail('eliminateRows', `removals must give each of the ${rows} rows at most ${size}`);
      return this.addon.eliminateRows(gamma, block, Float64Array.from(plan.removals.subarray(0, rows)), losses, rows, size, 0, 0, 0);
    }
    const { n, m, exact } = plan;
    checkDimensions('eliminateRows', { n, m });
    if (n < 1 || n >= m || size % m !== 0 || m > 255) fail('eliminateRows', `need 0 < N < M ≤ 255 and M dividing the block width ${size}, got ${n}:${m}`);
    return this.addon.eliminateRows(gamma, block, new Float64Array(0), losses, rows, size, exact ? 1 : 2, n, m);
  }

  async refineNmOrder(channels: Float32Array, rows: number, order: Uint32Array, plan: NmRefinementPlan, kept: number): Promise<number> {
    const { n, m, blockGroups, maxRounds } = plan;
    const cols = order.length;
    checkDimensions('refineNmOrder', { rows, n, m, blockGroups, maxRounds });
    if (!(channels instanceof Float32Array) || !(order instanceof Uint32Array)) fail('refineNmOrder', 'channels must be a Float32Array and order a Uint32Array');
    if (n < 1 || n >= m || m > 256 || cols % m !== 0 || blockGroups < 1) fail('refineNmOrder', `need 0 < N < M ≤ 256, M dividing the ${cols} channels and blockGroups ≥ 1, got ${n}:${m}, ${blockGroups}`);
    checkMatrix('refineNmOrder', 'channels', channels, cols, rows, Math.max(1, rows));
    const seen = new Uint8Array(cols);
    for (const channel of order) {
      if (channel >= cols || seen[channel]) fail('refineNmOrder', `order must be a permutation of 0…${cols - 1}`);
      seen[channel] = 1;
    }
    if (!Number.isFinite(kept)) fail('refineNmOrder', `kept must be finite, got ${kept}`);
    const rounds = new Float64Array(1);
    await this.addon.refineNmOrder(channels, order, rounds, rows, cols, n, m, blockGroups, maxRounds, kept);
    return rounds[0]!;
  }

  causalAttention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, options: AttentionOptions): Promise<void> {
    const { windows, seqLen, numHeads, numKvHeads, headDim, scale, pastLength = 0, slidingWindow, softCap } = options;
    checkDimensions('causalAttention', { windows, seqLen, numHeads, numKvHeads, headDim, pastLength });
    checkFloat32('causalAttention', { q, k, v, out });
    checkFiniteScalar('causalAttention', 'scale', scale);
    if (slidingWindow !== undefined && (!Number.isSafeInteger(slidingWindow) || slidingWindow < 1)) {
      fail('causalAttention', `slidingWindow must be a positive integer, got ${slidingWindow}`);
    }
    if (softCap !== undefined) checkPositive('causalAttention', 'softCap', softCap);
    if (numKvHeads === 0 || numHeads % numKvHeads !== 0) {
      fail('causalAttention', `numHeads (${numHeads}) must be a multiple of numKvHeads (${numKvHeads})`);
    }
    const rows = windows * seqLen;
    const qWidth = numHeads * headDim;
    const kvWidth = numKvHeads * headDim;
    checkMatrix('causalAttention', 'q', q, rows, qWidth, Math.max(1, qWidth));
    const keyRows = windows * (pastLength + seqLen);
    checkMatrix('causalAttention', 'k', k, keyRows, kvWidth, Math.max(1, kvWidth));
    checkMatrix('causalAttention', 'v', v, keyRows, kvWidth, Math.max(1, kvWidth));
    checkMatrix('causalAttention', 'out', out, rows, qWidth, Math.max(1, qWidth));
    if (rows === 0 || qWidth === 0) return Promise.resolve();
    return this.addon.causalAttention(
      q, k, v, out, windows, seqLen, numHeads, numKvHeads, headDim, scale, pastLength, slidingWindow ?? 0, softCap ?? 0,
    );
  }

  tokenLogProbs(logits: Float32Array, targets: Int32Array, vocab: number, out: Float64Array): Promise<void> {
    checkTokenLogProbs(logits, targets, vocab, out);
    if (targets.length === 0) return Promise.resolve();
    return this.addon.tokenLogProbs(logits, targets, out, vocab);
  }

  rmsNorm(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array, weightOffset = 0): Promise<void> {
    checkFloat32('rmsNorm', { x, weight, out });
    checkFiniteScalar('rmsNorm', 'eps', eps);
    checkFiniteScalar('rmsNorm', 'weightOffset', weightOffset);
    checkRows('rmsNorm', x, 'weight', weight, out);
    return this.addon.rmsNorm(x, weight, out, eps, weightOffset);
  }

  layerNorm(x: Float32Array, weight: Float32Array, bias: Float32Array | undefined, eps: number, out: Float32Array): Promise<void> {
    checkFloat32('layerNorm', { x, weight, out });
    checkFiniteScalar('layerNorm', 'eps', eps);
    checkRows('layerNorm', x, 'weight', weight, out);
    if (bias !== undefined) checkSameLength('layerNorm', { weight, bias });
    return this.addon.layerNorm(x, weight, bias ?? new Float32Array(0), out, eps);
  }

  activation(kind: Activation, x: Float32Array, out: Float32Array): Promise<void> {
    const index = activationIndex('activation', kind);
    checkSameLength('activation', { x, out });
    return this.addon.activation(x, out, index);
  }

  gatedActivation(kind: Activation, gate: Float32Array, up: Float32Array, out: Float32Array): Promise<void> {
    const index = activationIndex('gatedActivation', kind);
    checkSameLength('gatedActivation', { gate, up, out });
    return this.addon.gatedActivation(gate, up, out, index);
  }

  addBias(y: Float32Array, bias: Float32Array): Promise<void> {
    checkFloat32('addBias', { y, bias });
    checkRows('addBias', y, 'bias', bias);
    return this.addon.addBias(y, bias);
  }

  addInPlace(a: Float32Array, b: Float32Array): Promise<void> {
    checkSameLength('addInPlace', { a, b });
    return this.addon.addInPlace(a, b);
  }

  softCap(x: Float32Array, cap: number): Promise<void> {
    checkFloat32('softCap', { x });
    checkPositive('softCap', 'cap', cap);
    return this.addon.softCap(x, cap);
  }

  rope(x: Float32Array, cos: Float32Array, sin: Float32Array, options: RopeOptions): Promise<void> {
    checkRope(x, cos, sin, options);
    const { rows, heads, headDim, rotaryDim, seqLen, firstPosition, layout } = options;
    if (rows === 0 || heads === 0 || rotaryDim === 0) return Promise.resolve();
    return this.addon.rope(x, cos, sin, rows, heads, headDim, rotaryDim, seqLen, firstPosition, layout === 'interleaved');
  }

  causalConv1d(x: Float32Array, weight: Float32Array, bias: Float32Array | undefined, history: Float32Array, out: Float32Array, options: SequenceOptions): Promise<void> {
    const operation = 'causalConv1d';
    const { rows } = checkSequence(operation, options);
    const { windows, seqLen, channels } = options;
    checkFloat32(operation, { x, weight, history, out, ...(bias ? { bias } : {}) });
    if (channels === 0 || weight.length === 0 || weight.length % channels !== 0) fail(operation, `weight (${weight.length}) must hold a positive kernel width for each of ${channels} channels`);
    const kernel = weight.length / channels;
    checkLengths(operation, {
      x: [x, rows * channels, `${rows}×${channels}`],
      out: [out, rows * channels, `${rows}×${channels}`],
      history: [history, windows * (kernel - 1) * channels, `${windows}×${kernel - 1}×${channels}`],
      ...(bias ? { bias: [bias, channels, `${channels}`] as [Float32Array, number, string] } : {}),
    });
    if (overlap(x, out) || overlap(history, out)) fail(operation, 'out must not share memory with x or history');
    if (rows === 0) return Promise.resolve();
    return this.addon.causalConv1d(x, weight, bias ?? new Float32Array(0), history, out, windows, seqLen, channels, kernel);
  }

  selectiveScan(inputs: ScanInputs, out: Float32Array, options: SequenceOptions & { stateSize: number }): Promise<void> {
    const { x, delta, a, b, cmat, d, state } = inputs;
    const operation = 'selectiveScan';
    const { stateSize, windows, seqLen, channels } = options;
    const { rows } = checkSequence(operation, options, { stateSize });
    checkFloat32(operation, { x, delta, a, b, cmat, d, state, out });
    const sized = (array: Float32Array, r: number, c: number): [Float32Array, number, string] => [array, r * c, `${r}×${c}`];
    checkLengths(operation, {
      x: sized(x, rows, channels),
      delta: sized(delta, rows, channels),
      out: sized(out, rows, channels),
      a: sized(a, channels, stateSize),
      b: sized(b, rows, stateSize),
      cmat: sized(cmat, rows, stateSize),
      d: sized(d, 1, channels),
      state: [state, windows * channels * stateSize, `${windows}×${channels}×${stateSize}`],
    });
    // out may be x itself (row t is read before it is written), but no other input.
    for (const [name, input] of Object.entries({ delta, a, b, cmat, d, state })) if (overlap(input, out)) fail(operation, `out must not share memory with ${name}`);
    if (overlap(x, out) && (x.byteOffset !== out.byteOffset || x.length !== out.length)) fail(operation, 'out must be x itself or separate from it');
    if (rows === 0 || channels === 0) return Promise.resolve();
    return this.addon.selectiveScan(x, delta, a, b, cmat, d, state, out, windows, seqLen, channels, stateSize);
  }

  private checkSquare(operation: string, a: FloatArray, n: number): void {
    checkDimensions(operation, { n });
    checkFloatArray(operation, 'a', a);
    checkMatrix(operation, 'A', a, n, n, Math.max(1, n));
  }
}
