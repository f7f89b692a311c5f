import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkNmPattern } from '../src/prune/masks.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { apt } from '../src/prune/methods/apt.js';
import { sparsegpt } from '../src/prune/methods/sparsegpt.js';
import {
  dampedLoss,
  makeProblem,
  outputError,
  pruneInput,
  weightChangeSquared,
  type LayerProblem,
} from './fixtures/prune/layer-problems.js';

/** H = (2/n)·XᵀX + λI in fp64, straight from the calibration inputs. */
function dampedHessian(problem: LayerProblem, lambda: number): Float64Array {
  const { cols, tokens, x } = problem;
  const h = new Float64Array(cols * cols);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] += (2 / tokens) * x[t * cols + i] * x[t * cols + j];
  }
  for (let i = 0; i < cols; i++) h[i * cols + i] += lambda;
  return h;
}

/** Solves the dense system M z = v (Gaussian elimination with partial pivoting). */
function solve(matrix: number[][], vector: number[]): number[] {
  const n = vector.length;
  const a = matrix.map((row, i) => [...row, vector[i]]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(a[r][col]) > Math.abs(a[pivot][col])) pivot = r;
    [a[col], a[pivot]] = [a[pivot], a[col]];
    for (let r = col + 1; r < n; r++) {
      const factor = a[r][col] / a[col][col];
      for (let c = col; c <= n; c++) a[r][c] -= factor * a[col][c];
    }
  }
  const z = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let sum = a[r][n];
    for (let c = r + 1; c < n; c++) sum -= a[r][c] * z[c];
    z[r] = sum / a[r][r];
  }
  return z;
}

/**
 * The dense answer to one block step: with the columns before `start` frozen and the weights in
 * `removed` forced to zero, the w′ minimising (w′ − w) H (w′ − w)ᵀ (the damped least-squares
 * re-fit of the layer output on the calibration data). Returns w′ and the loss ½ δ H δᵀ.
 */
function constrainedRefit(h: Float64Array, cols: number, w: number[], start: number, removed: Set<number>): { refit: number[]; loss: number } {
  const free: number[] = [];
  for (let j = start; j < cols; j++) if (!removed.has(j)) free.push(j);
  const delta = new Array<number>(cols).fill(0);
  for (const j of removed) delta[j] = -w[j];
  // Stationarity on the free columns: H_KK δ_K = −H_Kq δ_q.
  const rhs = free.map((i) => -[...removed].reduce((sum, j) => sum + h[i * cols + j] * delta[j], 0));
  const solution = solve(free.map((i) => free.map((j) => h[i * cols + j])), rhs);
  free.forEach((j, k) => (delta[j] = solution[k]));
  let loss = 0;
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) loss += 0.5 * delta[i] * h[i * cols + j] * delta[j];
  return { refit: w.map((value, j) => value + delta[j]), loss };
}

test('APT equals the dense constrained least-squares re-fit, block by block', async () => {
  const problem = await makeProblem(21, 6, 16, 64);
  const cases: [SparsityTarget, number][] = [
    [{ kind: 'unstructured', sparsity: 0.5 }, 16], // one block: the exact joint optimum for the mask
    [{ kind: 'unstructured', sparsity: 0.4 }, 5], // blocks 5, 5, 5, 1
    [{ kind: 'nm', n: 2, m: 4 }, 8],
  ];
  for (const [target, blocksize] of cases) {
    const { weight, report } = await apt.prune(pruneInput(problem, target, { blocksize, fp64: true }));
    const h = dampedHessian(problem, report.lambda as number);
    let totalLoss = 0;
    for (let r = 0; r < problem.rows; r++) {
      let w = Array.from(problem.weight.subarray(r * 16, (r + 1) * 16));
      for (let start = 0; start < 16; start += blocksize) {
        const removed = new Set<number>();
        for (let j = start; j < Math.min(16, start + blocksize); j++) if (weight[r * 16 + j] === 0) removed.add(j);
        const step = constrainedRefit(h, 16, w, start, removed);
        w = step.refit;
        totalLoss += step.loss;
      }
      for (let j = 0; j < 16; j++) {
        assert.ok(Math.abs(weight[r * 16 + j] - w[j]) <= 1e-5 * (1 + Math.abs(w[j])), `block ${blocksize}, row ${r}, column ${j}: ${weight[r * 16 + j]} vs ${w[j]}`);
      }
    }
    assert.ok(Math.abs((report.loss as number) - totalLoss) <= 1e-6 * totalLoss, `loss ${report.loss} vs dense ${totalLoss}`);
  }
});

