import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend, FloatArray, GemmOptions } from '../src/backend/backend.js';
import { describeBackend, getBackend } from '../src/backend/index.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { ReferenceBackend } from '../src/backend/reference.js';
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

  test('swiglu(1, 2) = 2·silu(1)', async () => {
    const out = new Float32Array(1);
    await reference.swiglu(new Float32Array([1]), new Float32Array([2]), out);
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

describe('causalAttention and swiglu: native matches reference', { skip: nativeSkip }, () => {
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

  test('swiglu over extreme gates, out aliasing gate', async () => {
    const rng = createRng(3);
    const gate = randomArray(rng, 4099, Float32Array).map((value) => value * 8);
    gate.set([-100, 100, 0, -88, 88, -1e-30]);
    const up = randomArray(rng, gate.length, Float32Array);
    const expected = new Float32Array(gate.length);
    await reference.swiglu(gate, up, expected);
    await native!.swiglu(gate, up, gate);
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
