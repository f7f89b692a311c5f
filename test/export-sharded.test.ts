/**
 * Sharded safetensors output: the split, file names and index transformers' save_pretrained writes
 * for the same model and max_shard_size, the folder loads in transformers with Topiary's logits,
 * and Topiary reads it back with exactly the logits of the single-file output (dense and sparse).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { transformersSaveOrder } from '../src/export/hf-folder.js';
import { parseShardSize, planShards } from '../src/formats/safetensors.js';
import { loadModel } from '../src/model/load.js';
import { runCli, stories260K, tempDir } from './helpers.js';
import { assertExportsMatchTransformers } from './parity.js';

/** stories260K's embedding is 512 × 64 F32 = 131,072 bytes: over this limit, so alone in a shard. */
const LIMIT = 100_000;
const SHARD_NAME = /^model-(\d{5})-of-(\d{5})\.safetensors$/;
const WINDOWS = [
  [1, 403, 407, 261, 378, 414, 267, 261, 422, 268, 300, 301],
  [1, 9, 100, 200, 300, 400, 500, 42, 7, 77, 111, 222],
];

function prune(out: string, extra: string[]): void {
  const result = runCli(['prune', '--model', stories260K, '--method', 'magnitude', '--sparsity', '0.5', '--out', out, ...extra]);
  assert.equal(result.status, 0, result.stderr);
}

interface ShardIndex {
  metadata: { total_size: number };
  weight_map: Record<string, string>;
}

const readIndex = (dir: string): ShardIndex => JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as ShardIndex;
const shardFiles = (dir: string): string[] => fs.readdirSync(dir).filter((name) => SHARD_NAME.test(name)).sort();

test('--max-shard-size takes transformers-style sizes and whole byte counts, nothing else', () => {
  const valid: [string, number][] = [['5GB', 5e9], ['500MB', 5e8], ['200KB', 2e5], ['1.5gb', 1.5e9], [' 2 TB ', 2e12], ['123456', 123456]];
  for (const [text, bytes] of valid) assert.equal(parseShardSize(text), bytes, text);
  for (const text of ['0', '0KB', '-5', '-5GB', 'abc', '5GiB', '5 G', '1.5', '', 'GB', '1e9', '0x100']) assert.equal(parseShardSize(text), undefined, text);
  const bad = runCli(['prune', '--model', stories260K, '--method', 'magnitude', '--sparsity', '0.5', '--out', tempDir(), '--max-shard-size', '5GiB']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^topiary: --max-shard-size must be a size such as 5GB, 500MB or 200KB, or a whole number of bytes, got "5GiB"\n$/);
});

test('the split follows huggingface_hub: in order, a tensor over the limit alone and before the shard still filling', () => {
  const tensor = (name: string, values: number) => ({ name, shape: [values], data: new Float32Array(values) });
  // 4-byte F32 values against a 100-byte limit: a 40, b 200 (over), c 40, d 40.
  const tensors = [tensor('a', 10), tensor('b', 50), tensor('c', 10), tensor('d', 10)];
  assert.deepEqual(planShards(tensors, 100), [['b'], ['a', 'c'], ['d']]);
  assert.deepEqual(planShards(tensors, 1e9), [['a', 'b', 'c', 'd']]);
  assert.deepEqual(transformersSaveOrder(['model.norm.weight', 'model.layers.10.a.weight', 'lm_head.weight', 'model.layers.2.b.weight', 'model.layers.2.a.weight', 'model.embed_tokens.weight']), [
    'lm_head.weight',
    'model.embed_tokens.weight',
    'model.layers.2.a.weight',
    'model.layers.2.b.weight',
    'model.layers.10.a.weight',
    'model.norm.weight',
  ]);
});

test('a sharded prune output matches transformers save_pretrained and loads with the single file’s logits', async () => {
  const single = tempDir();
  const sharded = tempDir();
  prune(single, []);
  prune(sharded, ['--max-shard-size', '100KB']);
  assert.ok(fs.existsSync(path.join(single, 'model.safetensors')));
  assert.equal(shardFiles(single).length, 0);
  assert.ok(!fs.existsSync(path.join(sharded, 'model.safetensors')));

  // transformers loads the sharded folder and saves it again with the same limit: same files, same index.
  const resaved = tempDir();
  const python = `
import json, os, sys
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
model.save_pretrained(sys.argv[2], max_shard_size=int(sys.argv[3]))
`;
  const result = spawnSync('python3', ['-c', python, sharded, resaved, String(LIMIT)], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const ours = readIndex(sharded);
  const theirs = readIndex(resaved);
  assert.deepEqual(shardFiles(sharded), shardFiles(resaved));
  assert.equal(shardFiles(sharded).length, 11);
  assert.deepEqual(ours.weight_map, theirs.weight_map);
  assert.equal(ours.metadata.total_size, theirs.metadata.total_size);
  // Byte for byte as transformers formats it (its index also carries total_parameters).
  const { total_parameters: _, ...theirMetadata } = theirs.metadata as ShardIndex['metadata'] & { total_parameters: number };
  assert.equal(fs.readFileSync(path.join(sharded, 'model.safetensors.index.json'), 'utf8'), JSON.stringify({ ...theirs, metadata: theirMetadata }, null, 2) + '\n');

  // Every shard holds at most LIMIT bytes of data, except the embedding's, which holds it alone.
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(ours.weight_map)) byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  assert.deepEqual(byShard.get(ours.weight_map['model.embed_tokens.weight']!), ['model.embed_tokens.weight']);
  for (const [shard, names] of byShard) {
    const header = fs.readFileSync(path.join(sharded, shard));
    const dataBytes = header.length - 8 - Number(header.readBigUInt64LE(0));
    assert.ok(dataBytes <= LIMIT || names.length === 1, `${shard}: ${dataBytes} bytes in ${names.length} tensors`);
  }

  const backend = getBackend();
  const singleLogits = await (await loadModel(single, { backend })).logits(WINDOWS);
  const shardedLogits = await (await loadModel(sharded, { backend })).logits(WINDOWS);
  assert.deepEqual(shardedLogits, singleLogits);
  await assertExportsMatchTransformers([{ label: 'stories260K magnitude 50% in shards', out: sharded, dense: stories260K }], WINDOWS, backend);
});

test('--save-format sparse goes into shards too, and reads back with the single file’s logits', async () => {
  const single = tempDir();
  const sharded = tempDir();
  prune(single, ['--save-format', 'sparse']);
  prune(sharded, ['--save-format', 'sparse', '--max-shard-size', String(LIMIT)]);
  const weightMap = readIndex(sharded).weight_map;
  assert.ok(shardFiles(sharded).length > 1);
  assert.ok(Object.keys(weightMap).some((name) => name.endsWith('.bitmask')), 'compressed tensors are in the index');
  const backend = getBackend();
  const singleLogits = await (await loadModel(single, { backend })).logits(WINDOWS);
  assert.deepEqual(await (await loadModel(sharded, { backend })).logits(WINDOWS), singleLogits);
});
