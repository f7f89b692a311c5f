import { Tokenizer as HfLibraryTokenizer } from '@huggingface/tokenizers';
import type { Tokenizer } from './tokenizer.js';
import { checkTokenIds } from './ids.js';
import { TopiaryError } from '../util/errors.js';
import { ggufVocabularyFromJson, type GgufVocabulary } from './gguf-export.js';

/** The fields of a Hugging Face tokenizer_config.json this wrapper reads. */
export interface TokenizerConfig {
  add_bos_token?: boolean;
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  clean_up_tokenization_spaces?: boolean;
  [key: string]: unknown;
}

export interface SpecialTokenIds {
  bosId?: number;
  eosId?: number;
  addBos?: boolean;
}

/**
 * A tokenizer.json run by the @huggingface/tokenizers library. BOS is our business, not the
 * library's: encode() asks the library for the bare ids and prepends BOS itself, so callers can
 * turn it on or off. By default BOS is added when tokenizer_config.json says add_bos_token, or
 * (when it says nothing) when the file's post-processor adds it, as transformers does.
 */
export class HuggingFaceTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  private readonly library: HfLibraryTokenizer;
  private readonly addBosByDefault: boolean;
  private readonly cleanUpSpaces: boolean;
  private readonly padId: number | undefined;

  /** Throws the library's own error on a malformed tokenizer.json; callers wrap it with the file name. */
  constructor(
    private readonly tokenizerJson: object,
    config: TokenizerConfig,
    readonly source: string,
    known: SpecialTokenIds = {},
  ) {
    const library = new HfLibraryTokenizer(withUnicodeDigits(tokenizerJson), config);
    this.library = library;
    let largestId = -1;
    for (const id of library.get_vocab(true).values()) largestId = Math.max(largestId, id);
    this.vocabSize = largestId + 1;

    const templateBos = leadingTemplateToken(library);
    this.bosId = known.bosId ?? idOf(library, config.bos_token) ?? templateBos;
    this.eosId = known.eosId ?? idOf(library, config.eos_token);
    this.padId = idOf(library, config.pad_token);
    this.addBosByDefault =
      this.bosId !== undefined && (known.addBos ?? config.add_bos_token ?? templateBos === this.bosId);
    // The library cleans up by default (" ." -> "."); transformers 5 does not, and a cleaned
    // decode would not round-trip, so only a config that asks for it gets it.
    this.cleanUpSpaces = config.clean_up_tokenization_spaces ?? false;
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = text.length === 0 ? [] : this.encodeBare(text);
    const addBos = options.addBos ?? this.addBosByDefault;
    return addBos && this.bosId !== undefined ? [this.bosId, ...ids] : ids;
  }

  /**
   * The library's ids for `text`. Normalizers that lengthen the text are bounded when the file is
   * loaded (json-checks.ts); a text that still grows past what a JavaScript string or array can
   * hold is refused in one line rather than with the engine's RangeError.
   */
  private encodeBare(text: string): number[] {
    let ids: number[];
    try {
      ids = this.library.encode(text, { add_special_tokens: false }).ids;
    } catch (error) {
      if (error instanceof RangeError) throw new TopiaryError(`cannot tokenize a text of ${text.length} characters: ${error.message}`, this.source);
      throw libraryFailure(error, this.source);
    }
    // A vocabulary without an unknown token gives the library no id for text it cannot spell.
    if (ids.some((id) => !Number.isInteger(id))) throw new TopiaryError('cannot tokenize the text: the vocabulary cannot spell part of it and has no unknown token', this.source);
    return ids;
  }

  toHuggingFace(): { tokenizer: Record<string, unknown>; config: Record<string, unknown> } {
    const token = (id: number | undefined) => (id === undefined ? null : (this.library.id_to_token(id) ?? null));
    return {
      tokenizer: this.tokenizerJson as Record<string, unknown>,
      config: {
        add_bos_token: this.addBosByDefault,
        bos_token: token(this.bosId),
        eos_token: token(this.eosId),
        clean_up_tokenization_spaces: this.cleanUpSpaces,
        tokenizer_class: 'PreTrainedTokenizerFast',
      },
    };
  }

  toGguf(): GgufVocabulary | { unsupported: string } {
    const special = { bosId: this.bosId, eosId: this.eosId, paddingId: this.padId, addBos: this.addBosByDefault };
    return ggufVocabularyFromJson(this.tokenizerJson as Record<string, unknown>, special);
  }

  decode(ids: number[]): string {
    checkTokenIds(ids, this.vocabSize);
    if (ids.length === 0) return '';
    try {
      return this.library.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: this.cleanUpSpaces });
    } catch (error) {
      throw libraryFailure(error, this.source);
    }
  }
}

/**
 * The library checks a tokenizer.json's parts only when they first run; what fails then is the
 * file's fault (a decoder of the wrong shape, say), and is reported as such.
 */
function libraryFailure(error: unknown, source: string): TopiaryError {
  return error instanceof TopiaryError ? error : new TopiaryError(`the tokenizer failed: ${(error as Error).message}`, source);
}

/**
 * The tokenizer.json with each Digits pre-tokenizer written as the equivalent Split on \p{N}.
 * The library's Digits matches JavaScript's ASCII-only \d, where the Rust library (and llama.cpp's
 * \p{N} regex) split on every Unicode number, e.g. "½": "4 ½ months" would tokenize differently.
 */
function withUnicodeDigits<T extends object>(tokenizerJson: T): T {
  const rewrite = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(rewrite);
    if (typeof node !== 'object' || node === null) return node;
    const record = node as Record<string, unknown>;
    if (record.type === 'Digits') {
      const pattern = record.individual_digits ? '\\p{N}' : '\\p{N}+';
      return { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false };
    }
    return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, rewrite(value)]));
  };
  const record = tokenizerJson as Record<string, unknown>;
  return { ...tokenizerJson, pre_tokenizer: rewrite(record.pre_tokenizer) };
}

function idOf(library: HfLibraryTokenizer, token: TokenizerConfig['bos_token']): number | undefined {
  if (token === undefined || token === null) return undefined;
  return library.token_to_id(typeof token === 'string' ? token : token.content);
}

/** The token the file's post-processor puts before the text (e.g. Llama's <s>), if any. */
function leadingTemplateToken(library: HfLibraryTokenizer): number | undefined {
  const probe = 'a';
  const bare: number[] = library.encode(probe, { add_special_tokens: false }).ids;
  const templated: number[] = library.encode(probe, { add_special_tokens: true }).ids;
  const textFollowsFirst = templated.length > bare.length && bare.every((id, i) => templated[i + 1] === id);
  return textFollowsFirst ? templated[0] : undefined;
}
