/**
 * How llama.cpp splits text before byte-level BPE, by `tokenizer.ggml.pre` name, written as the
 * Hugging Face pre_tokenizer configs that split the same way: read when a GGUF vocabulary becomes a
 * tokenizer.json (gguf-vocab.ts), and matched when a tokenizer.json becomes a GGUF vocabulary
 * (gguf-export.ts).
 */
const GPT2_SPLIT = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const byteLevel = (useRegex: boolean) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
const isolate = (pattern: string) => ({ type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false });

export interface PreTokenization {
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
export const PRE_TOKENIZATIONS: Record<string, PreTokenization> = {
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

/**
 * The first tokenizer.ggml.pre name whose splitting is this tokenizer.json pre_tokenizer (with
 * the BPE model's ignore_merges), or undefined when llama.cpp knows no equivalent. Only what
 * changes the split is compared: offsets settings are dropped and omitted defaults filled in.
 */
export function ggufPreName(preTokenizer: unknown, ignoreMerges: boolean): string | undefined {
  const wanted = JSON.stringify(canonicalConfig(preTokenizer));
  return Object.keys(PRE_TOKENIZATIONS).find((name) => {
    const candidate = PRE_TOKENIZATIONS[name]!;
    return candidate.ignoreMerges === ignoreMerges && JSON.stringify(canonicalConfig(candidate.preTokenizer)) === wanted;
  });
}

/** The Hugging Face library's defaults for the fields a pre_tokenizer config may leave out. */
const CONFIG_DEFAULTS: Record<string, Record<string, unknown>> = {
  ByteLevel: { add_prefix_space: true, use_regex: true },
  Split: { invert: false },
  Digits: { individual_digits: false },
};

function canonicalConfig(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(canonicalConfig);
  if (typeof node !== 'object' || node === null) return node;
  const record: Record<string, unknown> = { ...CONFIG_DEFAULTS[String((node as { type?: unknown }).type)], ...node };
  delete record.trim_offsets;
  return Object.fromEntries(
    Object.keys(record)
      .sort()
      .map((key) => [key, canonicalConfig(record[key])]),
  );
}
