import type { Tokenizer } from './tokenizer.js';
import { checkTokenIds } from './ids.js';
import { SPM_SPACE, type GgufVocabulary } from './gguf-export.js';

/** What a vocabulary entry is, as SentencePiece (and GGUF's `tokenizer.ggml.token_type`) classify it. */
export type TokenKind = 'normal' | 'unknown' | 'control' | 'userDefined' | 'unused' | 'byte';

/** GGUF `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type), in order from 1. */
const GGUF_TOKEN_KINDS: readonly TokenKind[] = ['normal', 'unknown', 'control', 'userDefined', 'unused', 'byte'];

export function tokenKindFromGguf(type: number): TokenKind | undefined {
  return GGUF_TOKEN_KINDS[type - 1];
}

export function tokenKindToGguf(kind: TokenKind): number {
  return GGUF_TOKEN_KINDS.indexOf(kind) + 1;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** A SentencePiece-style vocabulary: pieces with scores, merged by score rather than by a merge list. */
export interface ScoredVocabulary {
  /** Text of each token, a space written as `spaceSymbol`; byte tokens spelled `<0xXX>`. */
  readonly pieces: readonly string[];
  readonly scores: ArrayLike<number>;
  readonly kinds: readonly TokenKind[];
  /**
   * How the pieces spell a space: '▁' in SentencePiece models and GGUF, ' ' in llama2.c's
   * tokenizer.bin (whose exporter turned every '▁' back into a space).
   */
  readonly spaceSymbol: string;
  /** SentencePiece's add_dummy_prefix: a space is put before non-empty text, and stripped again on decode. */
  readonly addSpacePrefix: boolean;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly unknownId: number | undefined;
  /** Whether encode() prepends BOS when the caller does not say. */
  readonly addBosByDefault: boolean;
}

/**
 * The score-driven merge of SentencePiece BPE models, as llama.cpp's SPM tokenizer and llama2.c's
 * run.c encode() do it: start from the UTF-8 characters of the text, repeatedly merge the adjacent
 * pair whose concatenation is the highest-scoring vocabulary piece (leftmost on ties), and write any
 * character left that is not a piece as its UTF-8 bytes through the <0xXX> byte tokens.
 *
 * run.c keeps all pairs in an array and rescans it after every merge (quadratic); a heap of
 * candidate pairs gives the same merges in n log n, which the 1.3 MB evaluation texts need.
 * Unlike run.c, unknown characters become bytes after merging, not before (as in llama.cpp and
 * SentencePiece); this only matters for a piece containing a character that is not itself a piece,
 * which BPE training never produces.
 */
export class ScoreMergeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  /** Pieces a merge or a single character may produce: normal and user-defined ones. */
  private readonly mergeableIds = new Map<string, number>();
  private readonly byteTokenIds: (number | undefined)[] = new Array(256).fill(undefined);
  /** For decode: the byte value of each byte token. */
  private readonly byteOfToken = new Map<number, number>();
  private readonly utf8 = new TextEncoder();

  constructor(
    private readonly vocab: ScoredVocabulary,
    readonly source: string,
  ) {
    this.vocabSize = vocab.pieces.length;
    this.bosId = vocab.bosId;
    this.eosId = vocab.eosId;
    vocab.pieces.forEach((piece, id) => {
      const kind = vocab.kinds[id];
      if (kind === 'normal' || kind === 'userDefined') {
        // SentencePiece forbids duplicate pieces; should a file have them, the first id wins.
        if (!this.mergeableIds.has(piece)) this.mergeableIds.set(piece, id);
      } else if (kind === 'byte') {
        const match = BYTE_PIECE.exec(piece);
        if (match) {
          const byte = parseInt(match[1]!, 16);
          this.byteTokenIds[byte] ??= id;
          this.byteOfToken.set(id, byte);
        }
      }
    });
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids: number[] = [];
    const addBos = options.addBos ?? this.vocab.addBosByDefault;
    if (addBos && this.bosId !== undefined) ids.push(this.bosId);
    if (text.length === 0) return ids;
    const space = this.vocab.spaceSymbol;
    const normalized = (this.vocab.addSpacePrefix ? space : '') + (space === ' ' ? text : text.replaceAll(' ', space));
    for (const symbol of this.mergeSymbols(normalized)) {
      const id = this.mergeableIds.get(symbol);
      if (id !== undefined) ids.push(id);
      else this.pushByteFallback(symbol, ids);
    }
    return ids;
  }

  /**
   * The vocabulary as a GGUF 'llama' (SentencePiece) one, which llama.cpp merges by score as
   * encode() does: pieces spelled with '▁' for a space, scores, kinds and special ids as they are.
   */
  toGguf(): GgufVocabulary {
    const vocab = this.vocab;
    return {
      model: 'llama',
      pre: 'default',
      tokens: vocab.pieces.map((piece) => (vocab.spaceSymbol === SPM_SPACE ? piece : piece.replaceAll(vocab.spaceSymbol, SPM_SPACE))),
      kinds: [...vocab.kinds],
      scores: Array.from(vocab.scores),
      bosId: vocab.bosId,
      eosId: vocab.eosId,
      unknownId: vocab.unknownId,
      addBos: vocab.addBosByDefault,
      addSpacePrefix: vocab.addSpacePrefix,
      warnings: [],
    };
  }

  /** The text split into the pieces the score-driven merge ends with. */
  private mergeSymbols(text: string): string[] {
    // Symbols are code points at first, kept as [start, end) offsets into `text` in a linked list.
    const starts: number[] = [];
    for (let offset = 0; offset < text.length; ) {
      starts.push(offset);
      offset += text.codePointAt(offset)! > 0xffff ? 2 : 1;
    }
    const count = starts.length;
    const start = Int32Array.from(starts);
    const end = new Int32Array(count);
    const next = new Int32Array(count);
    const prev = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      end[i] = i + 1 < count ? start[i + 1]! : text.length;
      next[i] = i + 1 < count ? i + 1 : -1;
      prev[i] = i - 1;
    }

    const candidates = new PairHeap();
    const consider = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const id = this.mergeableIds.get(text.slice(start[left]!, end[right]!));
      if (id !== undefined) candidates.push(this.vocab.scores[id]!, left, end[right]! - start[left]!);
    };
    for (let i = 0; i + 1 < count; i++) consider(i, i + 1);

    while (candidates.size > 0) {
      const { left, length } = candidates.pop();
      const right = next[left]!;
      // Stale entry: one side was merged away, or grew, since this pair was queued.
      if (right < 0 || end[right]! - start[left]! !== length || end[left]! === start[left]!) continue;
      end[left] = end[right]!;
      end[right] = start[right]!; // marks `right` as merged away
      next[left] = next[right]!;
      if (next[left]! >= 0) prev[next[left]!] = left;
      consider(prev[left]!, left);
      consider(left, next[left]!);
    }

    const symbols: string[] = [];
    for (let i = 0; i >= 0 && count > 0; i = next[i]!) symbols.push(text.slice(start[i]!, end[i]!));
    return symbols;
  }

  private pushByteFallback(symbol: string, ids: number[]): void {
    for (const byte of this.utf8.encode(symbol)) {
      const id = this.byteTokenIds[byte] ?? this.vocab.unknownId;
      if (id !== undefined) ids.push(id);
    }
  }

  /**
   * Text of `ids`: byte tokens become raw bytes (so a character split over several decodes whole),
   * control and unknown tokens are skipped, and the space the encoder prefixed is dropped from the
   * first piece, as SentencePiece does (run.c drops it only right after BOS; the two agree on any
   * sequence encode() produced).
   */
  decode(ids: number[]): string {
    checkTokenIds(ids, this.vocabSize);
    const bytes: number[] = [];
    let atStart = true;
    for (const id of ids) {
      const kind = this.vocab.kinds[id];
      if (kind === 'control' || kind === 'unknown') continue;
      const byte = this.byteOfToken.get(id);
      if (byte !== undefined) {
        bytes.push(byte);
      } else {
        let piece = this.vocab.pieces[id]!.replaceAll(this.vocab.spaceSymbol, ' ');
        if (atStart && this.vocab.addSpacePrefix && piece.startsWith(' ')) piece = piece.slice(1);
        for (const b of this.utf8.encode(piece)) bytes.push(b);
      }
      atStart = false;
    }
    return new TextDecoder().decode(Uint8Array.from(bytes));
  }
}

