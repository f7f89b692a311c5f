import { TopiaryError } from '../util/errors.js';
import { HuggingFaceTokenizer } from './huggingface.js';
import { SPM_SPACE } from './gguf-export.js';
import { byteLevel, PRE_TOKENIZATIONS } from './gguf-pre.js';
import { ScoreMergeTokenizer, tokenKindFromGguf, type TokenKind } from './score-merge.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * Tokenizers from the vocabulary a GGUF file embeds in its metadata (llama.cpp's key names):
 * 'gpt2' byte-level BPE goes to the Hugging Face library as an equivalent tokenizer.json built here;
 * 'llama' SentencePiece vocabularies go to the score-driven merge shared with tokenizer.bin.
 */
export function tokenizerFromGguf(metadata: Record<string, unknown>, file?: string): Tokenizer {
  const fields = new GgufFields(metadata, file);
  const model = fields.string('tokenizer.ggml.model');
  switch (model) {
    case 'gpt2':
      return byteLevelBpeFromGguf(fields);
    case 'llama':
      return scoreMergeFromGguf(fields);
    default:
      throw new TopiaryError(`GGUF tokenizer model '${model}' is not supported (supported: gpt2, llama)`, file);
  }
}

function byteLevelBpeFromGguf(fields: GgufFields): Tokenizer {
  const pre = fields.optionalString('tokenizer.ggml.pre') ?? 'default';
  const preTokenization = PRE_TOKENIZATIONS[pre];
  if (!preTokenization) {
    throw new TopiaryError(
      `GGUF pre-tokenizer '${pre}' is not supported (supported: ${Object.keys(PRE_TOKENIZATIONS).join(', ')})`,
      fields.file,
    );
  }
  const tokens = fields.stringArray('tokenizer.ggml.tokens');
  const merges = fields.stringArray('tokenizer.ggml.merges');
  const types = fields.optionalNumberArray('tokenizer.ggml.token_type', tokens.length);

  // A null-prototype object, so a token spelled "__proto__" is an ordinary key.
  const vocab: Record<string, number> = Object.create(null);
  tokens.forEach((token, id) => (vocab[token] = id));
  const addedTokens = tokens.flatMap((content, id) => {
    const kind = types ? tokenKindFromGguf(types[id]!) : undefined;
    // Control tokens (<|endoftext|>, <|im_start|>) and user-defined ones are matched whole in the text.
    if (kind !== 'control' && kind !== 'userDefined') return [];
    return [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: kind === 'control' }];
  });
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: preTokenization.preTokenizer,
    post_processor: null,
    decoder: byteLevel(true),
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: preTokenization.ignoreMerges,
      vocab,
      merges: merges.map((merge, index) => splitMerge(merge, index, fields.file)),
    },
  };
  const special = {
    bosId: fields.optionalTokenId('tokenizer.ggml.bos_token_id', tokens.length),
    eosId: fields.optionalTokenId('tokenizer.ggml.eos_token_id', tokens.length),
    addBos: fields.optionalBoolean('tokenizer.ggml.add_bos_token') ?? false,
  };
  try {
    return new HuggingFaceTokenizer(tokenizerJson, {}, 'gguf:gpt2', special);
  } catch (error) {
    throw new TopiaryError(`cannot build the GGUF's BPE tokenizer: ${(error as Error).message}`, fields.file);
  }
}

/** "Ġ t" -> ["Ġ", "t"], splitting at the first space after the first character, as llama.cpp does. */
function splitMerge(merge: string, index: number, file: string | undefined): [string, string] {
  const space = merge.indexOf(' ', 1);
  if (space < 0) throw new TopiaryError(`GGUF merge ${index} ('${merge}') is not two tokens separated by a space`, file);
  return [merge.slice(0, space), merge.slice(space + 1)];
}

function scoreMergeFromGguf(fields: GgufFields): ScoreMergeTokenizer {
  const pieces = fields.stringArray('tokenizer.ggml.tokens');
  const scores = fields.numberArray('tokenizer.ggml.scores', pieces.length);
  const types = fields.optionalNumberArray('tokenizer.ggml.token_type', pieces.length);
  const kinds = pieces.map((piece, id): TokenKind => {
    const kind = types ? tokenKindFromGguf(types[id]!) : /^<0x[0-9A-Fa-f]{2}>$/.test(piece) ? 'byte' : 'normal';
    if (!kind) throw new TopiaryError(`GGUF token ${id} has unknown token type ${types![id]}`, fields.file);
    return kind;
  });
  // llama.cpp's defaults for SentencePiece vocabularies when the file does not say.
  const bosId = fields.optionalTokenId('tokenizer.ggml.bos_token_id', pieces.length) ?? 1;
  return new ScoreMergeTokenizer(
    {
      pieces,
      scores,
      kinds,
      spaceSymbol: SPM_SPACE,
      addSpacePrefix: fields.optionalBoolean('tokenizer.ggml.add_space_prefix') ?? true,
      bosId,
      eosId: fields.optionalTokenId('tokenizer.ggml.eos_token_id', pieces.length) ?? 2,
      unknownId: fields.optionalTokenId('tokenizer.ggml.unknown_token_id', pieces.length) ?? 0,
      addBosByDefault: fields.optionalBoolean('tokenizer.ggml.add_bos_token') ?? true,
    },
    'gguf:llama',
  );
}

/** Typed reads of GGUF metadata, each failing with a TopiaryError naming the key and the file. */
class GgufFields {
  constructor(
    private readonly metadata: Record<string, unknown>,
    readonly file: string | undefined,
  ) {}

  private fail(key: string, expected: string): never {
    throw new TopiaryError(`GGUF metadata ${key} is missing or not ${expected}`, this.file);
  }

  string(key: string): string {
    return this.optionalString(key) ?? this.fail(key, 'a string');
  }

  optionalString(key: string): string | undefined {
    const value = this.metadata[key];
    if (value === undefined) return undefined;
    return typeof value === 'string' ? value : this.fail(key, 'a string');
  }

  optionalBoolean(key: string): boolean | undefined {
    const value = this.metadata[key];
    if (value === undefined) return undefined;
    return typeof value === 'boolean' ? value : this.fail(key, 'a boolean');
  }

  optionalTokenId(key: string, vocabSize: number): number | undefined {
    const value = this.metadata[key];
    if (value === undefined) return undefined;
    const id = typeof value === 'bigint' ? Number(value) : value;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
      this.fail(key, `a token id below ${vocabSize}`);
    }
    return id;
  }

  stringArray(key: string): string[] {
    const value = this.metadata[key];
    if (!Array.isArray(value) || value.length === 0 || !value.every((item) => typeof item === 'string')) {
      this.fail(key, 'a non-empty array of strings');
    }
    return value as string[];
  }

  numberArray(key: string, length: number): ArrayLike<number> {
    return this.optionalNumberArray(key, length) ?? this.fail(key, `an array of ${length} numbers`);
  }

  /** Number arrays may come as JS arrays or typed arrays; either must match the token count. */
  optionalNumberArray(key: string, length: number): ArrayLike<number> | undefined {
    const value = this.metadata[key];
    if (value === undefined) return undefined;
    const isNumbers =
      (Array.isArray(value) && value.every((item) => typeof item === 'number')) ||
      (ArrayBuffer.isView(value) && !(value instanceof DataView) && !(value instanceof BigInt64Array) && !(value instanceof BigUint64Array));
    if (!isNumbers || (value as ArrayLike<number>).length !== length) this.fail(key, `an array of ${length} numbers`);
    return value as ArrayLike<number>;
  }
}
