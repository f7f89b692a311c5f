import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../src/formats/safetensors.js';
import { openTensors } from '../src/formats/open.js';
import { createRng } from '../src/util/random.js';
import { assertTopiaryError, repoRoot, tempDir } from './helpers.js';

const fixtures = path.join(repoRoot, 'test', 'fixtures', 'formats');

interface PythonTensor {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  sourceBits: number[];
  storedBits: number[];
  valueBits: number[];
}
const pythonFixture: { metadata: Record<string, string>; tensors: PythonTensor[] } = JSON.parse(
  fs.readFileSync(path.join(fixtures, 'python.safetensors.json'), 'utf8'),
);

const fromBits = (bits: number[]) => new Float32Array(new Uint32Array(bits).buffer);
const toBits = (values: Float32Array) => [...new Uint32Array(values.buffer, values.byteOffset, values.length)];

/** A safetensors file from a literal header object and data-area size (for headers that lie). */
function writeRaw(file: string, header: unknown, dataBytes: number, headerText = JSON.stringify(header)): string {
  const json = Buffer.from(headerText, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([length, json, Buffer.alloc(dataBytes)]));
  return file;
}

test('reads a file written by Python safetensors (F32, F16, BF16) exactly', () => {
  const store = openSafetensors(path.join(fixtures, 'python.safetensors'));
  try {
    assert.equal(store.format, 'safetensors');
    assert.deepEqual(store.metadata, pythonFixture.metadata);
    assert.deepEqual(new Set(store.list().map((t) => t.name)), new Set(pythonFixture.tensors.map((t) => t.name)));
    for (const tensor of pythonFixture.tensors) {
      const info = store.info(tensor.name);
      assert.equal(info.dtype, tensor.dtype);
      assert.deepEqual(info.shape, tensor.shape);
      assert.deepEqual(toBits(store.read(tensor.name)), tensor.valueBits, tensor.name);
    }
  } finally {
    store.close();
  }
});

test('writer rounds to F16/BF16 exactly as torch does, and reads back', () => {
  const dir = tempDir();
  const file = path.join(dir, 'ours.safetensors');
  const tensors: TensorToWrite[] = pythonFixture.tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype, data: fromBits(t.sourceBits) }));
  writeSafetensors(file, tensors, { format: 'pt' });
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  assert.equal((8 + headerLength) % 8, 0, 'data area is 8-byte aligned');
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const dataStart = 8 + headerLength;
  for (const tensor of pythonFixture.tensors) {
    const [begin, end] = header[tensor.name].data_offsets;
    const raw = bytes.subarray(dataStart + begin, dataStart + end);
    const stored = tensor.dtype === 'F32'
      ? [...new Uint32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length))]
      : [...new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length))];
    assert.deepEqual(stored, tensor.storedBits, `${tensor.name}: stored bits equal torch's`);
  }
  const store = openSafetensors(file);
  for (const tensor of pythonFixture.tensors) assert.deepEqual(toBits(store.read(tensor.name)), tensor.valueBits);
  assert.deepEqual(store.metadata, { format: 'pt' });
  store.close();
  fs.rmSync(dir, { recursive: true });
});

test('round trip of random tensors, including empty ones and odd names; Python reads our file', () => {
  const rng = createRng(7);
  const random = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const tensors: (TensorToWrite & { data: Float32Array })[] = [
    { name: 'model.layers.0.mlp.down_proj.weight', shape: [5, 7], data: random(35) },
    { name: 'toString', shape: [3], data: random(3) },
    { name: '__proto__', shape: [2, 1], data: random(2) },
    { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
    { name: 'ünïcode', shape: [], data: random(1) },
    { name: 'half', shape: [9], data: random(9), dtype: 'F16' },
  ];
  const dir = tempDir();
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, tensors);
  for (const store of [openSafetensors(file), openSafetensors(dir), openTensors(file)]) {
    assert.deepEqual(store.list().map((t) => t.name), tensors.map((t) => t.name));
    for (const tensor of tensors.filter((t) => t.dtype !== 'F16')) {
      assert.deepEqual(store.read(tensor.name), tensor.data, tensor.name);
      assert.deepEqual(store.info(tensor.name).shape, tensor.shape);
    }
    const half = store.read('half');
    half.forEach((v, i) => assert.ok(Math.abs(v - tensors[5].data[i]) <= Math.abs(tensors[5].data[i]) * 2 ** -11 + 2 ** -24));
    store.close();
  }
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors'], 'no temporary file left behind');

  const python = spawnSync('python3', ['-c', [
    'import sys, json; from safetensors.numpy import load_file',
    't = load_file(sys.argv[1])',
    'print(json.dumps({k: [list(v.shape), str(v.dtype), float(v.astype("float64").sum())] for k, v in t.items()}))',
  ].join('\n'), file], { encoding: 'utf8' });
  if (python.status !== 0) {
    assert.ok(/No module named|not found/.test(python.stderr + String(python.error)), `python failed: ${python.stderr}`);
  } else {
    const seen = JSON.parse(python.stdout);
    for (const tensor of tensors) {
      const [shape, dtype, sum] = seen[tensor.name];
      assert.deepEqual(shape, tensor.shape);
      assert.equal(dtype, tensor.dtype === 'F16' ? 'float16' : 'float32');
      const ours = tensor.data.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - ours) < 1e-2, `${tensor.name}: python sum ${sum} vs ${ours}`);
    }
  }
  fs.rmSync(dir, { recursive: true });
});

