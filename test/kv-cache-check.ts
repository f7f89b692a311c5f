/** Incremental decoding against the full forward pass, shared by the KV-cache tests. */
import assert from 'node:assert/strict';
import { KvCache, type CausalLM } from '../src/model/causal-lm.js';

const TOLERANCE = 1e-4;

/** max |cached − full| / max |full| over one row of logits. */
function relativeDifference(cached: Float32Array, full: Float32Array): number {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < full.length; i++) {
    scale = Math.max(scale, Math.abs(full[i]!));
    const difference = Math.abs(cached[i]! - full[i]!);
    worst = Number.isFinite(difference) ? Math.max(worst, difference) : Infinity;
  }
  return worst / scale;
}

/**
 * Feeds `tokens` through a cache as a prefill of `prefill` tokens, one chunk of `chunk` tokens, then
 * single-token steps, and checks each call's logits against the full pass's row for the same position.
 */
export async function checkAgainstFullPass(model: CausalLM, tokens: number[], prefill: number, chunk: number, what: string): Promise<void> {
  const vocab = model.config.vocabSize;
  const full = await model.logits([tokens]);
  const cache = new KvCache();
  const calls = [tokens.slice(0, prefill), tokens.slice(prefill, prefill + chunk), ...tokens.slice(prefill + chunk).map((token) => [token])];
  for (const call of calls) {
    const logits = await model.forwardCached(call, cache);
    const position = cache.length - 1;
    const relative = relativeDifference(logits, full.subarray(position * vocab, (position + 1) * vocab));
    assert.ok(relative <= TOLERANCE, `${what}, position ${position} after a call of ${call.length}: relative difference ${relative.toExponential(3)}`);
  }
  assert.equal(cache.length, tokens.length);
}
