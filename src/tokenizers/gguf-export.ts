/**
 * Tokenizers as GGUF vocabularies (the tokenizer.ggml.* keys llama.cpp reads), the way llama.cpp's
 * convert_hf_to_gguf.py writes them: the other direction of gguf-vocab.ts. A tokenizer.json
 * byte-level BPE (GPT-2, SmolLM2, Qwen2, Llama 3) becomes a 'gpt2' vocabulary with its merges and
 * the tokenizer.ggml.pre name whose splitting matches its pre-tokenizer; a SentencePiece-style one
 * (BPE with byte fallback and '▁' for spaces, LLaMA-2) becomes a 'llama' vocabulary whose scores
 * are minus the rank of the merge producing each token, so merging by highest score applies the
 * merges in their order. Score-merge vocabularies (tokenizer.bin, GGUF 'llama') convert themselves
 * (ScoreMergeTokenizer.toGguf).
 */
import { ggufPreName } from './gguf-pre.js';
import type { TokenKind } from './score-merge.js';

/** How SentencePiece, and GGUF 'llama' vocabularies, spell a space. */
export const SPM_SPACE = '\u2581';

/** A vocabulary as GGUF holds it. */
export interface GgufVocabulary {
  /** tokenizer.ggml.model: 'llama' merges pieces by score, 'gpt2' is byte-level BPE by merges. */
  model: 'llama' | 'gpt2';
  /** tokenizer.ggml.pre: how llama.cpp splits text before BPE ('default' for 'llama', where it is unused). */
  pre: string;
  tokens: string[];
  kinds: TokenKind[];
  /** 'llama' only. */
  scores?: number[];
  /** 'gpt2' only: "left right", first merged first. */
  merges?: string[];
  bosId?: number;
  eosId?: number;
  unknownId?: number;
  paddingId?: number;
  addBos: boolean;
  addSpacePrefix: boolean;
  /** Where llama.cpp may tokenize some text differently from the source tokenizer. */
  warnings: string[];
}

/** What a tokenizer.json does not say itself: its tokenizer_config.json's special tokens. */
export interface SpecialTokens {
  bosId?: number;
  eosId?: number;
  paddingId?: number;
  addBos: boolean;
}

type Json = Record<string, unknown>;

const isRecord = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The tokenizer.json's pre-tokenizers and normalizers, Sequences flattened. */
function components(node: unknown, listKey: string): Json[] {
  if (!isRecord(node)) return [];
  if (node.type === 'Sequence' && Array.isArray(node[listKey])) return (node[listKey] as unknown[]).flatMap((child) => components(child, listKey));
  return [node];
}

/**
 * The GGUF form of a tokenizer.json, or why it has none. `special` supplies BOS/EOS/padding and
 * add_bos as the tokenizer's config resolved them.
 */
export function ggufVocabularyFromJson(json: Json, special: SpecialTokens): GgufVocabulary | { unsupported: string } {
  const model = json.model;
  if (!isRecord(model) || model.type !== 'BPE') {
    return { unsupported: `tokenizer.json has a ${isRecord(model) ? String(model.type) : 'missing'} model; only BPE models convert to GGUF` };
  }
  if (model.continuing_subword_prefix || model.end_of_word_suffix) {
    return { unsupported: 'tokenizer.json BPE uses a continuing-subword prefix or end-of-word suffix, which GGUF vocabularies cannot express' };
  }
  if (!isRecord(model.vocab)) return { unsupported: 'tokenizer.json has no BPE vocab' };

  const tokens: string[] = [];
  for (const [text, id] of Object.entries(model.vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) return { unsupported: `tokenizer.json gives token ${JSON.stringify(text)} the id ${String(id)}` };
    tokens[id as number] = text;
  }
  const added = new Map<number, { special: boolean }>();
  for (const token of Array.isArray(json.added_tokens) ? json.added_tokens : []) {
    if (!isRecord(token) || !Number.isInteger(token.id) || (token.id as number) < 0 || typeof token.content !== 'string') continue;
    tokens[token.id as number] = token.content;
    added.set(token.id as number, { special: token.special === true });
  }
  const merges: [string, string][] = [];
  for (const merge of Array.isArray(model.merges) ? model.merges : []) {
    // "left right" (split at the first space after the first character, as llama.cpp does) or [left, right].
    const space = typeof merge === 'string' ? merge.indexOf(' ', 1) : -1;
    const pair: unknown = typeof merge === 'string' ? (space > 0 ? [merge.slice(0, space), merge.slice(space + 1)] : undefined) : merge;
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string' || pair[0] === '') {
      return { unsupported: `tokenizer.json merge ${JSON.stringify(merge)} is not a pair of tokens` };
    }
    merges.push(pair as [string, string]);
  }
  const idOf = new Map<string, number>();
  tokens.forEach((token, id) => idOf.set(token, id));
  const unknownId = typeof model.unk_token === 'string' ? idOf.get(model.unk_token) : undefined;
  const common = { bosId: special.bosId, eosId: special.eosId, unknownId, paddingId: special.paddingId, addBos: special.addBos };
  // Ids no token holds are written as unused placeholders, as the converter pads them.
  const filled = Array.from(tokens, (token, id) => token ?? `[PAD${id}]`);
  const kindOf = (id: number, regular: TokenKind): TokenKind => {
    if (tokens[id] === undefined) return 'unused';
    const addedToken = added.get(id);
    if (addedToken) return addedToken.special ? 'control' : 'userDefined';
    return regular;
  };

  const preTokenizers = components(json.pre_tokenizer, 'pretokenizers');
  const normalizers = components(json.normalizer, 'normalizers');
  if (model.byte_fallback === true) return sentencePieceStyle(filled, merges, idOf, preTokenizers, normalizers, kindOf, common);

  const byteLevel = preTokenizers.filter((p) => p.type === 'ByteLevel');
  if (byteLevel.length === 0) return { unsupported: 'tokenizer.json BPE has neither a ByteLevel pre-tokenizer nor byte fallback' };
  if (byteLevel.some((p) => p.add_prefix_space !== false)) {
    return { unsupported: "tokenizer.json's ByteLevel pre-tokenizer puts a space before the text, which llama.cpp's BPE does not" };
  }
  const warnings: string[] = [];
  for (const normalizer of normalizers) {
    if (normalizer.type !== 'NFC') return { unsupported: `tokenizer.json normalizer ${String(normalizer.type)} has no llama.cpp equivalent` };
    warnings.push('tokenizer.json normalizes text to NFC and llama.cpp does not: text not in NFC may tokenize differently');
  }
  let pre = ggufPreName(json.pre_tokenizer, model.ignore_merges === true);
  if (pre === undefined) {
    pre = 'default';
    warnings.push("llama.cpp knows no pre-tokenizer equal to tokenizer.json's; it will split text with its 'default' rules, which may tokenize differently");
  }
  const spaced = merges.find(([left, right]) => left.includes(' ') || right.includes(' '));
  if (spaced) return { unsupported: `tokenizer.json merge ${JSON.stringify(spaced)} holds a space, which GGUF's "left right" merges cannot` };
  return {
    model: 'gpt2',
    pre,
    tokens: filled,
    kinds: filled.map((_, id) => kindOf(id, 'normal')),
    merges: merges.map(([left, right]) => `${left} ${right}`),
    ...common,
    addSpacePrefix: false,
    warnings,
  };
}

