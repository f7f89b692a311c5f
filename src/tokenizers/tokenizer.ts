import type { GgufVocabulary } from './gguf-export.js';

/** The tokenizer interface the rest of Topiary uses, whatever file the vocabulary came from. */
export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  /** Token ids of `text`; with addBos (default: the tokenizer's usual behaviour) a BOS is prepended. */
  encode(text: string, options?: { addBos?: boolean }): number[];
  /** Text of `ids`, special tokens skipped. */
  decode(ids: number[]): string;
  /** Where the vocabulary came from: 'tokenizer.json', 'gguf:gpt2', 'gguf:llama', 'tokenizer.bin'. */
  readonly source: string;
  /**
   * The equivalent Hugging Face tokenizer.json and tokenizer_config.json (add_bos_token, BOS/EOS),
   * when there are such, so exported models carry their tokenizer.
   */
  toHuggingFace?(): { tokenizer: Record<string, unknown>; config: Record<string, unknown> };
  /** The vocabulary as GGUF's tokenizer.ggml.* keys hold it, or why it cannot be, so GGUF exports carry their tokenizer. */
  toGguf?(): GgufVocabulary | { unsupported: string };
}
