/**
 * A causal language model of any family: the token (and position) embedding, the family's blocks,
 * the final norm and the head. Per-layer sizes come from the weights, so layers may differ
 * (structured pruning).
 *
 * Hidden states are [rows, hidden] row-major where rows = windows × seqLen: a batch of equal-length
 * token windows, each attending only within itself. The pruning pipeline calls `embed`,
 * `runLayer` and `head` directly; `logits` and `windowNll` chain them for evaluation, and
 * `forwardCached` extends one sequence held in a `KvCache` (generation).
 */
import type { Backend } from '../backend/backend.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { TopiaryError } from '../util/errors.js';
import { KvCache } from './components/kv-cache.js';
import { norm } from './components/norm.js';
import { RopeTables, type RopeTable } from './components/rope.js';
import type { ModelConfig } from './config.js';
import { blockSizes, type Block, type BlockContext, type Family, type InputObserver, type Linear } from './families/family.js';
import type { ModelSource } from './sources.js';
import { compressSparse } from '../backend/sparse.js';

export { KvCache };
export type { Block, InputObserver, Linear };

/**
 * Refuses a config that disagrees with the tensors present, before anything is allocated: a
 * different layer count, a missing or misshapen linear layer, head counts the projections cannot
 * hold, a missing head while the config says untied. Shapes only; no weight is read.
 */
export function checkConfigAgainstTensors(source: ModelSource): void {
  const { config, family } = source;
  const fail = (message: string): never => {
    throw new TopiaryError(message, source.configFile);
  };
  const names = source.tensorNames();
  const holds = (layer: number) => names.some((name) => name.startsWith(family.layerPrefix(layer)));
  if (!holds(config.numLayers - 1) || holds(config.numLayers)) {
    let present = 0;
    while (present < names.length && holds(present)) present++;
    fail(`the config says ${config.numLayers} layers, the weights hold ${present}`);
  }
  const { headDim } = config;
  const widest = { heads: 0, kvHeads: 0, mlp: 0 };
  for (let layer = 0; layer < config.numLayers; layer++) {
    const shapes: Record<string, number[]> = {};
    for (const spec of family.linears) {
      const name = `${family.layerPrefix(layer)}${spec.name}.weight`;
      if (!source.has(name)) fail(`the weights lack "${name}"`);
      const shape = source.shape(name);
      if (shape.length !== 2 || shape.some((d) => !(d > 0))) fail(`tensor "${name}" should be a non-empty matrix, has shape [${shape}]`);
      shapes[spec.role] = shape;
    }
    // Whole heads (query heads a multiple of kv heads) and channels, fused projections included.
    const sizes = family.structure ? blockSizes(family.structure, (role) => shapes[role]!, headDim) : { heads: 0, kvHeads: 0, channels: 0 };
    if ('problem' in sizes) return fail(`layer ${layer}: ${sizes.problem}`);
    const { heads, kvHeads, channels } = sizes;
    widest.heads = Math.max(widest.heads, heads);
    widest.kvHeads = Math.max(widest.kvHeads, kvHeads);
    widest.mlp = Math.max(widest.mlp, channels);
  }
  // An exported config.json states these, so they must be what the weights hold.
  if (widest.mlp > 0 && widest.mlp !== config.intermediateSize) {
    fail(`the config says an MLP width of ${config.intermediateSize}, the weights hold ${widest.mlp}`);
  }
  // The config states the widest layer (structurally pruned layers may be narrower).
  if (widest.heads > 0 && (widest.heads !== config.numHeads || widest.kvHeads !== config.numKvHeads)) {
    fail(`the config says ${config.numHeads} attention heads and ${config.numKvHeads} key/value heads, the weights hold ${widest.heads} and ${widest.kvHeads}`);
  }
  if (!config.tieWordEmbeddings && !source.has(family.lmHead)) fail(`the config says the LM head is untied, but the weights lack "${family.lmHead}"`);
}

