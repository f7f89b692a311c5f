/**
 * Calibration windows drawn as the papers' loaders draw them (Wanda/SparseGPT `get_c4`): pick a
 * random document with more tokens than the window, then a random window inside it. Seeded, so
 * the same settings give the same windows.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import type { Tokenizer } from '../tokenizers/tokenizer.js';
import { createRng } from '../util/random.js';
import { UsageError } from '../util/errors.js';
import { readTextFile } from '../util/safe-fs.js';
import { c4Documents, describeCorpus, parseCorpusSpec, wikitext2Text, type CorpusSpec } from './corpora.js';
import { readTokenWindows, writeTokenWindows } from './token-windows.js';

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

/**
 * Refuses calibration sets that cannot fit before any work starts: pruning keeps every window's
 * activations (`nsamples × seqlen × hidden` fp32 values, twice where a method compares dense and
 * pruned outputs) and the windows' token ids on the JavaScript heap. A request beyond the
 * machine's memory would otherwise end in a heap abort long after it began.
 */
export function checkCalibrationFits(nsamples: number, seqlen: number, hiddenSize: number): void {
  const activationBytes = 2 * nsamples * seqlen * hiddenSize * 4;
  const memory = Math.min(os.totalmem(), process.constrainedMemory?.() || Infinity);
  if (activationBytes > memory) {
    throw new UsageError(
      `--nsamples ${nsamples} × --seqlen ${seqlen} needs about ${gib(activationBytes)} GiB of activations (hidden size ${hiddenSize}), ` +
        `more than this machine's ${gib(memory)} GiB: use fewer samples`,
    );
  }
  // Token ids are kept as JavaScript numbers (8 bytes); V8 aborts the process beyond its heap limit.
  const tokenBytes = nsamples * seqlen * 8;
  const heapLimit = v8.getHeapStatistics().heap_size_limit;
  if (tokenBytes > heapLimit / 2) {
    throw new UsageError(`--nsamples ${nsamples} × --seqlen ${seqlen} tokens do not fit in the ${gib(heapLimit)} GiB JavaScript heap: use fewer samples`);
  }
}

const gib = (bytes: number): string => (bytes / 2 ** 30).toFixed(1);

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

/** `--calib`: a corpus to draw windows from, or `tokens:FILE`, windows saved earlier (./token-windows.ts). */
export type CalibrationSource = { kind: 'corpus'; corpus: CorpusSpec } | { kind: 'tokens'; file: string };

export function parseCalibrationSource(spec: string): CalibrationSource {
  if (spec.startsWith('tokens:')) {
    if (spec.length === 7) throw new UsageError('--calib tokens:FILE needs a file (.json or .npy)');
    return { kind: 'tokens', file: spec.slice(7) };
  }
  try {
    return { kind: 'corpus', corpus: parseCorpusSpec(spec) };
  } catch {
    throw new UsageError(`unknown calibration source "${spec}" (expected c4, wikitext2, text:FILE or tokens:FILE)`);
  }
}

/** What a prune run asks for: unset fields take the defaults (c4, 128 windows, the model's context up to 2048). */
export interface CalibrationRequest {
  corpus?: string;
  nsamples?: number;
  seqlen?: number;
  seed: number;
  /** Also write the windows used to this file (.npy or JSON). */
  save?: string;
}

/** The model facts calibration needs; the tokenizer is asked for only when text must be tokenized. */
export interface CalibrationModel {
  tokenizer(): Tokenizer;
  vocabSize: number;
  maxPositions: number;
  hiddenSize: number;
}

export interface PreparedCalibration {
  windows: number[][];
  /** The settings as run: what topiary.json records and the checkpoint fingerprint covers. */
  settings: Record<string, unknown>;
  /** What topiary.json records about the windows. */
  description: Record<string, unknown>;
  notes: string[];
}

export const DEFAULT_CALIBRATION = { corpus: 'c4', nsamples: 128 } as const;

/**
 * The calibration windows of a run, from a corpus or a tokens file, checked against the model
 * before any pruning; saved to `request.save` when asked. `dataDir` is resolved only when a
 * corpus in the data folder is read.
 */
export function prepareCalibration(model: CalibrationModel, request: CalibrationRequest, dataDir: () => string): PreparedCalibration {
  const source = parseCalibrationSource(request.corpus ?? DEFAULT_CALIBRATION.corpus);
  const checkSeqlen = (seqlen: number) => {
    if (seqlen > model.maxPositions) throw new UsageError(`--seqlen ${seqlen} exceeds the model's context (${model.maxPositions})`);
  };
  let prepared: PreparedCalibration;
  if (source.kind === 'tokens') {
    const loaded = readTokenWindows(source.file, model.vocabSize);
    const nsamples = loaded.windows.length;
    const seqlen = loaded.windows[0]!.length;
    if (request.nsamples !== undefined && request.nsamples !== nsamples) throw new UsageError(`--nsamples ${request.nsamples} contradicts ${source.file}, which holds ${nsamples} windows`);
    if (request.seqlen !== undefined && request.seqlen !== seqlen) throw new UsageError(`--seqlen ${request.seqlen} contradicts ${source.file}, whose windows are ${seqlen} tokens`);
    checkSeqlen(seqlen);
    checkCalibrationFits(nsamples, seqlen, model.hiddenSize);
    const { tokenizer } = loaded.provenance;
    const notes = tokenizer && tokenizer.vocabSize !== model.vocabSize ? [`the windows were made with a tokenizer of ${tokenizer.vocabSize} tokens (${tokenizer.source}); this model has ${model.vocabSize}`] : [];
    prepared = {
      windows: loaded.windows,
      settings: { corpus: `tokens:${path.resolve(source.file)}`, nsamples, seqlen, sha256: loaded.sha256 },
      description: { windows: nsamples, notes, sha256: loaded.sha256, ...(Object.keys(loaded.provenance).length > 0 ? { savedFrom: loaded.provenance } : {}) },
      notes,
    };
    if (request.save) writeTokenWindows(request.save, loaded.windows, loaded.provenance);
  } else {
    const nsamples = request.nsamples ?? DEFAULT_CALIBRATION.nsamples;
    const seqlen = request.seqlen ?? Math.min(2048, model.maxPositions);
    checkSeqlen(seqlen);
    checkCalibrationFits(nsamples, seqlen, model.hiddenSize);
    const corpus = describeCorpus(source.corpus);
    const settings = { corpus, nsamples, seqlen, seed: request.seed };
    const tokenizer = model.tokenizer();
    const drawn = drawCalibration(tokenizer, { ...settings, corpus: source.corpus }, source.corpus.kind === 'text' ? '' : dataDir());
    prepared = { windows: drawn.windows, settings, description: describeCalibration(drawn), notes: drawn.notes };
    if (request.save) writeTokenWindows(request.save, drawn.windows, { tokenizer: { source: tokenizer.source, vocabSize: model.vocabSize }, corpus, seed: request.seed });
  }
  if (request.save) prepared.description.savedTo = path.resolve(request.save);
  return prepared;
}