test('sharded folder with model.safetensors.index.json', () => {
  const dir = tempDir();
  const a = { name: 'a', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) };
  const b = { name: 'b', shape: [2], data: Float32Array.of(-1, 0.5), dtype: 'BF16' as const };
  const c = { name: 'c', shape: [1, 1], data: Float32Array.of(42) };
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [a, b], { shard: '1' });
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [c, { name: 'unlisted', shape: [1], data: Float32Array.of(0) }]);
  const index = { metadata: { total_size: 40 }, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' } };
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(indexPath, JSON.stringify(index));
  const store = openTensors(dir);
  assert.equal(store.path, dir);
  assert.deepEqual(store.list().map((t) => [t.name, t.dtype]), [['a', 'F32'], ['b', 'BF16'], ['c', 'F32']]);
  assert.deepEqual(store.read('a'), a.data);
  assert.deepEqual(store.read('b'), b.data);
  assert.deepEqual(store.read('c'), c.data);
  assert.equal(store.has('unlisted'), false, 'the index decides which tensors exist');
  assert.deepEqual(store.metadata, { shard: '1', total_size: 40 });
  store.close();

  fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { a: '../model-00001-of-00002.safetensors' } }));
  assertTopiaryError(() => openSafetensors(dir), indexPath, /"a" maps to .* not a file name in the folder/);
  fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { z: 'model-00002-of-00002.safetensors' } }));
  assertTopiaryError(() => openSafetensors(dir), indexPath, /"z" is not in its shard/);
  fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { a: 'missing.safetensors' } }));
  assertTopiaryError(() => openSafetensors(dir), path.join(dir, 'missing.safetensors'), /no such file/);
  fs.writeFileSync(indexPath, '{"weight_map": ');
  assertTopiaryError(() => openSafetensors(dir), indexPath, /invalid JSON: the text ends too early/);
  fs.rmSync(indexPath);
  assertTopiaryError(() => openSafetensors(dir), dir, /neither model.safetensors.index.json nor model.safetensors/);
  fs.rmSync(dir, { recursive: true });
});