export class CausalLM {
  readonly config: ModelConfig;
  readonly family: Family;
  private readonly blocks: (Block | undefined)[];
  /** Per layer, the names (under the prefix) of its tensors that are not linear layers. */
  private readonly otherTensors: string[][];
  private embedding?: Float32Array;
  private positions?: Float32Array;
  private finalNorm?: { weight: Float32Array; bias?: Float32Array };
  private headWeight?: Float32Array;
  /** The LM head's bias (Phi), null once known to be absent. */
  private headBias?: Float32Array | null;
  private readonly projections: { embedProjection?: Float32Array; headProjection?: Float32Array } = {};
  private readonly ropeTables?: RopeTables;

  constructor(
    readonly source: ModelSource,
    readonly backend: Backend,
  ) {
    checkConfigAgainstTensors(source);
    this.config = source.config;
    this.family = source.family;
    this.blocks = new Array<Block | undefined>(this.config.numLayers).fill(undefined);
    if (this.config.rope) this.ropeTables = new RopeTables(this.config.rope);
    const linearTensors = new Set(this.family.linears.flatMap((spec) => [`${spec.name}.weight`, `${spec.name}.bias`]));
    const names = source.tensorNames();
    this.otherTensors = Array.from({ length: this.config.numLayers }, (_, layer) => {
      const prefix = this.family.layerPrefix(layer);
      return names.filter((name) => name.startsWith(prefix)).map((name) => name.slice(prefix.length)).filter((name) => !linearTensors.has(name));
    });
  }

  get tokenizer(): Tokenizer {
    const tokenizer = this.source.tokenizer;
    if ('missing' in tokenizer) throw new TopiaryError(`no tokenizer: ${tokenizer.missing}`, this.source.path);
    return tokenizer;
  }

  get numLayers(): number {
    return this.blocks.length;
  }

  /** The roles of the family's linear layers ('q', 'down', 'qkv', …), in forward order. */
  get roles(): string[] {
    return this.family.linears.map((spec) => spec.role);
  }

  /** Canonical name of a linear layer, e.g. 'model.layers.3.mlp.down_proj'. */
  linearName(layer: number, role: string): string {
    const spec = this.family.linears.find((s) => s.role === role);
    if (!spec) throw new TopiaryError(`the ${this.family.name} family has no linear layer "${role}" (it has ${this.roles.join(', ')})`);
    return `${this.family.layerPrefix(layer)}${spec.name}`;
  }

  private readTensor(name: string, expectedShape?: number[]): Float32Array {
    const shape = this.source.shape(name);
    if (expectedShape && (shape.length !== expectedShape.length || shape.some((d, i) => d !== expectedShape[i]))) {
      throw new TopiaryError(`tensor "${name}" has shape [${shape}], expected [${expectedShape}]`, this.source.path);
    }
    return this.source.read(name);
  }

  /** Reads one block's weights from the source (they stay cached until released). */
  layer(index: number): Block {
    const cached = this.blocks[index];
    if (cached) return cached;
    const prefix = this.family.layerPrefix(index);
    const linears: Record<string, Linear> = {};
    for (const spec of this.family.linears) {
      const name = `${prefix}${spec.name}`;
      if (!this.source.has(`${name}.weight`)) throw new TopiaryError(`the model has no tensor "${name}.weight"`, this.source.path);
      const shape = this.source.shape(`${name}.weight`);
      if (shape.length !== 2) throw new TopiaryError(`tensor "${name}.weight" should be 2-D, has shape [${shape}]`, this.source.path);
      const [outFeatures, inFeatures] = shape as [number, number];
      const biasName = `${name}.bias`;
      const storage = this.source.storage(`${name}.weight`);
      const weight = this.readTensor(`${name}.weight`);
      linears[spec.role] = {
        weight,
        outFeatures,
        inFeatures,
        // A matrix stored sparse runs on the sparse kernels (the dense copy stays: pruning and
        // export read it).
        ...(storage !== 'dense' ? { storage, sparse: compressSparse(weight, outFeatures, inFeatures, storage) } : {}),
        ...(this.source.has(biasName) ? { bias: this.readTensor(biasName, [outFeatures]) } : {}),
      };
    }
    const tensors: Record<string, Float32Array> = {};
    for (const name of this.otherTensors[index]!) tensors[name] = this.readTensor(`${prefix}${name}`);
    const block: Block = { linears, tensors };
    this.blocks[index] = block;
    return block;
  }

