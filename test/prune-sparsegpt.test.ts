import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { inverseHessian } from '../src/prune/hessian.js';
import { checkNmPattern } from '../src/prune/masks.js';
import type { SparsityTarget } from '../src/prune/method.js';
import { sparsegpt } from '../src/prune/methods/sparsegpt.js';
import { wanda } from '../src/prune/methods/wanda.js';
import { TopiaryError } from '../src/util/errors.js';
import {
  backend,
  dampedLoss,
  makeProblem,
  outputError,
  pruneInput,
  squaredNorms,
  type LayerProblem,
} from './fixtures/prune/layer-problems.js';

const fixtureDir = new URL('./fixtures/prune/', import.meta.url);
const readFloats = (file: string): Float32Array => {
  const bytes = fs.readFileSync(new URL(file, fixtureDir));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
};

interface FixtureCase {
  name: string;
  target: SparsityTarget;
  blocksize: number;
  file: string;
  loss: number;
}
const manifest = JSON.parse(fs.readFileSync(new URL('sparsegpt.json', fixtureDir), 'utf8')) as {
  rows: number;
  cols: number;
  tokens: number;
  deadInput: number;
  cases: FixtureCase[];
};

const maxAbs = (values: ArrayLike<number>): number => {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i]));
  return max;
};

for (const fp64 of [false, true]) {
  test(`SparseGPT matches the PyTorch reference fasterprune (${fp64 ? 'fp64' : 'fp32'})`, async () => {
    const { rows, cols, tokens } = manifest;
    const problem: LayerProblem = {
      rows,
      cols,
      tokens,
      x: new Float32Array(0),
      gram: readFloats('sparsegpt-gram.bin'),
      weight: readFloats('sparsegpt-weight.bin'),
    };
    assert.equal(manifest.cases.length, 4);
    for (const fixture of manifest.cases) {
      const expected = readFloats(fixture.file);
      const { weight, report } = await sparsegpt.prune(pruneInput(problem, fixture.target, { blocksize: fixture.blocksize, fp64 }));
      for (let i = 0; i < expected.length; i++) {
        assert.equal(weight[i] === 0, expected[i] === 0, `${fixture.name}: mask differs at ${i}`);
      }
      const difference = weight.map((value, i) => value - expected[i]);
      assert.ok(maxAbs(difference) <= 1e-4 * maxAbs(expected), `${fixture.name}: max difference ${maxAbs(difference)}`);
      assert.ok(Math.abs((report.loss as number) - fixture.loss) <= 1e-4 * fixture.loss, `${fixture.name}: loss ${report.loss} vs ${fixture.loss}`);
      assert.equal(report.deadInputs, 1);
      for (let r = 0; r < rows; r++) assert.equal(weight[r * cols + manifest.deadInput], 0);
    }
  });
}

test('SparseGPT prunes exactly the requested share, keeps N:M patterns, and is deterministic', async () => {
  const problem = await makeProblem(7, 24, 48, 96);
  // Blocks of 20, 20 and 8 columns: floor(0.5 · 24 · count) per block adds up to exactly half.
  const half = await sparsegpt.prune(pruneInput(problem, { kind: 'unstructured', sparsity: 0.5 }, { blocksize: 20 }));
  assert.equal(half.weight.filter((w) => w === 0).length, (24 * 48) / 2);
  assert.equal(half.report.sparsity, 0.5);
  const again = await sparsegpt.prune(pruneInput(problem, { kind: 'unstructured', sparsity: 0.5 }, { blocksize: 20 }));
  assert.deepEqual(Buffer.from(again.weight.buffer), Buffer.from(half.weight.buffer));

  for (const [n, m] of [
    [2, 4],
    [4, 8],
  ]) {
    // A block size that is not a multiple of m is rounded down to one (20 → 16 for 4:8).
    const { weight, report } = await sparsegpt.prune(pruneInput(problem, { kind: 'nm', n, m }, { blocksize: 20 }));
    assert.ok(checkNmPattern(weight, 24, 48, n, m), `${n}:${m} pattern`);
    assert.equal(report.sparsity, n / m);
    assert.equal(report.blockSize, 20 - (20 % m));
  }
});

