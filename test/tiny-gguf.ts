/**
 * The tiny llama-gqa test model as a GGUF file with a SentencePiece-style vocabulary of its 256
 * embedding rows, with any metadata key replaced or removed: the seed of the header tests and of
 * the metadata fuzzing.
 */
import * as path from 'node:path';
import { getBackend } from '../src/backend/index.js';
import { exportGguf, writeGguf, type GgufKeyValue, type GgufTensorToWrite } from '../src/export/gguf-writer.js';
import { GgufValueType, openGguf, type GgufValue } from '../src/formats/gguf.js';
import { loadModel } from '../src/model/load.js';
import { repoRoot } from './helpers.js';

export type KeyValue = Omit<GgufKeyValue, 'key'>;

export const kv = (type: GgufValueType, value: GgufValue, elementType?: GgufValueType): KeyValue => ({ type, value, ...(elementType !== undefined ? { elementType } : {}) });

const { UINT32, INT32, FLOAT32, STRING, ARRAY } = GgufValueType;

export const TINY_GGUF_METADATA: Readonly<Record<string, KeyValue>> = {
  'general.architecture': kv(STRING, 'llama'),
  'llama.block_count': kv(UINT32, 2),
  'llama.context_length': kv(UINT32, 128),
  'llama.embedding_length': kv(UINT32, 64),
  'llama.feed_forward_length': kv(UINT32, 160),
  'llama.attention.head_count': kv(UINT32, 4),
  'llama.attention.head_count_kv': kv(UINT32, 2),
  'llama.attention.key_length': kv(UINT32, 16),
  'llama.rope.freq_base': kv(FLOAT32, 10000),
  'llama.attention.layer_norm_rms_epsilon': kv(FLOAT32, 1e-5),
  'tokenizer.ggml.model': kv(STRING, 'llama'),
  'tokenizer.ggml.tokens': kv(ARRAY, ['<unk>', '<s>', '</s>', ...Array.from({ length: 253 }, (_, i) => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`)], STRING),
  'tokenizer.ggml.scores': kv(ARRAY, new Array<number>(256).fill(0), FLOAT32),
  'tokenizer.ggml.token_type': kv(ARRAY, [2, 3, 3, ...new Array<number>(253).fill(6)], INT32),
  'tokenizer.ggml.bos_token_id': kv(UINT32, 1),
  'tokenizer.ggml.eos_token_id': kv(UINT32, 2),
};

/** The tiny model's tensors in GGUF names and layout (q/k rows interleaved), read once. */
export async function tinyGgufTensors(scratch: string): Promise<GgufTensorToWrite[]> {
  const exported = path.join(scratch, 'tiny-exported.gguf');
  const model = await loadModel(path.join(repoRoot, 'test', 'fixtures', 'tiny', 'llama-gqa'), { backend: getBackend() });
  exportGguf(model, exported, { dtype: 'F32' });
  model.source.close();
  const store = openGguf(exported);
  const tensors = store.list().map((info) => {
    const data = store.read(info.name);
    return { name: info.name, shape: info.shape, type: 'F32' as const, data: () => data };
  });
  store.close();
  return tensors;
}

/** Writes the tiny GGUF with some keys replaced (or, given undefined, removed). */
export function writeTinyGguf(file: string, tensors: readonly GgufTensorToWrite[], overrides: Record<string, KeyValue | undefined> = {}): string {
  const merged = { ...TINY_GGUF_METADATA, ...overrides };
  writeGguf(file, Object.entries(merged).flatMap(([key, value]) => (value ? [{ key, ...value }] : [])), tensors);
  return file;
}
