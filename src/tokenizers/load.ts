import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TopiaryError } from '../util/errors.js';
import { READ_LIMITS, readJsonObject } from '../util/safe-fs.js';
import { HuggingFaceTokenizer, type TokenizerConfig } from './huggingface.js';
import { checkTokenizerJson } from './json-checks.js';
import type { Tokenizer } from './tokenizer.js';
import { MERGES_FILE, VOCAB_FILE, tokenizerJsonFromVocabMerges } from './vocab-merges.js';

export { tokenizerFromGguf } from './gguf-vocab.js';
export { tokenizerFromLlama2cBin } from './llama2c.js';

/**
 * A Hugging Face tokenizer.json, given as its path, the folder holding it, or the parsed object.
 * The tokenizer_config.json (for add_bos_token and the BOS/EOS tokens) is `config` when given,
 * else the one beside the tokenizer.json, if there is one.
 */
export function tokenizerFromJson(source: string | object, config?: string | TokenizerConfig): Tokenizer {
  let tokenizerJson: object;
  let tokenizerFile: string | undefined;
  if (typeof source === 'string') {
    tokenizerFile = isDirectory(source) ? join(source, 'tokenizer.json') : source;
    // Only files that really lie in the tokenizer's folder are read (no links leading elsewhere).
    tokenizerJson = readJsonObject(tokenizerFile, { within: dirname(tokenizerFile), maxBytes: READ_LIMITS.tokenizerJson });
  } else {
    tokenizerJson = source;
  }

  let tokenizerConfig: TokenizerConfig = {};
  if (typeof config === 'string') {
    tokenizerConfig = readJsonObject(config);
  } else if (config) {
    tokenizerConfig = config;
  } else if (tokenizerFile) {
    const beside = join(dirname(tokenizerFile), 'tokenizer_config.json');
    if (existsSync(beside)) tokenizerConfig = readJsonObject(beside, { within: dirname(tokenizerFile) });
  }

  return checkedTokenizer(tokenizerJson, tokenizerConfig, tokenizerFile, 'tokenizer.json');
}

/** Whether `dir` holds a GPT-2-style vocab.json + merges.txt pair (and so, lacking a tokenizer.json, a tokenizer). */
export function hasVocabMerges(dir: string): boolean {
  return existsSync(join(dir, VOCAB_FILE)) && existsSync(join(dir, MERGES_FILE));
}

/** The tokenizer of a folder holding vocab.json + merges.txt (OPT, older GPT-2 checkpoints), with its tokenizer_config.json. */
export function tokenizerFromVocabMerges(dir: string): Tokenizer {
  const configFile = join(dir, 'tokenizer_config.json');
  const config: TokenizerConfig = existsSync(configFile) ? readJsonObject(configFile, { within: dir }) : {};
  const tokenizerJson = tokenizerJsonFromVocabMerges(dir, config);
  return checkedTokenizer(tokenizerJson, config, join(dir, VOCAB_FILE), `${VOCAB_FILE} + ${MERGES_FILE}`);
}

function checkedTokenizer(tokenizerJson: object, config: TokenizerConfig, file: string | undefined, source: string): Tokenizer {
  checkTokenizerJson(tokenizerJson as Record<string, unknown>, file);
  try {
    return new HuggingFaceTokenizer(tokenizerJson, config, source);
  } catch (error) {
    if (error instanceof TopiaryError) throw error;
    throw new TopiaryError(`not a usable ${source}: ${(error as Error).message}`, file);
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false; // a missing path is reported when it is read
  }
}
