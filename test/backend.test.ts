import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ACTIVATIONS, type Activation, type AttentionOptions, type Backend, type FloatArray, type GemmOptions, type RopeOptions } from '../src/backend/backend.js';
import { describeBackend, getBackend } from '../src/backend/index.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { erf, ReferenceBackend } from '../src/backend/reference.js';
import { TopiaryError } from '../src/util/errors.js';
import { createRng, type Rng } from '../src/util/random.js';

const reference = new ReferenceBackend();
const loaded = loadNativeBackend();
const native = loaded.backend;
const nativeSkip = native ? false : `native addon not built (${loaded.reason}); run \`npm run setup\``;

type FloatArrayConstructor = Float32ArrayConstructor | Float64ArrayConstructor;
const precisions: { name: string; type: FloatArrayConstructor; tolerance: number }[] = [
  { name: 'fp32', type: Float32Array, tolerance: 2e-5 },
  { name: 'fp64', type: Float64Array, tolerance: 1e-12 },
];

function randomArray<C extends FloatArrayConstructor>(rng: Rng, length: number, type: C): InstanceType<C> {
  const array = new type(length) as InstanceType<C>;
  for (let i = 0; i < length; i++) array[i] = rng.normal();
  return array;
}

/** Max |actual − expected| relative to the largest |expected| (so the tolerance is scale-free). */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 1e-30;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  let worst = 0;
  let worstIndex = -1;
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]) / scale;
    if (!(error <= worst)) {
      worst = error;
      worstIndex = i;
    }
  }
  assert.ok(worst <= tolerance, `${what}: relative error ${worst} at ${worstIndex} (got ${actual[worstIndex]}, want ${expected[worstIndex]})`);
}

/** A random symmetric positive-definite n×n matrix with a modest condition number. */
function randomSpd<C extends FloatArrayConstructor>(rng: Rng, n: number, type: C): InstanceType<C> {
  const x = randomArray(rng, n * n, Float64Array);
  const a = new type(n * n) as InstanceType<C>;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let sum = i === j ? n : 0;
      for (let p = 0; p < n; p++) sum += x[p * n + i] * x[p * n + j];
      a[i * n + j] = sum / n;
    }
  }
  return a;
}

/** Dense product of row-major matrices in doubles, for reconstruction checks. */
function multiply(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, transA = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += (transA ? a[p * m + i] : a[i * k + p]) * b[p * n + j];
      c[i * n + j] = sum;
    }
  }
  return c;
}

function identity(n: number): Float64Array {
  const eye = new Float64Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  return eye;
}

function backendsUnderTest(): { name: string; backend: Backend | undefined; skip: string | false }[] {
  return [
    { name: 'reference', backend: reference, skip: false },
    { name: 'native', backend: native, skip: nativeSkip },
  ];
}

describe('reference backend golden values', () => {
  test('gemm of 2×2 matrices', async () => {
    const c = new Float64Array(4);
    await reference.gemm(new Float64Array([1, 2, 3, 4]), new Float64Array([5, 6, 7, 8]), c, { m: 2, n: 2, k: 2 });
    assert.deepEqual(Array.from(c), [19, 22, 43, 50]);
  });

  test('cholesky of [[4,2],[2,3]]', async () => {
    const a = new Float64Array([4, 2, 2, 3]);
    assert.equal(await reference.cholesky(a, 2, 'lower'), true);
    assert.deepEqual(Array.from(a), [2, 0, 1, Math.SQRT2]);
  });

  test("gatedActivation('silu', 1, 2) = 2·silu(1)", async () => {
    const out = new Float32Array(1);
    await reference.gatedActivation('silu', new Float32Array([1]), new Float32Array([2]), out);
    assert.equal(out[0], Math.fround(2 / (1 + Math.exp(-1))));
  });

  test('attention at the first position returns that position’s value row', async () => {
    const rng = createRng(5);
    const options = { windows: 2, seqLen: 3, numHeads: 4, numKvHeads: 2, headDim: 5, scale: 0.4 };
    const q = randomArray(rng, 6 * 20, Float32Array);
    const k = randomArray(rng, 6 * 10, Float32Array);
    const v = randomArray(rng, 6 * 10, Float32Array);
    const out = new Float32Array(6 * 20);
    await reference.causalAttention(q, k, v, out, options);
    for (const window of [0, 1]) {
      const row = window * 3;
      for (let h = 0; h < 4; h++) {
        const kvHead = Math.floor(h / 2);
        for (let d = 0; d < 5; d++) assert.equal(out[row * 20 + h * 5 + d], v[row * 10 + kvHead * 5 + d]);
      }
    }
  });
});

