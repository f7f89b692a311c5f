import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openGguf } from '../src/formats/gguf.js';
import { GGML_TYPES, dequantize } from '../src/formats/ggml-quants.js';
import { assertTopiaryError, repoRoot, smolLM2Path, tempDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'formats');

/** Compares fp32 arrays bit for bit (so -0 and NaN payloads count), reporting the first difference. */
function assertSameBits(actual: Float32Array, expectedBits: Uint32Array | number[], label: string): void {
  const bits = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  assert.equal(actual.length, expectedBits.length, `${label}: length`);
  for (let i = 0; i < bits.length; i++) {
    if (bits[i] !== expectedBits[i]) {
      const expected = new Float32Array(new Uint32Array([expectedBits[i]]).buffer)[0];
      assert.fail(`${label}[${i}]: got ${actual[i]} (0x${bits[i].toString(16)}), expected ${expected} (0x${expectedBits[i].toString(16)})`);
    }
  }
}

test('every supported type dequantizes bit-exactly as the gguf package does', () => {
  const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'quants.expected.json'), 'utf8'));
  const values = new Uint32Array(new Uint8Array(fs.readFileSync(path.join(fixtures, 'quants.expected.bin'))).buffer);
  const store = openGguf(path.join(fixtures, 'quants.gguf'));
  try {
    assert.deepEqual(store.list().map((t) => t.dtype), ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q4_K', 'Q6_K']);
    for (const tensor of expected.tensors) {
      const info = store.info(tensor.name);
      assert.equal(info.dtype, tensor.type);
      assert.deepEqual(info.shape, tensor.shape, `${tensor.name} shape in PyTorch order`);
      const type = GGML_TYPES[tensor.type as keyof typeof GGML_TYPES];
      assert.equal(info.byteLength, (tensor.count / type.blockSize) * type.typeSize);
      assertSameBits(store.read(tensor.name), values.subarray(tensor.offset, tensor.offset + tensor.count), tensor.name);
    }
  } finally {
    store.close();
  }
});

test('metadata of every value type, with a custom alignment', () => {
  const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'quants.expected.json'), 'utf8')).metadata;
  const store = openGguf(path.join(fixtures, 'quants.gguf'));
  store.close();
  assert.equal(store.version, 3);
  for (const [key, value] of Object.entries(expected)) {
    if (key === 'test.u64_big') assert.equal(store.metadata[key], BigInt(value as string), 'u64 beyond 2^53 stays exact as bigint');
    else assert.deepEqual(store.metadata[key], value, key);
  }
  assert.equal(store.metadata['test.u64_small'], 2 ** 40 + 3, 'safe u64 becomes a number');
});

test('default alignment (32) and a 1-D tensor', () => {
  const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'small.expected.json'), 'utf8'));
  const store = openGguf(path.join(fixtures, 'small.gguf'));
  try {
    assert.equal(store.metadata['general.alignment'], undefined);
    assert.deepEqual(store.metadata['tokenizer.ggml.tokens'], ['<s>', 'a', 'b']);
    assert.deepEqual(store.info('norm.weight'), { name: 'norm.weight', dtype: 'F32', shape: [7], byteLength: 28 });
    assert.deepEqual(store.info('proj.weight').shape, [3, 32]);
    for (const name of ['norm.weight', 'proj.weight']) assertSameBits(store.read(name), expected[name], name);
  } finally {
    store.close();
  }
});

