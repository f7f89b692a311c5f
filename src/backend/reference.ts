import type { Activation, AttentionOptions, Backend, BackendInfo, EliminationPlan, FloatArray, GemmOptions, NmRefinementPlan, RopeOptions, ScanInputs, SequenceOptions } from './backend.js';
import { refineNmOrderReference } from './nm-refinement.js';
import { eliminateRowsReference } from './row-elimination.js';
import { chunksPerRow, SPARSE_CHUNK, type SparseMatrix } from './sparse.js';

/**
 * erf in doubles from its everywhere-convergent series of positive terms,
 * erf(x) = 2/√π·e^(−x²)·Σₙ 2ⁿx^(2n+1)/(1·3·…·(2n+1)), which has no cancellation; past |x| = 6,
 * erf(x) is ±1 to double precision.
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a >= 6) return Math.sign(x);
  let term = a;
  let sum = a;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= (2 * a * a) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-a * a) * sum;
}

/** The activations in doubles, by their defining formulas. */
function activate(kind: Activation, x: number): number {
  switch (kind) {
    case 'silu':
      return x / (1 + Math.exp(-x));
    case 'gelu':
      return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_tanh':
      return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    case 'relu':
      return x > 0 ? x : 0;
  }
}

/**
 * The plain-TypeScript backend: straightforward loops, accumulated in doubles, with no blocking or
 * threads. It is slow but obviously correct: tests check the native backend against it, and it
 * can run everything when the addon is not built (TOPIARY_BACKEND=reference).
 */
export class ReferenceBackend implements Backend {
  readonly info: BackendInfo = { name: 'reference', threads: 1, library: 'TypeScript reference loops' };

  setThreads(): void {
    // Single-threaded by design; the request is accepted and ignored.
  }

