/**
 * The shape of bench/results/structured.json (written by bench/structured.ts) and its one table,
 * printed as text by the benchmark and as Markdown by bench/tables.ts.
 */
import * as path from 'node:path';
import type { PhaseTime, SpeedMeasurement, SpeedSettings, Speedups } from './engines.js';

export interface StructuredSettings {
  calibration: { corpus: string; nsamples: number; seqlen: number; seed: number };
  /** WikiText-2 test perplexity on the first windows of 128 and of 2048 tokens (0: not measured). */
  evaluation: { windows128: number; windows2048: number };
  speed: SpeedSettings;
}

/** One `topiary eval --json` result. */
export interface PerplexityCell {
  perplexity: number;
  windows: number;
  tokens: number;
  seconds: number;
  peakRssMb: number;
}

/** One file timed in both engines. */
export interface SpeedEntry extends SpeedMeasurement {
  /** Weight type of the timed GGUF file: the dense source's (e.g. Q4_1) or F32. */
  weights: string;
  bytes: number;
  speedupVsDenseF32: { topiary: Speedups; llamaCpp: Speedups };
}

export interface StructuredRow {
  /** 'dense', or the structured method. */
  method: string;
  ratio: number;
  achievedRatio: number;
  paramsBefore?: number;
  paramsAfter?: number;
  layersRemoved: number;
  /** The `topiary prune` process: its own time and peak memory, and the wall time of the whole process. */
  prune?: { seconds: number; processSeconds: number; peakRssMb: number };
  /** The model as written (the CLI's output; for dense, the source file). */
  output: { format: string; weights: string; bytes: number };
  perplexity128: PerplexityCell | null;
  perplexity2048: PerplexityCell | null;
  /** The pruned model as an F32 GGUF; the dense model both as its source file and as an F32 GGUF. */
  speed: SpeedEntry[];
  date: string;
}

export interface StructuredReport {
  benchmark: 'structured';
  model: string;
  settings: StructuredSettings;
  machine: Record<string, unknown> & { cpu: string; cores: number; backend: string };
  llamaCpp: { build: string; release: string; systemInfo: string };
  rows: StructuredRow[];
}

const CORPORA: Record<string, string> = { wikitext2: 'WikiText-2 validation', c4: 'C4 validation' };
const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const ppl = (cell: PerplexityCell | null) => (cell === null ? '—' : cell.perplexity < 1000 ? cell.perplexity.toFixed(2) : Math.round(cell.perplexity).toLocaleString('en-US'));
const FORMATS: Record<string, string> = { safetensors: 'HF safetensors', gguf: 'GGUF' };

/** Heading, header, rows and footer of the table, speeds by `clock`. */
export function structuredTable(report: StructuredReport, clock: keyof PhaseTime): { heading: string; headers: string[]; rows: string[][]; footer: string } {
  const { calibration: c, evaluation: e, speed: s } = report.settings;
  const heading =
    `Structured pruning of ${path.basename(report.model)}: calibration ${CORPORA[c.corpus] ?? c.corpus}, ${c.nsamples} × ${c.seqlen} tokens, seed ${c.seed}; ` +
    `WikiText-2 test perplexity at seqlen 128 (first ${count(e.windows128, 'window')}) and 2048 (${e.windows2048 === 0 ? 'not measured' : `first ${count(e.windows2048, 'window')}`}); ` +
    `speed: ${s.promptTokens}-token prompt, ${s.decodeTokens} greedy tokens, ${count(s.threads, 'thread')} in each engine, median of ${count(s.runs, 'run')}, ` +
    `tokens/s by ${clock === 'cpu' ? 'process CPU time (wall clock in structured.json)' : 'wall clock'}, speed-up against the dense model as F32 GGUF`;
  const headers = [
    'method', 'ratio target / achieved', 'layers removed', 'ppl@128', 'ppl@2048', 'prune s', 'peak MiB', 'output',
    'Topiary prefill / decode tok/s', 'llama.cpp prefill / decode tok/s', 'greedy agreement',
  ];
  const rate = (entry: SpeedEntry, engine: 'topiary' | 'llamaCpp') => {
    const speed = entry[engine];
    const up = entry.speedupVsDenseF32[engine];
    return `${speed.prefillTokensPerSecond[clock].toFixed(1)} (×${up.prefill[clock].toFixed(2)}) / ${speed.decodeTokensPerSecond[clock].toFixed(2)} (×${up.decode[clock].toFixed(2)})`;
  };
  const rows = report.rows.flatMap((row) =>
    row.speed.map((entry, index) => {
      const speedCells = [rate(entry, 'topiary'), rate(entry, 'llamaCpp'), `${entry.greedyAgreement}/${s.decodeTokens}`];
      // The dense model's second file: the same weights as F32 GGUF (the speed-up baseline).
      if (index > 0) return [`${row.method} as ${entry.weights} GGUF`, '', '', '', '', '', '', `GGUF ${entry.weights}, ${mib(entry.bytes)}`, ...speedCells];
      const asWritten = `${FORMATS[row.output.format] ?? row.output.format} ${row.output.weights}, ${mib(row.output.bytes)}`;
      const timedFile = row.output.format === 'gguf' && row.output.weights === entry.weights ? '' : `; timed as GGUF ${entry.weights}, ${mib(entry.bytes)}`;
      return [
        row.method,
        row.method === 'dense' ? '—' : `${row.ratio} / ${row.achievedRatio.toFixed(3)}`,
        String(row.layersRemoved),
        ppl(row.perplexity128),
        ppl(row.perplexity2048),
        row.prune ? row.prune.seconds.toFixed(0) : '',
        row.prune ? String(row.prune.peakRssMb) : '',
        asWritten + timedFile,
        ...speedCells,
      ];
    }),
  );
  const loads = report.rows.flatMap((row) => row.speed.flatMap((entry) => [entry.loadAverage1min.before, entry.loadAverage1min.after]));
  const footer =
    `(${report.machine.cpu}, ${report.machine.cores} cores; every process ${report.settings.speed.threads} thread(s); ` +
    `${String(report.machine.backend).replace(/^native, \d+ threads?, /, '')}; ` +
    `llama.cpp ${report.llamaCpp.release} ${report.llamaCpp.build} via node-llama-cpp; ` +
    `load average ${loads.length > 0 ? `${Math.min(...loads)}–${Math.max(...loads)}` : '—'} during the speed runs)`;
  return { heading, headers, rows, footer };
}
