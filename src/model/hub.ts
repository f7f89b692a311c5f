/**
 * Hugging Face Hub ids (`org/name`, `org/name@revision`) as model paths. A model is read from the
 * local cache in the layout huggingface_hub writes — `models--ORG--NAME/snapshots/SHA/FILE`, each
 * file a link to `../../blobs/HASH`, and `refs/REVISION` holding the SHA of a branch or tag — so a
 * model that transformers or `huggingface-cli download` fetched is used where it lies. What the
 * cache lacks is downloaded into it (same layout) with the maintained @huggingface/hub package,
 * unless HF_HUB_OFFLINE=1. A local path always wins over a hub id of the same spelling.
 *
 * Only the files Topiary reads are fetched: config.json, the safetensors weights (single or
 * sharded), the tokenizer files and generation_config.json — not the PyTorch .bin, ONNX or GGUF
 * copies many repositories also hold.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileContentAtomic } from '../util/atomic.js';
import { TopiaryError } from '../util/errors.js';
import { READ_LIMITS, parseJson, readTextFile } from '../util/safe-fs.js';

export interface HubId {
  repo: string;
  /** A branch, tag or commit SHA; default "main". */
  revision: string;
}

const COMMIT = /^[0-9a-f]{40}$/;
const NAME_PART = '[A-Za-z0-9][A-Za-z0-9._-]*';
const HUB_ID = new RegExp(`^(${NAME_PART}/${NAME_PART})(?:@([A-Za-z0-9._/-]+))?$`);
const WEIGHTS = 'model.safetensors';
const SHARD_INDEX = 'model.safetensors.index.json';
/** Besides the weights: what a model folder may hold that Topiary reads or carries to its outputs. */
const OPTIONAL_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'tokenizer.model', 'generation_config.json'];

/** `spec` as a hub id, or undefined when it is not one (or names a local file or folder). */
export function parseHubId(spec: string): HubId | undefined {
  if (fs.existsSync(spec)) return undefined;
  const match = HUB_ID.exec(spec);
  if (!match || match[1]!.split('/').some((part) => part === '.' || part === '..' || part.endsWith('.'))) return undefined;
  const revision = match[2] ?? 'main';
  if (revision.split('/').some((part) => part === '' || part === '.' || part === '..')) return undefined;
  return { repo: match[1]!, revision };
}

/** Where huggingface_hub keeps its cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub (XDG_CACHE_HOME honoured). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  return path.join(hubHome(env), 'hub');
}

function hubHome(env: NodeJS.ProcessEnv): string {
  return env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
}

const repoFolder = (cacheDir: string, repo: string) => path.join(cacheDir, `models--${repo.replace('/', '--')}`);

/** The commit a revision names in the cache: a SHA itself, or what refs/REVISION holds. */
function cachedCommit(repoDir: string, revision: string): string | undefined {
  if (COMMIT.test(revision)) return revision;
  const ref = path.join(repoDir, 'refs', revision);
  if (!fs.existsSync(ref)) return undefined;
  const sha = readTextFile(ref, 1024, { within: repoDir }).trim();
  if (!COMMIT.test(sha)) throw new TopiaryError('not a commit hash; the cache is damaged', ref);
  return sha;
}

/** The weight files a snapshot needs (the index's shards when sharded), or undefined if it has neither form. */
function weightFiles(snapshot: string): string[] | undefined {
  if (fs.existsSync(path.join(snapshot, WEIGHTS))) return [WEIGHTS];
  const indexFile = path.join(snapshot, SHARD_INDEX);
  if (!fs.existsSync(indexFile)) return undefined;
  return [SHARD_INDEX, ...shardNames(readTextFile(indexFile, READ_LIMITS.json, { within: snapshot }), indexFile)];
}

