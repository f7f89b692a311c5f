/**
 * What a model family is: code over the shared components in ../components. A family says how to
 * read its config, how its tensors are named (Hugging Face, and GGUF where llama.cpp defines the
 * layout), which linear layers a block has and which of them share an input, and how one block
 * runs. Everything else — the embedding, the head, caching, the pruning pipeline, export — is
 * generic and reads only this interface. Adding a family is one file plus a line in ./index.ts.
 *
 * Tensors are seen in one canonical form whatever file they came from: Hugging Face names, linear
 * weights [out, in] row-major (GPT-2's Conv1D [in, out] is transposed on read and back on export),
 * q/k rows in the rotate-half RoPE layout. Pruning methods therefore see every weight alike.
 */
import type { Backend } from '../../backend/backend.js';
import type { SparseMatrix } from '../../backend/sparse.js';
import type { GgufMetadata } from '../../formats/gguf.js';
import type { SparseStorage } from '../../formats/tensors.js';
import type { ModelConfig } from '../config.js';
import type { KvCache } from '../components/kv-cache.js';
import type { RopeTable } from '../components/rope.js';

type Json = Record<string, unknown>;

/** A linear layer in canonical orientation. */
export interface Linear {
  /** [outFeatures, inFeatures] row-major. */
  weight: Float32Array;
  /**
   * The same matrix compressed (../../backend/sparse.ts), for a matrix stored sparse: the forward
   * pass multiplies by it instead of `weight`. Whoever replaces `weight` leaves it out.
   */
  sparse?: SparseMatrix;
  bias?: Float32Array;
  outFeatures: number;
  inFeatures: number;
  /**
   * Set when the model file stored this weight compressed (prune --save-format sparse, or any
   * compressed-tensors sparse folder): 'bitmask' for any sparsity, '2:4' when every group of four
   * consecutive weights in a row of `weight` holds at most two nonzeros. `weight` is dense either
   * way; a sparse kernel may build its compressed form from it.
   */
  storage?: SparseStorage;
}

/** One linear layer of a block, as the family stores it. */
export interface LinearSpec {
  /** Short name the pipeline, `--layers` and reports use: 'q', 'down', 'qkv', 'c_fc'. */
  role: string;
  /** Tensor name under the layer prefix, without `.weight`/`.bias`: 'self_attn.q_proj'. */
  name: string;
  /** Hugging Face stores it [in, out] (GPT-2's Conv1D): transposed to [out, in] on read. */
  transposed?: boolean;
}

/** One decoder block's weights: its linear layers by role, every other tensor by name under the prefix. */
export interface Block {
  linears: Record<string, Linear>;
  /** Norm weights and biases and the like, e.g. 'input_layernorm.weight'. */
  tensors: Record<string, Float32Array>;
}

/**
 * Sees the input of each group of linear layers that share it, as the forward pass reaches it:
 * `input` is [rows, cols]. Statistics for pruning are gathered here; the array is reused afterwards.
 */
export type InputObserver = (roles: readonly string[], input: Float32Array, rows: number, cols: number) => Promise<void> | void;

/** What a block's forward pass is given besides its weights and the residual stream. */
export interface BlockContext {
  backend: Backend;
  config: ModelConfig;
  /** Index of the block in the model. */
  layer: number;
  /** rows = windows · seqLen (without a cache) or seqLen (one sequence, with a cache). */
  rows: number;
  seqLen: number;
  /** Positions already in the cache; the rows sit at pastLength.. */
  pastLength: number;
  cache?: KvCache;
  observe?: InputObserver;
  /** cos/sin tables for this layer's RoPE covering every position in use (undefined without RoPE). */
  rope?: RopeTable;
  /** A reusable buffer per purpose: the forward pass would otherwise allocate tens of MB per block. */
  scratch(purpose: string, length: number): Float32Array;
}

