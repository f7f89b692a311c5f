/**
 * Markdown tables for the README, made from the JSON the benchmarks wrote (so the README's
 * figures are the benchmarks' figures). Prints whichever results exist.
 *
 *   node --import tsx bench/tables.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../src/data/datadir.js';
import { structuredTable, type StructuredReport } from './structured-report.js';

const results = path.join(packageRoot(), 'bench', 'results');
const read = (name: string): any => {
  const file = path.join(results, name);
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
};
const table = (headers: string[], rows: (string | number)[][]) =>
  [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');

/** Quality rows grouped by target (dense first), methods in the order of the README's prose, permuted after plain. */
const TARGET_ORDER = ['-', '0.5', '2:4', '4:8'];
const METHOD_ORDER = ['dense', 'magnitude', 'wanda', 'ria', 'sparsegpt', 'apt'];
const rank = (order: string[], value: string) => (order.includes(value) ? order.indexOf(value) : order.length);
const byTargetThenMethod = (a: any, b: any) =>
  rank(TARGET_ORDER, a.target) - rank(TARGET_ORDER, b.target) || rank(METHOD_ORDER, a.method) - rank(METHOD_ORDER, b.method) || Number(a.permute) - Number(b.permute);

for (const file of fs.existsSync(results) ? fs.readdirSync(results).filter((f) => f.startsWith('quality-')).sort() : []) {
  const quality = read(file);
  const s = quality.settings;
  const dense = quality.rows.find((row: any) => row.method === 'dense');
  console.log(`### ${quality.label}: ${s.calib.toUpperCase()} calibration, ${s.nsamples} windows × ${s.calibSeqlen} tokens, seed ${s.seed}; WikiText-2 test, seqlen ${s.evalSeqlen}, ${s.evalWindows >= 1000 ? 'all' : `first ${s.evalWindows}`} windows\n`);
  console.log(
    table(
      ['method', 'target', 'permute', 'perplexity', 'vs dense', 'prune time', 'peak memory', 'kept score gained by permutation'],
      [...quality.rows].sort(byTargetThenMethod).map((row: any) => [
        row.method,
        row.target,
        row.permute ? 'yes' : '',
        row.perplexity.toFixed(2),
        row.method === 'dense' ? '' : `×${(row.perplexity / dense.perplexity).toFixed(2)}`,
        row.pruneSeconds === undefined ? '' : `${row.pruneSeconds.toFixed(0)} s`,
        row.peakRssMb === undefined ? '' : `${row.peakRssMb} MiB`,
        row.keptScoreGainPercent === undefined ? '' : `+${row.keptScoreGainPercent.toFixed(2)}%`,
      ]),
    ),
  );
  console.log(`\n(${quality.machine.cpu}, ${quality.machine.cores} cores, ${quality.machine.backend}; load average ${quality.machine.loadAverage1min} when written)\n`);
}

const prefill = read('prefill.json');
if (prefill) {
  console.log(`### Prefill, ${path.basename(prefill.model)}, one window of ${prefill.seqlen} tokens, fp32\n`);
  console.log(
    table(
      ['engine', 'tokens/s', 'median s', 'threads, BLAS'],
      [
        ['Topiary', prefill.topiary.tokensPerSecond, [...prefill.topiary.runSeconds].sort((a: number, b: number) => a - b)[Math.floor(prefill.topiary.runSeconds.length / 2)].toFixed(2), prefill.machine.backend],
        ['PyTorch (transformers)', prefill.pytorch.tokens_per_second, prefill.pytorch.median_seconds, `${prefill.pytorch.torch_threads} threads, ${prefill.pytorch.blas}, torch ${prefill.pytorch.torch_version}`],
      ],
    ),
  );
  console.log(`\nTopiary / PyTorch: ×${prefill.speedup}; \`topiary eval\` (2 windows of ${prefill.seqlen}) peak memory ${prefill.eval.peakRssMb} MiB; load average ${prefill.machine.loadAverage1min}\n`);
}

const gemm = read('gemm.json');
if (gemm) {
  console.log(`### Backend throughput (${gemm.backend.threads} threads, ${gemm.backend.library}; load average ${gemm.loadAverageBefore})\n`);
  console.log(table(['operation', 'shape', 'dtype', 'GFLOP/s'], gemm.results.map((m: any) => [m.operation, m.shape, m.dtype, m.gflops.toFixed(0)])));
  console.log('');
}

for (const file of fs.existsSync(results) ? fs.readdirSync(results).filter((f) => /^prune.*\.json$/.test(f)).sort() : []) {
  const prune = read(file);
  const c = prune.calibration;
  console.log(
    `### ${file}: ${path.basename(prune.model)}, ${c.corpus.toUpperCase()} ${c.nsamples} × ${c.seqlen}, seed ${c.seed}, ${prune.threads} thread(s) each; ` +
      `WikiText-2 seqlen ${prune.evaluation.seqlen} × ${prune.evaluation.maxWindows} windows (dense ${prune.evaluation.densePerplexity.toFixed(2)})\n`,
  );
  console.log(
    table(
      ['method', 'target', 'Topiary s', 'PyTorch s', 'PyTorch / Topiary time', 'Topiary ppl', 'PyTorch ppl', 'ppl difference', 'peak MiB Topiary / PyTorch'],
      [
        ...prune.compared.map((row: any) => [
          row.method,
          row.target,
          row.topiary.seconds.toFixed(1),
          row.pytorch.seconds.toFixed(1),
          `×${(row.pytorch.seconds / row.topiary.seconds).toFixed(2)}`,
          row.topiary.perplexity.toFixed(3),
          row.pytorch.perplexity.toFixed(3),
          `${(100 * (row.topiary.perplexity / row.pytorch.perplexity - 1)).toFixed(2)}%`,
          `${row.topiary.peakRssMb} / ${row.pytorch.peakRssMb}`,
        ]),
        ...(prune.topiaryOnly ?? []).map((row: any) => [row.method, row.target, row.topiary.seconds.toFixed(1), '–', '–', row.topiary.perplexity.toFixed(3), '–', '–', `${row.topiary.peakRssMb} / –`]),
      ],
    ),
  );
  console.log(`\n(load average ${prune.machine.loadAverage1min} → ${prune.loadAverage1minAtEnd}; PyTorch with OMP_WAIT_POLICY=${prune.torchOmpWaitPolicy})\n`);
}

const structured = read('structured.json') as StructuredReport | undefined;
if (structured) {
  const { heading, headers, rows, footer } = structuredTable(structured, 'cpu');
  console.log(`### ${heading}\n`);
  console.log(table(headers, rows));
  console.log(`\n${footer}\n`);
}
