/**
 * One pre-norm decoder for every architecture described in ./architectures: RMSNorm, RoPE,
 * grouped-query causal attention, SwiGLU MLP, optional biases, tied or untied head. Per-layer
 * sizes come from the weights, so layers may differ (structured pruning).
 *
 * Hidden states are [rows, hidden] row-major where rows = windows × seqLen: a batch of equal-length
 * token windows, each attending only within itself. The pruning pipeline calls `embed`,
 * `runLayer` and `head` directly; `logits` and `windowNll` chain them for evaluation, and
 * `forwardCached` extends one sequence held in a `KvCache` (generation).
 */
import type { Backend } from '../backend/backend.js';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { TopiaryError } from '../util/errors.js';
import { INPUT_GROUPS, LINEAR_ROLES, type ArchitectureSpec, type LinearRole } from './architectures/index.js';
import type { ModelConfig } from './config.js';
import { applyRope, inverseFrequencies, ropeTable, type RopeTable } from './rope.js';
import type { ModelSource } from './sources.js';

export interface Linear {
  /** [outFeatures, inFeatures] row-major. */
  weight: Float32Array;
  bias?: Float32Array;
  outFeatures: number;
  inFeatures: number;
}

export interface DecoderLayer {
  attentionNorm: Float32Array;
  mlpNorm: Float32Array;
  linears: Record<LinearRole, Linear>;
}

/**
 * Sees the input of each group of linear layers that share it (q/k/v, o, gate/up, down), as the
 * forward pass reaches it: `input` is [rows, cols]. Statistics for pruning are gathered here.
 */
export type InputObserver = (roles: readonly LinearRole[], input: Float32Array, rows: number, cols: number) => Promise<void> | void;

function addBias(y: Float32Array, rows: number, bias: Float32Array): void {
  const cols = bias.length;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) y[base + c] += bias[c]!;
  }
}

/**
 * The keys (after RoPE) and values every layer has computed for one sequence, so that each new
 * token costs one row of work instead of a rerun of the whole prefix. Layers may have different
 * key/value widths (structured pruning). Buffers grow by doubling.
 */
export class KvCache {
  private cachedPositions = 0;
  private readonly keys: Float32Array[] = [];
  private readonly values: Float32Array[] = [];

  /** Positions held: the position of the next token. */
  get length(): number {
    return this.cachedPositions;
  }

  /**
   * Stores layer `layer`'s keys and values [rows, width] for positions length..length+rows−1 and
   * returns the layer's keys and values for positions 0..length+rows−1.
   */
  append(layer: number, k: Float32Array, v: Float32Array, rows: number, width: number): { keys: Float32Array; values: Float32Array } {
    const start = this.cachedPositions * width;
    const end = start + rows * width;
    if ((this.keys[layer]?.length ?? 0) < end) {
      const capacity = Math.max(end, 2 * (this.keys[layer]?.length ?? 0), 64 * width);
      for (const buffers of [this.keys, this.values]) {
        const grown = new Float32Array(capacity);
        if (buffers[layer]) grown.set(buffers[layer].subarray(0, start));
        buffers[layer] = grown;
      }
    }
    const keys = this.keys[layer]!;
    const values = this.values[layer]!;
    keys.set(k.subarray(0, rows * width), start);
    values.set(v.subarray(0, rows * width), start);
    return { keys: keys.subarray(0, end), values: values.subarray(0, end) };
  }

  /** Marks `rows` more positions as held, once every layer has appended them. */
  advance(rows: number): void {
    this.cachedPositions += rows;
  }
}

export class CausalLM {
  readonly config: ModelConfig;
  private readonly layers: (DecoderLayer | undefined)[];
  private embedding?: Float32Array;
  private finalNorm?: Float32Array;
  private readonly invFreq: Float32Array;
  private rope?: RopeTable;

  constructor(
    readonly source: ModelSource,
    readonly spec: ArchitectureSpec,
    readonly backend: Backend,
  ) {
    this.config = source.config;
    this.layers = new Array<DecoderLayer | undefined>(this.config.numLayers).fill(undefined);
    this.invFreq = inverseFrequencies(this.config);
  }

  get tokenizer(): Tokenizer {
    const tokenizer = this.source.tokenizer;
    if ('missing' in tokenizer) throw new TopiaryError(`no tokenizer: ${tokenizer.missing}`, this.source.path);
    return tokenizer;
  }

  get numLayers(): number {
    return this.layers.length;
  }

  /** Canonical name of a linear layer, e.g. 'model.layers.3.mlp.down_proj'. */
  linearName(layer: number, role: LinearRole): string {
    return `${this.spec.layerPrefix(layer)}${this.spec.linears[role]}`;
  }

