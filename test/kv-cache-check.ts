/** Incremental decoding against the full forward pass, shared by the KV-cache tests. */
import assert from 'node:assert/strict';
import { KvCache, type CausalLM } from '../src/model/causal-lm.js';
import { PARITY_TOLERANCE, relativeDifference } from './parity.js';

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
    assert.ok(relative <= PARITY_TOLERANCE, `${what}, position ${position} after a call of ${call.length}: relative difference ${relative.toExponential(3)}`);
  }
  assert.equal(cache.length, tokens.length);
}
