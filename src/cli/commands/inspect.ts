import { loadModel } from '../../model/load.js';
import type { CausalLM } from '../../model/causal-lm.js';

export interface ModelSummary {
  path: string;
  format: string;
  architecture: string;
  modelType: string;
  layers: number;
  hiddenSize: number;
  intermediateSize: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  context: number;
  ropeTheta: number | null;
  ropeScaling: string | null;
  tiedEmbeddings: boolean;
  parameters: number;
  dtypes: Record<string, number>;
  /** Parameters by storage ('dense', 'bitmask', '2:4'), when some matrices are stored compressed. */
  storage?: Record<string, number>;
  tokenizer: string;
  family: string;
  /** Per block, each linear layer's [out, in], when the blocks differ (structurally pruned models). */
  unevenLayers?: { layer: number; linears: Record<string, number[]> }[];
}

export function summarize(model: CausalLM): ModelSummary {
  const { config, source } = model;
  let parameters = 0;
  const dtypes: Record<string, number> = {};
  const storage: Record<string, number> = {};
  for (const name of source.tensorNames()) {
    const count = source.shape(name).reduce((a, b) => a * b, 1);
    parameters += count;
    const dtype = source.dtype(name);
    dtypes[dtype] = (dtypes[dtype] ?? 0) + count;
    const stored = source.storage(name);
    storage[stored] = (storage[stored] ?? 0) + count;
  }
  const tokenizer = source.tokenizer;
  const shapes = Array.from({ length: config.numLayers }, (_, layer) => ({
    layer,
    linears: Object.fromEntries(model.roles.map((role) => [role, source.shape(`${model.linearName(layer, role)}.weight`)])),
  }));
  const uneven = shapes.some((s) => JSON.stringify(s.linears) !== JSON.stringify(shapes[0]!.linears));
  return {
    family: model.family.name,
    ...(uneven ? { unevenLayers: shapes } : {}),
    path: source.path,
    format: source.format,
    architecture: model.family.hfArchitectures[config.modelType] ?? config.modelType,
    modelType: config.modelType,
    layers: config.numLayers,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    heads: config.numHeads,
    kvHeads: config.numKvHeads,
    headDim: config.headDim,
    vocabSize: config.vocabSize,
    context: config.maxPositionEmbeddings,
    ropeTheta: config.rope?.theta ?? null,
    ropeScaling: config.rope?.scaling.type ?? null,
    tiedEmbeddings: config.tieWordEmbeddings,
    parameters,
    dtypes,
    ...(Object.keys(storage).some((kind) => kind !== 'dense') ? { storage } : {}),
    tokenizer: 'missing' in tokenizer ? `none (${tokenizer.missing})` : `${tokenizer.source}, ${tokenizer.vocabSize} tokens`,
  };
}

/** MLP width and heads; a state-space model (Mamba: no heads) has an inner width instead. */
function attentionLines(summary: ModelSummary): [string, string][] {
  if (summary.heads === 0) return [['inner size', String(summary.intermediateSize)], ['heads', 'none (state-space layers)']];
  return [
    ['MLP size', String(summary.intermediateSize)],
    ['heads', `${summary.heads} query, ${summary.kvHeads} key/value, head dim ${summary.headDim}`],
  ];
}

export async function inspectCommand(modelPath: string, json: boolean): Promise<void> {
  const model = await loadModel(modelPath);
  const summary = summarize(model);
  model.source.close();
  if (json) {
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
    return;
  }
  const shares = (counts: Record<string, number>) =>
    Object.entries(counts)
      .map(([kind, count]) => `${kind} ${((100 * count) / summary.parameters).toFixed(1)}%`)
      .join(', ');
  const lines: [string, string][] = [
    ['model', summary.path],
    ['format', summary.format],
    ['architecture', `${summary.architecture} (${summary.modelType}, family ${summary.family})`],
    ['layers', String(summary.layers)],
    ['hidden size', String(summary.hiddenSize)],
    ...attentionLines(summary),
    ['vocabulary', String(summary.vocabSize)],
    ['context', String(summary.context)],
    ['positions', summary.heads === 0 ? 'none (recurrent)' : summary.ropeTheta === null ? 'learned' : `RoPE theta ${summary.ropeTheta}, scaling ${summary.ropeScaling}`],
    ['embeddings', summary.tiedEmbeddings ? 'tied to the LM head' : 'separate LM head'],
    ['parameters', `${summary.parameters.toLocaleString('en-US')} (${(summary.parameters / 1e6).toFixed(1)} M)`],
    ['dtypes', shares(summary.dtypes)],
    ...(summary.storage ? [['stored', `${shares(summary.storage)} (compressed-tensors sparse)`] as [string, string]] : []),
    ['tokenizer', summary.tokenizer],
  ];
  for (const [key, value] of lines) process.stdout.write(`${key.padEnd(14)}${value}\n`);
  if (summary.unevenLayers) {
    process.stdout.write('per layer     (uneven: [out, in] of each linear layer)\n');
    for (const { layer, linears } of summary.unevenLayers) {
      process.stdout.write(`  ${String(layer).padStart(3)}  ${Object.entries(linears).map(([role, shape]) => `${role} ${shape.join('x')}`).join('  ')}\n`);
    }
  }
}
