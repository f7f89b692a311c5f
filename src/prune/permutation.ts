/**
 * Input-channel permutation for N:M sparsity (RIA, seed 000). Which channels share an M-group
 * decides what N:M can keep, so the input channels are reordered to maximise the total score that
 * survives the mask; the mask chosen in that order is then mapped back to the original columns,
 * so the pruned layer computes exactly what the permuted one would.
 *
 * Search, on the d_out × d_in score matrix S with G = d_in / M groups and k = M − N kept per group:
 * 1. Start: sort channels by column sum Σ_i S_ij, split the sorted list into M chunks of G, and
 *    give group g one channel of each chunk (position j takes chunk j, walking chunks in
 *    alternating directions) so every group mixes strong and weak channels. If the identity order
 *    keeps more, start from it instead, so the result never keeps less than no permutation.
 * 2. Refinement: for each position q, the channels at q across the groups of a block are
 *    reassigned by a linear sum assignment maximising the kept score, the other positions fixed.
 *    With the other M−1 channels of group h fixed and t_hr the k-th largest of them in row r,
 *    placing channel c in h keeps const_h + Σ_r max(0, S_rc − t_hr), so the assignment matrix is
 *    B² cheap row sums. A round visits every position; rounds repeat while the kept score rises
 *    (by more than MIN_ROUND_GAIN of it, at most `maxRounds` rounds). Blocks of B groups bound
 *    the cost to O(G · B · d_out) per position; they alternate between a strided partition (each
 *    block spans the whole heuristic order) and a contiguous one, so channels still travel
 *    between blocks.
 */
import { UsageError } from '../util/errors.js';
import { booleanOption, keptScore, numberOption, selectMask, selectNm } from './masks.js';
import type { Mask, UnstructuredScope } from './masks.js';
import type { SparsityTarget } from './method.js';

export interface PermutationOptions {
  /** Groups per assignment sub-problem (B); the whole layer when it has fewer groups. */
  blockGroups: number;
  /** Upper bound on refinement rounds (one round visits every position of the groups). */
  maxRounds: number;
}

/**
 * 128 groups per block keeps one assignment at 128³ and a refinement of a 4096 × 11008 layer at
 * about a second per position, while SmolLM-sized layers (≤ 384 groups) need at most three blocks.
 */
export const DEFAULT_PERMUTATION_OPTIONS: PermutationOptions = { blockGroups: 128, maxRounds: 10 };

/**
 * A round counts as rising only if it adds more than this fraction of the kept score. On random
 * 1536 × 576 matrices the first round brings ~60% of the total gain and rounds past the fifth add
 * under 0.01% each, at the cost of a full round each.
 */
const MIN_ROUND_GAIN = 1e-4;

/** Permutations of at most this many channels are stored in the report; longer ones by hash. */
const REPORTED_PERMUTATION_LENGTH = 256;

type MethodOptions = Readonly<Record<string, number | boolean | string>>;

/**
 * Reads the options `permute` (boolean), `permuteBlock` (groups per block) and `permuteRounds`;
 * null when permutation is off.
 */
export function parsePermutationOptions(options: MethodOptions): PermutationOptions | null {
  if (!booleanOption(options, 'permute', false)) return null;
  return {
    blockGroups: numberOption(options, 'permuteBlock', DEFAULT_PERMUTATION_OPTIONS.blockGroups, { min: 1, integer: true }),
    maxRounds: numberOption(options, 'permuteRounds', DEFAULT_PERMUTATION_OPTIONS.maxRounds, { min: 0, integer: true }),
  };
}

/** The options that control permutation, accepted by every method that supports it. */
/** The permutation options of the methods that support it (`--help` lists them). */
export const PERMUTATION_OPTIONS = {
  permute: 'false: channel permutation before N:M selection (same as --permute)',
  permuteBlock: `${DEFAULT_PERMUTATION_OPTIONS.blockGroups}: groups per Hungarian reassignment block`,
  permuteRounds: `${DEFAULT_PERMUTATION_OPTIONS.maxRounds}: most reassignment rounds while the kept score rises`,
} as const;

/**
 * The reason a method cannot honour its permutation options for this target, or null. A method
 * without permutation support passes its name as `refusingMethod` to refuse `permute` outright.
 */
export function permutationUnsupported(
  target: SparsityTarget,
  options: MethodOptions,
  refusingMethod?: string,
): string | null {
  try {
    if (!parsePermutationOptions(options)) return null;
    if (refusingMethod) return `${refusingMethod} does not support channel permutation (permute); use wanda or ria`;
    if (target.kind !== 'nm') return 'channel permutation (permute) applies only to N:M targets';
  } catch (error) {
    if (error instanceof UsageError) return error.message;
    throw error;
  }
  return null;
}

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

// ---------------------------------------------------------------------------------------------
// Permutation search

export interface NmPermutation {
  /** position → original column; groups are consecutive runs of m positions. */
  order: Uint32Array;
  /** Kept score with the original column order. */
  keptBefore: number;
  /** Kept score with `order`. */
  keptAfter: number;
  /** Refinement rounds run. */
  rounds: number;
}