  private readTensor(name: string, expectedShape?: number[]): Float32Array {
    const shape = this.source.shape(name);
    if (expectedShape && (shape.length !== expectedShape.length || shape.some((d, i) => d !== expectedShape[i]))) {
      throw new TopiaryError(`tensor "${name}" has shape [${shape}], expected [${expectedShape}]`, this.source.path);
    }
    return this.source.read(name);
  }

  /** Reads one decoder layer's weights from the source (they stay cached until released). */
  layer(index: number): DecoderLayer {
    const cached = this.layers[index];
    if (cached) return cached;
    const { hiddenSize, headDim } = this.config;
    const prefix = this.spec.layerPrefix(index);
    const linears = {} as Record<LinearRole, Linear>;
    for (const role of LINEAR_ROLES) {
      const name = `${prefix}${this.spec.linears[role]}`;
      const shape = this.source.shape(`${name}.weight`);
      if (shape.length !== 2) throw new TopiaryError(`tensor "${name}.weight" should be 2-D, has shape [${shape}]`, this.source.path);
      const [outFeatures, inFeatures] = shape as [number, number];
      const biasName = `${name}.bias`;
      linears[role] = {
        weight: this.readTensor(`${name}.weight`),
        outFeatures,
        inFeatures,
        ...(this.source.has(biasName) ? { bias: this.readTensor(biasName, [outFeatures]) } : {}),
      };
    }
    const { q, k, v, o, gate, up, down } = linears;
    const consistent =
      q.inFeatures === hiddenSize && k.inFeatures === hiddenSize && v.inFeatures === hiddenSize &&
      q.outFeatures % headDim === 0 && k.outFeatures % headDim === 0 && v.outFeatures === k.outFeatures &&
      (q.outFeatures / headDim) % (k.outFeatures / headDim) === 0 &&
      o.inFeatures === q.outFeatures && o.outFeatures === hiddenSize &&
      gate.inFeatures === hiddenSize && up.inFeatures === hiddenSize && up.outFeatures === gate.outFeatures &&
      down.inFeatures === gate.outFeatures && down.outFeatures === hiddenSize;
    if (!consistent) {
      throw new TopiaryError(`layer ${index} has inconsistent projection shapes for hidden size ${hiddenSize} and head_dim ${headDim}`, this.source.path);
    }
    const layer: DecoderLayer = {
      attentionNorm: this.readTensor(`${prefix}${this.spec.attentionNorm}.weight`, [hiddenSize]),
      mlpNorm: this.readTensor(`${prefix}${this.spec.mlpNorm}.weight`, [hiddenSize]),
      linears,
    };
    this.layers[index] = layer;
    return layer;
  }

  /** Replaces a layer's weights (after pruning). */
  setLayer(index: number, layer: DecoderLayer): void {
    this.layers[index] = layer;
  }

  /** Drops a cached layer so memory holds only the layers in use. */
  releaseLayer(index: number): void {
    this.layers[index] = undefined;
  }

  private embeddingMatrix(): Float32Array {
    this.embedding ??= this.readTensor(`${this.spec.embedTokens}.weight`, [this.config.vocabSize, this.config.hiddenSize]);
    return this.embedding;
  }

  /** A table covering positions 0..positions−1, grown by doubling so decoding rebuilds it rarely. */
  private ropeFor(positions: number): RopeTable {
    if (!this.rope || this.rope.seqLen < positions) this.rope = ropeTable(this.invFreq, Math.max(positions, 2 * (this.rope?.seqLen ?? 0)));
    return this.rope;
  }