  /** Replaces a layer's weights (after pruning). */
  setLayer(index: number, block: Block): void {
    this.blocks[index] = block;
  }

  /** Drops a cached layer so memory holds only the layers in use. */
  releaseLayer(index: number): void {
    this.blocks[index] = undefined;
  }

  /** Width of the token embeddings and of the head's input: hiddenSize unless projected (OPT). */
  private get wordWidth(): number {
    return this.config.wordEmbeddingSize ?? this.config.hiddenSize;
  }

  private embeddingMatrix(): Float32Array {
    this.embedding ??= this.readTensor(this.family.embedTokens, [this.config.vocabSize, this.wordWidth]);
    return this.embedding;
  }

  /**
   * The embedding rows of `tokens`: the whole table when it is loaded anyway (a tied head ran),
   * else only the rows these tokens need, read from the file — pruning never holds the table
   * (128k × 4096 fp32 is 2 GiB).
   */
  private embeddingRows(tokens: readonly number[]): { table: Float32Array; rowOf: (token: number) => number } {
    if (this.embedding) return { table: this.embedding, rowOf: (token) => token };
    const name = this.family.embedTokens;
    const shape = this.source.shape(name);
    if (shape.length !== 2 || shape[0] !== this.config.vocabSize || shape[1] !== this.wordWidth) {
      throw new TopiaryError(`tensor "${name}" has shape [${shape}], expected [${this.config.vocabSize},${this.wordWidth}]`, this.source.path);
    }
    const distinct = [...new Set(tokens)].sort((a, b) => a - b);
    const position = new Map(distinct.map((token, i) => [token, i]));
    return { table: this.source.readRows(name, distinct), rowOf: (token) => position.get(token)! };
  }

  /** The projection from word width to hiddenSize ('embedProjection') or back ('headProjection'), if the widths differ. */
  private projection(which: 'embedProjection' | 'headProjection'): Float32Array | undefined {
    const { hiddenSize, wordEmbeddingSize } = this.config;
    if (wordEmbeddingSize === undefined || wordEmbeddingSize === hiddenSize) return undefined;
    const name = this.family[which];
    if (!name) throw new TopiaryError(`the ${this.family.name} family cannot project ${wordEmbeddingSize}-wide word embeddings to hidden size ${hiddenSize}`, this.source.path);
    const shape = which === 'embedProjection' ? [hiddenSize, wordEmbeddingSize] : [wordEmbeddingSize, hiddenSize];
    return (this.projections[which] ??= this.readTensor(name, shape));
  }

  /**
   * Hidden states of layer 0 for equal-length token windows: [windows·seqLen, hidden]. Learned
   * positions (OPT, GPT-2) start at `firstPosition` (the cached length when decoding).
   */
  async embed(windows: readonly (readonly number[])[], firstPosition = 0): Promise<Float32Array> {
    const { hiddenSize: d, vocabSize, embeddingScale, positionOffset = 0 } = this.config;
    const e = this.wordWidth;
    const seqLen = windows[0]?.length ?? 0;
    const rows = windows.length * seqLen;
    for (const tokens of windows) {
      if (tokens.length !== seqLen) throw new TopiaryError('all windows in a batch must have the same length');
      for (const token of tokens) {
        if (!Number.isInteger(token) || token < 0 || token >= vocabSize) {
          throw new TopiaryError(`token id ${token} is outside the vocabulary (size ${vocabSize})`);
        }
      }
    }
    const { table, rowOf } = this.embeddingRows(windows.flat());
    let out = new Float32Array(rows * e);
    windows.forEach((tokens, w) => {
      tokens.forEach((token, t) => {
        const row = rowOf(token);
        out.set(table.subarray(row * e, (row + 1) * e), (w * seqLen + t) * e);
      });
    });
    if (embeddingScale !== undefined) for (let i = 0; i < out.length; i++) out[i] = out[i]! * embeddingScale;
    const projection = this.projection('embedProjection');
    if (projection) {
      const projected = new Float32Array(rows * d);
      await this.backend.gemm(out, projection, projected, { m: rows, n: d, k: e, transB: true });
      out = projected;
    }
    if (this.family.positionEmbeddings) {
      this.positions ??= this.readTensor(this.family.positionEmbeddings);
      const available = this.positions.length / d - positionOffset;
      if (firstPosition + seqLen > available) throw new TopiaryError(`the model has learned positions for ${available} tokens, not ${firstPosition + seqLen}`, this.source.path);
      for (let row = 0; row < rows; row++) {
        const position = (firstPosition + (row % seqLen) + positionOffset) * d;
        for (let c = 0; c < d; c++) out[row * d + c] = out[row * d + c]! + this.positions[position + c]!;
      }
    }
    return out;
  }

