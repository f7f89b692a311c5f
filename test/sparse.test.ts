import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadNativeBackend, type SparseIsa } from '../src/backend/native.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { compressSparse, decompressSparse, isTwoFour, sparseFromPackedBitmask, sparseMatrixProblem, type SparseLayout } from '../src/backend/sparse.js';
import { getBackend } from '../src/backend/index.js';
import { KvCache, type CausalLM } from '../src/model/causal-lm.js';
import { loadModel } from '../src/model/load.js';
import { compressSparseLinears } from '../src/model/sparse-linears.js';
import { applyMask, selectNm, selectPerRow } from '../src/prune/masks.js';
import { TopiaryError } from '../src/util/errors.js';
import { familyModels } from './family-models.js';
import { stories260K } from './helpers.js';
import { createRng, type Rng } from '../src/util/random.js';

const reference = new ReferenceBackend();
const loaded = loadNativeBackend();
const native = loaded.backend;
const nativeSkip = native ? false : `native addon not built (${loaded.reason}); run \`npm run setup\``;

/** A random [rows, cols] matrix with about `density` of its entries nonzero, one all-zero row and one full row when there are three rows or more. */
function randomSparse(rng: Rng, rows: number, cols: number, density: number): Float32Array {
  const dense = new Float32Array(rows * cols);
  for (let i = 0; i < dense.length; i++) if (rng.next() < density) dense[i] = rng.normal();
  if (rows >= 3) {
    dense.fill(0, 0, cols);
    for (let j = 0; j < cols; j++) dense[2 * cols + j] = rng.normal();
  }
  return dense;
}

/** A random 2:4 matrix: in each group of four, two entries (or fewer, at random) are nonzero. */
function randomTwoFour(rng: Rng, rows: number, cols: number): Float32Array {
  const dense = new Float32Array(rows * cols);
  for (let group = 0; group < dense.length; group += 4) {
    const first = rng.int(4);
    const second = (first + 1 + rng.int(3)) % 4;
    dense[group + first] = rng.normal();
    if (rng.next() < 0.8) dense[group + second] = rng.normal();
  }
  return dense;
}

function randomMatrix(rng: Rng, rows: number, cols: number): Float32Array {
  return Float32Array.from({ length: rows * cols }, () => rng.normal());
}

/** Max |actual − expected| relative to the largest |expected|. */
function assertClose(actual: Float32Array, expected: Float32Array, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 1e-30;
  for (const value of expected) scale = Math.max(scale, Math.abs(value));
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i]! - expected[i]!) / scale;
    assert.ok(error <= tolerance, `${what}: relative error ${error} at ${i} (got ${actual[i]}, want ${expected[i]})`);
  }
}

