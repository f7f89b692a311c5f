/**
 * The compute backend: the few heavy operations everything else is built on. All matrices are
 * dense and row-major. Every operation is asynchronous so that long calls run off the main thread
 * (progress output keeps flowing); implementations may finish small calls synchronously.
 *
 * Two implementations: `native` (Node-API addon over OpenBLAS/LAPACK) and `reference` (plain
 * TypeScript, slow, used by tests to check the native one).
 */
export type FloatArray = Float32Array | Float64Array;

export interface GemmOptions {
  /** op(A) is m×k, op(B) is k×n, C is m×n. */
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  /** Leading dimensions (row strides); default to the packed width of each stored matrix. */
  lda?: number;
  ldb?: number;
  ldc?: number;
}

export interface AttentionOptions {
  /** Independent sequences (windows) in the batch; each has seqLen positions. */
  windows: number;
  seqLen: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Usually 1/sqrt(headDim). */
  scale: number;
  /**
   * Positions already held in the key/value cache (default 0). The seqLen query rows of a window
   * sit at positions pastLength..pastLength+seqLen−1 and attend to keys 0..pastLength+seqLen−1, so
   * k and v hold pastLength+seqLen rows per window: incremental decoding with a KV cache.
   */
  pastLength?: number;
}

export interface BackendInfo {
  name: 'native' | 'reference';
  threads: number;
  /** e.g. the OpenBLAS build config and core kernel ("OpenBLAS 0.3.21 ... SkylakeX"). */
  library: string;
}

export interface Backend {
  readonly info: BackendInfo;
  setThreads(threads: number): void;

  /** C = alpha·op(A)·op(B) + beta·C (fp32 or fp64; all three arrays of the same type). */
  gemm<T extends FloatArray>(a: T, b: T, c: T, options: GemmOptions): Promise<void>;

  /**
   * H += alpha·XᵀX for X with n rows of d features (row-major), H d×d. Both triangles of H are
   * updated, so H stays a full symmetric matrix.
   */
  syrk(x: Float32Array, n: number, d: number, h: Float32Array, alpha?: number): Promise<void>;

  /**
   * In-place Cholesky factorisation of the symmetric positive-definite n×n matrix `a`.
   * 'upper': a ← U with A = UᵀU; 'lower': a ← L with A = LLᵀ. The other triangle is zeroed.
   * Returns false (leaving `a` unspecified) if `a` is not positive definite.
   */
  cholesky(a: FloatArray, n: number, uplo: 'upper' | 'lower'): Promise<boolean>;

  /** In-place inverse of the symmetric positive-definite n×n matrix `a` (full, both triangles). False if not PD. */
  invertSpd(a: FloatArray, n: number): Promise<boolean>;

  /**
   * Solves op(T)·X = B in place (B ← X), T n×n triangular ('upper' or 'lower' triangle is read),
   * B n×nrhs row-major.
   */
  triangularSolve(
    t: FloatArray,
    b: FloatArray,
    n: number,
    nrhs: number,
    uplo: 'upper' | 'lower',
    transpose: boolean,
  ): Promise<void>;

  /**
   * Causal multi-head attention with grouped-query sharing. q: [windows·seqLen, numHeads·headDim];
   * k, v: [windows·(pastLength+seqLen), numKvHeads·headDim]; out: [windows·seqLen, numHeads·headDim].
   * Query head h reads kv head floor(h / (numHeads/numKvHeads)). Each window attends only within itself.
   */
  causalAttention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, options: AttentionOptions): Promise<void>;

  /**
   * Log-likelihood of each row's target: out[r] = log softmax(logits[r, :])[targets[r]] for
   * logits [targets.length, vocab]. Perplexity and zero-shot scoring read only these.
   */
  tokenLogProbs(logits: Float32Array, targets: Int32Array, vocab: number, out: Float64Array): Promise<void>;

  /**
   * RMSNorm of each row: out[r, :] = weight ⊙ x[r, :] / sqrt(mean(x[r, :]²) + eps), for x of
   * x.length / weight.length rows; out may alias x.
   */
  rmsNorm(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array): Promise<void>;

  /** out[i] = silu(gate[i])·up[i]; out may alias gate. */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array): Promise<void>;
}