  /**
   * A reusable buffer per purpose, grown on demand: the forward pass would otherwise allocate
   * (and the garbage collector reclaim) tens of megabytes per layer.
   */
  private scratch(purpose: string, length: number): Float32Array {
    let buffer = this.scratchBuffers.get(purpose);
    if (!buffer || buffer.length < length) {
      buffer = new Float32Array(length);
      this.scratchBuffers.set(purpose, buffer);
    }
    return buffer.subarray(0, length);
  }
  private readonly scratchBuffers = new Map<string, Float32Array>();

  /** The RoPE table of layer `layer` covering `positions` positions (Gemma 3's local layers have their own). */
  private ropeFor(layer: number, positions: number): RopeTable | undefined {
    const rope = this.config.rope;
    if (!rope || !this.ropeTables) return undefined;
    const local = rope.localTheta !== undefined && this.config.attention.layerTypes?.[layer] === 'sliding';
    return this.ropeTables.forSetting(local ? 'local' : 'global', positions);
  }

  /**
   * Runs block `index` on hidden states [windows·seqLen, hidden], updating them in place (the
   * residual stream) and returning them. `observe` sees each linear group's input; the arrays it
   * is given are reused afterwards, so it must not keep them. With a `cache` the rows are one
   * window at positions cache.length.., attending to the cached keys too; their keys and values
   * are appended to the cache (the caller advances it after the last layer).
   */
  async runLayer(index: number, hidden: Float32Array, seqLen: number, observe?: InputObserver, cache?: KvCache): Promise<Float32Array> {
    const rows = hidden.length / this.config.hiddenSize;
    if (cache && rows !== seqLen) throw new TopiaryError('a KV cache holds one sequence: run one window at a time');
    const pastLength = cache?.length ?? 0;
    const rope = this.ropeFor(index, pastLength + seqLen);
    const context: BlockContext = {
      backend: this.backend,
      config: this.config,
      layer: index,
      rows,
      seqLen,
      pastLength,
      scratch: (purpose, length) => this.scratch(purpose, length),
      ...(cache ? { cache } : {}),
      ...(observe ? { observe } : {}),
      ...(rope ? { rope } : {}),
    };
    await this.family.forward(this.layer(index), hidden, context);
    return hidden;
  }

  private headMatrix(): Float32Array {
    const name = this.family.lmHead;
    if (this.config.tieWordEmbeddings) return this.embeddingMatrix();
    this.headWeight ??= this.readTensor(name, [this.config.vocabSize, this.wordWidth]);
    return this.headWeight;
  }

