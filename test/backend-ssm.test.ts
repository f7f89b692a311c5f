/**
 * The state-space operations of the backend (Mamba's causal conv1d and selective scan): the
 * reference against values worked by hand, the native kernels against the reference on awkward
 * shapes, and the property generation rests on — running a sequence in pieces, carrying the conv
 * history and scan state, gives what one pass gives.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, ScanInputs, SequenceOptions } from '../src/backend/backend.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { createRng, type Rng } from '../src/util/random.js';

const reference = new ReferenceBackend();
const loaded = loadNativeBackend();
const native = loaded.backend;
const nativeSkip = native ? false : `native addon not built (${loaded.reason}); run \`npm run setup\``;

function random(rng: Rng, length: number, scale = 1): Float32Array {
  return Float32Array.from({ length }, () => scale * rng.normal());
}

function assertClose(actual: Float32Array, expected: Float32Array, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const scale = Math.max(1e-30, ...expected.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / scale);
  assert.ok(worst <= tolerance, `${what}: relative error ${worst.toExponential(2)}`);
}

function scanInputs(rng: Rng, windows: number, seqLen: number, channels: number, stateSize: number): ScanInputs {
  const rows = windows * seqLen;
  // Raw deltas around softplus⁻¹(0.05), a few past the linear threshold of 20; A negative as −exp(A_log).
  const delta = Float32Array.from({ length: rows * channels }, (_, i) => (i % 37 === 5 ? 21 + rng.next() : -3 + 2 * rng.normal()));
  return {
    x: random(rng, rows * channels),
    delta,
    a: Float32Array.from({ length: channels * stateSize }, () => -Math.exp(rng.normal())),
    b: random(rng, rows * stateSize),
    cmat: random(rng, rows * stateSize),
    d: random(rng, channels),
    state: random(rng, windows * channels * stateSize, 0.5),
  };
}

async function scan(backend: Backend, inputs: ScanInputs, options: SequenceOptions & { stateSize: number }): Promise<{ out: Float32Array; state: Float32Array }> {
  const state = inputs.state.slice();
  const out = new Float32Array(inputs.x.length);
  await backend.selectiveScan({ ...inputs, state }, out, options);
  return { out, state };
}

test('causal conv1d (reference): each output is the bias plus the kernel over the current and preceding inputs, the history first', async () => {
  // One window of 3 positions, 2 channels, kernel 3: history holds the 2 inputs before the window.
  const x = Float32Array.from([1, 10, 2, 20, 3, 30]);
  const weight = Float32Array.from([1, 2, 4, 0.5, 0, 1]);
  const bias = Float32Array.from([100, -1]);
  const history = Float32Array.from([7, 70, 8, 80]);
  const out = new Float32Array(6);
  await reference.causalConv1d(x, weight, bias, history, out, { windows: 1, seqLen: 3, channels: 2 });
  // Channel 0: taps (1, 2, 4) over (u−2, u−1, u); channel 1: taps (0.5, 0, 1).
  const expected = [100 + 7 + 16 + 4, -1 + 35 + 10, 100 + 8 + 2 + 8, -1 + 40 + 20, 100 + 1 + 4 + 12, -1 + 5 + 30];
  assert.deepEqual(Array.from(out), expected);
});

test('selective scan (reference): one channel, one state worked by hand, softplus linear above 20', async () => {
  const x = Float32Array.from([2, -1]);
  const delta = Float32Array.from([0, 25]);
  const a = Float32Array.from([-0.5]);
  const b = Float32Array.from([3, 1]);
  const cmat = Float32Array.from([0.5, 2]);
  const d = Float32Array.from([0.25]);
  const state = Float32Array.from([4]);
  const out = new Float32Array(2);
  await reference.selectiveScan({ x, delta, a, b, cmat, d, state }, out, { windows: 1, seqLen: 2, channels: 1, stateSize: 1 });
  const step0 = Math.log(2); // softplus(0)
  const s0 = Math.exp(-0.5 * step0) * 4 + step0 * 3 * 2;
  const s1 = Math.exp(-0.5 * 25) * s0 + 25 * 1 * -1;
  assertClose(out, Float32Array.from([0.5 * s0 + 0.25 * 2, 2 * s1 + 0.25 * -1]), 1e-6, 'outputs');
  assertClose(state, Float32Array.from([s1]), 1e-6, 'final state');
});

test('running a sequence in pieces, carrying conv history and scan state, equals one pass (reference)', async () => {
  const rng = createRng(3);
  const [seqLen, channels, stateSize, kernel, split] = [9, 5, 3, 4, 4];
  const inputs = scanInputs(rng, 1, seqLen, channels, stateSize);
  inputs.state.fill(0);
  const whole = await scan(reference, inputs, { windows: 1, seqLen, channels, stateSize });
  const rowsOf = (array: Float32Array, width: number, from: number, to: number) => array.slice(from * width, to * width);
  const piece = (from: number, to: number, state: Float32Array): ScanInputs => ({
    ...inputs,
    x: rowsOf(inputs.x, channels, from, to),
    delta: rowsOf(inputs.delta, channels, from, to),
    b: rowsOf(inputs.b, stateSize, from, to),
    cmat: rowsOf(inputs.cmat, stateSize, from, to),
    state,
  });
  const first = await scan(reference, piece(0, split, inputs.state), { windows: 1, seqLen: split, channels, stateSize });
  const second = await scan(reference, piece(split, seqLen, first.state), { windows: 1, seqLen: seqLen - split, channels, stateSize });
  assert.deepEqual([...first.out, ...second.out], [...whole.out]);
  assert.deepEqual(second.state, whole.state);

  const weight = random(rng, channels * kernel);
  const bias = random(rng, channels);
  const conv = async (x: Float32Array, history: Float32Array, rows: number) => {
    const out = new Float32Array(rows * channels);
    await reference.causalConv1d(x, weight, bias, history, out, { windows: 1, seqLen: rows, channels });
    return out;
  };
  const full = await conv(inputs.x, new Float32Array((kernel - 1) * channels), seqLen);
  const head = await conv(rowsOf(inputs.x, channels, 0, split), new Float32Array((kernel - 1) * channels), split);
  const tail = await conv(rowsOf(inputs.x, channels, split, seqLen), rowsOf(inputs.x, channels, split - (kernel - 1), split), seqLen - split);
  assert.deepEqual([...head, ...tail], [...full]);
});

test('causal conv1d: native equals reference on awkward shapes, with and without bias', { skip: nativeSkip }, async () => {
  const rng = createRng(11);
  for (const [windows, seqLen, channels, kernel] of [
    [1, 1, 1, 1],
    [2, 3, 7, 4],
    [3, 2, 33, 5], // a window shorter than the kernel reads the history beyond its first row
    [1, 17, 130, 2],
  ] as const) {
    const rows = windows * seqLen;
    const x = random(rng, rows * channels);
    const weight = random(rng, channels * kernel);
    const history = random(rng, windows * (kernel - 1) * channels);
    for (const bias of [random(rng, channels), undefined]) {
      const expected = new Float32Array(rows * channels);
      const actual = new Float32Array(rows * channels);
      const options = { windows, seqLen, channels };
      await reference.causalConv1d(x, weight, bias, history, expected, options);
      await native!.causalConv1d(x, weight, bias, history, actual, options);
      assertClose(actual, expected, 1e-6, `${windows}×${seqLen}×${channels}, kernel ${kernel}, ${bias ? 'bias' : 'no bias'}`);
    }
  }
});

test('selective scan: native equals reference on awkward shapes, in place on x too', { skip: nativeSkip }, async () => {
  const rng = createRng(12);
  for (const [windows, seqLen, channels, stateSize] of [
    [1, 1, 1, 1],
    [2, 5, 7, 3],
    [3, 4, 33, 16],
    [1, 40, 130, 17],
  ] as const) {
    const inputs = scanInputs(rng, windows, seqLen, channels, stateSize);
    const options = { windows, seqLen, channels, stateSize };
    const expected = await scan(reference, inputs, options);
    const actual = await scan(native!, inputs, options);
    const what = `${windows}×${seqLen}×${channels}, state ${stateSize}`;
    assertClose(actual.out, expected.out, 2e-5, `${what}: outputs`);
    assertClose(actual.state, expected.state, 2e-5, `${what}: final state`);
    const inPlace = inputs.x.slice();
    const state = inputs.state.slice();
    await native!.selectiveScan({ ...inputs, x: inPlace, state }, inPlace, options);
    assert.deepEqual(inPlace, actual.out, `${what}: out = x`);
  }
});

test('native conv1d and scan refuse mis-sized or overlapping arrays', { skip: nativeSkip }, () => {
  const options = { windows: 1, seqLen: 2, channels: 3 };
  const x = new Float32Array(6);
  assert.throws(() => native!.causalConv1d(x, new Float32Array(12), undefined, new Float32Array(8), new Float32Array(6), options), /history holds 8 values, not 1×3×3 = 9/);
  assert.throws(() => native!.causalConv1d(x, new Float32Array(10), undefined, new Float32Array(9), new Float32Array(6), options), /kernel width/);
  assert.throws(() => native!.causalConv1d(x, new Float32Array(12), undefined, new Float32Array(9), x, options), /must not share memory/);
  const scanOptions = { ...options, stateSize: 2 };
  const [a, bc, d, state] = [new Float32Array(6), new Float32Array(4), new Float32Array(3), new Float32Array(6)];
  const inputs = { x, delta: x.slice(), a, b: bc, cmat: bc.slice(), d, state };
  assert.throws(() => native!.selectiveScan({ ...inputs, cmat: bc.slice(0, 3) }, x, scanOptions), /cmat holds 3 values, not 2×2 = 4/);
  assert.throws(() => native!.selectiveScan(inputs, state, scanOptions), /must not share memory with state/);
  const wide = new Float32Array(12);
  assert.throws(() => native!.selectiveScan({ ...inputs, x: wide.subarray(0, 6) }, wide.subarray(3, 9), scanOptions), /out must be x itself or separate/);
});