test('exact N:M enumeration finds the best subset of every group', async () => {
  // One group per row, one block: APT's loss must be the sum over rows of the best of all 70 subsets.
  const problem = await makeProblem(22, 5, 8, 40);
  const { weight, report } = await apt.prune(pruneInput(problem, { kind: 'nm', n: 4, m: 8 }, { fp64: true }));
  assert.ok(checkNmPattern(weight, 5, 8, 4, 8));
  const h = dampedHessian(problem, report.lambda as number);
  let best = 0;
  for (let r = 0; r < problem.rows; r++) {
    const w = Array.from(problem.weight.subarray(r * 8, (r + 1) * 8));
    let rowBest = Infinity;
    for (let bits = 0; bits < 256; bits++) {
      const removed = new Set([0, 1, 2, 3, 4, 5, 6, 7].filter((j) => (bits >> j) & 1));
      if (removed.size === 4) rowBest = Math.min(rowBest, constrainedRefit(h, 8, w, 0, removed).loss);
    }
    best += rowBest;
  }
  // (The dense check builds H from X in fp64; APT saw the fp32 Gram.)
  assert.ok(Math.abs((report.loss as number) - best) <= 1e-6 * best, `APT ${report.loss} vs best ${best}`);
  // Greedy selection inside the group can only do as well or worse.
  const greedy = await apt.prune(pruneInput(problem, { kind: 'nm', n: 4, m: 8 }, { fp64: true, exact: false }));
  assert.ok((greedy.report.loss as number) >= best * (1 - 1e-9));
});

test('APT with block size 1 is SparseGPT', async () => {
  const problem = await makeProblem(23, 12, 24, 80);
  const target: SparsityTarget = { kind: 'unstructured', sparsity: 0.5 };
  const a = await apt.prune(pruneInput(problem, target, { blocksize: 1, fp64: true }));
  const s = await sparsegpt.prune(pruneInput(problem, target, { blocksize: 1, fp64: true }));
  for (let i = 0; i < a.weight.length; i++) assert.ok(Math.abs(a.weight[i] - s.weight[i]) <= 1e-5 * (1 + Math.abs(s.weight[i])), `at ${i}`);
  assert.ok(Math.abs((a.report.loss as number) - (s.report.loss as number)) <= 1e-9 * (s.report.loss as number));
});

test("APT's loss is the layer's output error, and it beats SparseGPT on correlated data", async () => {
  const problem = await makeProblem(24, 32, 64, 256);
  for (const target of [
    { kind: 'unstructured', sparsity: 0.5 },
    { kind: 'nm', n: 2, m: 4 },
  ] as SparsityTarget[]) {
    const a = await apt.prune(pruneInput(problem, target, { blocksize: 32 }));
    const s = await sparsegpt.prune(pruneInput(problem, target, { blocksize: 32 }));
    assert.equal(a.report.sparsity, 0.5);
    if (target.kind === 'nm') assert.ok(checkNmPattern(a.weight, 32, 64, 2, 4));
    // The reported loss is ½ ΔW H ΔWᵀ with the damped H (fp32 arithmetic).
    const exact = dampedLoss(problem, problem.weight, a.weight, a.report.lambda as number);
    assert.ok(Math.abs((a.report.loss as number) - exact) <= 2e-3 * exact, `${target.kind}: loss ${a.report.loss} vs ${exact}`);
    const aptError = outputError(problem, problem.weight, a.weight);
    const sparseGptError = outputError(problem, problem.weight, s.weight);
    assert.ok((a.report.loss as number) < (s.report.loss as number), `${target.kind}: loss APT ${a.report.loss} vs SparseGPT ${s.report.loss}`);
    assert.ok(aptError < sparseGptError, `${target.kind}: output error APT ${aptError} vs SparseGPT ${sparseGptError}`);
  }
  // The loss split into what the calibration outputs see and what the damping adds:
  // ½ ΔW H ΔWᵀ = ‖ΔW Xᵀ‖² / n + ½ λ ‖ΔW‖². APT exploits correlations hard, so the damping share is
  // large at the default damping; with little damping the loss is the output error. (The method
  // saw the fp32 Gram, the check uses X in fp64: near-singular H at damp 1e-6 costs some digits.)
  for (const damp of [0.01, 1e-6]) {
    const { weight, report } = await apt.prune(pruneInput(problem, { kind: 'nm', n: 2, m: 4 }, { damp, fp64: true }));
    const measured = outputError(problem, problem.weight, weight) / problem.tokens;
    const dampingShare = 0.5 * (report.lambda as number) * weightChangeSquared(problem.weight, weight);
    const loss = report.loss as number;
    assert.ok(Math.abs(loss - measured - dampingShare) <= 1e-4 * loss, `damp ${damp}: loss ${loss} vs ${measured} + ${dampingShare}`);
    if (damp === 1e-6) assert.ok(Math.abs(loss - measured) <= 0.05 * loss, `loss ${loss} vs output error ${measured}`);
  }
});

test('APT validates its options and keeps dead inputs at zero', async () => {
  assert.match(apt.unsupported({ kind: 'nm', n: 8, m: 16 }, {}) ?? '', /12870 subsets per group; use exact=false/);
  assert.equal(apt.unsupported({ kind: 'nm', n: 8, m: 16 }, { exact: false }), null);
  assert.equal(apt.unsupported({ kind: 'nm', n: 4, m: 8 }, {}), null);
  const problem = await makeProblem(25, 8, 16, 64, [3]);
  const { weight, report } = await apt.prune(pruneInput(problem, { kind: 'unstructured', sparsity: 0.25 }, { blocksize: 8 }));
  assert.equal(report.deadInputs, 1);
  for (let r = 0; r < 8; r++) assert.equal(weight[r * 16 + 3], 0);
  assert.ok(weight.every(Number.isFinite));
});