describe('gemm: native matches reference', { skip: nativeSkip }, () => {
  const shapes: (GemmOptions & { label: string; padA?: number; padB?: number; padC?: number; offset?: number })[] = [
    { label: '1×1×1', m: 1, n: 1, k: 1 },
    { label: '37×53×129', m: 37, n: 53, k: 129 },
    { label: 'transA', m: 37, n: 53, k: 129, transA: true },
    { label: 'transB', m: 37, n: 53, k: 129, transB: true },
    { label: 'both transposed, alpha/beta', m: 41, n: 7, k: 13, transA: true, transB: true, alpha: 0.5, beta: -1.5 },
    { label: 'leading dims wider than the matrices, offset views', m: 19, n: 23, k: 31, padA: 5, padB: 3, padC: 7, offset: 11, beta: 1 },
    { label: 'transposed strided views', m: 29, n: 17, k: 11, transA: true, transB: true, padA: 2, padB: 9, padC: 1, offset: 3 },
    { label: 'k = 0 scales C by beta', m: 3, n: 4, k: 0, beta: 2 },
    { label: 'one row (matrix-vector path) against a transposed weight', m: 1, n: 300, k: 129, transB: true },
    { label: 'one row of a transposed, strided A, padded B, alpha/beta', m: 1, n: 53, k: 37, transA: true, padA: 4, padB: 3, offset: 2, alpha: 0.5, beta: -1.5 },
    { label: 'large enough to run asynchronously', m: 200, n: 300, k: 150, transB: true },
  ];
  for (const precision of precisions) {
    for (const shape of shapes) {
      test(`${precision.name} ${shape.label}`, async () => {
        const rng = createRng(shape.m * 1000 + shape.n + shape.k);
        const { m, n, k, transA = false, transB = false, padA = 0, padB = 0, padC = 0, offset = 0 } = shape;
        const [rowsA, colsA] = transA ? [k, m] : [m, k];
        const [rowsB, colsB] = transB ? [n, k] : [k, n];
        const options: GemmOptions = { ...shape, lda: Math.max(1, colsA + padA), ldb: Math.max(1, colsB + padB), ldc: n + padC };
        // Views start `offset` elements into larger buffers, as subarrays of real tensors do.
        const view = (rows: number, ld: number): FloatArray => randomArray(rng, offset + rows * ld, precision.type).subarray(offset);
        const a = view(rowsA, options.lda!);
        const b = view(rowsB, options.ldb!);
        const cNative = view(m, options.ldc!);
        const cReference = cNative.slice();
        await native!.gemm(a, b, cNative, options);
        await reference.gemm(a, b, cReference, options);
        assertClose(cNative, cReference, precision.tolerance, 'C');
        // Padding between rows of C must be left untouched.
        for (let i = 0; i < m; i++) {
          for (let j = n; j < options.ldc!; j++) assert.equal(cNative[i * options.ldc! + j], cReference[i * options.ldc! + j]);
        }
      });
    }
  }

  test('one row with beta = 0 ignores NaN already in C', async () => {
    const rng = createRng(78);
    const [n, k] = [40, 33];
    const a = randomArray(rng, k, Float32Array);
    const b = randomArray(rng, n * k, Float32Array);
    const cNative = new Float32Array(n).fill(Number.NaN);
    const cReference = new Float32Array(n);
    await native!.gemm(a, b, cNative, { m: 1, n, k, transB: true });
    await reference.gemm(a, b, cReference, { m: 1, n, k, transB: true });
    assertClose(cNative, cReference, 2e-5, 'C');
  });

  test('concurrent asynchronous calls give the same results as sequential ones', async () => {
    const rng = createRng(77);
    const [m, n, k] = [160, 170, 180];
    const jobs = Array.from({ length: 6 }, () => ({
      a: randomArray(rng, m * k, Float32Array),
      b: randomArray(rng, k * n, Float32Array),
      c: new Float32Array(m * n),
    }));
    await Promise.all(jobs.map(({ a, b, c }) => native!.gemm(a, b, c, { m, n, k })));
    for (const { a, b, c } of jobs) {
      const expected = new Float32Array(m * n);
      await native!.gemm(a, b, expected, { m, n, k });
      assertClose(c, expected, 1e-6, 'C');
    }
  });
});

describe('syrk: native matches reference and keeps H symmetric', { skip: nativeSkip }, () => {
  for (const [n, d] of [[1, 1], [129, 37], [1000, 67]]) {
    test(`${n}×${d}`, async () => {
      const rng = createRng(n + d);
      const x = randomArray(rng, n * d, Float32Array);
      const start = randomSpd(rng, d, Float32Array);
      const hNative = start.slice();
      const hReference = start.slice();
      await native!.syrk(x, n, d, hNative, 0.25);
      await reference.syrk(x, n, d, hReference, 0.25);
      assertClose(hNative, hReference, 2e-5, 'H');
      for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) assert.equal(hNative[i * d + j], hNative[j * d + i]);
    });
  }
});

describe('native symmetricEigenvalues matches the reference (Jacobi)', { skip: nativeSkip }, () => {
  for (const precision of precisions) {
    test(`${precision.name} random symmetric 80×80 (indefinite) and a Gram matrix WᵀW`, async () => {
      const rng = createRng(77);
      const n = 80;
      const x = randomArray(rng, n * n, Float64Array);
      const symmetric = new precision.type(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) symmetric[i * n + j] = x[i * n + j] + x[j * n + i];
      const gram = randomSpd(rng, n, precision.type);
      for (const a of [symmetric, gram]) {
        const wNative = new precision.type(n);
        const wReference = new precision.type(n);
        assert.equal(await native!.symmetricEigenvalues(a.slice(), n, wNative), true);
        assert.equal(await reference.symmetricEigenvalues(a.slice(), n, wReference), true);
        assertClose(wNative, wReference, precision.name === 'fp32' ? 2e-5 : 1e-11, 'eigenvalues');
      }
    });
  }
});