test('bad safetensors input gives one clear TopiaryError naming the file', () => {
  const dir = tempDir();
  const at = (name: string) => path.join(dir, name);
  const good = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };

  let file = at('truncated.safetensors');
  writeSafetensors(file, [{ name: 'w', shape: [4, 4], data: new Float32Array(16) }]);
  fs.truncateSync(file, fs.statSync(file).size - 3);
  assertTopiaryError(() => openSafetensors(file), file, /"w" ends at byte 64 of a 61-byte data area/);
  file = writeRaw(at('tiny.safetensors'), {}, 0, '');
  fs.writeFileSync(file, Buffer.alloc(5));
  assertTopiaryError(() => openSafetensors(file), file, /too short/);
  file = writeRaw(at('json.safetensors'), null, 16, '{"w": {"dtype": "F32", ');
  assertTopiaryError(() => openSafetensors(file), file, /header is invalid JSON/);
  file = writeRaw(at('array.safetensors'), [1, 2], 0);
  assertTopiaryError(() => openSafetensors(file), file, /header is not a JSON object/);
  file = at('length.safetensors');
  fs.writeFileSync(file, Buffer.concat([Buffer.from([200, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{}')]));
  assertTopiaryError(() => openSafetensors(file), file, /header length 200 runs past the end of the 10-byte file/);
  fs.writeFileSync(file, Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x40]), Buffer.from('{}')]));
  assertTopiaryError(() => openSafetensors(file), file, /header length 4611686018427387904 is over the 100000000-byte limit/);

  const lies: [string, unknown, number, RegExp][] = [
    ['size', { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 16] } }, 16, /shape \[2, 3\] and dtype F32 needs 24 bytes, but its offsets span 16/],
    ['past-end', { w: { dtype: 'F32', shape: [2, 2], data_offsets: [8, 24] } }, 16, /ends at byte 24 of a 16-byte data area/],
    ['overlap', { ...good, v: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, 16, /overlaps/],
    ['hole', { w: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, 16, /bytes 0..8 of the data area belong to no tensor/],
    ['trailing', good, 24, /data area has 24 bytes but the tensors cover 16/],
    ['negative', { w: { dtype: 'F32', shape: [-2, -2], data_offsets: [0, 16] } }, 16, /invalid shape \[-2,-2\]/],
    ['fraction', { w: { dtype: 'F32', shape: [2.5], data_offsets: [0, 10] } }, 10, /invalid shape/],
    ['offsets', { w: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } }, 16, /invalid data_offsets \[16,0\]/],
    ['dtype', { w: { dtype: 'F33', shape: [4], data_offsets: [0, 16] } }, 16, /unknown dtype "F33"/],
    ['inherited-dtype', { w: { dtype: 'toString', shape: [4], data_offsets: [0, 16] } }, 16, /unknown dtype "toString"/],
    ['huge', { w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 16] } }, 16, /needs .* bytes, but its offsets span 16/],
    ['metadata', { __metadata__: { n: 3 }, ...good }, 16, /__metadata__ value of "n" is not a string/],
    ['entry', { w: 'F32' }, 0, /entry "w" is not an object/],
  ];
  for (const [name, header, dataBytes, pattern] of lies) {
    file = writeRaw(at(`${name}.safetensors`), header, dataBytes);
    assertTopiaryError(() => openSafetensors(file), file, pattern);
  }

  file = writeRaw(at('int.safetensors'), { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, 16);
  const store = openSafetensors(file);
  assert.deepEqual(store.info('ids'), { name: 'ids', dtype: 'I64', shape: [2], byteLength: 16 });
  assertTopiaryError(() => store.read('ids'), file, /"ids" has dtype I64; only F32, F16, BF16, F64 tensors can be read/);
  assertTopiaryError(() => store.read('nope'), file, /no tensor named "nope"/);
  store.close();
  assertTopiaryError(() => store.read('ids'), file, /closed/);

  file = writeRaw(at('f64.safetensors'), { d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }, 16);
  assert.deepEqual(openSafetensors(file).read('d'), new Float32Array(2), 'F64 converts to fp32');

  file = at('missing.safetensors');
  assertTopiaryError(() => openSafetensors(file), file, /no such file/);
  fs.rmSync(dir, { recursive: true });
});

test('writer refuses bad input and leaves no partial file', () => {
  const dir = tempDir();
  const file = path.join(dir, 'out.safetensors');
  const ok = { name: 'w', shape: [2], data: new Float32Array(2) };
  assertTopiaryError(() => writeSafetensors(file, [{ ...ok, shape: [3] }]), file, /shape \[3\] but 2 values/);
  assertTopiaryError(() => writeSafetensors(file, [ok, ok]), file, /duplicate/);
  assertTopiaryError(() => writeSafetensors(file, [{ ...ok, name: '__metadata__' }]), file, /reserved/);
  assertTopiaryError(() => writeSafetensors(file, [ok], { n: 3 as unknown as string }), file, /metadata value of "n" must be a string/);
  const nowhere = path.join(dir, 'no', 'such', 'dir.safetensors');
  assertTopiaryError(() => writeSafetensors(nowhere, [ok]), nowhere, /no such file/);
  assert.deepEqual(fs.readdirSync(dir), []);
  fs.rmSync(dir, { recursive: true });
});

test('large tensors stream through the F16 conversion in chunks', () => {
  const dir = tempDir();
  const file = path.join(dir, 'big.safetensors');
  const n = (1 << 20) * 2 + 17; // spans three conversion chunks
  const data = Float32Array.from({ length: n }, (_, i) => (i % 2048) - 1024);
  writeSafetensors(file, [{ name: 'big', shape: [n], data, dtype: 'F16' }]);
  const back = openSafetensors(file).read('big');
  assert.deepEqual(back, data, 'integers up to 2048 are exact in fp16');
  fs.rmSync(dir, { recursive: true });
});
