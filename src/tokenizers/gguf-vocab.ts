import { TopiaryError } from '../util/errors.js';
import { HuggingFaceTokenizer } from './huggingface.js';
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

const GPT2_SPLIT = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const byteLevel = (useRegex: boolean) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
const isolate = (pattern: string) => ({ type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false });

interface PreTokenization {
  /** A Hugging Face pre_tokenizer config splitting text as llama.cpp's regexes for this type do. */
  preTokenizer: object;
  /** BPE ignore_merges: a pre-token that is itself in the vocabulary is taken whole (Llama 3). */
  ignoreMerges: boolean;
}

/**
 * llama.cpp splits text by a list of regexes applied in turn, each piece and each gap between
 * matches becoming a piece (llama-vocab.cpp, llm_tokenizer_bpe); the equivalent Hugging Face
 * configs are those the models publish: GPT-2's ByteLevel regex; StarCoder/SmolLM's Digits
 * then ByteLevel; Llama 3's and Qwen2's Split regex then ByteLevel without its own regex.
 */
const GPT2: PreTokenization = { preTokenizer: byteLevel(true), ignoreMerges: false };
const DIGITS_THEN_GPT2: PreTokenization = {
  preTokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel(true)] },
  ignoreMerges: false,
};
const LLAMA3: PreTokenization = {
  preTokenizer: { type: 'Sequence', pretokenizers: [isolate(LLAMA3_SPLIT), byteLevel(false)] },
  ignoreMerges: true,
};
const QWEN2: PreTokenization = {
  preTokenizer: { type: 'Sequence', pretokenizers: [isolate(QWEN2_SPLIT), byteLevel(false)] },
  ignoreMerges: false,
};
/** llama.cpp's fallback for vocabularies its converter did not recognise (tokenizer.ggml.pre 'default' or absent). */
const LLAMA_CPP_DEFAULT: PreTokenization = {
  preTokenizer: {
    type: 'Sequence',
    pretokenizers: [
      isolate('[\\p{P}\\$\\+<=>\\^~\\|]+'),
      isolate(GPT2_SPLIT),
      isolate('\\p{N}+'),
      isolate('[0-9][0-9][0-9]'),
      byteLevel(false),
    ],
  },
  ignoreMerges: false,
};

/** tokenizer.ggml.pre values (as llama.cpp's converter writes them) and how each splits text. */
const PRE_TOKENIZATIONS: Record<string, PreTokenization> = {
  default: LLAMA_CPP_DEFAULT,
  'gpt-2': GPT2,
  mpt: GPT2,
  olmo: GPT2,
  jais: GPT2,
  smollm: DIGITS_THEN_GPT2,
  starcoder: DIGITS_THEN_GPT2,
  refact: DIGITS_THEN_GPT2,
  'command-r': DIGITS_THEN_GPT2,
  codeshell: DIGITS_THEN_GPT2,
  exaone: DIGITS_THEN_GPT2,
  'minerva-7b': DIGITS_THEN_GPT2,
  'llama-bpe': LLAMA3,
  llama3: LLAMA3,
  'llama-v3': LLAMA3,
  falcon3: LLAMA3,
  dbrx: LLAMA3,
  'smaug-bpe': LLAMA3,
  qwen2: QWEN2,
  'deepseek-r1-qwen': QWEN2,
  stablelm2: QWEN2,
};

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
      spaceSymbol: '\u2581',
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