test('real SmolLM2-135M GGUF: metadata, shapes and dequantized values match the gguf package', (t) => {
  const file = smolLM2Path();
  const expected = JSON.parse(fs.readFileSync(path.join(fixtures, 'smollm2.expected.json'), 'utf8'));
  if (!file) return t.skip('SmolLM2-135M-Instruct.Q4_1.gguf is not in ~/.cache/topiary (see data/README.md)');
  if (fs.statSync(file).size !== expected.size || createHash('sha256').update(fs.readFileSync(file)).digest('hex') !== expected.sha256) {
    return t.skip(`${file} is not the file the expectations were made from (sha256 ${expected.sha256.slice(0, 16)}...)`);
  }
  const store = openGguf(file);
  try {
    assert.equal(store.list().length, expected.tensorCount);
    assert.equal(store.metadata['general.architecture'], 'llama');
    assert.equal(store.metadata['llama.block_count'], expected.blockCount);
    const tokens = store.metadata['tokenizer.ggml.tokens'] as string[];
    assert.equal(tokens.length, expected.tokenCount);
    assert.deepEqual(tokens.slice(0, 5), expected.firstTokens);
    assert.equal(tokens.at(-1), expected.lastToken);
    assert.equal((store.metadata['tokenizer.ggml.merges'] as string[]).length, expected.mergeCount);
    for (const tensor of expected.tensors) {
      const info = store.info(tensor.name);
      assert.equal(info.dtype, tensor.type);
      assert.deepEqual(info.shape, tensor.shape);
      const values = store.read(tensor.name);
      assertSameBits(values.subarray(0, 8), tensor.first, `${tensor.name} head`);
      assertSameBits(Float32Array.from(tensor.pickIndices as number[], (i) => values[i]), tensor.pickBits, `${tensor.name} picks`);
      let sum = 0;
      let sumSquares = 0;
      for (const v of values) {
        sum += v;
        sumSquares += v * v;
      }
      assert.ok(Math.abs(sum - tensor.sum) <= 1e-9 * tensor.sumSquares + 1e-9, `${tensor.name} sum ${sum} vs ${tensor.sum}`);
      assert.ok(Math.abs(sumSquares - tensor.sumSquares) <= 1e-9 * tensor.sumSquares, `${tensor.name} sum of squares`);
    }
  } finally {
    store.close();
  }
});

/** Hand-built GGUF files, so each test can make the header lie in exactly one way. */
class GgufBuilder {
  private parts: Buffer[] = [];
  u32(value: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value);
    this.parts.push(b);
    return this;
  }
  u64(value: bigint | number): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    this.parts.push(b);
    return this;
  }
  str(value: string): this {
    const bytes = Buffer.from(value, 'utf8');
    return this.u64(bytes.length).bytes(bytes);
  }
  bytes(value: Uint8Array): this {
    this.parts.push(Buffer.from(value));
    return this;
  }
  /** Pads to a multiple of `alignment` (the data area's start). */
  align(alignment = 32): this {
    const length = this.parts.reduce((n, p) => n + p.length, 0);
    return this.bytes(new Uint8Array((alignment - (length % alignment)) % alignment));
  }
  header(tensorCount: number | bigint, kvCount: number | bigint, version = 3): this {
    return this.u32(0x46554747).u32(version).u64(tensorCount).u64(kvCount);
  }
  tensorInfo(name: string, dims: (number | bigint)[], type: number, offset: number | bigint): this {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(type).u64(offset);
  }
  write(file: string): string {
    fs.writeFileSync(file, Buffer.concat(this.parts));
    return file;
  }
}

