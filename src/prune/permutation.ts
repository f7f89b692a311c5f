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
 *    (by more than 0.01% of it, at most `maxRounds` rounds). Blocks of B groups bound
 *    the cost to O(G · B · d_out) per position; they alternate between a strided partition (each
 *    block spans the whole heuristic order) and a contiguous one, so channels still travel
 *    between blocks. Step 2 is nearly all of the cost and runs in the backend
 *    (Backend.refineNmOrder; src/backend/nm-refinement.ts is the TypeScript reference).
 */
import type { Backend } from '../backend/backend.js';
import { refineNmOrderReference, sortDescending } from '../backend/nm-refinement.js';
import { UsageError } from '../util/errors.js';
import { booleanOption, keptScore, numberOption, selectMask, selectNm } from './masks.js';
import type { Mask, UnstructuredScope } from './masks.js';
import type { SparsityTarget } from './method.js';

/** The assignment solver and one refinement step, exported for tests of the search. */
export { refinePosition, solveAssignment } from '../backend/nm-refinement.js';

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

/** The search before refinement (step 1) in the channel-major layout the refinement reads. */
interface PermutationStart {
  channels: Float32Array;
  order: Uint32Array;
  keptBefore: number;
  kept: number;
}

function startPermutation(scores: Float32Array, rows: number, cols: number, n: number, m: number): PermutationStart {
  const channels = transpose(scores, rows, cols);
  const identity = Uint32Array.from({ length: cols }, (_, c) => c);
  const keptBefore = keptScoreOfOrder(channels, rows, identity, n, m);
  const heuristic = heuristicOrder(channels, rows, cols, m);
  const keptHeuristic = keptScoreOfOrder(channels, rows, heuristic, n, m);
  const order = keptHeuristic > keptBefore ? heuristic : identity;
  return { channels, order, keptBefore, kept: Math.max(keptHeuristic, keptBefore) };
}

function finishPermutation(start: PermutationStart, rows: number, n: number, m: number, rounds: number): NmPermutation {
  const { channels, order, keptBefore } = start;
  return { order, keptBefore, keptAfter: keptScoreOfOrder(channels, rows, order, n, m), rounds };
}

/**
 * Finds an input-channel order for N:M pruning of a rows × cols score matrix (cols a multiple of
 * m) that keeps at least as much score as the original order. Refines in TypeScript (the
 * reference); chooseMaskOn gives the same order from a backend's kernel.
 */
export function findNmPermutation(
  scores: Float32Array,
  rows: number,
  cols: number,
  n: number,
  m: number,
  options: PermutationOptions = DEFAULT_PERMUTATION_OPTIONS,
): NmPermutation {
  const start = startPermutation(scores, rows, cols, n, m);
  const rounds = refineNmOrderReference(start.channels, rows, start.order, { n, m, ...options }, start.kept);
  return finishPermutation(start, rows, n, m, rounds);
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
 * (N:M only) and expressed in the original column order either way. The permutation is refined in
 * TypeScript; chooseMaskOn refines it with a backend's kernel.
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
  const nm = requireNm(target);
  return permutedMask(scores, rows, cols, nm, findNmPermutation(scores, rows, cols, nm.n, nm.m, permutation));
}

/** chooseMask with the permutation refined by `backend`. */
export async function chooseMaskOn(backend: Backend, ...request: Parameters<typeof chooseMask>): Promise<ChosenMask> {
  const [scores, rows, cols, target, scope, permutation] = request;
  if (!permutation) return { mask: selectMask(scores, rows, cols, target, scope), report: {} };
  const { n, m } = requireNm(target);
  const start = startPermutation(scores, rows, cols, n, m);
  const rounds = await backend.refineNmOrder(start.channels, rows, start.order, { n, m, ...permutation }, start.kept);
  return permutedMask(scores, rows, cols, { kind: 'nm', n, m }, finishPermutation(start, rows, n, m, rounds));
}

type NmTarget = Extract<SparsityTarget, { kind: 'nm' }>;

function requireNm(target: SparsityTarget): NmTarget {
  if (target.kind !== 'nm') throw new UsageError('channel permutation (permute) applies only to N:M targets');
  return target;
}

/** The N:M mask in the order `found`, in original column order, with its report entries. */
function permutedMask(scores: Float32Array, rows: number, cols: number, target: NmTarget, found: NmPermutation): ChosenMask {
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