  /**
   * Final norm and LM head on `rows` hidden states (a slice of the stream): logits [rows, vocab],
   * into `logits` when given (a caller going through many row chunks reuses one buffer rather than
   * have fresh pages of tens of megabytes zeroed and faulted in for each).
   */
  async head(hidden: Float32Array, rows: number, logits: Float32Array = new Float32Array(rows * this.config.vocabSize)): Promise<Float32Array> {
    const { hiddenSize: d, vocabSize } = this.config;
    let features = hidden.subarray(0, rows * d);
    if (!this.config.noFinalNorm) {
      if (!this.finalNorm) {
        const prefix = this.family.finalNorm;
        const bias = this.source.has(`${prefix}.bias`) ? this.readTensor(`${prefix}.bias`, [d]) : undefined;
        this.finalNorm = { weight: this.readTensor(`${prefix}.weight`, [d]), ...(bias ? { bias } : {}) };
      }
      const normed = this.scratch('final-norm', rows * d);
      await norm(this.backend, this.config.norm, this.finalNorm.weight, this.finalNorm.bias, features, normed);
      features = normed;
    }
    const projection = this.projection('headProjection');
    if (projection) {
      const projected = new Float32Array(rows * this.wordWidth);
      await this.backend.gemm(features, projection, projected, { m: rows, n: this.wordWidth, k: d, transB: true });
      features = projected;
    }
    await this.backend.gemm(features, this.headMatrix(), logits, { m: rows, n: vocabSize, k: this.wordWidth, transB: true });
    if (this.headBias === undefined) {
      const biasName = this.family.lmHead.replace(/\.weight$/, '.bias');
      this.headBias = this.source.has(biasName) ? this.readTensor(biasName, [vocabSize]) : null;
    }
    if (this.headBias) await this.backend.addBias(logits, this.headBias);
    if (this.config.finalLogitSoftCap !== undefined) await this.backend.softCap(logits, this.config.finalLogitSoftCap);
    return logits;
  }

  /** Hidden states after the last layer for a batch of equal-length windows. */
  async finalHidden(windows: readonly (readonly number[])[]): Promise<Float32Array> {
    const seqLen = windows[0]?.length ?? 0;
    const hidden = await this.embed(windows);
    for (let i = 0; i < this.numLayers; i++) await this.runLayer(i, hidden, seqLen);
    return hidden;
  }

  /**
   * Runs `tokens` at positions cache.length.. of the sequence `cache` holds, appends their keys and
   * values, and returns the next-token logits after the last of them [vocab]. With the prompt this
   * is the prefill; with one token, a decode step.
   */
  async forwardCached(tokens: readonly number[], cache: KvCache): Promise<Float32Array> {
    if (tokens.length === 0) throw new TopiaryError('forwardCached needs at least one token');
    const d = this.config.hiddenSize;
    const hidden = await this.embed([tokens], cache.length);
    for (let i = 0; i < this.numLayers; i++) await this.runLayer(i, hidden, tokens.length, undefined, cache);
    cache.advance(tokens.length);
    return this.head(hidden.subarray((tokens.length - 1) * d), 1);
  }

  /** Full logits [windows·seqLen, vocab] (for tests; evaluation uses windowNll, generation forwardCached). */
  async logits(windows: readonly (readonly number[])[]): Promise<Float32Array> {
    const hidden = await this.finalHidden(windows);
    return this.head(hidden, hidden.length / this.config.hiddenSize);
  }

  /**
   * Sum of next-token negative log-likelihoods over each window (positions 1..T-1 predicted from
   * the prefix), computed with the head applied in row chunks so a 2048×vocab logit matrix is
   * never held at once.
   */
  async windowNll(windows: readonly (readonly number[])[], chunkRows = 256): Promise<{ nll: number; predicted: number }> {
    const seqLen = windows[0]?.length ?? 0;
    const d = this.config.hiddenSize;
    const vocab = this.config.vocabSize;
    const hidden = await this.finalHidden(windows);
    let nll = 0;
    let predicted = 0;
    for (let w = 0; w < windows.length; w++) {
      const tokens = windows[w]!;
      for (let start = 0; start < seqLen - 1; start += chunkRows) {
        const rows = Math.min(chunkRows, seqLen - 1 - start);
        const offset = (w * seqLen + start) * d;
        const logits = await this.head(hidden.subarray(offset, offset + rows * d), rows, this.scratch('logits', rows * vocab));
        const targets = Int32Array.from(tokens.slice(start + 1, start + 1 + rows));
        const logProbs = new Float64Array(rows);
        await this.backend.tokenLogProbs(logits, targets, vocab, logProbs);
        for (const value of logProbs) nll -= value;
        predicted += rows;
      }
    }
    return { nll, predicted };
  }
}