/** The tensors of a GGUF file, by canonical name (shapes as stored, [rows, cols]). */
export interface GgufTensors {
  has(name: string): boolean;
  shape(name: string): number[];
  /** A tensor by its GGUF name, if the file has it: for tensors outside the model's weights (rope_factors_long). */
  readStored(ggufName: string): Float32Array | undefined;
}

/** How a tensor stored in another form than Hugging Face's is read back, and written. */
export interface StoredForm {
  /** Hugging Face's shape from the stored one (Mamba's conv1d: [d_inner, K] → [d_inner, 1, K]). */
  shape?(stored: number[]): number[];
  /** Hugging Face's values from the stored ones (Mamba's A = −exp(A_log) → A_log). */
  values?(stored: Float32Array): Float32Array;
  /** The inverse of `shape`, for writing. */
  storedShape?(hf: number[]): number[];
  /** The inverse of `values`, for writing. */
  storedValues?(hf: Float32Array): Float32Array;
}

/** How a family's tensors are named and laid out in GGUF files (llama.cpp's conventions). */
export interface GgufLayout {
  /** `general.architecture` values read as this family, with the model_type each becomes. */
  architectures: Record<string, { modelType: string; interleavedRope: boolean }>;
  /** GGUF block tensor names (without `blk.N.` and `.weight`) → Hugging Face names under the layer prefix. */
  layerNames: Record<string, string>;
  /**
   * Block tensors (GGUF names, as in `layerNames`) whose rows llama.cpp orders differently from
   * Hugging Face, with the conversion of [rows, cols] data to Hugging Face's order (`heads`: the
   * layer's attention heads). GPT-NeoX's fused q/k/v is [q | k | v] in GGUF, per head in HF.
   */
  rowsToHf?: Record<string, (data: Float32Array, rows: number, cols: number, heads: number) => Float32Array>;
  /** The inverse of `rowsToHf`, for writing. */
  rowsFromHf?: Record<string, (data: Float32Array, rows: number, cols: number, heads: number) => Float32Array>;
  /**
   * GGUF block tensors that fuse what Hugging Face stores separately (older Phi-2 files' attn_qkv):
   * GGUF name → the Hugging Face names under the layer prefix with their row counts, in stored
   * order, given the stored row count. Each is read as its range of rows.
   */
  fusedLayerNames?: Record<string, (storedRows: number, meta: GgufMetadata, arch: string) => { name: string; rows: number }[]>;
  /**
   * What llama.cpp's converter adds to a tensor (Hugging Face name), subtracted on read: Gemma's
   * norm weights are stored as 1 + w. Absent or 0: stored as is.
   */
  storedOffset?(name: string): number;
  /** Block tensors llama.cpp names without a `.weight` suffix (Mamba's ssm_a, ssm_d): GGUF name → the whole Hugging Face name under the layer prefix. */
  bareLayerNames?: Record<string, string>;
  /** A tensor (Hugging Face name) llama.cpp stores in another form, or undefined: how to read it back and write it. */
  storedForm?(name: string): StoredForm | undefined;
  /** The architecture has no attention (Mamba): its header states no heads and no MLP width. */
  noAttention?: boolean;
  /** The config from GGUF metadata, the tensors present being known. */
  parseConfig(meta: GgufMetadata, arch: string, modelType: string, tensors: GgufTensors, file: string): ModelConfig;
  /** How the family is written (the inverse of parseConfig); absent where llama.cpp has no architecture for it. */
  writing?: GgufWriting;
}

/** A metadata key/value for the writer, the key without the `ARCH.` prefix. */
export interface GgufArchKeyValue {
  key: string;
  type: 'u32' | 'f32' | 'bool' | 'bool[]';
  value: number | boolean | boolean[];
}

/**
 * What src/export/gguf-writer.ts needs beyond the tensor names: the architecture llama.cpp runs a
 * model of this family as, what that architecture loads, and the family's metadata.
 */
