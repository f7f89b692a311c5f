/**
 * GPT-2-style tokenizers saved as `vocab.json` + `merges.txt` with no tokenizer.json (OPT's
 * checkpoints, older GPT-2 ones). They are turned into the tokenizer.json that transformers' own
 * converter (GPT2Converter, convert_slow_tokenizer.py) makes of them — byte-level BPE over GPT-2's
 * split regex, no normalizer, a ByteLevel decoder — so one tokenizer implementation runs both and a
 * pruned copy is written with an ordinary tokenizer.json.
 */
import * as path from 'node:path';
import { TopiaryError } from '../util/errors.js';
import { READ_LIMITS, readJsonObject, readTextFile } from '../util/safe-fs.js';
import { byteLevel } from './gguf-pre.js';
import type { TokenizerConfig } from './huggingface.js';

export const VOCAB_FILE = 'vocab.json';
export const MERGES_FILE = 'merges.txt';

/** The tokenizer.json equivalent to `dir`'s vocab.json and merges.txt, given its tokenizer_config.json. */
export function tokenizerJsonFromVocabMerges(dir: string, config: TokenizerConfig): Record<string, unknown> {
  const vocabFile = path.join(dir, VOCAB_FILE);
  const mergesFile = path.join(dir, MERGES_FILE);
  const vocab = readJsonObject(vocabFile, { within: dir, maxBytes: READ_LIMITS.tokenizerJson });
  for (const [token, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) throw new TopiaryError(`token ${JSON.stringify(token.slice(0, 40))} has the id ${JSON.stringify(id)}, not a non-negative integer`, vocabFile);
  }
  if (config.add_prefix_space === true) throw new TopiaryError('add_prefix_space is not supported for vocab.json + merges.txt tokenizers', path.join(dir, 'tokenizer_config.json'));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens(vocab, config),
    normalizer: null,
    pre_tokenizer: byteLevel(true),
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: readMerges(mergesFile, dir),
    },
  };
}

/**
 * merges.txt: an optional `#version` line, then one merge a line as two tokens separated by one
 * space (tokens never hold a space: byte-level BPE writes it as "Ġ").
 */
function readMerges(file: string, dir: string): string[][] {
  const lines = readTextFile(file, READ_LIMITS.tokenizerJson, { within: dir }).split('\n');
  if (lines[0]?.startsWith('#version')) lines.shift();
  const merges: string[][] = [];
  lines.forEach((line, index) => {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (text === '') return;
    const pair = text.split(' ');
    if (pair.length !== 2 || pair[0] === '' || pair[1] === '') throw new TopiaryError(`line ${index + 2}: a merge is two tokens separated by one space`, file);
    merges.push(pair);
  });
  return merges;
}

/**
 * The special tokens: tokenizer_config.json's added_tokens_decoder when it has one (transformers
 * writes it), else its bos/eos/unk/pad tokens that the vocabulary holds.
 */
function addedTokens(vocab: Record<string, unknown>, config: TokenizerConfig): object[] {
  const token = (id: number, content: string, special: boolean) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special });
  const declared = config.added_tokens_decoder;
  if (typeof declared === 'object' && declared !== null) {
    return Object.entries(declared as Record<string, { content?: unknown; special?: unknown }>)
      .filter(([id, entry]) => /^\d+$/.test(id) && typeof entry?.content === 'string')
      .map(([id, entry]) => token(Number(id), entry.content as string, entry.special !== false));
  }
  const named = ['bos_token', 'eos_token', 'unk_token', 'pad_token'].map((key) => config[key]);
  const contents = new Set(named.map((value) => (typeof value === 'string' ? value : (value as { content?: unknown } | null)?.content)).filter((value) => typeof value === 'string'));
  return [...contents].filter((content) => Number.isInteger(vocab[content])).map((content) => token(vocab[content] as number, content, true));
}