for (const { name, backend, skip } of backendsUnderTest()) {
  describe(`${name}: factorisations by reconstruction`, { skip }, () => {
    for (const precision of precisions) {
      const tolerance = precision.name === 'fp32' ? 1e-4 : 1e-10;
      for (const n of [1, 37, 200]) {
        for (const uplo of ['upper', 'lower'] as const) {
          test(`${precision.name} cholesky ${uplo} n=${n}`, async () => {
            const a = randomSpd(createRng(n), n, precision.type);
            const factor = a.slice();
            assert.equal(await backend!.cholesky(factor, n, uplo), true);
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < n; j++) {
                if (uplo === 'upper' ? j < i : j > i) assert.equal(factor[i * n + j], 0, `other triangle at ${i},${j}`);
              }
            }
            // upper: A = UᵀU; lower: A = LLᵀ = (Lᵀ)ᵀLᵀ, so transpose L first.
            const u = uplo === 'upper' ? factor : Float64Array.from({ length: n * n }, (_, idx) => factor[(idx % n) * n + Math.floor(idx / n)]);
            assertClose(multiply(u, u, n, n, n, true), a, tolerance, 'reconstruction');
          });
        }

        test(`${precision.name} invertSpd n=${n}: A·A⁻¹ = I, exactly symmetric`, async () => {
          const a = randomSpd(createRng(n + 1), n, precision.type);
          const inverse = a.slice();
          assert.equal(await backend!.invertSpd(inverse, n), true);
          assertClose(multiply(a, inverse, n, n, n), identity(n), tolerance, 'A·A⁻¹');
          for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(inverse[i * n + j], inverse[j * n + i]);
        });

        for (const uplo of ['upper', 'lower'] as const) {
          for (const transpose of [false, true]) {
            test(`${precision.name} triangularSolve ${uplo}${transpose ? 'ᵀ' : ''} n=${n}`, async () => {
              const rng = createRng(n + 2);
              const t = randomSpd(rng, n, precision.type);
              assert.equal(await backend!.cholesky(t, n, uplo), true);
              const nrhs = 5;
              const b = randomArray(rng, n * nrhs, precision.type);
              const x = b.slice();
              await backend!.triangularSolve(t, x, n, nrhs, uplo, transpose);
              assertClose(multiply(t, x, n, n, nrhs, transpose), b, tolerance, 'op(T)·X');
            });
          }
        }
      }

      test(`${precision.name} non-positive-definite input returns false`, async () => {
        const indefinite = new precision.type([1, 2, 0, 2, 1, 0, 0, 0, 3]);
        assert.equal(await backend!.cholesky(indefinite.slice(), 3, 'upper'), false);
        assert.equal(await backend!.invertSpd(indefinite.slice(), 3), false);
        const n = 100;
        const negative = randomSpd(createRng(9), n, precision.type);
        for (let i = 0; i < n; i++) negative[i * n + i] -= 1000;
        assert.equal(await backend!.cholesky(negative, n, 'lower'), false);
      });

      for (const n of [1, 5, 60]) {
        test(`${precision.name} symmetricEigenvalues n=${n}: the spectrum of Q·diag(λ)·Qᵀ, ascending`, async () => {
          // Q = I − 2vvᵀ/‖v‖² (a reflection) is orthogonal, so Q·diag(λ)·Qᵀ has exactly the eigenvalues λ.
          const rng = createRng(40 + n);
          const v = randomArray(rng, n, Float64Array);
          const vv = v.reduce((sum, x) => sum + x * x, 0);
          const q = Float64Array.from({ length: n * n }, (_, i) => (Math.floor(i / n) === i % n ? 1 : 0) - (2 * v[Math.floor(i / n)] * v[i % n]) / vv);
          const lambda = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -1 : 1) * (1 + i * 0.75));
          const a = new precision.type(n * n);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              let sum = 0;
              for (let k = 0; k < n; k++) sum += q[i * n + k] * lambda[k] * q[j * n + k];
              a[i * n + j] = sum;
            }
          }
          const w = new precision.type(n);
          assert.equal(await backend!.symmetricEigenvalues(a, n, w), true);
          assertClose(w, [...lambda].sort((x, y) => x - y), precision.name === 'fp32' ? 2e-5 : 1e-12, 'eigenvalues');
        });
      }
    }
  });
}

describe('causalAttention with a KV cache', () => {
  for (const { name, backend, skip } of backendsUnderTest()) {
    test(`${name}: the last rows of a full pass equal those rows attending to the earlier keys as a cache`, { skip }, async () => {
      const [seqLen, past, numHeads, numKvHeads, headDim] = [9, 6, 4, 2, 8];
      const rng = createRng(23);
      const q = randomArray(rng, seqLen * numHeads * headDim, Float32Array);
      const k = randomArray(rng, seqLen * numKvHeads * headDim, Float32Array);
      const v = randomArray(rng, seqLen * numKvHeads * headDim, Float32Array);
      const shape = { windows: 1, numHeads, numKvHeads, headDim, scale: 0.3 };
      const full = new Float32Array(q.length);
      await backend!.causalAttention(q, k, v, full, { ...shape, seqLen });
      const tailRows = seqLen - past;
      const tail = new Float32Array(tailRows * numHeads * headDim);
      await backend!.causalAttention(q.subarray(past * numHeads * headDim), k, v, tail, { ...shape, seqLen: tailRows, pastLength: past });
      assertClose(tail, full.subarray(past * numHeads * headDim), 1e-6, 'cached rows');
    });
  }

  test('native: k and v must hold the cached rows too', { skip: nativeSkip }, () => {
    const options = { windows: 1, seqLen: 2, pastLength: 3, numHeads: 1, numKvHeads: 1, headDim: 4, scale: 1 };
    const queries = new Float32Array(8);
    const keysWithoutCache = new Float32Array(8);
    assert.throws(
      () => native!.causalAttention(queries, keysWithoutCache, new Float32Array(20), queries, options),
      (error: unknown) => error instanceof TopiaryError && /k has 8 elements but a 5×4 matrix/.test(error.message),
    );
  });
});

