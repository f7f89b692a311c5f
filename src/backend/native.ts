import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TopiaryError } from '../util/errors.js';
import { ACTIVATIONS, type Activation, type AttentionOptions, type Backend, type BackendInfo, type FloatArray, type GemmOptions, type RopeOptions } from './backend.js';

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

  private checkSquare(operation: string, a: FloatArray, n: number): void {
    checkDimensions(operation, { n });
    checkFloatArray(operation, 'a', a);
    checkMatrix(operation, 'A', a, n, n, Math.max(1, n));
  }
}
