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
import type { GgufMetadata } from '../../formats/gguf.js';
import type { ModelConfig } from '../config.js';
import type { KvCache } from '../components/kv-cache.js';
import type { RopeTable } from '../components/rope.js';

type Json = Record<string, unknown>;

/** A linear layer in canonical orientation. */
export interface Linear {
  /** [outFeatures, inFeatures] row-major. */
  weight: Float32Array;
  bias?: Float32Array;
  outFeatures: number;
  inFeatures: number;
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
  /** Tensors outside the canonical ones, as llama.cpp's converter writes them (Phi-3's LongRoPE factors). */
  extraTensors?(config: ModelConfig): { name: string; data: Float32Array }[];
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

  /** Runs block `ctx.layer` on the residual stream `hidden` [rows, hiddenSize], in place. */
  forward(block: Block, hidden: Float32Array, ctx: BlockContext): Promise<void>;

  gguf?: GgufLayout;
}