export interface GgufWriting {
  /** The `general.architecture` for a model whose blocks all have the same shapes (one of `architectures`). */
  architecture(config: ModelConfig): string;
  /** Biases of linear layers (GGUF block names, e.g. 'attn_output') the architecture loads; 'any' for all. */
  biases(config: ModelConfig): readonly string[] | 'any';
  /**
   * The architecture that takes per-layer head counts and MLP widths and every bias, for results
   * the first cannot hold (llama.cpp's `deci`, the LLaMA block with per-layer sizes). Absent: none.
   */
  unevenArchitecture?: string;
  /** Why llama.cpp would run `config` differently from Topiary, if it would; checked before any work. */
  unsupported?(config: ModelConfig): string | undefined;
  /** What the written file does differently from the model, said but not refused. */
  warnings?(config: ModelConfig): string[];
  /** Keys beyond the common ones (block count, widths, heads, RoPE base and dimensions, norm epsilon). */
  keyValues?(config: ModelConfig): GgufArchKeyValue[];
  /** Block tensors (GGUF names, as in `layerNames`) llama.cpp's kernels take only in F32 (Mamba's ssm_conv1d), kept F32 whatever --quant says. */
  fullPrecision?: readonly string[];
  /** Tensors outside the canonical ones, as llama.cpp's converter writes them (Phi-3's LongRoPE factors). */
  extraTensors?(config: ModelConfig): { name: string; data: Float32Array }[];
}

/**
 * Where a block's structural units live, by role (src/prune/structured/geometry.ts slices them).
 * An attention unit is one kv group (one head without GQA): its rows of whichever projection holds
 * q, k and v, and its columns of the output projection. An MLP unit is one channel: its rows of the
 * input projections (gate and up, the two halves of a fused gate_up, or a plain MLP's up) and its
 * column of the output projection. Biases follow their rows.
 */
export interface BlockStructure {
  attention: {
    /** Separate q, k, v projections, or one fused projection whose rows are [q | k | v] ('blocks') or [q_h | k_h | v_h] for each head h ('per-head'). */
    inputs: { q: string; k: string; v: string } | { qkv: string; layout: 'blocks' | 'per-head' };
    output: string;
    /** Why no head can be removed, when a config of the family ties the attention width to the hidden size. */
    fixedHeads?: string;
  };
  mlp: {
    /** A gated MLP (separate or fused [gate | up]) or a plain one. */
    inputs: { gate: string; up: string } | { gateUp: string } | { up: string };
    output: string;
  };
}

/**
 * The structure of a block with one fused q/k/v projection and a plain MLP (GPT-2, GPT-NeoX),
 * whose config ties the attention width to the hidden size (`fixedHeads` says how).
 */
export function fusedPlainStructure(
  attention: { qkv: string; output: string },
  mlp: { up: string; down: string },
  layout: 'blocks' | 'per-head',
  fixedHeads: string,
): BlockStructure {
  return { attention: { inputs: { qkv: attention.qkv, layout }, output: attention.output, fixedHeads }, mlp: { inputs: { up: mlp.up }, output: mlp.down } };
}

/** A block's sizes as its weights hold them. */
export interface BlockSizes {
  heads: number;
  kvHeads: number;
  /** MLP channels. */
  channels: number;
}

/**
 * A block's sizes from its linear layers' shapes ([out, in] by role), or why the shapes hold no
 * whole heads or channels (one line, without the layer).
 */