describe('causalAttention and gated silu: native matches reference', { skip: nativeSkip }, () => {
  const configurations = [
    { label: 'single position, single head', windows: 1, seqLen: 1, numHeads: 1, numKvHeads: 1, headDim: 4 },
    { label: 'GQA 6/2 heads, 3 windows', windows: 3, seqLen: 70, numHeads: 6, numKvHeads: 2, headDim: 16 },
    { label: 'SmolLM2-like 9/3 heads, 2 windows of 130 (more than one 128-row query block)', windows: 2, seqLen: 130, numHeads: 9, numKvHeads: 3, headDim: 64 },
  ];
  for (const { label, ...shape } of configurations) {
    test(label, async () => {
      const rng = createRng(shape.seqLen);
      const rows = shape.windows * shape.seqLen;
      const options = { ...shape, scale: 1 / Math.sqrt(shape.headDim) };
      // Scaled up so the softmax is peaked and the max-subtraction matters.
      const q = randomArray(rng, rows * shape.numHeads * shape.headDim, Float32Array).map((value) => value * 3);
      const k = randomArray(rng, rows * shape.numKvHeads * shape.headDim, Float32Array);
      const v = randomArray(rng, rows * shape.numKvHeads * shape.headDim, Float32Array);
      const outNative = new Float32Array(q.length).fill(Number.NaN);
      const outReference = new Float32Array(q.length);
      await native!.causalAttention(q, k, v, outNative, options);
      await reference.causalAttention(q, k, v, outReference, options);
      assertClose(outNative, outReference, 1e-5, 'attention output');
    });
  }

  test('queries after a cache of past keys (pastLength) match the reference', async () => {
    const shape = { windows: 2, seqLen: 3, pastLength: 131, numHeads: 6, numKvHeads: 2, headDim: 16 };
    const rng = createRng(17);
    const keyRows = shape.windows * (shape.pastLength + shape.seqLen);
    const options = { ...shape, scale: 0.25 };
    const q = randomArray(rng, shape.windows * shape.seqLen * shape.numHeads * shape.headDim, Float32Array).map((value) => value * 3);
    const k = randomArray(rng, keyRows * shape.numKvHeads * shape.headDim, Float32Array);
    const v = randomArray(rng, keyRows * shape.numKvHeads * shape.headDim, Float32Array);
    const outNative = new Float32Array(q.length).fill(Number.NaN);
    const outReference = new Float32Array(q.length);
    await native!.causalAttention(q, k, v, outNative, options);
    await reference.causalAttention(q, k, v, outReference, options);
    assertClose(outNative, outReference, 1e-5, 'attention output after a cache');
  });

  test('gated silu over extreme gates, out aliasing gate', async () => {
    const rng = createRng(3);
    const gate = randomArray(rng, 4099, Float32Array).map((value) => value * 8);
    gate.set([-100, 100, 0, -88, 88, -1e-30]);
    const up = randomArray(rng, gate.length, Float32Array);
    const expected = new Float32Array(gate.length);
    await reference.gatedActivation('silu', gate, up, expected);
    await native!.gatedActivation('silu', gate, up, gate);
    for (let i = 0; i < gate.length; i++) {
      assert.ok(Math.abs(gate[i] - expected[i]) <= 1e-6 * Math.max(1, Math.abs(expected[i])), `index ${i}: ${gate[i]} vs ${expected[i]}`);
    }
  });
});

describe('rmsNorm', () => {
  test('reference: a row by hand', async () => {
    const out = new Float32Array(2);
    await reference.rmsNorm(new Float32Array([3, 4]), new Float32Array([1, 2]), 0, out);
    const scale = 1 / Math.sqrt(12.5);
    assert.ok(Math.abs(out[0] - 3 * scale) < 1e-6 && Math.abs(out[1] - 8 * scale) < 1e-6);
  });

  test('native matches reference on odd widths, in place', { skip: nativeSkip }, async () => {
    const rng = createRng(21);
    for (const cols of [1, 7, 576, 1001]) {
      const x = randomArray(rng, 37 * cols, Float32Array).map((value) => value * 5);
      const weight = randomArray(rng, cols, Float32Array);
      const expected = new Float32Array(x.length);
      await reference.rmsNorm(x, weight, 1e-5, expected);
      await native!.rmsNorm(x, weight, 1e-5, x);
      for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - expected[i]) <= 1e-5 * Math.max(1, Math.abs(expected[i])), `cols ${cols}, index ${i}`);
    }
    assert.throws(() => native!.rmsNorm(new Float32Array(10), new Float32Array(3), 1e-5, new Float32Array(10)), TopiaryError);
  });
});

