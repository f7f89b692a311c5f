import { dirname } from 'node:path';
import { TopiaryError } from '../util/errors.js';
import { READ_LIMITS, readRegularFile } from '../util/safe-fs.js';
import { ScoreMergeTokenizer, type TokenKind } from './score-merge.js';

/** Longest piece we accept; real files have max_token_len below 100, so more means a corrupt length. */
const MAX_PIECE_BYTES = 1 << 16;

/** run.c's fixed ids: <unk>, <s> and </s> come first in every llama2.c vocabulary. */
const UNKNOWN_ID = 0;
const BOS_ID = 1;
const EOS_ID = 2;

const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/**
 * A llama2.c `tokenizer.bin`: int32 max_token_len, then for each token a float32 score, an int32
 * byte length and the piece's bytes (a space where SentencePiece writes '▁'). The file does not
 * store the vocabulary size; it is the number of records up to the end of the file, and when
 * `vocabSize` is given (the model's), the file must hold exactly that many.
 */
export function tokenizerFromLlama2cBin(path: string, vocabSize?: number): ScoreMergeTokenizer {
  const data = readRegularFile(path, READ_LIMITS.tokenizerBinary, { within: dirname(path) });
  if (data.length < 4) throw new TopiaryError('not a llama2.c tokenizer.bin: shorter than its 4-byte header', path);

  const pieces: string[] = [];
  const scores: number[] = [];
  const decoder = new TextDecoder();
  for (let offset = 4; offset < data.length; ) {
    if (offset + 8 > data.length) throw truncated(path, pieces.length);
    const score = data.readFloatLE(offset);
    const length = data.readInt32LE(offset + 4);
    if (length < 0 || length > MAX_PIECE_BYTES) {
      throw new TopiaryError(`corrupt tokenizer.bin: token ${pieces.length} has length ${length}`, path);
    }
    offset += 8;
    if (offset + length > data.length) throw truncated(path, pieces.length);
    pieces.push(decoder.decode(data.subarray(offset, offset + length)));
    scores.push(score);
    offset += length;
  }
  if (vocabSize !== undefined && pieces.length !== vocabSize) {
    throw new TopiaryError(`tokenizer.bin holds ${pieces.length} tokens but the model's vocabulary has ${vocabSize}`, path);
  }
  if (pieces.length <= EOS_ID) throw new TopiaryError(`tokenizer.bin holds only ${pieces.length} tokens`, path);

  // llama2.c's exporter wrote <s> and </s> as "\n<s>\n" and "\n</s>\n"; their SentencePiece spelling is restored.
  for (const id of [BOS_ID, EOS_ID]) pieces[id] = pieces[id]!.trim();
  const kinds = pieces.map((piece, id): TokenKind => {
    if (id === UNKNOWN_ID) return 'unknown';
    if (id === BOS_ID || id === EOS_ID) return 'control';
    return BYTE_PIECE.test(piece) ? 'byte' : 'normal';
  });
  return new ScoreMergeTokenizer(
    {
      pieces,
      scores,
      kinds,
      spaceSymbol: ' ',
      addSpacePrefix: true,
      bosId: BOS_ID,
      eosId: EOS_ID,
      unknownId: UNKNOWN_ID,
      addBosByDefault: true,
    },
    'tokenizer.bin',
  );
}

function truncated(path: string, tokensRead: number): TopiaryError {
  return new TopiaryError(`tokenizer.bin is truncated: it ends inside token ${tokensRead}`, path);
}
