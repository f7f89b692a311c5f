/**
 * Writes a model as a Hugging Face folder that `transformers` loads: config.json,
 * model.safetensors, and the tokenizer when one can be carried over. Tensors are streamed one at
 * a time from where they live (the source file, or a pruned layer's checkpoint), so memory stays
 * bounded by the largest tensor.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../formats/safetensors.js';
import type { CausalLM } from '../model/causal-lm.js';
import { configJson } from '../model/config.js';
import { storedLayout } from '../model/sources.js';
import { writeFileAtomic } from '../util/atomic.js';

export type ExportDtype = 'F32' | 'F16' | 'BF16';

export interface ExportOptions {
  dtype: ExportDtype;
  /** Supplies a replaced tensor (e.g. a pruned weight) by canonical name, or undefined to read it from the source. */
  override: (name: string) => (() => Float32Array) | undefined;
}

/** The tokenizer files to carry over, by file name (byte for byte: tokenizer.model and .bin are binary). */
function tokenizerFiles(model: CausalLM): Record<string, Buffer> {
  const source = model.source;
  if (source.format === 'safetensors') {
    const files: Record<string, Buffer> = {};
    for (const name of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'tokenizer.bin', 'generation_config.json']) {
      const file = path.join(source.path, name);
      if (fs.existsSync(file)) files[name] = fs.readFileSync(file);
    }
    return files;
  }
  const tokenizer = source.tokenizer;
  if (!('missing' in tokenizer) && tokenizer.toHuggingFace) {
    const { tokenizer: json, config } = tokenizer.toHuggingFace();
    return { 'tokenizer.json': Buffer.from(JSON.stringify(json)), 'tokenizer_config.json': Buffer.from(JSON.stringify(config, null, 2) + '\n') };
  }
  if (source.format === 'llama2c') {
    const bin = path.join(path.dirname(source.path), 'tokenizer.bin');
    if (fs.existsSync(bin)) return { 'tokenizer.bin': fs.readFileSync(bin) };
  }
  return {};
}

export function exportHfFolder(model: CausalLM, outDir: string, options: ExportOptions): { files: string[]; bytes: number } {
  fs.mkdirSync(outDir, { recursive: true });
  const tensors: TensorToWrite[] = model.source
    .tensorNames()
    .filter((name) => !(model.config.tieWordEmbeddings && name === model.family.lmHead))
    .map((name) => {
      const stored = storedLayout(model.family, name, model.source.shape(name));
      const data = options.override(name) ?? (() => model.source.read(name));
      return { name, shape: stored.shape, dtype: options.dtype, data: () => stored.convert(data()) };
    });
  const modelFile = path.join(outDir, 'model.safetensors');
  writeSafetensors(modelFile, tensors, { format: 'pt' });
  const written = [modelFile];
  const config = { ...model.family.toHfConfig(model.config), torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[options.dtype] };
  const configFile = path.join(outDir, 'config.json');
  writeFileAtomic(configFile, (tmp) => fs.writeFileSync(tmp, configJson(config)));
  written.push(configFile);
  for (const [name, content] of Object.entries(tokenizerFiles(model))) {
    const file = path.join(outDir, name);
    writeFileAtomic(file, (tmp) => fs.writeFileSync(tmp, content));
    written.push(file);
  }
  return { files: written, bytes: written.reduce((sum, file) => sum + fs.statSync(file).size, 0) };
}