/** |actual − expected| ≤ tolerance·max(1, |expected|) element by element. */
function assertCloseEach(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= tolerance * Math.max(1, Math.abs(expected[i])))) assert.fail(`${what}: index ${i}: got ${actual[i]}, want ${expected[i]}`);
  }
}

/** Random values scaled by `scale`, led by the awkward ones: zero, tiny, past exp's range, huge. */
function awkwardArray(rng: Rng, length: number, scale: number): Float32Array {
  const x = randomArray(rng, length, Float32Array).map((value) => value * scale);
  x.set([0, -1e-30, 1e-30, -100, 100, -88, 88, -1e10, 1e10, 0.625, -0.625, 5.5, -5.5, 13, -13]);
  return x;
}

describe('elementwise operations: reference golden values', () => {
  test('erf against math.erf', () => {
    for (const [x, expected] of [[0.5, 0.5204998778130465], [-2.2, -0.9981371537020182], [4.5, 0.9999999998033839], [0, 0], [7, 1]]) {
      assert.ok(Math.abs(erf(x) - expected) < 1e-15, `erf(${x}) = ${erf(x)}`);
    }
  });

  test('activations at 1, −1, −3 and 2.5 against torch (float64)', async () => {
    const x = new Float32Array([1, -1, -3, 2.5]);
    const torchValues: Record<Activation, number[]> = {
      silu: [0.7310585786300049, -0.2689414213699951, -0.14227761953270035, 2.3103545499468914],
      gelu: [0.841344746068543, -0.15865525393145702, -0.00404969409489031, 2.4844758366855597],
      gelu_tanh: [0.8411919906082768, -0.15880800939172324, -0.0036373920817729943, 2.484915733910001],
      relu: [1, 0, 0, 2.5],
    };
    for (const kind of ACTIVATIONS) {
      const out = new Float32Array(4);
      await reference.activation(kind, x, out);
      assertCloseEach(out, torchValues[kind].map(Math.fround), 1e-7, kind);
      await reference.gatedActivation(kind, x, new Float32Array([2, 2, 2, 2]), out);
      assertCloseEach(out, torchValues[kind].map((value) => Math.fround(2 * value)), 1e-7, `gated ${kind}`);
    }
  });

  test('layerNorm of a row by hand, with and without bias', async () => {
    // mean 2.5, biased variance 1.25
    const x = new Float32Array([1, 2, 3, 4]);
    const weight = new Float32Array([1, 1, 2, 2]);
    const out = new Float32Array(4);
    const normalised = [-1.5, -0.5, 0.5, 1.5].map((value) => value / Math.sqrt(1.25 + 0.25));
    await reference.layerNorm(x, weight, new Float32Array([0, 1, 0, 1]), 0.25, out);
    assertCloseEach(out, [normalised[0], normalised[1] + 1, 2 * normalised[2], 2 * normalised[3] + 1], 1e-7, 'with bias');
    await reference.layerNorm(x, weight, undefined, 0.25, out);
    assertCloseEach(out, [normalised[0], normalised[1], 2 * normalised[2], 2 * normalised[3]], 1e-7, 'without bias');
  });

  test('rmsNorm with weightOffset 1 scales by 1 + weight', async () => {
    const out = new Float32Array(2);
    await reference.rmsNorm(new Float32Array([3, 4]), new Float32Array([0, 1]), 0, out, 1);
    const scale = 1 / Math.sqrt(12.5);
    assertCloseEach(out, [3 * scale, 8 * scale], 1e-7, 'Gemma RMSNorm');
  });

  test('addBias, addInPlace and softCap by hand', async () => {
    const y = new Float32Array([1, 2, 3, 4, 5, 6]);
    await reference.addBias(y, new Float32Array([10, 20, 30]));
    assert.deepEqual(Array.from(y), [11, 22, 33, 14, 25, 36]);
    await reference.addInPlace(y, new Float32Array([1, 1, 1, -1, -1, -1]));
    assert.deepEqual(Array.from(y), [12, 23, 34, 13, 24, 35]);
    const logits = new Float32Array([0, 30, -60]);
    await reference.softCap(logits, 30);
    assertCloseEach(logits, [0, 30 * Math.tanh(1), 30 * Math.tanh(-2)], 1e-7, 'softCap');
  });

  test('rope turns each pair by its position’s angle; the rest of the head passes through', async () => {
    // One head of 6 features, the first 4 rotary; row 1 is at position 1 (a quarter turn, then
    // half a turn for pair 1: cos/sin rows [cos θ0, cos θ1] per position).
    const cos = new Float32Array([1, 1, 0, -1]);
    const sin = new Float32Array([0, 0, 1, 0]);
    const options: RopeOptions = { rows: 2, heads: 1, headDim: 6, rotaryDim: 4, seqLen: 2, firstPosition: 0, layout: 'half' };
    const x = new Float32Array([1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]);
    await reference.rope(x, cos, sin, options);
    // half: pairs (0, 2) and (1, 3); (a, b) → (−b, a) for a quarter turn, (−a, −b) for half a turn.
    assert.deepEqual(Array.from(x), [1, 2, 3, 4, 5, 6, -3, -2, 1, -4, 5, 6]);
    const y = new Float32Array([1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]);
    await reference.rope(y, cos, sin, { ...options, layout: 'interleaved' });
    // interleaved: pairs (0, 1) and (2, 3).
    assert.deepEqual(Array.from(y), [1, 2, 3, 4, 5, 6, -2, 1, -3, -4, 5, 6]);
  });
});

