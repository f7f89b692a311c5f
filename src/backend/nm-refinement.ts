/**
 * Step 2 of the N:M channel permutation search (src/prune/permutation.ts derives it): rounds of
 * per-position reassignments by maximum-weight linear sum assignment, on blocks of groups. The
 * native backend runs the same steps in C, in the same floating-point order
 * (test/backend-permutation.test.ts checks them against this one bit for bit); nearly all of the
 * time goes to the B × B gain matrices, each entry a row sum over d_out.
 */
import type { NmRefinementPlan } from './backend.js';

/**
 * A round counts as rising only if it adds more than this fraction of the kept score. On random
 * 1536 × 576 matrices the first round brings ~60% of the total gain and rounds past the fifth add
 * under 0.01% each, at the cost of a full round each.
 */
const MIN_ROUND_GAIN = 1e-4;

// ---------------------------------------------------------------------------------------------
// Linear sum assignment

/**
 * Solves the square linear sum assignment on an n × n row-major cost matrix (Kuhn–Munkres with
 * potentials, O(n³)). Returns assignment[row] = column, minimising Σ cost[row, column], or
 * maximising it with `maximize`.
 */
export function solveAssignment(cost: Float64Array, n: number, maximize = false): Int32Array {
  const sign = maximize ? -1 : 1;
  // 1-based arrays as in the classic formulation; index 0 is the virtual start column/row.
  const rowPotential = new Float64Array(n + 1);
  const colPotential = new Float64Array(n + 1);
  const rowOfCol = new Int32Array(n + 1);
  const previousCol = new Int32Array(n + 1);
  const minSlack = new Float64Array(n + 1);
  const visited = new Uint8Array(n + 1);
  for (let row = 1; row <= n; row++) {
    rowOfCol[0] = row;
    let col0 = 0;
    minSlack.fill(Infinity);
    visited.fill(0);
    do {
      visited[col0] = 1;
      const row0 = rowOfCol[col0];
      let delta = Infinity;
      let nextCol = 0;
      const rowBase = (row0 - 1) * n;
      for (let col = 1; col <= n; col++) {
        if (visited[col]) continue;
        const slack = sign * cost[rowBase + col - 1] - rowPotential[row0] - colPotential[col];
        if (slack < minSlack[col]) {
          minSlack[col] = slack;
          previousCol[col] = col0;
        }
        if (minSlack[col] < delta) {
          delta = minSlack[col];
          nextCol = col;
        }
      }
      for (let col = 0; col <= n; col++) {
        if (visited[col]) {
          rowPotential[rowOfCol[col]] += delta;
          colPotential[col] -= delta;
        } else {
          minSlack[col] -= delta;
        }
      }
      col0 = nextCol;
    } while (rowOfCol[col0] !== 0);
    do {
      const col1 = previousCol[col0];
      rowOfCol[col0] = rowOfCol[col1];
      col0 = col1;
    } while (col0 !== 0);
  }
  const assignment = new Int32Array(n);
  for (let col = 1; col <= n; col++) assignment[rowOfCol[col] - 1] = col - 1;
  return assignment;
}


/**
 * Sorts values[0, count) in descending order. Insertion sort: count is M or M − 1 (4, 8), where
 * it beats a native sort call.
 */
export function sortDescending(values: Float64Array, count: number): void {
  for (let i = 1; i < count; i++) {
    const value = values[i];
    let j = i - 1;
    while (j >= 0 && values[j] < value) {
      values[j + 1] = values[j];
      j--;
    }
    values[j + 1] = value;
  }
}


/** Groups of block `block` out of `blockCount`, strided or contiguous. */
function blockMembers(block: number, blockCount: number, groups: number, strided: boolean): number[] {
  const members: number[] = [];
  if (strided) {
    for (let g = block; g < groups; g += blockCount) members.push(g);
  } else {
    const start = Math.floor((block * groups) / blockCount);
    const end = Math.floor(((block + 1) * groups) / blockCount);
    for (let g = start; g < end; g++) members.push(g);
  }
  return members;
}

/**
 * Step 2 for one position and one block: reassigns the channels at `position` among the groups
 * in `members`, in place in `order`, by maximum-weight assignment. `channels` is the score matrix
 * channel-major (cols × rows). Returns the kept-score gain (0 if nothing moved).
 */
export function refinePosition(
  channels: Float32Array,
  rows: number,
  order: Uint32Array,
  n: number,
  m: number,
  position: number,
  members: readonly number[],
): number {
  const size = members.length;
  const keep = m - n;
  // t_hr: the keep-th largest of the other m − 1 channels of group h in row r.
  const thresholds = new Float32Array(size * rows);
  const others = new Float64Array(m - 1);
  for (let h = 0; h < size; h++) {
    const base = members[h] * m;
    for (let r = 0; r < rows; r++) {
      let count = 0;
      for (let j = 0; j < m; j++) if (j !== position) others[count++] = channels[order[base + j] * rows + r];
      sortDescending(others, m - 1);
      thresholds[h * rows + r] = others[keep - 1];
    }
  }
  const gain = new Float64Array(size * size);
  for (let i = 0; i < size; i++) {
    const channelStart = order[members[i] * m + position] * rows;
    const channel = channels.subarray(channelStart, channelStart + rows);
    for (let h = 0; h < size; h++) {
      const threshold = thresholds.subarray(h * rows, (h + 1) * rows);
      // Σ max(0, e) written as ½ Σ (e + |e|): branch-free, several times faster than a compare
      // whose outcome is a coin flip.
      let sum = 0;
      for (let r = 0; r < rows; r++) {
        const excess = channel[r] - threshold[r];
        sum += excess + Math.abs(excess);
      }
      gain[i * size + h] = 0.5 * sum;
    }
  }
  const assignment = solveAssignment(gain, size, true);
  let current = 0;
  let best = 0;
  for (let i = 0; i < size; i++) {
    current += gain[i * size + i];
    best += gain[i * size + assignment[i]];
  }
  // Equal-valued assignments would only shuffle channels; move only for a real gain.
  if (!(best > current * (1 + 1e-12) + 1e-30)) return 0;
  const moving = members.map((g) => order[g * m + position]);
  for (let i = 0; i < size; i++) order[members[assignment[i]] * m + position] = moving[i];
  return best - current;
}

/**
 * Refines `order` (position → channel, groups of m consecutive positions) in place for the
 * channel-major score matrix `channels` (cols × rows) whose current kept score is `kept`: rounds
 * visit every position of every block while the kept score rises. Returns the rounds run.
 */
export function refineNmOrderReference(channels: Float32Array, rows: number, order: Uint32Array, plan: NmRefinementPlan, kept: number): number {
  const { n, m, blockGroups, maxRounds } = plan;
  const groups = order.length / m;
  const blockCount = Math.ceil(groups / blockGroups);
  // With several blocks, a round without gain under one partition may still leave gains to the
  // other, so stop only when both partitions in a row found nothing.
  const idleRoundsToStop = blockCount === 1 ? 1 : 2;
  let idleRounds = 0;
  let rounds = 0;
  while (rounds < maxRounds && idleRounds < idleRoundsToStop) {
    const strided = rounds % 2 === 0;
    let roundGain = 0;
    for (let position = 0; position < m; position++) {
      for (let block = 0; block < blockCount; block++) {
        const members = blockMembers(block, blockCount, groups, strided);
        roundGain += refinePosition(channels, rows, order, n, m, position, members);
      }
    }
    rounds++;
    kept += roundGain;
    idleRounds = roundGain > kept * MIN_ROUND_GAIN ? 0 : idleRounds + 1;
  }
  return rounds;
}
