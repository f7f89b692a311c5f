/**
 * Text corpora as the papers' loaders see them. A corpus spec on the command line is
 * `wikitext2`, `c4`, or `text:FILE`.
 */
import { TopiaryError, UsageError } from '../util/errors.js';
import { describeJsonError, readTextFile } from '../util/safe-fs.js';
import { dataFile } from './datadir.js';

export type CorpusSpec = { kind: 'wikitext2' } | { kind: 'c4' } | { kind: 'text'; file: string };

export function parseCorpusSpec(spec: string): CorpusSpec {
  if (spec === 'wikitext2' || spec === 'c4') return { kind: spec };
  if (spec.startsWith('text:') && spec.length > 5) return { kind: 'text', file: spec.slice(5) };
  throw new UsageError(`unknown dataset "${spec}" (expected wikitext2, c4 or text:FILE)`);
}

export function describeCorpus(spec: CorpusSpec): string {
  return spec.kind === 'text' ? `text:${spec.file}` : spec.kind;
}

/**
 * WikiText-2 rebuilt as Hugging Face's `wikitext-2-raw-v1` rows joined with "\n\n": each line of
 * the raw file is a row keeping its "\n", blank lines (" \n") are empty rows.
 */
export function wikitext2Text(dataDir: string, split: 'test' | 'valid'): string {
  const raw = readTextFile(dataFile(dataDir, 'wikitext2', `wiki.${split}.raw`));
  const lines = raw.split(/(?<=\n)/);
  return lines.map((line) => (line === ' \n' ? '' : line)).join('\n\n');
}

/** The C4 validation documents (jsonl, one {"text": ...} per line). */
export function c4Documents(dataDir: string): string[] {
  const file = dataFile(dataDir, 'c4', 'c4_validation_2k.jsonl');
  const lines = readTextFile(file).split('\n').filter((line) => line.trim() !== '');
  return lines.map((line, i) => {
    let doc: { text?: unknown };
    try {
      doc = JSON.parse(line) as { text?: unknown };
    } catch (error) {
      throw new TopiaryError(`line ${i + 1}: ${describeJsonError(error)}`, file);
    }
    if (typeof doc?.text !== 'string') throw new TopiaryError(`line ${i + 1}: no "text" string`, file);
    return doc.text;
  });
}

/**
 * Evaluation text of a corpus: WikiText-2 test; for C4, the first 1,100 validation documents
 * joined with spaces (SparseGPT's and Wanda's loader); a text file as it is.
 */
export function evaluationText(spec: CorpusSpec, dataDir: string): string {
  switch (spec.kind) {
    case 'wikitext2':
      return wikitext2Text(dataDir, 'test');
    case 'c4':
      return c4Documents(dataDir).slice(0, 1100).join(' ');
    case 'text':
      return readTextFile(spec.file);
  }
}

/** SparseGPT's and Wanda's C4 evaluation stops after 256 windows; other corpora are used whole. */
export function defaultEvaluationWindows(spec: CorpusSpec): number | undefined {
  return spec.kind === 'c4' ? 256 : undefined;
}
