import type { AttentionOptions, Backend, BackendInfo, FloatArray, GemmOptions } from './backend.js';

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
    const { windows, seqLen, numHeads, numKvHeads, headDim, scale, pastLength = 0 } = options;
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
          const visible = pastLength + i + 1;
          let max = -Infinity;
          for (let j = 0; j < visible; j++) {
            const kRow = (w * keyRows + j) * kvWidth + kvOffset;
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += q[qRow + d] * k[kRow + d];
            weights[j] = dot * scale;
            if (weights[j] > max) max = weights[j];
          }
          let total = 0;
          for (let j = 0; j < visible; j++) {
            weights[j] = Math.exp(weights[j] - max);
            total += weights[j];
          }
          for (let d = 0; d < headDim; d++) {
            let sum = 0;
            for (let j = 0; j < visible; j++) sum += weights[j] * v[(w * keyRows + j) * kvWidth + kvOffset + d];
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

  async rmsNorm(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array): Promise<void> {
    const cols = weight.length;
    for (let base = 0; base < x.length; base += cols) {
      let sumSquares = 0;
      for (let c = 0; c < cols; c++) sumSquares += x[base + c] * x[base + c];
      const scale = 1 / Math.sqrt(sumSquares / cols + eps);
      for (let c = 0; c < cols; c++) out[base + c] = weight[c] * (x[base + c] * scale);
    }
  }

  async swiglu(gate: Float32Array, up: Float32Array, out: Float32Array): Promise<void> {
    for (let i = 0; i < gate.length; i++) {
      const g = gate[i];
      out[i] = (g / (1 + Math.exp(-g))) * up[i];
    }
  }
}
