/**
 * Hugging Face Hub ids as model paths: read from a cache laid out as huggingface_hub writes it,
 * downloaded into it from a loopback server that answers as the hub does, refused clearly when
 * offline and not cached.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { getBackend } from '../src/backend/index.js';
import { loadModel } from '../src/model/load.js';
import { cachedSnapshot, hubCacheDir, parseHubId } from '../src/model/hub.js';
import { byteTokenizerJson, familyModels, readReference } from './family-models.js';
import { runCli, tempDir } from './helpers.js';

const { dir: modelsDir } = await familyModels();
const NAME = 'qwen3-mqa';
const modelFiles = (): Record<string, Buffer> => ({
  'config.json': fs.readFileSync(path.join(modelsDir, NAME, 'config.json')),
  'model.safetensors': fs.readFileSync(path.join(modelsDir, NAME, 'model.safetensors')),
  'tokenizer.json': Buffer.from(JSON.stringify(byteTokenizerJson())),
});
const sha1 = (data: Buffer) => createHash('sha1').update(data).digest('hex');
const COMMIT = 'a'.repeat(40);

/** A cache as huggingface_hub leaves it: blobs by hash, snapshot files linking to them, refs naming the commit. */
function writeCache(cacheDir: string, repo: string, files: Record<string, Buffer>, refs: Record<string, string>): string {
  const repoDir = path.join(cacheDir, `models--${repo.replace('/', '--')}`);
  const snapshot = path.join(repoDir, 'snapshots', COMMIT);
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  for (const [name, data] of Object.entries(files)) {
    fs.writeFileSync(path.join(repoDir, 'blobs', sha1(data)), data);
    fs.symlinkSync(path.join('..', '..', 'blobs', sha1(data)), path.join(snapshot, name));
  }
  for (const [ref, commit] of Object.entries(refs)) {
    fs.mkdirSync(path.dirname(path.join(repoDir, 'refs', ref)), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', ref), commit);
  }
  return snapshot;
}

async function withEnv<T>(env: Record<string, string | undefined>, run: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  };
  apply(env);
  try {
    return await run();
  } finally {
    apply(saved);
  }
}

const referenceLogits = async () => (await loadModel(path.join(modelsDir, NAME), { backend: getBackend() })).logits(readReference(modelsDir, NAME).inputIds);

test('hub ids are told from paths; the cache folder follows HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME', () => {
  assert.deepEqual(parseHubId('HuggingFaceTB/SmolLM2-135M'), { repo: 'HuggingFaceTB/SmolLM2-135M', revision: 'main' });
  assert.deepEqual(parseHubId('org/name@refs/pr/1'), { repo: 'org/name', revision: 'refs/pr/1' });
  for (const notAnId of ['name', 'a/b/c', '../x', 'org/..', 'org/name@../../etc', 'org/name@', '/abs/path']) assert.equal(parseHubId(notAnId), undefined, notAnId);
  // A local folder of that spelling wins.
  const cwd = process.cwd();
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'org', 'name'), { recursive: true });
  process.chdir(dir);
  try {
    assert.equal(parseHubId('org/name'), undefined);
  } finally {
    process.chdir(cwd);
  }
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' }), '/c');
  assert.equal(hubCacheDir({ HF_HOME: '/h' }), path.join('/h', 'hub'));
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/x' }), path.join('/x', 'huggingface', 'hub'));
});

test('a model in the huggingface_hub cache loads by id, by branch, tag and commit, offline', async () => {
  const cacheDir = tempDir('topiary-hf-cache-');
  const snapshot = writeCache(cacheDir, 'tiny/qwen3', modelFiles(), { main: COMMIT, 'v1.0': COMMIT });
  assert.equal(cachedSnapshot({ repo: 'tiny/qwen3', revision: 'main' }, cacheDir), snapshot);
  const expected = await referenceLogits();
  for (const id of ['tiny/qwen3', 'tiny/qwen3@v1.0', `tiny/qwen3@${COMMIT}`]) {
    const logits = await withEnv({ HF_HUB_CACHE: cacheDir, HF_HUB_OFFLINE: '1' }, async () => (await loadModel(id, { backend: getBackend() })).logits(readReference(modelsDir, NAME).inputIds));
    assert.deepEqual(logits, expected, id);
  }
  const cli = runCli(['inspect', 'tiny/qwen3', '--json'], { HF_HUB_CACHE: cacheDir, HF_HUB_OFFLINE: '1' });
  assert.equal(cli.status, 0, cli.stderr);
  const info = JSON.parse(cli.stdout) as { modelType: string; path: string };
  assert.equal(info.modelType, 'qwen3');
  assert.equal(info.path, snapshot);
});

test('offline and not cached (or cached without its weights): one line saying so', () => {
  const cacheDir = tempDir('topiary-hf-cache-');
  const { 'model.safetensors': _weights, ...withoutWeights } = modelFiles();
  writeCache(cacheDir, 'tiny/partial', withoutWeights, { main: COMMIT });
  for (const id of ['tiny/absent', 'tiny/partial', 'tiny/partial@v9']) {
    const result = runCli(['inspect', id], { HF_HUB_CACHE: cacheDir, HF_HUB_OFFLINE: '1' });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^topiary: tiny\/\w+@\w+ is not in the Hugging Face cache \(.+\) and HF_HUB_OFFLINE is set; download it first or unset HF_HUB_OFFLINE\n$/);
  }
});