describe('elementwise operations: native matches reference', { skip: nativeSkip }, () => {
  for (const kind of ACTIVATIONS) {
    test(`activation and gatedActivation ${kind} over awkward values, in place`, async () => {
      const rng = createRng(31);
      // 4099 elements run inline; 300 001 run on the thread pool.
      for (const length of [4099, 300_001]) {
        const x = awkwardArray(rng, length, 4);
        const up = randomArray(rng, length, Float32Array);
        const expected = new Float32Array(length);
        await reference.activation(kind, x, expected);
        const out = x.slice();
        await native!.activation(kind, out, out);
        assertCloseEach(out, expected, 1e-6, `${kind} of ${length}`);
        await reference.gatedActivation(kind, x, up, expected);
        await native!.gatedActivation(kind, x, up, x);
        assertCloseEach(x, expected, 1e-6, `gated ${kind} of ${length}`);
      }
    });
  }


  test('layerNorm on odd widths, far-from-zero means, with and without bias, in place', async () => {
    const rng = createRng(33);
    for (const cols of [1, 7, 576, 1001]) {
      for (const withBias of [true, false]) {
        const x = randomArray(rng, 37 * cols, Float32Array).map((value) => 100 + value * 5);
        const weight = randomArray(rng, cols, Float32Array);
        const bias = withBias ? randomArray(rng, cols, Float32Array) : undefined;
        const expected = new Float32Array(x.length);
        await reference.layerNorm(x, weight, bias, 1e-5, expected);
        await native!.layerNorm(x, weight, bias, 1e-5, x);
        assertCloseEach(x, expected, 1e-5, `cols ${cols}${withBias ? ' with bias' : ''}`);
      }
    }
  });

  test('rmsNorm with weightOffset 1', async () => {
    const rng = createRng(34);
    const x = randomArray(rng, 5 * 2305, Float32Array);
    const weight = randomArray(rng, 2305, Float32Array).map((value) => value * 0.1);
    const [expected, actual] = [new Float32Array(x.length), new Float32Array(x.length)];
    await reference.rmsNorm(x, weight, 1e-6, expected, 1);
    await native!.rmsNorm(x, weight, 1e-6, actual, 1);
    assertCloseEach(actual, expected, 1e-5, 'offset RMSNorm');
  });

  test('addBias and addInPlace give the exact float sums', async () => {
    const rng = createRng(35);
    for (const [rows, cols] of [[1, 1], [3, 7], [129, 2048]]) {
      const y = randomArray(rng, rows * cols, Float32Array);
      const bias = randomArray(rng, cols, Float32Array);
      const expected = y.slice();
      await reference.addBias(expected, bias);
      await native!.addBias(y, bias);
      assert.deepEqual(y, expected);
      const b = randomArray(rng, rows * cols, Float32Array);
      await reference.addInPlace(expected, b);
      await native!.addInPlace(y, b);
      assert.deepEqual(y, expected);
    }
  });

  test('softCap over awkward values, inline and on the thread pool', async () => {
    const rng = createRng(36);
    for (const [length, cap] of [[4099, 30], [300_001, 50]]) {
      const x = awkwardArray(rng, length, cap);
      const expected = x.slice();
      await reference.softCap(expected, cap);
      await native!.softCap(x, cap);
      assertCloseEach(x, expected, 1e-6, `softCap ${cap}`);
    }
  });

  test('rope: native equals reference bit for bit, both layouts, partial rotary, later positions', async () => {
    const rng = createRng(37);
    const shapes: Omit<RopeOptions, 'layout'>[] = [
      { rows: 1, heads: 1, headDim: 2, rotaryDim: 2, seqLen: 1, firstPosition: 0 },
      { rows: 3 * 11, heads: 5, headDim: 14, rotaryDim: 14, seqLen: 11, firstPosition: 0 },
      { rows: 2 * 9, heads: 3, headDim: 80, rotaryDim: 32, seqLen: 9, firstPosition: 0 }, // phi-2
      { rows: 4, heads: 7, headDim: 64, rotaryDim: 16, seqLen: 4, firstPosition: 123 }, // gpt_neox-like, with a cache
      { rows: 5000, heads: 4, headDim: 64, rotaryDim: 64, seqLen: 2500, firstPosition: 0 }, // thread pool
    ];
    for (const shape of shapes) {
      for (const layout of ['half', 'interleaved'] as const) {
        const positions = shape.firstPosition + shape.seqLen;
        const cos = randomArray(rng, positions * (shape.rotaryDim / 2), Float32Array);
        const sin = randomArray(rng, positions * (shape.rotaryDim / 2), Float32Array);
        const x = randomArray(rng, shape.rows * shape.heads * shape.headDim, Float32Array);
        const expected = x.slice();
        await reference.rope(expected, cos, sin, { ...shape, layout });
        await native!.rope(x, cos, sin, { ...shape, layout });
        assert.deepEqual(x, expected, `${JSON.stringify(shape)} ${layout}`);
      }
    }
  });
});