/**
 * Max-heap of candidate merges by score; on equal scores the leftmost pair first, as run.c's
 * strict `>` scan and SentencePiece's agenda order them. Symbol indices only grow left to right
 * and a merge keeps the left index, so comparing indices compares positions.
 */
class PairHeap {
  private scores: number[] = [];
  private lefts: number[] = [];
  private lengths: number[] = [];

  get size(): number {
    return this.scores.length;
  }

  push(score: number, left: number, length: number): void {
    this.scores.push(score);
    this.lefts.push(left);
    this.lengths.push(length);
    let i = this.scores.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { left: number; length: number } {
    const top = { left: this.lefts[0]!, length: this.lengths[0]! };
    const last = this.scores.length - 1;
    this.swap(0, last);
    this.scores.pop();
    this.lefts.pop();
    this.lengths.pop();
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < last && this.before(l, best)) best = l;
      if (r < last && this.before(r, best)) best = r;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return top;
  }

  private before(a: number, b: number): boolean {
    const sa = this.scores[a]!;
    const sb = this.scores[b]!;
    return sa > sb || (sa === sb && this.lefts[a]! < this.lefts[b]!);
  }

  private swap(a: number, b: number): void {
    swapEntries(this.scores, a, b);
    swapEntries(this.lefts, a, b);
    swapEntries(this.lengths, a, b);
  }
}

function swapEntries(array: number[], a: number, b: number): void {
  const t = array[a]!;
  array[a] = array[b]!;
  array[b] = t;
}
