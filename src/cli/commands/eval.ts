import { describeBackend } from '../../backend/index.js';
import { describeCorpus, parseCorpusSpec } from '../../data/corpora.js';
import { resolveDataDir } from '../../data/datadir.js';
import { datasetPerplexity } from '../../eval/perplexity.js';
import { loadModel } from '../../model/load.js';
import { writeFileContentAtomic } from '../../util/atomic.js';
import { checkOutputFile } from '../../util/output.js';
import { peakRssMb } from '../../util/run-info.js';
import { Progress } from '../progress.js';

export interface EvalArgs {
  model: string;
  dataset: string;
  seqlen: number;
  maxWindows?: number;
  dataDir?: string;
  /** Also write the JSON result here (e.g. RUN_DIR/eval-wikitext2.json for `topiary report`). */
  out?: string;
  json: boolean;
}

export async function evalCommand(args: EvalArgs): Promise<void> {
  const corpus = parseCorpusSpec(args.dataset);
  if (args.out) checkOutputFile(args.out);
  // The data folder is checked before the model is opened.
  const dataDir = corpus.kind === 'text' ? undefined : resolveDataDir(args.dataDir);
  const model = await loadModel(args.model);
  const progress = new Progress(`perplexity ${describeCorpus(corpus)}`);
  const result = await datasetPerplexity(model, {
    dataset: args.dataset,
    seqlen: args.seqlen,
    ...(args.maxWindows !== undefined ? { maxWindows: args.maxWindows } : {}),
    ...(dataDir !== undefined ? { dataDir } : {}),
    onProgress: (done, total, running) => progress.update(done, total, `ppl ${running.toFixed(3)}`),
  }).finally(() => model.source.close());
  progress.done();
  const { dataset, ...measured } = result;
  const report = {
    model: args.model,
    dataset,
    ...measured,
    peak_rss_mb: peakRssMb(),
    backend: describeBackend(),
  };
  if (args.out) writeFileContentAtomic(args.out, JSON.stringify(report, null, 2) + '\n');
  if (args.json) {
    process.stdout.write(JSON.stringify(report) + '\n');
  } else {
    process.stdout.write(
      `${dataset} perplexity ${result.perplexity.toFixed(4)} ` +
        `(seqlen ${result.seqlen}, ${result.windows} windows, ${result.tokens} predicted tokens, ${result.seconds.toFixed(1)} s)\n`,
    );
  }
}
