import { TopiaryError } from '../util/errors.js';

/** Rejects ids a vocabulary of `vocabSize` tokens cannot decode, with one clear message. */
export function checkTokenIds(ids: readonly number[], vocabSize: number): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new TopiaryError(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
    }
  }
}