describe('causalAttention with a sliding window and soft-capping', () => {
  test('reference: window w averages the values of the last w positions when scores are equal', async () => {
    // q = 0 makes every visible key equally likely, so out = mean of the visible value rows.
    const [seqLen, past, window] = [5, 3, 2];
    const v = Float32Array.from({ length: past + seqLen }, (_, j) => 2 ** j);
    const out = new Float32Array(seqLen);
    const options = { windows: 1, seqLen, pastLength: past, numHeads: 1, numKvHeads: 1, headDim: 1, scale: 1, slidingWindow: window };
    await reference.causalAttention(new Float32Array(seqLen), new Float32Array(past + seqLen), v, out, options);
    // The query at position p sees keys p − 1 and p (transformers: kv_idx > q_idx − sliding_window).
    assert.deepEqual(Array.from(out), [3, 4, 5, 6, 7].map((p) => (2 ** (p - 1) + 2 ** p) / 2));
  });

  test('reference: soft-capped scores by hand', async () => {
    // Second query (q = 1) scores keys 1 and 2 as 1 and 2, capped at 1: tanh(1), tanh(2).
    const out = new Float32Array(2);
    const options = { windows: 1, seqLen: 2, numHeads: 1, numKvHeads: 1, headDim: 1, scale: 1, softCap: 1 };
    await reference.causalAttention(new Float32Array([0, 1]), new Float32Array([1, 2]), new Float32Array([10, 20]), out, options);
    const [w1, w2] = [Math.exp(Math.tanh(1)), Math.exp(Math.tanh(2))];
    assertCloseEach(out, [10, (10 * w1 + 20 * w2) / (w1 + w2)], 1e-7, 'capped attention');
  });

  const configurations: (Omit<AttentionOptions, 'scale'> & { label: string })[] = [
    { label: 'window 1: each query sees only itself', windows: 2, seqLen: 9, numHeads: 2, numKvHeads: 1, headDim: 3, slidingWindow: 1 },
    { label: 'window longer than the sequence', windows: 1, seqLen: 20, numHeads: 3, numKvHeads: 3, headDim: 5, slidingWindow: 64 },
    { label: 'GQA 6/2, odd head dim, window 50 across 128-row query blocks', windows: 2, seqLen: 200, numHeads: 6, numKvHeads: 2, headDim: 7, slidingWindow: 50 },
    { label: 'cache of 131 then 3 queries, window 64 (positions are absolute)', windows: 2, seqLen: 3, pastLength: 131, numHeads: 4, numKvHeads: 2, headDim: 9, slidingWindow: 64 },
    { label: 'cache of 5, window 4, 13 queries', windows: 1, seqLen: 13, pastLength: 5, numHeads: 2, numKvHeads: 2, headDim: 4, slidingWindow: 4 },
    { label: 'soft cap 3 (scores well beyond it)', windows: 2, seqLen: 70, numHeads: 4, numKvHeads: 2, headDim: 16, softCap: 3 },
    { label: 'Gemma 2-like: soft cap 50 with window 33 and a cache', windows: 1, seqLen: 140, pastLength: 20, numHeads: 8, numKvHeads: 4, headDim: 11, slidingWindow: 33, softCap: 50 },
  ];
  for (const { label, ...shape } of configurations) {
    test(`native matches reference: ${label}`, { skip: nativeSkip }, async () => {
      const rng = createRng(shape.seqLen * 7 + shape.headDim);
      const past = shape.pastLength ?? 0;
      const keyRows = shape.windows * (past + shape.seqLen);
      const options = { ...shape, scale: 1 / Math.sqrt(shape.headDim) };
      const q = randomArray(rng, shape.windows * shape.seqLen * shape.numHeads * shape.headDim, Float32Array).map((value) => value * 4);
      const k = randomArray(rng, keyRows * shape.numKvHeads * shape.headDim, Float32Array);
      const v = randomArray(rng, keyRows * shape.numKvHeads * shape.headDim, Float32Array);
      const outNative = new Float32Array(q.length).fill(Number.NaN);
      const outReference = new Float32Array(q.length);
      await native!.causalAttention(q, k, v, outNative, options);
      await reference.causalAttention(q, k, v, outReference, options);
      assertClose(outNative, outReference, 1e-5, 'attention output');
    });
  }

  test('native: a window covering every key changes nothing', { skip: nativeSkip }, async () => {
    const shape = { windows: 2, seqLen: 150, pastLength: 10, numHeads: 4, numKvHeads: 1, headDim: 8, scale: 0.3 };
    const rng = createRng(39);
    const keyRows = shape.windows * (shape.pastLength + shape.seqLen);
    const q = randomArray(rng, shape.windows * shape.seqLen * 32, Float32Array);
    const k = randomArray(rng, keyRows * 8, Float32Array);
    const v = randomArray(rng, keyRows * 8, Float32Array);
    const [plain, windowed] = [new Float32Array(q.length), new Float32Array(q.length)];
    await native!.causalAttention(q, k, v, plain, shape);
    await native!.causalAttention(q, k, v, windowed, { ...shape, slidingWindow: 160 });
    assert.deepEqual(windowed, plain);
  });
});

