/**
 * The compute backend: the few heavy operations everything else is built on. All matrices are
 * dense and row-major. Every operation is asynchronous so that long calls run off the main thread
 * (progress output keeps flowing); implementations may finish small calls synchronously.
 *
 * Two implementations: `native` (Node-API addon over OpenBLAS/LAPACK) and `reference` (plain
 * TypeScript, slow, used by tests to check the native one).
 */
import type { SparseMatrix } from './sparse.js';

export type FloatArray = Float32Array | Float64Array;

/**
 * Elementwise activations. In Hugging Face's `hidden_act` names: 'silu' is "silu"/"swish"
 * (x·sigmoid(x)); 'gelu' is "gelu"/"gelu_python" (the exact erf GELU, x·Φ(x)); 'gelu_tanh' is the
 * tanh approximation 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) of "gelu_new", "gelu_pytorch_tanh",
 * "gelu_python_tanh", "gelu_accurate", and also "gelu_fast", which is the same formula with √(2/π)
 * rounded to 10 digits (transformers 5.23: within 1e-7 relative of gelu_new, below fp32
 * resolution); 'relu' is "relu". ("quick_gelu", x·sigmoid(1.702x), is none of these.)
 */
export type Activation = 'silu' | 'gelu' | 'gelu_tanh' | 'relu';

export const ACTIVATIONS: readonly Activation[] = ['silu', 'gelu', 'gelu_tanh', 'relu'];

/** How many weights each row of a block loses (unstructured), or N of every M (exact: best of all subsets). */
/** Refinement of an N:M channel order: N of every M pruned, blocks of `blockGroups` groups, at most `maxRounds` rounds. */
export interface NmRefinementPlan {
  n: number;
  m: number;
  blockGroups: number;
  maxRounds: number;
}

export type EliminationPlan = { kind: 'counts'; removals: Uint32Array } | { kind: 'nm'; n: number; m: number; exact: boolean };

/** Where the two features that rotate together sit within a head (see `Backend.rope`). */
export type RopeLayout = 'half' | 'interleaved';

export interface RopeOptions {
  rows: number;
  heads: number;
  headDim: number;
  /** Leading features of each head that rotate (even, ≤ headDim); the rest pass through (partial rotary). */
  rotaryDim: number;
  /** Row r is at position firstPosition + (r % seqLen): windows of seqLen tokens stacked. */
  seqLen: number;
  firstPosition: number;
  layout: RopeLayout;
}

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
  /**
   * Sliding-window attention: the query at (absolute) position i sees only keys j with
   * i − j < slidingWindow, i.e. itself and the slidingWindow − 1 keys before it. This is
   * transformers 5.23's convention (masking_utils.sliding_window_overlay: kv_idx > q_idx −
   * sliding_window). Positions count the cached keys too. Default: no window.
   */
  slidingWindow?: number;
  /**
   * Soft-capping of the attention logits (Gemma 2's attn_logit_softcapping): each score, after
   * scaling, becomes softCap·tanh(score/softCap) before masking and softmax. Default: none.
   */
  softCap?: number;
}

/** The shapes of a state-space layer's sequence operations (`causalConv1d`, `selectiveScan`). */
export interface SequenceOptions {
  /** Independent sequences in the batch; each has seqLen rows (positions). */
  windows: number;
  seqLen: number;
  /** Features per row (Mamba's d_inner): each channel is its own sequence. */
  channels: number;
}

/** The inputs of `selectiveScan`. */
export interface ScanInputs {
  /** [windows·seqLen, channels] */
  x: Float32Array;
  /** The time steps before softplus [windows·seqLen, channels]. */
  delta: Float32Array;
  /** [channels, stateSize]: the negative A = −exp(A_log). */
  a: Float32Array;
  /** [windows·seqLen, stateSize] */
  b: Float32Array;
  cmat: Float32Array;
  /** The skip connection [channels]. */
  d: Float32Array;
  /**
   * [windows, channels, stateSize]: read as the state before each window's first position and
   * overwritten with the state after its last (zeros for a fresh sequence).
   */
  state: Float32Array;
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
   * y = x·Wᵀ for a compressed weight matrix W [w.rows, w.cols] (./sparse.ts): x [rows, w.cols],
   * y [rows, w.rows], the product a linear layer computes. The same result as gemm with the dense
   * W up to summation order.
   */
  sparseMatmul(x: Float32Array, w: SparseMatrix, y: Float32Array, rows: number): Promise<void>;

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
   * Eigenvalues of the symmetric n×n matrix `a` (its lower triangle is read; `a` is destroyed),
   * written in ascending order into `w` (n entries, same type as `a`). False if the solver did
   * not converge (LAPACK ssyevd/dsyevd natively).
   */
  symmetricEigenvalues<T extends FloatArray>(a: T, n: number, w: T): Promise<boolean>;

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
   * APT's removals inside one column block (src/prune/methods/apt.ts derives them): for each row r
   * of `block` [rows, size] (fp64, edited in place to the re-fitted weights), with Γ = `gamma`
   * [size, size], remove `plan.removals[r]` weights greedily by joint loss, or N of every M
   * (best subset, or greedily); `losses[r]` ← the loss row r added. False if a pivot was not
   * positive (a numerically singular block), leaving `block` unspecified.
   */
  eliminateRows(gamma: Float64Array, block: Float64Array, rows: number, size: number, plan: EliminationPlan, losses: Float64Array): Promise<boolean>;