test("SparseGPT's reported loss is the damped quadratic loss, and tracks the output error", async () => {
  const problem = await makeProblem(11, 16, 40, 200);
  for (const fp64 of [false, true]) {
    // fp64 is exact up to the final rounding of the weights to fp32.
    const { weight, report } = await sparsegpt.prune(pruneInput(problem, { kind: 'unstructured', sparsity: 0.5 }, { blocksize: 16, fp64 }));
    const exact = dampedLoss(problem, problem.weight, weight, report.lambda as number);
    assert.ok(Math.abs((report.loss as number) - exact) <= (fp64 ? 1e-6 : 1e-3) * exact, `loss ${report.loss} vs ${exact}`);
  }
  // With a tiny damping the loss is the output error: ½ · (2/n) · ‖ΔW Xᵀ‖².
  const { weight, report } = await sparsegpt.prune(pruneInput(problem, { kind: 'nm', n: 2, m: 4 }, { damp: 1e-6, fp64: true }));
  const measured = outputError(problem, problem.weight, weight) / problem.tokens;
  assert.ok(Math.abs((report.loss as number) - measured) <= 1e-3 * measured, `loss ${report.loss} vs output error ${measured}`);
});

test('SparseGPT beats Wanda on correlated calibration data (50% and 2:4)', async () => {
  const problem = await makeProblem(3, 32, 64, 256);
  for (const target of [
    { kind: 'unstructured', sparsity: 0.5 },
    { kind: 'nm', n: 2, m: 4 },
  ] as SparsityTarget[]) {
    const second = await sparsegpt.prune(pruneInput(problem, target));
    const wandaInput = pruneInput(problem, target);
    const first = await wanda.prune({ ...wandaInput, stats: { rows: problem.tokens, sqNorm: squaredNorms(problem) } });
    const sparseGptError = outputError(problem, problem.weight, second.weight);
    const wandaError = outputError(problem, problem.weight, first.weight);
    assert.ok(sparseGptError < 0.8 * wandaError, `${target.kind}: SparseGPT ${sparseGptError} vs Wanda ${wandaError}`);
  }
});

test('dead inputs are handled: their weights are zeroed and the rest is finite', async () => {
  const problem = await makeProblem(5, 8, 16, 64, [0, 9]);
  const { weight, report } = await sparsegpt.prune(pruneInput(problem, { kind: 'nm', n: 2, m: 4 }));
  assert.equal(report.deadInputs, 2);
  for (let r = 0; r < 8; r++) {
    assert.equal(weight[r * 16], 0);
    assert.equal(weight[r * 16 + 9], 0);
  }
  assert.ok(weight.every(Number.isFinite));
  assert.ok(checkNmPattern(weight, 8, 16, 2, 4));
});

test('a failed factorisation raises the damping ×10 until it succeeds, then gives a clear error', async () => {
  // Indefinite: eigenvalues of [[1, 2], [2, 1]] are 3 and −1 (times 2/n with n = 2, i.e. 1).
  const indefinite = Float32Array.from([1, 2, 2, 1]);
  const escalated = await inverseHessian(indefinite, 2, 2, backend);
  // λ = 0.01, 0.1, 1 (singular: eigenvalue 0) fail; 10 works.
  assert.equal(escalated.escalations, 3);
  assert.ok(Math.abs(escalated.dampFraction - 10) < 1e-12);
  assert.ok(Math.abs(escalated.lambda - 10) < 1e-12);
  // G must be the inverse of [[11, 2], [2, 11]].
  const det = 11 * 11 - 4;
  assert.ok(Math.abs(escalated.inverse[0] - 11 / det) < 1e-6 && Math.abs(escalated.inverse[1] + 2 / det) < 1e-6);
  // UᵀU = G.
  const u = escalated.upperCholeskyOfInverse;
  assert.equal(u[2], 0);
  assert.ok(Math.abs(u[0] * u[1] - escalated.inverse[1]) < 1e-6);

  await assert.rejects(inverseHessian(indefinite, 2, 2, backend, { maxEscalations: 2 }, 'layers.0.q'), (error) => {
    assert.ok(error instanceof TopiaryError);
    assert.match(error.message, /layers\.0\.q: the Hessian is not positive definite even with damping/);
    return true;
  });
  await assert.rejects(inverseHessian(Float32Array.from([NaN, 0, 0, 1]), 4, 2, backend), /NaN or infinite/);
  await assert.rejects(inverseHessian(Float32Array.from([1, 0, 0, 1]), 0, 2, backend), /no calibration rows/);
  await assert.rejects(
    sparsegpt.prune({ ...pruneInput(await makeProblem(1, 4, 8, 16), { kind: 'unstructured', sparsity: 0.5 }), stats: { rows: 16 } }),
    /Gram matrix XᵀX of the layer input was not collected/,
  );
  assert.match(sparsegpt.unsupported({ kind: 'nm', n: 4, m: 4 }, {}) ?? '', /0 < N < M/);
  assert.match(sparsegpt.unsupported({ kind: 'unstructured', sparsity: 0.5 }, { blocksize: 0 }) ?? '', /blocksize/);
  assert.equal(sparsegpt.unsupported({ kind: 'nm', n: 2, m: 4 }, { blocksize: 64, damp: 0.1, fp64: true }), null);
});