describe('compressed sparse matrices', () => {
  test('masks are LSB-first per 16 columns and values packed in column order', () => {
    const dense = new Float32Array(2 * 18);
    dense[0] = 1;
    dense[5] = 2;
    dense[17] = 3;
    dense[18 + 16] = 4;
    const matrix = compressSparse(dense, 2, 18, 'bitmask');
    assert.deepEqual(Array.from(matrix.masks), [0b100001, 0b10, 0, 0b1]);
    assert.deepEqual(Array.from(matrix.values), [1, 2, 3, 4]);
    assert.deepEqual(Array.from(matrix.rowOffsets), [0, 3, 4]);
    assert.deepEqual(decompressSparse(matrix), dense);
  });

  test('2:4 keeps two entries per group, filling with stored zeros', () => {
    const dense = new Float32Array([0, 5, 0, 0, 1, 0, 0, 2]);
    assert.equal(isTwoFour(dense, 1, 8), true);
    const matrix = compressSparse(dense, 1, 8, '2:4');
    assert.deepEqual(Array.from(matrix.masks), [0b1001_0011]);
    assert.deepEqual(Array.from(matrix.values), [0, 5, 1, 2]);
    assert.deepEqual(decompressSparse(matrix), dense);
    assert.equal(isTwoFour(new Float32Array([1, 1, 1, 0]), 1, 4), false);
    assert.equal(isTwoFour(new Float32Array(6), 1, 6), false);
    assert.throws(() => compressSparse(new Float32Array([1, 1, 1, 0]), 1, 4, '2:4'), TopiaryError);
  });

  test("compressed-tensors' packed bitmasks read as they are (their bytes for these matrices, from compressed_tensors 0.14)", () => {
    // bitmask_compress of the 2×18 matrix above: values [1, 2, 3, 4], bitmask [[33, 0, 2], [0, 0, 1]]
    const unstructured = sparseFromPackedBitmask('bitmask', 2, 18, Uint8Array.from([33, 0, 2, 0, 0, 1]), Float32Array.from([1, 2, 3, 4]));
    assert.deepEqual(Array.from(unstructured.masks), [0b100001, 0b10, 0, 0b1]);
    assert.deepEqual(Array.from(unstructured.rowOffsets), [0, 3, 4]);
    // sparse24_bitmask_compress of [0, 5, 0, 0, 1, 0, 0, 2]: values [5, 0, 1, 2], bitmask [154] (it keeps columns 1, 3, 4, 7)
    const twoFour = sparseFromPackedBitmask('2:4', 1, 8, Uint8Array.from([154]), Float32Array.from([5, 0, 1, 2]));
    assert.deepEqual(decompressSparse(twoFour), Float32Array.from([0, 5, 0, 0, 1, 0, 0, 2]));
    assert.throws(() => sparseFromPackedBitmask('bitmask', 2, 18, Uint8Array.from([33, 0, 2, 0, 0, 1]), Float32Array.from([1, 2, 3])), /3 values, the masks need 4/);
    assert.throws(() => sparseFromPackedBitmask('2:4', 1, 8, Uint8Array.from([155]), Float32Array.from([5, 0, 1, 2, 3])), /exactly two/);
    assert.throws(() => sparseFromPackedBitmask('bitmask', 2, 18, new Uint8Array(5), new Float32Array(0)), /needs 6 bytes/);
  });

  test('round trip on awkward shapes', () => {
    const rng = createRng(3);
    for (const [rows, cols] of [[1, 1], [3, 7], [5, 33], [4, 100]] as const) {
      const dense = randomSparse(rng, rows, cols, 0.4);
      assert.deepEqual(decompressSparse(compressSparse(dense, rows, cols, 'bitmask')), dense);
    }
  });

  test('inconsistent masks, offsets and values are named', () => {
    const matrix = compressSparse(new Float32Array([1, 0, 2, 0, 0, 3, 0, 4]), 2, 4, 'bitmask');
    assert.equal(sparseMatrixProblem(matrix), undefined);
    assert.match(sparseMatrixProblem({ ...matrix, masks: Uint16Array.from([0b10101, 0b1010]) })!, /past column 4/);
    assert.match(sparseMatrixProblem({ ...matrix, rowOffsets: Int32Array.from([0, 1, 4]) })!, /row 0 has 2 mask bits but 1 values/);
    assert.match(sparseMatrixProblem({ ...matrix, values: new Float32Array(3) })!, /3 values, the masks need 4/);
    assert.match(sparseMatrixProblem({ ...matrix, layout: '2:4', masks: Uint16Array.from([0b101, 0b1]), rowOffsets: Int32Array.from([0, 2, 3]) })!, /exactly two/);
  });
});

function product(dense: Float32Array, rows: number, cols: number, x: Float32Array, m: number): Promise<Float32Array> {
  const y = new Float32Array(m * rows);
  return reference.gemm(x, dense, y, { m, n: rows, k: cols, transB: true }).then(() => y);
}

describe('reference sparseMatmul equals the dense product', () => {
  test('bitmask and 2:4, one and several rows', async () => {
    const rng = createRng(11);
    for (const [layout, rows, cols, m] of [['bitmask', 5, 19, 3], ['2:4', 6, 20, 1]] as const) {
      const dense = layout === '2:4' ? randomTwoFour(rng, rows, cols) : randomSparse(rng, rows, cols, 0.5);
      const x = randomMatrix(rng, m, cols);
      const y = new Float32Array(m * rows);
      await reference.sparseMatmul(x, compressSparse(dense, rows, cols, layout), y, m);
      assertClose(y, await product(dense, rows, cols, x, m), 1e-6, layout);
    }
  });
});

const ISAS: SparseIsa[] = ['avx512', 'avx2', 'scalar'];

