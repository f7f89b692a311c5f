/**
 * Calibration windows drawn as the papers' loaders draw them (Wanda/SparseGPT `get_c4`): pick a
 * random document with more tokens than the window, then a random window inside it. Seeded, so
 * the same settings give the same windows.
 */
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { createRng } from '../util/random.js';
import { UsageError } from '../util/errors.js';
import { readTextFile } from '../util/safe-fs.js';
import { c4Documents, describeCorpus, wikitext2Text, type CorpusSpec } from './corpora.js';

export interface CalibrationSettings {
  corpus: CorpusSpec;
  nsamples: number;
  seqlen: number;
  seed: number;
}

export interface CalibrationSet {
  windows: number[][];
  /** How the windows were drawn, for the report (e.g. documents too short were joined with EOS). */
  notes: string[];
  /** Tokens available in the corpus, and how many documents were long enough. */
  corpusTokens: number;
  longDocuments: number;
  documents: number;
}

function randomWindow(tokens: readonly number[], seqlen: number, rng: ReturnType<typeof createRng>): number[] {
  const start = rng.int(tokens.length - seqlen);
  return tokens.slice(start, start + seqlen);
}

/**
 * Draws `nsamples` windows of `seqlen` tokens. For a corpus of documents (C4): documents longer
 * than the window are drawn at random, as the papers do; if fewer than `nsamples` documents are
 * long enough, all documents are joined with the EOS token into one stream and windows are cut
 * from it (the report says so). WikiText-2 (validation split — the train split is not in the data
 * folder) and text files are one stream.
 */
export function drawCalibration(tokenizer: Tokenizer, settings: CalibrationSettings, dataDir: string): CalibrationSet {
  const { nsamples, seqlen, seed, corpus } = settings;
  if (!Number.isInteger(nsamples) || nsamples < 1) throw new UsageError(`--nsamples must be a positive integer, got ${nsamples}`);
  const rng = createRng(seed);
  const notes: string[] = [];
  const documents =
    corpus.kind === 'c4'
      ? c4Documents(dataDir)
      : [corpus.kind === 'wikitext2' ? wikitext2Text(dataDir, 'valid') : readTextFile(corpus.file)];
  if (corpus.kind === 'wikitext2') notes.push('WikiText-2 validation split (the train split is not in the data folder)');

  const encoded = documents.map((text) => tokenizer.encode(text));
  const corpusTokens = encoded.reduce((sum, tokens) => sum + tokens.length, 0);
  const long = encoded.filter((tokens) => tokens.length > seqlen);
  const windows: number[][] = [];
  if (long.length >= Math.min(nsamples, documents.length) && long.length > 0) {
    for (let i = 0; i < nsamples; i++) windows.push(randomWindow(long[rng.int(long.length)]!, seqlen, rng));
  } else {
    const eos = tokenizer.eosId;
    const stream: number[] = [];
    encoded.forEach((tokens, i) => {
      if (i > 0 && eos !== undefined) stream.push(eos);
      for (const t of tokens) stream.push(t);
    });
    if (stream.length <= seqlen) {
      throw new UsageError(`${describeCorpus(corpus)} has only ${stream.length} tokens, not enough for one calibration window of ${seqlen}`);
    }
    if (documents.length > 1) {
      notes.push(
        `only ${long.length} of ${documents.length} documents are longer than ${seqlen} tokens: ` +
          `documents were joined with the EOS token and windows cut from the joined stream`,
      );
    }
    for (let i = 0; i < nsamples; i++) windows.push(randomWindow(stream, seqlen, rng));
  }
  return { windows, notes, corpusTokens, longDocuments: long.length, documents: documents.length };
}

/** What topiary.json records about the calibration set. */
export function describeCalibration(calibration: CalibrationSet): Record<string, unknown> {
  return {
    windows: calibration.windows.length,
    notes: calibration.notes,
    documents: calibration.documents,
    documentsLongerThanWindow: calibration.longDocuments,
    corpusTokens: calibration.corpusTokens,
  };
}