function shardNames(indexText: string, indexFile: string): string[] {
  const index = parseJson(indexText, indexFile) as { weight_map?: unknown };
  if (typeof index.weight_map !== 'object' || index.weight_map === null) throw new TopiaryError('no "weight_map"', indexFile);
  const names = [...new Set(Object.values(index.weight_map as Record<string, unknown>))];
  const bad = names.find((name) => typeof name !== 'string' || !/^[\w.-]+\.safetensors$/.test(name));
  if (bad !== undefined) throw new TopiaryError(`shard name ${JSON.stringify(bad)} is not a plain .safetensors file name`, indexFile);
  return names as string[];
}

/** The cached snapshot folder of `id` if it holds config.json and all of its weights. */
export function cachedSnapshot(id: HubId, cacheDir: string = hubCacheDir()): string | undefined {
  const repoDir = repoFolder(cacheDir, id.repo);
  if (!fs.existsSync(repoDir)) return undefined;
  const commit = cachedCommit(repoDir, id.revision);
  if (!commit) return undefined;
  const snapshot = path.join(repoDir, 'snapshots', commit);
  if (!fs.existsSync(path.join(snapshot, 'config.json'))) return undefined;
  const weights = weightFiles(snapshot);
  return weights?.every((name) => fs.existsSync(path.join(snapshot, name))) ? snapshot : undefined;
}

export interface HubOptions {
  env?: NodeJS.ProcessEnv;
  /** Bytes received for a file, as they arrive (total when the server says it). */
  onProgress?: (file: string, received: number, total: number | undefined) => void;
}

const isOffline = (env: NodeJS.ProcessEnv) => ['1', 'ON', 'YES', 'TRUE'].includes((env.HF_HUB_OFFLINE ?? '').toUpperCase());

/** HF_TOKEN, else the token `huggingface-cli login` saved (HF_HOME/token). */
function accessToken(env: NodeJS.ProcessEnv): string | undefined {
  if (env.HF_TOKEN) return env.HF_TOKEN;
  const saved = path.join(hubHome(env), 'token');
  return fs.existsSync(saved) ? readTextFile(saved, 4096).trim() || undefined : undefined;
}

/**
 * The local folder of model `spec` if it is a hub id (downloading what the cache lacks), else
 * `spec` itself.
 */
export async function resolveModelPath(spec: string, options: HubOptions = {}): Promise<string> {
  const id = parseHubId(spec);
  if (!id) return spec;
  const env = options.env ?? process.env;
  const cacheDir = hubCacheDir(env);
  const cached = cachedSnapshot(id, cacheDir);
  if (cached) return cached;
  const what = `${id.repo}@${id.revision}`;
  if (isOffline(env)) {
    throw new TopiaryError(`${what} is not in the Hugging Face cache (${cacheDir}) and HF_HUB_OFFLINE is set; download it first or unset HF_HUB_OFFLINE`);
  }
  return download(id, cacheDir, env, options);
}

async function download(id: HubId, cacheDir: string, env: NodeJS.ProcessEnv, options: HubOptions): Promise<string> {
  const hub = await import('@huggingface/hub');
  const token = accessToken(env);
  const common = {
    repo: { type: 'model' as const, name: id.repo },
    cacheDir,
    ...(env.HF_ENDPOINT ? { hubUrl: env.HF_ENDPOINT.replace(/\/$/, '') } : {}),
    ...(token ? { accessToken: token } : {}),
  };
  // The package announces each file with console.debug, which goes to stdout and would corrupt
  // `--json` output; Topiary reports progress itself.
  const debug = console.debug;
  console.debug = () => {};
  try {
    return await fetchSnapshot(hub, common, id, cacheDir, { ...options, env });
  } finally {
    console.debug = debug;
  }
}

type HubModule = typeof import('@huggingface/hub');
type Common = { repo: { type: 'model'; name: string }; cacheDir: string; hubUrl?: string; accessToken?: string };

