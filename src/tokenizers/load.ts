import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TopiaryError } from '../util/errors.js';
import { HuggingFaceTokenizer, type TokenizerConfig } from './huggingface.js';
import { checkTokenizerJson } from './json-checks.js';
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
    tokenizerJson = readJsonObject(tokenizerFile);
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
    if (existsSync(beside)) tokenizerConfig = readJsonObject(beside);
  }

  checkTokenizerJson(tokenizerJson as Record<string, unknown>, tokenizerFile);
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

function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new TopiaryError(`cannot read tokenizer file: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, file);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TopiaryError(`not valid JSON: ${(error as Error).message}`, file);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TopiaryError('not a JSON object', file);
  }
  return value as Record<string, unknown>;
}
