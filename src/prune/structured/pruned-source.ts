/**
 * A structurally pruned model as a ModelSource: the kept decoder layers (renumbered 0..n−1) come
 * from memory, everything else (embeddings, final norm, head, tokenizer) from the original source.
 * The decoder runs it like any other model, and the exporters write it like any other model.
 */
import type { Block } from '../../model/causal-lm.js';
import type { ModelSource } from '../../model/sources.js';
import { TopiaryError } from '../../util/errors.js';

export function prunedSource(base: ModelSource, keptLayers: readonly number[], layers: ReadonlyMap<number, Block>): ModelSource {
  const family = base.family;
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  keptLayers.forEach((original, index) => {
    const layer = layers.get(original);
    if (!layer) throw new TopiaryError(`internal: no pruned weights for layer ${original}`);
    const prefix = family.layerPrefix(index);
    const originalPrefix = family.layerPrefix(original);
    for (const [name, data] of Object.entries(layer.tensors)) tensors.set(`${prefix}${name}`, { shape: base.shape(`${originalPrefix}${name}`), data });
    for (const spec of family.linears) {
      const lin = layer.linears[spec.role]!;
      tensors.set(`${prefix}${spec.name}.weight`, { shape: [lin.outFeatures, lin.inFeatures], data: lin.weight });
      if (lin.bias) tensors.set(`${prefix}${spec.name}.bias`, { shape: [lin.outFeatures], data: lin.bias });
    }
  });
  // 'model.layers.' for 'model.layers.0.': every decoder-layer tensor of the original starts with it.
  const layersRoot = family.layerPrefix(0).replace(/0\.$/, '');
  const outer = base.tensorNames().filter((name) => !name.startsWith(layersRoot));
  const sizes = [...layers.values()];
  const max = (pick: (layer: Block) => number) => Math.max(...sizes.map(pick));
  const headDim = base.config.headDim;
  return {
    format: base.format,
    path: base.path,
    configFile: base.configFile,
    family,
    config: {
      ...base.config,
      numLayers: keptLayers.length,
      // Per-layer sizes live in the weights; the config states the widest layer.
      numHeads: max((l) => l.linears.q!.outFeatures / headDim),
      numKvHeads: max((l) => l.linears.k!.outFeatures / headDim),
      intermediateSize: max((l) => l.linears.gate!.outFeatures),
    },
    tokenizer: base.tokenizer,
    tensorNames: () => [...outer, ...tensors.keys()],
    has: (name) => tensors.has(name) || (outer.includes(name) && base.has(name)),
    shape: (name) => tensors.get(name)?.shape ?? base.shape(name),
    dtype: (name) => (tensors.has(name) ? 'F32' : base.dtype(name)),
    read: (name) => tensors.get(name)?.data ?? base.read(name),
    close: () => base.close(),
  };
}