async function fetchSnapshot(hub: HubModule, common: Common, id: HubId, cacheDir: string, options: HubOptions & { env: NodeJS.ProcessEnv }): Promise<string> {
  const env = options.env;
  const what = `${id.repo}@${id.revision}`;
  const failed = (error: unknown): never => {
    const message = (error as Error).message ?? String(error);
    // A mistyped relative path reads as a hub id too; say both.
    throw new TopiaryError(`no such file or folder, and as a Hugging Face Hub id it cannot be downloaded from ${env.HF_ENDPOINT ?? 'https://huggingface.co'}: ${message.split('\n')[0]}`, what);
  };
  const info = await hub.modelInfo({ ...common, name: id.repo, revision: id.revision, additionalFields: ['sha'] }).catch(failed);
  const commit = (info as { sha?: unknown }).sha;
  if (typeof commit !== 'string' || !COMMIT.test(commit)) return failed(new Error('the hub gave no commit hash for this revision'));

  const present = new Set<string>();
  for await (const entry of hub.listFiles({ ...common, revision: commit, recursive: false })) {
    if (entry.type === 'file') present.add(entry.path);
  }
  if (!present.has('config.json')) throw new TopiaryError(`${what} has no config.json; Topiary reads Hugging Face model folders (for a GGUF, download the file and pass its path)`);
  // Without a progress callback, one line a file on stderr: downloads can take long.
  const onProgress = options.onProgress ?? lineAFile(what);
  const fetchFile = (file: string) =>
    hub.downloadFileToCacheDir({ ...common, path: file, revision: commit, fetch: progressFetch(file, onProgress) }).catch(failed);

  await fetchFile('config.json');
  let weights: string[];
  if (present.has(WEIGHTS)) weights = [WEIGHTS];
  else if (present.has(SHARD_INDEX)) weights = shardNames(readTextFile(await fetchFile(SHARD_INDEX), READ_LIMITS.json), `${what}/${SHARD_INDEX}`);
  else throw new TopiaryError(`${what} has no ${WEIGHTS} or ${SHARD_INDEX} (only safetensors weights are read)`);
  for (const file of [...weights, ...OPTIONAL_FILES.filter((name) => present.has(name))]) await fetchFile(file);

  // A branch or tag is recorded as huggingface_hub does, so the next run finds the snapshot offline.
  const repoDir = repoFolder(cacheDir, id.repo);
  if (id.revision !== commit) {
    fs.mkdirSync(path.join(repoDir, 'refs', path.dirname(id.revision)), { recursive: true });
    writeFileContentAtomic(path.join(repoDir, 'refs', id.revision), commit);
  }
  return path.join(repoDir, 'snapshots', commit);
}

function lineAFile(what: string): NonNullable<HubOptions['onProgress']> {
  let current = '';
  let lastPercent = -1;
  return (file, received, total) => {
    const percent = total ? Math.floor((received / total) * 10) * 10 : -1;
    if (file === current && percent === lastPercent) return;
    current = file;
    lastPercent = percent;
    const size = total ? `${(received / 2 ** 20).toFixed(1)} of ${(total / 2 ** 20).toFixed(1)} MiB` : `${(received / 2 ** 20).toFixed(1)} MiB`;
    process.stderr.write(`topiary: downloading ${what}: ${file} ${size}\n`);
  };
}

/** A fetch that reports the bytes of `file`'s download as they arrive (the hub package has no progress hook). */
function progressFetch(file: string, onProgress: HubOptions['onProgress']): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    const probe = /^bytes 0-0\//.test(response.headers.get('content-range') ?? ''); // the size request before the download
    if (!onProgress || probe || !response.body || !/\/resolve\//.test(String(input instanceof Request ? input.url : input))) return response;
    const total = Number(response.headers.get('content-length')) || undefined;
    let received = 0;
    const counted = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          received += chunk.byteLength;
          onProgress(file, received, total);
          controller.enqueue(chunk);
        },
      }),
    );
    return new Response(counted, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}