  /**
   * Step 2 of the N:M channel permutation search (src/backend/nm-refinement.ts, the reference):
   * refines `order` (position → channel, groups of plan.m positions) in place for the channel-major
   * score matrix `channels` [order.length, rows], whose kept score in `order` is `kept`. Resolves
   * to the rounds run. Every backend gives the same order, bit for bit.
   */
  refineNmOrder(channels: Float32Array, rows: number, order: Uint32Array, plan: NmRefinementPlan, kept: number): Promise<number>;

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
   * RMSNorm of each row: out[r, :] = (weightOffset + weight) ⊙ x[r, :] / sqrt(mean(x[r, :]²) + eps),
   * for x of x.length / weight.length rows; out may alias x. Gemma stores w and scales by 1 + w
   * (weightOffset 1, added in fp32 as Gemma does); the default offset is 0.
   */
  rmsNorm(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array, weightOffset?: number): Promise<void>;

  /**
   * LayerNorm of each row: out[r, :] = (x[r, :] − mean) / sqrt(var + eps) ⊙ weight + bias, with the
   * biased variance (as torch), for x of x.length / weight.length rows; bias is optional; out may
   * alias x.
   */
  layerNorm(x: Float32Array, weight: Float32Array, bias: Float32Array | undefined, eps: number, out: Float32Array): Promise<void>;

  /** out[i] = act(x[i]); out may alias x. */
  activation(kind: Activation, x: Float32Array, out: Float32Array): Promise<void>;

  /** out[i] = act(gate[i])·up[i] (SwiGLU with 'silu', GeGLU with 'gelu_tanh'); out may alias gate. */
  gatedActivation(kind: Activation, gate: Float32Array, up: Float32Array, out: Float32Array): Promise<void>;

  /** y[r, :] += bias for every row r of y (y.length / bias.length rows). */
  addBias(y: Float32Array, bias: Float32Array): Promise<void>;

  /** a[i] += b[i] (the residual stream). */
  addInPlace(a: Float32Array, b: Float32Array): Promise<void>;

  /** x[i] = cap·tanh(x[i]/cap) in place (Gemma 2's final-logit soft-capping). */
  softCap(x: Float32Array, cap: number): Promise<void>;

  /**
   * Rotary position embedding, in place on x [rows, heads·headDim]: in each head the first
   * rotaryDim features rotate and the rest pass through (partial rotary: phi, gpt_neox).
   * Layout 'half': feature i pairs with i + rotaryDim/2 (Hugging Face's rotate_half);
   * 'interleaved': feature 2i pairs with 2i + 1 (GPT-J). Pair i of the row at position p turns by
   * the angle whose cosine and sine are cos[p, i] and sin[p, i], tables [positions, rotaryDim/2]:
   * (a, b) ← (a·cos − b·sin, b·cos + a·sin).
   */
  rope(x: Float32Array, cos: Float32Array, sin: Float32Array, options: RopeOptions): Promise<void>;

  /**
   * Causal depthwise 1-D convolution over time (Mamba's conv1d, PyTorch's Conv1d with groups =
   * channels, padding kernel − 1 and the output truncated to the input's length): for x and out
   * [windows·seqLen, channels] and weight [channels, kernel],
   * out[t, c] = bias[c] + Σ_j weight[c, j] · x[t − (kernel − 1) + j, c],
   * where rows before the window's first come from `history` [windows·(kernel − 1), channels]
   * (the inputs that preceded each window, oldest first: zeros for a fresh sequence, the
   * decoding state otherwise). out must not alias x.
   */
  causalConv1d(x: Float32Array, weight: Float32Array, bias: Float32Array | undefined, history: Float32Array, out: Float32Array, options: SequenceOptions): Promise<void>;

  /**
   * Mamba's selective scan (`inputs` as ScanInputs describes), per window, channel c and state n
   * over the positions t in order:
   * δ = softplus(delta[t, c]) (PyTorch's, linear above 20),
   * s[c, n] ← exp(δ·a[c, n])·s[c, n] + δ·b[t, n]·x[t, c],
   * out[t, c] = Σ_n cmat[t, n]·s[c, n] + d[c]·x[t, c],
   * out [windows·seqLen, channels]; out may alias x.
   */
  selectiveScan(inputs: ScanInputs, out: Float32Array, options: SequenceOptions & { stateSize: number }): Promise<void>;
}