describe('native validation of the model operations', { skip: nativeSkip }, () => {
  const rejects = (call: () => unknown, pattern: RegExp): void => {
    assert.throws(call, (error: unknown) => error instanceof TopiaryError && pattern.test(error.message));
  };

  test('bad activations, lengths, caps and windows are TopiaryErrors', () => {
    const x = new Float32Array(8);
    rejects(() => native!.activation('gelu_fast' as Activation, x, x), /unknown activation 'gelu_fast'/);
    rejects(() => native!.gatedActivation('silu', x, new Float32Array(7), x), /same length/);
    rejects(() => native!.layerNorm(x, new Float32Array(4), new Float32Array(3), 1e-5, x), /same length/);
    rejects(() => native!.addBias(x, new Float32Array(3)), /whole rows/);
    rejects(() => native!.softCap(x, 0), /cap must be a positive/);
    const attention = { windows: 1, seqLen: 2, numHeads: 1, numKvHeads: 1, headDim: 4, scale: 1 };
    rejects(() => native!.causalAttention(x, x, x, x, { ...attention, slidingWindow: 0 }), /slidingWindow must be a positive integer/);
    rejects(() => native!.causalAttention(x, x, x, x, { ...attention, softCap: -1 }), /softCap must be a positive/);
  });

  test('rope needs an even rotaryDim within the head and tables covering every position', () => {
    const x = new Float32Array(2 * 8);
    const table = new Float32Array(2 * 2);
    const options: RopeOptions = { rows: 2, heads: 1, headDim: 8, rotaryDim: 4, seqLen: 2, firstPosition: 0, layout: 'half' };
    rejects(() => native!.rope(x, table, table, { ...options, rotaryDim: 3 }), /must be even/);
    rejects(() => native!.rope(x, table, table, { ...options, rotaryDim: 10 }), /at most headDim/);
    rejects(() => native!.rope(x, table, table, { ...options, firstPosition: 1 }), /cover 3 positions/);
    rejects(() => native!.rope(x, table, table, { ...options, heads: 2 }), /x holds 16 values/);
  });
});

describe('tokenLogProbs', () => {
  test('reference: log softmax at the target, by hand', async () => {
    const out = new Float64Array(2);
    await reference.tokenLogProbs(new Float32Array([0, 0, Math.log(2), 5, 5, 5]), new Int32Array([2, 0]), 3, out);
    assert.ok(Math.abs(out[0] - Math.log(2 / 4)) < 1e-7);
    assert.ok(Math.abs(out[1] - Math.log(1 / 3)) < 1e-7);
  });

  test('native matches reference on vocabulary-sized rows with large logits', { skip: nativeSkip }, async () => {
    const rng = createRng(11);
    const rows = 37;
    const vocab = 49152 + 5;
    const logits = randomArray(rng, rows * vocab, Float32Array).map((value) => value * 20);
    logits[3] = 1e4; // one dominating logit: the max-shift must hold
    const targets = Int32Array.from({ length: rows }, () => rng.int(vocab));
    targets[0] = 3;
    const expected = new Float64Array(rows);
    const actual = new Float64Array(rows);
    await reference.tokenLogProbs(logits, targets, vocab, expected);
    await native!.tokenLogProbs(logits, targets, vocab, actual);
    for (let r = 0; r < rows; r++) assert.ok(Math.abs(actual[r] - expected[r]) <= 1e-4 * Math.max(1, Math.abs(expected[r])), `row ${r}: ${actual[r]} vs ${expected[r]}`);
    assert.throws(() => native!.tokenLogProbs(logits, new Int32Array([vocab]), vocab, actual), TopiaryError);
  });
});

describe('native argument validation', { skip: nativeSkip }, () => {
  test('a too-short array is a TopiaryError naming the operand', () => {
    assert.throws(
      () => native!.gemm(new Float32Array(5), new Float32Array(6), new Float32Array(4), { m: 2, n: 2, k: 3 }),
      (error: unknown) => error instanceof TopiaryError && /A has 5 elements/.test(error.message),
    );
  });

  test('mixed element types are rejected', () => {
    assert.throws(
      // The cast defeats the compile-time check, as an untyped caller would.
      () => native!.gemm(new Float32Array(4), new Float64Array(4) as unknown as Float32Array, new Float32Array(4), { m: 2, n: 2, k: 2 }),
      (error: unknown) => error instanceof TopiaryError && /Float64Array/.test(error.message),
    );
  });

  test('heads must group evenly', () => {
    const empty = new Float32Array(100);
    const options = { windows: 1, seqLen: 2, numHeads: 3, numKvHeads: 2, headDim: 2, scale: 1 };
    assert.throws(() => native!.causalAttention(empty, empty, empty, empty, options), TopiaryError);
  });

  test('threads can be set and are reported', () => {
    const before = native!.info.threads;
    native!.setThreads(1);
    assert.equal(native!.info.threads, 1);
    native!.setThreads(before);
    assert.match(native!.info.library, /OpenBLAS/);
  });
});

describe('getBackend', () => {
  test('returns one reference singleton and describes it', () => {
    const backend = getBackend('reference');
    assert.equal(getBackend('reference'), backend);
    assert.match(describeBackend(backend), /^reference, 1 thread, /);
  });

  test('auto picks native when built, else explains how to build it', { skip: process.env.TOPIARY_BACKEND ? 'TOPIARY_BACKEND is set' : false }, () => {
    if (native) assert.equal(getBackend('auto').info.name, 'native');
    else assert.throws(() => getBackend('auto'), /npm run setup/);
  });
});
