import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TopiaryError } from '../util/errors.js';
import { READ_LIMITS, readJsonObject } from '../util/safe-fs.js';
import { HuggingFaceTokenizer, type TokenizerConfig } from './huggingface.js';
import type { Tokenizer } from './tokenizer.js';

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

  try {
    return new HuggingFaceTokenizer(tokenizerJson, tokenizerConfig, 'tokenizer.json');
  } catch (error) {
    if (error instanceof TopiaryError) throw error;
    throw new TopiaryError(`not a usable tokenizer.json: ${(error as Error).message}`, tokenizerFile);
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false; // a missing path is reported when it is read
  }
}