/** The score matrix transposed (channel-major) so that one channel's scores are contiguous. */
function transpose(scores: Float32Array, rows: number, cols: number): Float32Array {
  const channels = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) channels[c * rows + r] = scores[r * cols + c];
  }
  return channels;
}

/**
 * Sorts values[0, count) in descending order. Insertion sort: count is M or M − 1 (4, 8), where
 * it beats a native sort call.
 */
function sortDescending(values: Float64Array, count: number): void {
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

/** Kept score of an order: per row and group, the sum of the m − n largest scores. */
function keptScoreOfOrder(channels: Float32Array, rows: number, order: Uint32Array, n: number, m: number): number {
  const keep = m - n;
  const values = new Float64Array(m);
  let total = 0;
  for (let g = 0; g < order.length; g += m) {
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < m; j++) values[j] = channels[order[g + j] * rows + r];
      sortDescending(values, m);
      for (let j = 0; j < keep; j++) total += values[j];
    }
  }
  return total;
}

/** Step 1: sort by column score sum and deal the chunks across groups in alternating directions. */
function heuristicOrder(channels: Float32Array, rows: number, cols: number, m: number): Uint32Array {
  const columnSum = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    let sum = 0;
    for (let r = 0; r < rows; r++) sum += channels[c * rows + r];
    columnSum[c] = sum;
  }
  const byStrength = Uint32Array.from({ length: cols }, (_, c) => c).sort(
    (a, b) => columnSum[b] - columnSum[a] || a - b,
  );
  const groups = cols / m;
  const order = new Uint32Array(cols);
  for (let g = 0; g < groups; g++) {
    for (let j = 0; j < m; j++) {
      const inChunk = j % 2 === 0 ? g : groups - 1 - g;
      order[g * m + j] = byStrength[j * groups + inChunk];
    }
  }
  return order;
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
 * Finds an input-channel order for N:M pruning of a rows × cols score matrix (cols a multiple of
 * m) that keeps at least as much score as the original order.
 */
export function findNmPermutation(
  scores: Float32Array,
  rows: number,
  cols: number,
  n: number,
  m: number,
  options: PermutationOptions = DEFAULT_PERMUTATION_OPTIONS,
): NmPermutation {
  const channels = transpose(scores, rows, cols);
  const identity = Uint32Array.from({ length: cols }, (_, c) => c);
  const keptBefore = keptScoreOfOrder(channels, rows, identity, n, m);
  const heuristic = heuristicOrder(channels, rows, cols, m);
  const keptHeuristic = keptScoreOfOrder(channels, rows, heuristic, n, m);
  const order = keptHeuristic > keptBefore ? heuristic : identity;
  let kept = Math.max(keptHeuristic, keptBefore);

  const groups = cols / m;
  const blockCount = Math.ceil(groups / options.blockGroups);
  // With several blocks, a round without gain under one partition may still leave gains to the
  // other, so stop only when both partitions in a row found nothing.
  const idleRoundsToStop = blockCount === 1 ? 1 : 2;
  let idleRounds = 0;
  let rounds = 0;
  while (rounds < options.maxRounds && idleRounds < idleRoundsToStop) {
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
  return { order, keptBefore, keptAfter: keptScoreOfOrder(channels, rows, order, n, m), rounds };
}

/** FNV-1a over the order's 32-bit entries, as 8 hex digits: a compact fingerprint for reports. */
export function permutationHash(order: Uint32Array): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < order.length; i++) {
    let value = order[i];
    for (let byte = 0; byte < 4; byte++) {
      hash = Math.imul(hash ^ (value & 0xff), 0x01000193);
      value >>>= 8;
    }
  }
  return (hash >>> 0).toString(16).padStart(8, '0');
}

export interface ChosenMask {
  mask: Mask;
  report: Record<string, number | string | number[]>;
}

/**
 * The mask for a validated target, found in a permuted channel order when `permutation` is given
 * (N:M only) and expressed in the original column order either way.
 */
export function chooseMask(
  scores: Float32Array,
  rows: number,
  cols: number,
  target: SparsityTarget,
  scope: UnstructuredScope,
  permutation: PermutationOptions | null,
): ChosenMask {
  if (!permutation) return { mask: selectMask(scores, rows, cols, target, scope), report: {} };
  if (target.kind !== 'nm') throw new UsageError('channel permutation (permute) applies only to N:M targets');
  const found = findNmPermutation(scores, rows, cols, target.n, target.m, permutation);
  const mask = selectNm(scores, rows, cols, target.n, target.m, found.order);
  const keptAfter = keptScore(scores, mask);
  const report: ChosenMask['report'] = {
    permuteKeptScoreBefore: found.keptBefore,
    permuteKeptScoreAfter: keptAfter,
    permuteGainPercent: found.keptBefore > 0 ? (100 * (keptAfter - found.keptBefore)) / found.keptBefore : 0,
    permuteRounds: found.rounds,
    permutationHash: permutationHash(found.order),
  };
  if (cols <= REPORTED_PERMUTATION_LENGTH) report.permutation = Array.from(found.order);
  return { mask, report };
}