test('a mistyped relative path that reads as a hub id, with the hub unreachable: one line saying both', () => {
  const result = runCli(['inspect', 'models/typo'], { HF_HUB_CACHE: tempDir(), HF_ENDPOINT: 'http://127.0.0.1:9', HF_HUB_OFFLINE: '' });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /^topiary: models\/typo@main: no such file or folder, and as a Hugging Face Hub id it cannot be downloaded from http:\/\/127\.0\.0\.1:9: .+\n$/);
});

/** A loopback server answering the hub's model-info, tree, paths-info and resolve routes for one repository. */
async function fakeHub(repo: string, files: Record<string, Buffer>): Promise<{ url: string; requests: { method: string; url: string; authorization?: string }[]; close: () => void }> {
  const requests: { method: string; url: string; authorization?: string }[] = [];
  const server = http.createServer((request, response) => {
    const url = new URL(request.url!, 'http://localhost');
    requests.push({ method: request.method!, url: url.pathname, ...(request.headers.authorization ? { authorization: request.headers.authorization } : {}) });
    const json = (body: unknown) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    };
    const entry = (name: string) => ({ type: 'file', path: name, oid: sha1(files[name]!), size: files[name]!.length });
    if (url.pathname === `/api/models/${repo}/revision/main`) return json({ _id: '1', id: repo, sha: COMMIT, private: false, lastModified: '2026-01-01T00:00:00.000Z' });
    if (url.pathname === `/api/models/${repo}/tree/${COMMIT}`) return json(Object.keys(files).map(entry));
    if (request.method === 'POST' && url.pathname === `/api/models/${repo}/paths-info/${COMMIT}`) {
      let body = '';
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => json((JSON.parse(body) as { paths: string[] }).paths.filter((name) => name in files).map(entry)));
      return;
    }
    const prefix = `/${repo}/resolve/${COMMIT}/`;
    if (url.pathname.startsWith(prefix) && url.pathname.slice(prefix.length) in files) {
      const data = files[url.pathname.slice(prefix.length)]!;
      const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
      if (range) {
        const start = Number(range[1]);
        const end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
        response.writeHead(206, { 'content-range': `bytes ${start}-${end}/${data.length}`, 'content-length': end - start + 1, etag: `"${sha1(data)}"` });
        return response.end(data.subarray(start, end + 1));
      }
      response.writeHead(200, { 'content-length': data.length, etag: `"${sha1(data)}"` });
      return response.end(data);
    }
    response.writeHead(404, { 'x-error-code': 'EntryNotFound', 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: 'not found' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, close: () => server.close() };
}

test('a model missing from the cache is downloaded from the hub (HF_ENDPOINT, HF_TOKEN) into the huggingface_hub layout, only the files Topiary reads', async () => {
  const files = { ...modelFiles(), 'pytorch_model.bin': Buffer.alloc(4096, 7), 'README.md': Buffer.from('# tiny') };
  const hub = await fakeHub('tiny/remote', files);
  const cacheDir = tempDir('topiary-hf-cache-');
  const progress: string[] = [];
  // The hub package logs with console.debug (stdout, where --json output goes); none may pass.
  const debugCalls: unknown[] = [];
  const debug = console.debug;
  console.debug = (...args: unknown[]) => debugCalls.push(args);
  try {
    const logits = await withEnv({ HF_HUB_CACHE: cacheDir, HF_ENDPOINT: hub.url, HF_TOKEN: 'hf_secret', HF_HUB_OFFLINE: undefined }, async () =>
      (await loadModel('tiny/remote', { backend: getBackend(), onDownload: (file) => progress.push(file) })).logits(readReference(modelsDir, NAME).inputIds),
    );
    assert.deepEqual(logits, await referenceLogits());
  } finally {
    hub.close();
    console.debug = debug;
  }
  assert.deepEqual(debugCalls, []);
  const repoDir = path.join(cacheDir, 'models--tiny--remote');
  assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
  const snapshot = path.join(repoDir, 'snapshots', COMMIT);
  assert.deepEqual(fs.readdirSync(snapshot).sort(), ['config.json', 'model.safetensors', 'tokenizer.json']);
  for (const name of fs.readdirSync(snapshot)) {
    assert.ok(fs.lstatSync(path.join(snapshot, name)).isSymbolicLink(), `${name} links to its blob`);
    assert.deepEqual(fs.readFileSync(path.join(snapshot, name)), files[name as keyof typeof files]);
  }
  assert.ok(progress.includes('model.safetensors'), 'download progress was reported');
  assert.ok(!hub.requests.some((request) => request.url.endsWith('pytorch_model.bin')), 'the .bin copy is not fetched');
  assert.ok(hub.requests.every((request) => request.authorization === 'Bearer hf_secret'), 'HF_TOKEN is sent with every request');
  // The next run finds it in the cache, offline.
  const offline = runCli(['inspect', 'tiny/remote'], { HF_HUB_CACHE: cacheDir, HF_HUB_OFFLINE: '1' });
  assert.equal(offline.status, 0, offline.stderr);
});