  async gemm<T extends FloatArray>(a: T, b: T, c: T, options: GemmOptions): Promise<void> {
    const { m, n, k, transA = false, transB = false, alpha = 1, beta = 0 } = options;
    const lda = options.lda ?? (transA ? m : k);
    const ldb = options.ldb ?? (transB ? k : n);
    const ldc = options.ldc ?? n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let p = 0; p < k; p++) {
          const aValue = transA ? a[p * lda + i] : a[i * lda + p];
          const bValue = transB ? b[j * ldb + p] : b[p * ldb + j];
          sum += aValue * bValue;
        }
        // BLAS semantics: with beta = 0, C is not read (NaN garbage in C does not propagate).
        c[i * ldc + j] = beta === 0 ? alpha * sum : alpha * sum + beta * c[i * ldc + j];
      }
    }
  }

  async sparseMatmul(x: Float32Array, w: SparseMatrix, y: Float32Array, rows: number): Promise<void> {
    const chunks = chunksPerRow(w.cols);
    for (let i = 0; i < rows; i++) {
      for (let r = 0; r < w.rows; r++) {
        let next = w.rowOffsets[r]!;
        let sum = 0;
        for (let c = 0; c < chunks; c++) {
          const mask = w.masks[r * chunks + c]!;
          for (let bit = 0; bit < SPARSE_CHUNK; bit++) if (mask & (1 << bit)) sum += w.values[next++]! * x[i * w.cols + c * SPARSE_CHUNK + bit]!;
        }
        y[i * w.rows + r] = sum;
      }
    }
  }

  async syrk(x: Float32Array, n: number, d: number, h: Float32Array, alpha = 1): Promise<void> {
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        let sum = 0;
        for (let r = 0; r < n; r++) sum += x[r * d + i] * x[r * d + j];
        h[i * d + j] += alpha * sum;
        if (j !== i) h[j * d + i] = h[i * d + j];
      }
    }
  }

  async cholesky(a: FloatArray, n: number, uplo: 'upper' | 'lower'): Promise<boolean> {
    // Compute L (A = LLᵀ) reading the lower triangle, in place, row by row.
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) {
        let sum = a[i * n + j];
        for (let p = 0; p < j; p++) sum -= a[i * n + p] * a[j * n + p];
        if (i === j) {
          if (!(sum > 0)) return false;
          a[i * n + i] = Math.sqrt(sum);
        } else {
          a[i * n + j] = sum / a[j * n + j];
        }
      }
    }
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        if (uplo === 'upper') {
          a[i * n + j] = a[j * n + i]; // U = Lᵀ
          a[j * n + i] = 0;
        } else {
          a[i * n + j] = 0;
        }
      }
    }
    return true;
  }

  async invertSpd(a: FloatArray, n: number): Promise<boolean> {
    if (!(await this.cholesky(a, n, 'lower'))) return false;
    // A⁻¹ = L⁻ᵀ L⁻¹: solve L·Y = I, then Lᵀ·X = Y, column by column of the identity.
    const lower = Float64Array.from(a);
    const inverse = new Float64Array(n * n);
    for (let i = 0; i < n; i++) inverse[i * n + i] = 1;
    await this.triangularSolve(lower, inverse, n, n, 'lower', false);
    await this.triangularSolve(lower, inverse, n, n, 'lower', true);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        // Mirror the upper triangle so the result is exactly symmetric.
        a[i * n + j] = i <= j ? inverse[i * n + j] : inverse[j * n + i];
      }
    }
    return true;
  }

  async eliminateRows(gamma: Float64Array, block: Float64Array, rows: number, size: number, plan: EliminationPlan, losses: Float64Array): Promise<boolean> {
    return eliminateRowsReference(gamma, block, rows, size, plan, losses);
  }

  async refineNmOrder(channels: Float32Array, rows: number, order: Uint32Array, plan: NmRefinementPlan, kept: number): Promise<number> {
    return refineNmOrderReference(channels, rows, order, plan, kept);
  }

  /**
   * Cyclic Jacobi: rotate away each off-diagonal entry in turn (in fp64) until the off-diagonal
   * mass is below 1e-15 of the whole; the diagonal then holds the eigenvalues. Quadratic
   * convergence, a few sweeps for the small matrices tests use.
   */
  async symmetricEigenvalues<T extends FloatArray>(a: T, n: number, w: T): Promise<boolean> {
    const m = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) m[i * n + j] = m[j * n + i] = a[i * n + j];
    const offDiagonal = () => {
      let off = 0;
      let all = 0;
      for (let i = 0; i < n * n; i++) {
        all += m[i] * m[i];
        if (Math.floor(i / n) !== i % n) off += m[i] * m[i];
      }
      return { off, all };
    };
    for (let sweep = 0; sweep < 100; sweep++) {
      const { off, all } = offDiagonal();
      if (off <= 1e-30 * all || off === 0) {
        const values = Array.from({ length: n }, (_, i) => m[i * n + i]).sort((x, y) => x - y);
        w.set(values);
        return true;
      }
      for (let p = 0; p < n - 1; p++) {
        for (let q = p + 1; q < n; q++) {
          const apq = m[p * n + q];
          if (apq === 0) continue;
          // The angle that zeroes m[p][q]: tan 2θ = 2·a_pq / (a_qq − a_pp), smaller root for stability.
          const theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
          const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
          const c = 1 / Math.sqrt(t * t + 1);
          const s = t * c;
          for (let k = 0; k < n; k++) {
            const kp = m[k * n + p];
            const kq = m[k * n + q];
            m[k * n + p] = c * kp - s * kq;
            m[k * n + q] = s * kp + c * kq;
          }
          for (let k = 0; k < n; k++) {
            const pk = m[p * n + k];
            const qk = m[q * n + k];
            m[p * n + k] = c * pk - s * qk;
            m[q * n + k] = s * pk + c * qk;
          }
        }
      }
    }
    return false;
  }

  async triangularSolve(
    t: FloatArray,
    b: FloatArray,
    n: number,
    nrhs: number,
    uplo: 'upper' | 'lower',
    transpose: boolean,
  ): Promise<void> {
    // op(T) is lower triangular when (lower, no transpose) or (upper, transposed): forward substitution.
    const forward = (uplo === 'lower') !== transpose;
    const entry = (i: number, j: number): number => (transpose ? t[j * n + i] : t[i * n + j]);
    for (let col = 0; col < nrhs; col++) {
      for (let step = 0; step < n; step++) {
        const i = forward ? step : n - 1 - step;
        let sum = b[i * nrhs + col];
        if (forward) for (let j = 0; j < i; j++) sum -= entry(i, j) * b[j * nrhs + col];
        else for (let j = i + 1; j < n; j++) sum -= entry(i, j) * b[j * nrhs + col];
        b[i * nrhs + col] = sum / entry(i, i);
      }
    }
  }

  async causalAttention(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    out: Float32Array,
    options: AttentionOptions,
  ): Promise<void> {
    const { windows, seqLen, numHeads, numKvHeads, headDim, scale, pastLength = 0, slidingWindow = Infinity, softCap } = options;
    const qWidth = numHeads * headDim;
    const kvWidth = numKvHeads * headDim;
    const headsPerKv = numHeads / numKvHeads;
    const keyRows = pastLength + seqLen;
    const weights = new Float64Array(keyRows);
    for (let w = 0; w < windows; w++) {
      for (let h = 0; h < numHeads; h++) {
        const kvOffset = Math.floor(h / headsPerKv) * headDim;
        for (let i = 0; i < seqLen; i++) {
          const qRow = (w * seqLen + i) * qWidth + h * headDim;
          // Keys first..position are visible: causal, and within the sliding window if there is one.
          const position = pastLength + i;
          const first = Math.max(0, position - slidingWindow + 1);
          let max = -Infinity;
          for (let j = first; j <= position; j++) {
            const kRow = (w * keyRows + j) * kvWidth + kvOffset;
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += q[qRow + d] * k[kRow + d];
            weights[j] = softCap === undefined ? dot * scale : softCap * Math.tanh((dot * scale) / softCap);
            if (weights[j] > max) max = weights[j];
          }
          let total = 0;
          for (let j = first; j <= position; j++) {
            weights[j] = Math.exp(weights[j] - max);
            total += weights[j];
          }
          for (let d = 0; d < headDim; d++) {
            let sum = 0;
            for (let j = first; j <= position; j++) sum += weights[j] * v[(w * keyRows + j) * kvWidth + kvOffset + d];
            out[qRow + d] = sum / total;
          }
        }
      }
    }
  }

  async tokenLogProbs(logits: Float32Array, targets: Int32Array, vocab: number, out: Float64Array): Promise<void> {
    for (let r = 0; r < targets.length; r++) {
      const row = logits.subarray(r * vocab, (r + 1) * vocab);
      let max = -Infinity;
      for (const value of row) if (value > max) max = value;
      let sum = 0;
      for (const value of row) sum += Math.exp(value - max);
      out[r] = row[targets[r]] - max - Math.log(sum);
    }
  }

  async rmsNorm(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array, weightOffset = 0): Promise<void> {
    const cols = weight.length;
    for (let base = 0; base < x.length; base += cols) {
      let sumSquares = 0;
      for (let c = 0; c < cols; c++) sumSquares += x[base + c] * x[base + c];
      const scale = 1 / Math.sqrt(sumSquares / cols + eps);
      for (let c = 0; c < cols; c++) out[base + c] = (weightOffset + weight[c]) * (x[base + c] * scale);
    }
  }

  async layerNorm(x: Float32Array, weight: Float32Array, bias: Float32Array | undefined, eps: number, out: Float32Array): Promise<void> {
    const cols = weight.length;
    for (let base = 0; base < x.length; base += cols) {
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += x[base + c];
      const mean = sum / cols;
      let sumSquares = 0;
      for (let c = 0; c < cols; c++) sumSquares += (x[base + c] - mean) ** 2;
      const scale = 1 / Math.sqrt(sumSquares / cols + eps);
      for (let c = 0; c < cols; c++) out[base + c] = (x[base + c] - mean) * scale * weight[c] + (bias ? bias[c] : 0);
    }
  }

  async activation(kind: Activation, x: Float32Array, out: Float32Array): Promise<void> {
    for (let i = 0; i < x.length; i++) out[i] = activate(kind, x[i]);
  }

  async gatedActivation(kind: Activation, gate: Float32Array, up: Float32Array, out: Float32Array): Promise<void> {
    for (let i = 0; i < gate.length; i++) out[i] = activate(kind, gate[i]) * up[i];
  }

  async addBias(y: Float32Array, bias: Float32Array): Promise<void> {
    for (let i = 0; i < y.length; i++) y[i] += bias[i % bias.length];
  }

  async addInPlace(a: Float32Array, b: Float32Array): Promise<void> {
    for (let i = 0; i < a.length; i++) a[i] += b[i];
  }

  async softCap(x: Float32Array, cap: number): Promise<void> {
    for (let i = 0; i < x.length; i++) x[i] = cap * Math.tanh(x[i] / cap);
  }

  async rope(x: Float32Array, cos: Float32Array, sin: Float32Array, options: RopeOptions): Promise<void> {
    const { rows, heads, headDim, rotaryDim, seqLen, firstPosition, layout } = options;
    const pairs = rotaryDim / 2;
    // Offsets of pair i's two features from the start of the head.
    const [step, partner] = layout === 'half' ? [1, pairs] : [2, 1];
    for (let r = 0; r < rows; r++) {
      const table = (firstPosition + (r % seqLen)) * pairs;
      for (let h = 0; h < heads; h++) {
        const head = (r * heads + h) * headDim;
        for (let i = 0; i < pairs; i++) {
          const a = head + i * step;
          const b = a + partner;
          const [x1, x2, c, s] = [x[a], x[b], cos[table + i], sin[table + i]];
          x[a] = x1 * c - x2 * s;
          x[b] = x2 * c + x1 * s;
        }
      }
    }
  }

  async causalConv1d(x: Float32Array, weight: Float32Array, bias: Float32Array | undefined, history: Float32Array, out: Float32Array, options: SequenceOptions): Promise<void> {
    const { windows, seqLen, channels } = options;
    const kernel = weight.length / channels;
    const past = kernel - 1;
    for (let w = 0; w < windows; w++) {
      // The input at time u of window w (u < 0 reads the history).
      const input = (u: number, c: number) => (u < 0 ? history[(w * past + past + u) * channels + c] : x[(w * seqLen + u) * channels + c]);
      for (let t = 0; t < seqLen; t++) {
        for (let c = 0; c < channels; c++) {
          let sum = bias ? bias[c] : 0;
          for (let j = 0; j < kernel; j++) sum += weight[c * kernel + j] * input(t - past + j, c);
          out[(w * seqLen + t) * channels + c] = sum;
        }
      }
    }
  }

  async selectiveScan(inputs: ScanInputs, out: Float32Array, options: SequenceOptions & { stateSize: number }): Promise<void> {
    const { x, delta, a, b, cmat, d, state } = inputs;
    const { windows, seqLen, channels, stateSize } = options;
    for (let w = 0; w < windows; w++) {
      for (let t = 0; t < seqLen; t++) {
        const row = w * seqLen + t;
        for (let c = 0; c < channels; c++) {
          const raw = delta[row * channels + c];
          const step = raw > 20 ? raw : Math.log1p(Math.exp(raw));
          const input = x[row * channels + c];
          let y = 0;
          for (let n = 0; n < stateSize; n++) {
            const s = (w * channels + c) * stateSize + n;
            state[s] = Math.exp(step * a[c * stateSize + n]) * state[s] + step * b[row * stateSize + n] * input;
            y += cmat[row * stateSize + n] * state[s];
          }
          out[row * channels + c] = y + d[c] * input;
        }
      }
    }
  }
}
