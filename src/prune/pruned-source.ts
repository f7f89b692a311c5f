/**
 * A pruned model as a ModelSource: the kept blocks (renumbered 0..n−1) are read from the run's
 * checkpoint one tensor at a time, everything else (embeddings, final norm, head, tokenizer) from
 * the original source. The engine runs it and the exporters stream it like any other model, so
 * no more than one tensor of the pruned model is in memory at once.
 */
import { openSafetensors } from '../formats/safetensors.js';
import { blockSizes, type BlockSizes } from '../model/families/family.js';
import type { ModelSource } from '../model/sources.js';

/** `blockFile(layer)`: the checkpoint file of original block `layer` (tensors `linear.ROLE.weight|bias`, `tensor.NAME`). */
export function prunedSource(base: ModelSource, keptLayers: readonly number[], blockFile: (layer: number) => string): ModelSource {
  const { family } = base;
  const tensors = new Map<string, { file: string; stored: string; shape: number[] }>();
  keptLayers.forEach((original, index) => {
    const file = blockFile(original);
    const prefix = family.layerPrefix(index);
    const originalPrefix = family.layerPrefix(original);
    const store = openSafetensors(file);
    try {
      for (const { name: stored, shape } of store.list()) {
        const [kind, ...rest] = stored.split('.');
        if (kind === 'tensor') {
          const name = rest.join('.');
          tensors.set(`${prefix}${name}`, { file, stored, shape: base.shape(`${originalPrefix}${name}`) });
        } else {
          const role = rest.slice(0, -1).join('.');
          const spec = family.linears.find((s) => s.role === role)!;
          tensors.set(`${prefix}${spec.name}.${rest.at(-1)}`, { file, stored, shape });
        }
      }
    } finally {
      store.close();
    }
  });
  // 'model.layers.' for 'model.layers.0.': every block tensor of the original starts with it.
  const layersRoot = family.layerPrefix(0).replace(/0\.$/, '');
  const outer = base.tensorNames().filter((name) => !name.startsWith(layersRoot));
  const shape = (index: number, role: string) => tensors.get(`${family.layerPrefix(index)}${family.linears.find((s) => s.role === role)!.name}.weight`)!.shape;
  const structure = family.structure;
  // Without heads or channels (Mamba) nothing is sized here: the config keeps its own sizes.
  const sizes = !structure ? [] : keptLayers.map((original, index) => {
    const block = blockSizes(structure, (role) => shape(index, role), base.config.headDim);
    if ('problem' in block) throw new Error(`internal: pruned block ${original}: ${block.problem}`);
    return block;
  });
  const widest = (size: keyof BlockSizes, fallback: number) => (sizes.length > 0 ? Math.max(...sizes.map((block) => block[size])) : fallback);
  const { layerTypes } = base.config.attention;
  return {
    ...base,
    config: {
      ...base.config,
      numLayers: keptLayers.length,
      // Per-block sizes live in the weights; the config states the widest block.
      numHeads: widest('heads', base.config.numHeads),
      numKvHeads: widest('kvHeads', base.config.numKvHeads),
      intermediateSize: widest('channels', base.config.intermediateSize),
      // Sliding and full layers as the kept blocks had them.
      attention: { ...base.config.attention, ...(layerTypes ? { layerTypes: keptLayers.map((layer) => layerTypes[layer]!) } : {}) },
    },
    tensorNames: () => [...outer, ...tensors.keys()],
    has: (name) => tensors.has(name) || (outer.includes(name) && base.has(name)),
    shape: (name) => tensors.get(name)?.shape ?? base.shape(name),
    dtype: (name) => (tensors.has(name) ? 'F32' : base.dtype(name)),
    storage: (name) => (tensors.has(name) ? 'dense' : base.storage(name)),
    read(name) {
      const entry = tensors.get(name);
      if (!entry) return base.read(name);
      const store = openSafetensors(entry.file);
      try {
        return store.read(entry.stored);
      } finally {
        store.close();
      }
    },
    close: () => base.close(),
  };
}
