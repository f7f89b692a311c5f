/**
 * APT's row elimination (Backend.eliminateRows): the reference against closed forms and a brute
 * force, and the native kernel against the reference, bit for bit, on awkward shapes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EliminationPlan } from '../src/backend/backend.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { ReferenceBackend } from '../src/backend/reference.js';
import { createRng, type Rng } from '../src/util/random.js';

const reference = new ReferenceBackend();
const loaded = loadNativeBackend();
const native = loaded.backend;

/** A well-conditioned SPD matrix Γ = XᵀX/k + 0.1·I of size n. */
function spd(rng: Rng, n: number): Float64Array {
  const k = 2 * n;
  const x = Float64Array.from({ length: k * n }, () => rng.next() * 2 - 1);
  const gamma = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += x[p * n + i]! * x[p * n + j]!;
      gamma[i * n + j] = sum / k + (i === j ? 0.1 : 0);
    }
  }
  return gamma;
}

/** ½ w_q Γ_qq⁻¹ w_qᵀ by Gauss–Jordan on the q×q submatrix. */
function jointLoss(gamma: Float64Array, n: number, w: Float64Array, q: number[]): number {
  const size = q.length;
  const a = q.map((i) => [...q.map((j) => gamma[i * n + j]!), w[i]!]);
  for (let c = 0; c < size; c++) {
    for (let r = 0; r < size; r++) {
      if (r === c) continue;
      const f = a[r]![c]! / a[c]![c]!;
      for (let k = c; k <= size; k++) a[r]![k]! -= f * a[c]![k]!;
    }
  }
  return 0.5 * q.reduce((sum, i, c) => sum + w[i]! * (a[c]![size]! / a[c]![c]!), 0);
}

test('reference: one removal is the closed form (w′ = w − w_i/Γ_ii · Γ_i,:, loss ½ w_i²/Γ_ii) on the cheapest weight', async () => {
  const rng = createRng(11);
  const n = 7;
  const gamma = spd(rng, n);
  const w = Float64Array.from({ length: n }, () => rng.next() * 2 - 1);
  const block = Float64Array.from(w);
  const losses = new Float64Array(1);
  assert.equal(await reference.eliminateRows(gamma, block, 1, n, { kind: 'counts', removals: Uint32Array.of(1) }, losses), true);
  const costs = [...w].map((value, i) => (value * value) / gamma[i * n + i]!);
  const i = costs.indexOf(Math.min(...costs));
  assert.ok(Math.abs(losses[0]! - 0.5 * costs[i]!) < 1e-15);
  for (let j = 0; j < n; j++) {
    const expected = j === i ? 0 : w[j]! - (w[i]! / gamma[i * n + i]!) * gamma[i * n + j]!;
    assert.ok(Math.abs(block[j]! - expected) < 1e-12, `w′[${j}]`);
  }
});

test('reference: exact 2:4 and 3:8 pick, in a fresh row, the subset of least joint loss (brute force)', async () => {
  for (const [n, m] of [[2, 4], [3, 8]] as const) {
    const rng = createRng(20 + m);
    const gamma = spd(rng, m);
    const w = Float64Array.from({ length: m }, () => rng.next() * 2 - 1);
    const block = Float64Array.from(w);
    const losses = new Float64Array(1);
    await reference.eliminateRows(gamma, block, 1, m, { kind: 'nm', n, m, exact: true }, losses);
    const removed = [...block.keys()].filter((i) => block[i] === 0);
    assert.equal(removed.length, n);
    let best = Infinity;
    const choose = (from: number, chosen: number[]): void => {
      if (chosen.length === n) best = Math.min(best, jointLoss(gamma, m, w, chosen));
      else for (let i = from; i < m; i++) choose(i + 1, [...chosen, i]);
    };
    choose(0, []);
    assert.ok(Math.abs(losses[0]! - best) < 1e-12 * Math.max(1, best), `${n}:${m}: ${losses[0]} vs best ${best}`);
    assert.ok(Math.abs(jointLoss(gamma, m, w, removed) - best) < 1e-12 * Math.max(1, best));
  }
});

test('native eliminateRows equals the reference bit for bit (counts, exact and greedy N:M, awkward shapes)', { skip: native ? false : `native addon not built (${loaded.reason})` }, async () => {
  const rng = createRng(7);
  const cases: { rows: number; size: number; plan: (rows: number, size: number) => EliminationPlan }[] = [
    { rows: 37, size: 20, plan: (rows, size) => ({ kind: 'counts', removals: Uint32Array.from({ length: rows }, () => Math.floor(rng.next() * (size + 1))) }) },
    { rows: 1, size: 1, plan: () => ({ kind: 'counts', removals: Uint32Array.of(1) }) },
    { rows: 130, size: 24, plan: () => ({ kind: 'nm', n: 2, m: 4, exact: true }) },
    { rows: 9, size: 16, plan: () => ({ kind: 'nm', n: 4, m: 8, exact: true }) },
    { rows: 33, size: 12, plan: () => ({ kind: 'nm', n: 1, m: 3, exact: false }) },
  ];
  for (const { rows, size, plan: makePlan } of cases) {
    const gamma = spd(rng, size);
    const weights = Float64Array.from({ length: rows * size }, () => rng.next() * 2 - 1);
    const plan = makePlan(rows, size);
    const results = [];
    for (const backend of [reference, native!]) {
      const block = Float64Array.from(weights);
      const losses = new Float64Array(rows);
      assert.equal(await backend.eliminateRows(gamma, block, rows, size, plan, losses), true);
      results.push({ block, losses });
    }
    assert.deepEqual(results[1]!.block, results[0]!.block, `${rows}×${size} ${plan.kind} weights`);
    assert.deepEqual(results[1]!.losses, results[0]!.losses, `${rows}×${size} ${plan.kind} losses`);
  }
});

test('a singular block is reported (false) by both backends', async () => {
  const size = 4;
  const gamma = new Float64Array(size * size); // all zero: no pivot is positive
  for (const backend of [reference, ...(native ? [native] : [])]) {
    const block = Float64Array.from({ length: 3 * size }, (_, i) => i + 1);
    assert.equal(await backend.eliminateRows(gamma, block, 3, size, { kind: 'counts', removals: Uint32Array.of(1, 2, 0) }, new Float64Array(3)), false);
  }
});