  /** Hidden states of layer 0 for equal-length token windows: [windows·seqLen, hidden]. */
  embed(windows: readonly (readonly number[])[]): Float32Array {
    const d = this.config.hiddenSize;
    const table = this.embeddingMatrix();
    const seqLen = windows[0]?.length ?? 0;
    const out = new Float32Array(windows.length * seqLen * d);
    windows.forEach((tokens, w) => {
      if (tokens.length !== seqLen) throw new TopiaryError('all windows in a batch must have the same length');
      tokens.forEach((token, t) => {
        if (!Number.isInteger(token) || token < 0 || token >= this.config.vocabSize) {
          throw new TopiaryError(`token id ${token} is outside the vocabulary (size ${this.config.vocabSize})`);
        }
        out.set(table.subarray(token * d, (token + 1) * d), (w * seqLen + t) * d);
      });
    });
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

  private async linear(x: Float32Array, rows: number, lin: Linear, purpose: string): Promise<Float32Array> {
    const y = this.scratch(purpose, rows * lin.outFeatures);
    await this.backend.gemm(x, lin.weight, y, { m: rows, n: lin.outFeatures, k: lin.inFeatures, transB: true });
    if (lin.bias) addBias(y, rows, lin.bias);
    return y;
  }

  /**
   * Runs decoder layer `index` on hidden states [windows·seqLen, hidden], updating them in place
   * (the residual stream) and returning them. `observe` sees each linear group's input; the
   * arrays it is given are reused afterwards, so it must not keep them. With a `cache` the rows
   * are one window at positions cache.length.., attending to the cached keys too; their keys and
   * values are appended to the cache (the caller advances it after the last layer).
   */
  async runLayer(index: number, hidden: Float32Array, seqLen: number, observe?: InputObserver, cache?: KvCache): Promise<Float32Array> {
    const { hiddenSize: d, headDim, rmsNormEps } = this.config;
    const rows = hidden.length / d;
    const layer = this.layer(index);
    const { q: qProj, k: kProj, v: vProj, o: oProj, gate, up, down } = layer.linears;
    const numHeads = qProj.outFeatures / headDim;
    const numKvHeads = kProj.outFeatures / headDim;
    if (cache && rows !== seqLen) throw new TopiaryError('a KV cache holds one sequence: run one window at a time');
    const [qkvGroup, oGroup, gateUpGroup, downGroup] = INPUT_GROUPS as [LinearRole[], LinearRole[], LinearRole[], LinearRole[]];

    const normed = this.scratch('normed', rows * d);
    await this.backend.rmsNorm(hidden, layer.attentionNorm, rmsNormEps, normed);
    await observe?.(qkvGroup, normed, rows, d);
    const q = await this.linear(normed, rows, qProj, 'q');
    const k = await this.linear(normed, rows, kProj, 'k');
    const v = await this.linear(normed, rows, vProj, 'v');
    const pastLength = cache?.length ?? 0;
    const rope = this.ropeFor(pastLength + seqLen);
    applyRope(q, rows, numHeads, headDim, rope, seqLen, pastLength);
    applyRope(k, rows, numKvHeads, headDim, rope, seqLen, pastLength);
    const { keys, values } = cache ? cache.append(index, k, v, rows, kProj.outFeatures) : { keys: k, values: v };
    const attention = this.scratch('attention', rows * numHeads * headDim);
    await this.backend.causalAttention(q, keys, values, attention, {
      windows: rows / seqLen,
      seqLen,
      pastLength,
      numHeads,
      numKvHeads,
      headDim,
      scale: 1 / Math.sqrt(headDim),
    });
    await observe?.(oGroup, attention, rows, oProj.inFeatures);
    const attentionOut = await this.linear(attention, rows, oProj, 'residual');
    for (let i = 0; i < hidden.length; i++) hidden[i] += attentionOut[i]!;

    await this.backend.rmsNorm(hidden, layer.mlpNorm, rmsNormEps, normed);
    await observe?.(gateUpGroup, normed, rows, d);
    const gated = await this.linear(normed, rows, gate, 'gate');
    const upOut = await this.linear(normed, rows, up, 'up');
    await this.backend.swiglu(gated, upOut, gated);
    await observe?.(downGroup, gated, rows, down.inFeatures);
    const mlpOut = await this.linear(gated, rows, down, 'residual');
    for (let i = 0; i < hidden.length; i++) hidden[i] += mlpOut[i]!;
    return hidden;
  }

  private headMatrix(): Float32Array {
    const name = `${this.spec.lmHead}.weight`;
    if (this.config.tieWordEmbeddings || !this.source.has(name)) return this.embeddingMatrix();
    this.headWeight ??= this.readTensor(name, [this.config.vocabSize, this.config.hiddenSize]);
    return this.headWeight;
  }
  private headWeight?: Float32Array;

  /** Final norm and LM head on `rows` hidden states (a slice of the stream): logits [rows, vocab]. */
  async head(hidden: Float32Array, rows: number): Promise<Float32Array> {
    const { hiddenSize: d, vocabSize, rmsNormEps } = this.config;
    this.finalNorm ??= this.readTensor(`${this.spec.finalNorm}.weight`, [d]);
    const normed = new Float32Array(rows * d);
    await this.backend.rmsNorm(hidden.subarray(0, rows * d), this.finalNorm, rmsNormEps, normed);
    const logits = new Float32Array(rows * vocabSize);
    await this.backend.gemm(normed, this.headMatrix(), logits, { m: rows, n: vocabSize, k: d, transB: true });
    return logits;
  }

  /** Hidden states after the last layer for a batch of equal-length windows. */
  async finalHidden(windows: readonly (readonly number[])[]): Promise<Float32Array> {
    const seqLen = windows[0]?.length ?? 0;
    const hidden = this.embed(windows);
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
    const hidden = this.embed([tokens]);
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
        const logits = await this.head(hidden.subarray(offset, offset + rows * d), rows);
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