describe('native sparseMatmul matches the reference', { skip: nativeSkip }, () => {
  const cases: { layout: SparseLayout; rows: number; cols: number; m: number; density: number }[] = [];
  for (const m of [1, 2, 3, 5, 8, 9, 37]) {
    for (const [rows, cols] of [[1, 1], [3, 7], [17, 16], [9, 33], [64, 100], [130, 257]]) cases.push({ layout: 'bitmask', rows: rows!, cols: cols!, m, density: 0.3 });
    for (const [rows, cols] of [[1, 4], [3, 20], [33, 36], [70, 196]]) cases.push({ layout: '2:4', rows: rows!, cols: cols!, m, density: 0.5 });
  }

  for (const isa of ISAS) {
    test(`${isa}: awkward shapes, one row (decode) to many (prefill), 1 and 2 threads`, async (t) => {
      if (!native!.useSparseIsa(isa)) return t.skip(`this CPU has no ${isa}`);
      try {
        assert.equal(native!.sparseIsa, isa);
        const rng = createRng(29);
        for (const threads of [1, 2]) {
          native!.setThreads(threads);
          for (const { layout, rows, cols, m, density } of cases) {
            const dense = layout === '2:4' ? randomTwoFour(rng, rows, cols) : randomSparse(rng, rows, cols, density);
            const matrix = compressSparse(dense, rows, cols, layout);
            const x = randomMatrix(rng, m, cols);
            const expected = new Float32Array(m * rows);
            await reference.sparseMatmul(x, matrix, expected, m);
            const y = new Float32Array(m * rows).fill(Number.NaN);
            await native!.sparseMatmul(x, matrix, y, m);
            assertClose(y, expected, 1e-5, `${isa} ${layout} ${rows}×${cols}, ${m} rows, ${threads} threads`);
          }
        }
      } finally {
        native!.useSparseIsa('auto');
      }
    });
  }

  test('a matrix too large for one unpacked panel, on the thread pool', async () => {
    const rng = createRng(31);
    const [rows, cols, m] = [1100, 1000, 12];
    const dense = randomSparse(rng, rows, cols, 0.3);
    const x = randomMatrix(rng, m, cols);
    const y = new Float32Array(m * rows);
    await native!.sparseMatmul(x, compressSparse(dense, rows, cols, 'bitmask'), y, m);
    const expected = new Float32Array(m * rows);
    await native!.gemm(x, dense, expected, { m, n: rows, k: cols, transB: true });
    assertClose(y, expected, 1e-5, 'tiled prefill');
  });

  test('bad matrices and short arrays are TopiaryErrors', () => {
    const matrix = compressSparse(new Float32Array([1, 0, 2, 0, 0, 3, 0, 4]), 2, 4, 'bitmask');
    assert.throws(() => native!.sparseMatmul(new Float32Array(4), { ...matrix, values: new Float32Array(1) }, new Float32Array(2), 1), /bad compressed matrix/);
    assert.throws(() => native!.sparseMatmul(new Float32Array(3), matrix, new Float32Array(2), 1), TopiaryError);
    assert.throws(() => native!.sparseMatmul(new Float32Array(8), matrix, new Float32Array(3), 2), TopiaryError);
  });
});

type Pruning = { kind: '50%' | '70%' } | { kind: '2:4' };

/** Magnitude pruning of every block linear in memory: per row, or 2 of every 4 inputs. */
function pruneByMagnitude(model: CausalLM, pruning: Pruning): void {
  for (let layer = 0; layer < model.numLayers; layer++) {
    const block = model.layer(layer);
    const linears = Object.fromEntries(
      Object.entries(block.linears).map(([role, lin]) => {
        const scores = lin.weight.map(Math.abs);
        const { outFeatures: rows, inFeatures: cols } = lin;
        const mask = pruning.kind === '2:4' ? selectNm(scores, rows, cols, 2, 4) : selectPerRow(scores, rows, cols, pruning.kind === '50%' ? 0.5 : 0.7);
        return [role, { ...lin, weight: applyMask(lin.weight.slice(), mask) }];
      }),
    );
    model.setLayer(layer, { ...block, linears });
  }
}

/** Full logits of the windows, and the logits of decoding `tokens` one at a time after the first with a cache. */
async function runBothWays(model: CausalLM, windows: number[][]): Promise<{ prefill: Float32Array; decode: Float32Array }> {
  const prefill = await model.logits(windows);
  const cache = new KvCache();
  const steps = [await model.forwardCached(windows[0]!.slice(0, 1), cache)];
  for (const token of windows[0]!.slice(1)) steps.push(await model.forwardCached([token], cache));
  const decode = new Float32Array(steps.reduce((total, step) => total + step.length, 0));
  steps.forEach((step, i) => decode.set(step, i * step.length));
  return { prefill, decode };
}

describe('a pruned model runs the same dense and sparse', { skip: nativeSkip }, () => {
  const models = [
    { name: 'stories260K (llama)', path: async () => stories260K, windows: [[1, 403, 407, 261, 378, 414, 267, 261, 422, 268], [1, 9, 30, 81, 200, 300, 401, 17, 5, 6]] },
    { name: 'gpt2 (biases, fused qkv)', path: async () => `${(await familyModels()).dir}/gpt2`, windows: [[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26]] },
  ];
  for (const { name, path, windows } of models) {
    for (const kind of ['50%', '2:4', '70%'] as const) {
      test(`${name}, ${kind}: identical logits for prefill and cached decoding`, async () => {
        const model = await loadModel(await path(), { backend: getBackend() });
        pruneByMagnitude(model, { kind });
        const dense = await runBothWays(model, windows);
        const summary = compressSparseLinears(model);
        assert.equal(summary.dense, 0);
        assert.equal(kind === '2:4' ? summary.twoFour : summary.bitmask, model.numLayers * model.roles.length);
        assert.ok(model.layer(0).linears[model.roles[0]!]!.sparse, 'compressed form attached');
        const sparse = await runBothWays(model, windows);
        assertClose(sparse.prefill, dense.prefill, 1e-5, `${name} ${kind} prefill`);
        assertClose(sparse.decode, dense.decode, 1e-5, `${name} ${kind} decode`);
      });
    }
  }
});