test('bad GGUF input gives one clear TopiaryError naming the file', () => {
  const dir = tempDir();
  const at = (name: string) => path.join(dir, name);

  let file = at('magic.gguf');
  fs.writeFileSync(file, 'GGUX and more bytes');
  assertTopiaryError(() => openGguf(file), file, /bad magic/);

  file = new GgufBuilder().header(0, 0, 1).write(at('v1.gguf'));
  assertTopiaryError(() => openGguf(file), file, /version 1 is not supported/);
  file = new GgufBuilder().header(0, 0, 0x03000000).write(at('be.gguf'));
  assertTopiaryError(() => openGguf(file), file, /big-endian/);

  const valid = fs.readFileSync(path.join(fixtures, 'small.gguf'));
  file = at('truncated-header.gguf');
  fs.writeFileSync(file, valid.subarray(0, 60));
  assertTopiaryError(() => openGguf(file), file, /truncated|cannot fit/);
  file = at('truncated-data.gguf');
  fs.writeFileSync(file, valid.subarray(0, valid.length - 40));
  assertTopiaryError(() => openGguf(file), file, /"proj.weight" .* runs past the end of the file/);

  // Lying counts are refused before anything of that size is allocated.
  file = new GgufBuilder().header(0, 1).str('big.array').u32(9).u32(5).u64(2n ** 40n).write(at('array.gguf'));
  assertTopiaryError(() => openGguf(file), file, /length of value of "big.array" 1099511627776 cannot fit/);
  file = new GgufBuilder().header(2n ** 40n, 0).write(at('tensors.gguf'));
  assertTopiaryError(() => openGguf(file), file, /tensor count 1099511627776 cannot fit/);
  file = new GgufBuilder().header(0, 1).u64(2n ** 40n).bytes(new Uint8Array(16)).write(at('string.gguf'));
  assertTopiaryError(() => openGguf(file), file, /length of key 0 .* cannot fit/);
  file = new GgufBuilder().header(0, 1).str('nest').u32(9).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1)
    .write(at('nested.gguf'));
  assertTopiaryError(() => openGguf(file), file, /nests arrays/);
  file = new GgufBuilder().header(1, 0).tensorInfo('huge', [2n ** 31n, 2n ** 31n, 2n ** 31n], 0, 0).align().write(at('dims.gguf'));
  assertTopiaryError(() => openGguf(file), file, /"huge" has 2147483648 x 2147483648 x 2147483648 elements, impossibly many/);
  file = new GgufBuilder().header(1, 0).tensorInfo('w', [2n ** 40n], GGML_TYPES.F32.id, 0).align().write(at('dims2.gguf'));
  assertTopiaryError(() => openGguf(file), file, /"w" \(4398046511104 bytes at data offset 0\) runs past the end/);
  file = new GgufBuilder().header(1, 0).tensorInfo('w', [4], GGML_TYPES.F32.id, 64).align().bytes(new Uint8Array(16)).write(at('offset.gguf'));
  assertTopiaryError(() => openGguf(file), file, /"w" .* runs past the end/);
  file = new GgufBuilder().header(1, 0).tensorInfo('w', [4], 99, 0).align().bytes(new Uint8Array(16)).write(at('type.gguf'));
  assertTopiaryError(() => openGguf(file), file, /"w" has unknown ggml type id 99/);
  file = new GgufBuilder().header(1, 0).tensorInfo('w', [40], GGML_TYPES.Q4_0.id, 0).align().bytes(new Uint8Array(64)).write(at('rows.gguf'));
  assertTopiaryError(() => openGguf(file), file, /rows of 40 values are not whole Q4_0 blocks of 32/);
  file = new GgufBuilder().header(2, 0).tensorInfo('a', [8], 0, 0).tensorInfo('b', [8], 0, 0).align().bytes(new Uint8Array(32)).write(at('overlap.gguf'));
  assertTopiaryError(() => openGguf(file), file, /overlap/);
  file = new GgufBuilder().header(0, 2).str('k').u32(4).u32(1).str('k').u32(4).u32(2).write(at('dup.gguf'));
  assertTopiaryError(() => openGguf(file), file, /duplicate key "k"/);
  file = new GgufBuilder().header(0, 1).str('general.alignment').u32(4).u32(48).write(at('align.gguf'));
  assertTopiaryError(() => openGguf(file), file, /alignment 48 is not a power of two/);

  // A valid file with a type Topiary lists but cannot dequantize: open works, read names tensor and type.
  file = new GgufBuilder().header(1, 0).tensorInfo('blk.0.attn_q.weight', [256], GGML_TYPES.IQ2_XXS.id, 0).align()
    .bytes(new Uint8Array(GGML_TYPES.IQ2_XXS.typeSize)).write(at('iq2.gguf'));
  const store = openGguf(file);
  assert.deepEqual(store.info('blk.0.attn_q.weight'), { name: 'blk.0.attn_q.weight', dtype: 'IQ2_XXS', shape: [256], byteLength: 66 });
  assertTopiaryError(() => store.read('blk.0.attn_q.weight'), file, /"blk.0.attn_q.weight" has ggml type IQ2_XXS, which Topiary cannot dequantize/);
  assertTopiaryError(() => store.read('nope'), file, /no tensor named "nope"/);
  store.close();
  assertTopiaryError(() => store.read('blk.0.attn_q.weight'), file, /closed/);

  file = at('missing.gguf');
  assertTopiaryError(() => openGguf(file), file, /no such file/);
  assertTopiaryError(() => openGguf(dir), dir, /a folder; only regular files are read/);
  fs.rmSync(dir, { recursive: true });
});

test('dequantize refuses a byte count that does not match the element count', () => {
  assert.throws(() => dequantize(GGML_TYPES.Q8_0, new Uint8Array(33), 32), /34|33/);
});