/** LLaMA-2's tokenizer.json: spaces as '▁' (a Replace normalizer or Metaspace), '▁' put before the text, byte fallback. */
function sentencePieceStyle(
  tokens: string[],
  merges: [string, string][],
  idOf: Map<string, number>,
  preTokenizers: Json[],
  normalizers: Json[],
  kindOf: (id: number, regular: TokenKind) => TokenKind,
  common: Pick<GgufVocabulary, 'bosId' | 'eosId' | 'unknownId' | 'paddingId' | 'addBos'>,
): GgufVocabulary | { unsupported: string } {
  let spaces = false;
  let prefix = false;
  for (const normalizer of normalizers) {
    const pattern = isRecord(normalizer.pattern) ? normalizer.pattern.String : undefined;
    if (normalizer.type === 'Prepend' && normalizer.prepend === SPM_SPACE) prefix = true;
    else if (normalizer.type === 'Replace' && pattern === ' ' && normalizer.content === SPM_SPACE) spaces = true;
    else return { unsupported: `tokenizer.json normalizer ${String(normalizer.type)} has no llama.cpp SentencePiece equivalent` };
  }
  for (const pre of preTokenizers) {
    if (pre.type !== 'Metaspace' || pre.replacement !== SPM_SPACE) {
      return { unsupported: `tokenizer.json pre-tokenizer ${String(pre.type)} has no llama.cpp SentencePiece equivalent` };
    }
    spaces = true;
    prefix ||= pre.prepend_scheme !== undefined ? pre.prepend_scheme !== 'never' : pre.add_prefix_space !== false;
  }
  if (!spaces) return { unsupported: `tokenizer.json BPE has byte fallback but does not write spaces as ${SPM_SPACE}` };

  // Merging by highest score applies the merges in order when each token scores minus the rank of
  // the first merge producing it; tokens no merge produces (characters, bytes, specials) score lowest.
  const scores = tokens.map(() => -(merges.length + 1));
  const scored = new Set<number>();
  merges.forEach(([left, right], rank) => {
    const id = idOf.get(left + right);
    if (id !== undefined && !scored.has(id)) {
      scored.add(id);
      scores[id] = -rank;
    }
  });
  const kinds = tokens.map((token, id) => (id === common.unknownId ? 'unknown' : kindOf(id, /^<0x[0-9A-Fa-f]{2}>$/.test(token) ? 'byte' : 'normal')));
  return {
    model: 'llama',
    pre: 'default',
    // llama.cpp matches user-defined tokens in the text before spaces become '▁', as the converter assumes.
    tokens: tokens.map((token, id) => (kinds[id] === 'userDefined' ? token.replaceAll(SPM_SPACE, ' ') : token)),
    kinds,
    scores,
    ...common,
    addSpacePrefix: prefix,
    warnings: [],
  };
}
