/** `topiary export`: any model Topiary reads, written as a (quantized) GGUF file llama.cpp runs. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { exportGguf, GGUF_QUANTS, ggufUnsupported, type GgufTensorType } from '../../export/gguf-writer.js';
import { loadModel } from '../../model/load.js';
import { UsageError } from '../../util/errors.js';
import { checkOutputFile } from '../../util/output.js';

export interface ExportArgs {
  model: string;
  to: string;
  quant: string;
  out: string;
  json: boolean;
}

/** The real path of `file`'s folder joined with its name: `out` may not exist yet. */
function resolvedTarget(file: string): string {
  const dir = path.dirname(path.resolve(file));
  return path.join(fs.existsSync(dir) ? fs.realpathSync(dir) : dir, path.basename(file));
}

/** Refuses an output that would overwrite the model or be written inside its folder. */
function checkOutsideModel(model: string, out: string): void {
  if (!fs.existsSync(model)) return;
  const modelPath = fs.realpathSync(model);
  const target = resolvedTarget(out);
  if (target === modelPath) throw new UsageError(`--out ${out} is the model itself`);
  if (fs.statSync(modelPath).isDirectory() && target.startsWith(modelPath + path.sep)) throw new UsageError(`--out ${out} is inside the model folder ${model}; write it elsewhere`);
}

export async function exportCommand(args: ExportArgs): Promise<void> {
  if (args.to.toLowerCase() !== 'gguf') throw new UsageError(`--to must be gguf, got "${args.to}"`);
  const quant = args.quant.toUpperCase();
  if (!(GGUF_QUANTS as readonly string[]).includes(quant)) throw new UsageError(`--quant must be one of ${GGUF_QUANTS.join(', ')}, got "${args.quant}"`);
  checkOutsideModel(args.model, args.out);
  checkOutputFile(args.out);
  const model = await loadModel(args.model);
  try {
    const unsupported = ggufUnsupported(model);
    if (unsupported) throw new UsageError(`cannot write ${args.model} as GGUF: ${unsupported}`);
    const result = exportGguf(model, args.out, { dtype: quant as GgufTensorType, name: path.basename(args.model) });
    if (args.json) {
      process.stdout.write(`${JSON.stringify({ out: args.out, ...result }, null, 2)}\n`);
      return;
    }
    const types = Object.entries(result.tensorTypes).map(([type, count]) => `${count} ${type}`).join(', ');
    process.stdout.write(`wrote ${args.out}: ${result.architecture}, ${(result.bytes / 2 ** 20).toFixed(1)} MiB, tensors ${types}\n`);
    for (const warning of result.warnings) process.stdout.write(`warning: ${warning}\n`);
  } finally {
    model.source.close();
  }
}
