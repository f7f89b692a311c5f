/**
 * The keys (after RoPE) and values every layer has computed for one sequence, so that each new
 * token costs one row of work instead of a rerun of the whole prefix. Layers may have different
 * key/value widths (structured pruning). Buffers grow by doubling. Recurrent blocks (Mamba) keep
 * a fixed-size state per layer here instead (`recurrentState`).
 */
export class KvCache {
  private cachedPositions = 0;
  private readonly keys: Float32Array[] = [];
  private readonly values: Float32Array[] = [];
  private readonly recurrent: unknown[] = [];

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

  /**
   * Layer `layer`'s recurrent state, made by `create` on the layer's first call: the block reads it
   * and updates it in place for the positions it runs (the caller still advances the length).
   */
  recurrentState<State>(layer: number, create: () => State): State {
    return (this.recurrent[layer] ??= create()) as State;
  }
}