export function blockSizes(structure: BlockStructure, shape: (role: string) => readonly number[], headDim: number): BlockSizes | { problem: string } {
  const { attention, mlp } = structure;
  const attentionWidth = shape(attention.output)[1]!;
  const heads = attentionWidth / headDim;
  let kvHeads: number;
  if ('qkv' in attention.inputs) {
    const rows = shape(attention.inputs.qkv)[0]!;
    kvHeads = (rows - attentionWidth) / (2 * headDim);
    const perHead = attention.inputs.layout === 'per-head';
    if (!Number.isInteger(heads) || !(kvHeads > 0) || !Number.isInteger(kvHeads) || heads % kvHeads !== 0 || (perHead && kvHeads !== heads)) {
      return { problem: `the fused ${attention.inputs.qkv} projection has ${rows} outputs and ${attention.output} ${attentionWidth} inputs, not ${perHead ? 'three' : 'q, k and v'} sets of whole heads of ${headDim}` };
    }
  } else {
    const [q, k, v, o] = [shape(attention.inputs.q), shape(attention.inputs.k), shape(attention.inputs.v), shape(attention.output)];
    kvHeads = k[0]! / headDim;
    if (!(q[0]! % headDim === 0 && k[0]! % headDim === 0 && v[0] === k[0] && (q[0]! / headDim) % kvHeads === 0 && o[1] === q[0])) {
      return { problem: `q/k/v/o shapes [${q}] [${k}] [${v}] [${o}] do not hold whole heads of head_dim ${headDim}` };
    }
  }
  const channels = shape(mlp.output)[1]!;
  const inputs = mlp.inputs;
  const [role, rows, perChannel] = 'gateUp' in inputs ? [inputs.gateUp, shape(inputs.gateUp)[0]!, 2] : [inputs.up, shape(inputs.up)[0]!, 1];
  const gateRows = 'gate' in inputs ? shape(inputs.gate)[0]! : rows;
  if (rows !== perChannel * channels || gateRows !== rows) {
    return { problem: `the MLP's ${role} projection has ${rows} outputs for the ${channels} inputs of ${mlp.output}${perChannel === 2 ? ' (a gate and an up row per channel)' : ''}` };
  }
  return { heads, kvHeads, channels };
}

export interface Family {
  name: string;
  /** Hugging Face `model_type` values this family covers. */
  modelTypes: readonly string[];
  /** The `architectures` class name to write into an exported config.json, per model_type. */
  hfArchitectures: Readonly<Record<string, string>>;
  /** Reads a parsed config.json (the model_type already known to be one of `modelTypes`). */
  parseConfig(json: Json, file: string): ModelConfig;
  /** A complete config.json for `config` (used when the source had none, e.g. GGUF). */
  toHfConfig(config: ModelConfig): Json;

  /** Tensor names (with `.weight`) outside the blocks. */
  embedTokens: string;
  /** Learned absolute position embeddings (OPT, GPT-2). */
  positionEmbeddings?: string;
  /** The final norm's prefix ('model.norm'): `.weight` and, for LayerNorm, `.bias` (unused when config.noFinalNorm). */
  finalNorm: string;
  /** Bias-free linear layers (`.weight` names) from config.wordEmbeddingSize to hiddenSize after the embedding, and back before the head (OPT's project_in/project_out). */
  embedProjection?: string;
  headProjection?: string;
  lmHead: string;
  layerPrefix(layer: number): string;
  /**
   * A tensor name as a Hugging Face checkpoint stores it → the canonical name, for families whose
   * published checkpoints name tensors more than one way (openai-community/gpt2 drops GPT-2's
   * `transformer.` prefix), or undefined for a stored tensor the model does not use (GPT-2's
   * causal-mask buffers). Absent: stored names are canonical. Export writes canonical names.
   */
  canonicalTensorName?(storedName: string): string | undefined;

  /** Linear layers of a block, in the order the forward pass reaches them. */
  linears: readonly LinearSpec[];
  /** Roles that read the same input, in forward order: statistics are gathered once per group. */
  inputGroups: readonly (readonly string[])[];
  /** The units structured pruning removes, in terms of `linears`' roles; absent when the block has no heads or MLP channels (Mamba), and structured pruning is refused. */
  structure?: BlockStructure;

  /** Runs block `ctx.layer` on the residual stream `hidden` [rows, hiddenSize], in place. */
  forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void>;

  gguf?: GgufLayout;
}
