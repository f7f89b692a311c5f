/**
 * Structured pruning on SmolLM2-135M: for each method and ratio, prune (WikiText-2 validation
 * calibration), export, and measure WikiText-2 test perplexity, prune time, peak memory, file size,
 * and Topiary's prefill / decode speed of the pruned model against the dense one.
 *
 *   node --import tsx bench/structured.ts [--ratios 0.2,0.3,0.5] [--methods flap,comp,wanda-sp,magnitude-sp]
 *        [--nsamples 32] [--seqlen 128] [--eval-windows 40] [--eval-seqlen 128] [--out bench/results/structured.json]
 *
 * Each prune runs in its own process (the CLI), so peak memory is per method.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { wikitext2Text } from '../src/data/corpora.js';
import { resolveDataDir } from '../src/data/datadir.js';
import { perplexity } from '../src/eval/perplexity.js';
import { loadModel } from '../src/model/load.js';
import type { CausalLM } from '../src/model/decoder.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(os.homedir(), '.cache', 'topiary', 'SmolLM2-135M-Instruct.Q4_1.gguf') },
    ratios: { type: 'string', default: '0.2' },
    methods: { type: 'string', default: 'magnitude-sp,wanda-sp,flap,comp' },
    nsamples: { type: 'string', default: '32' },
    seqlen: { type: 'string', default: '128' },
    'eval-windows': { type: 'string', default: '40' },
    'eval-seqlen': { type: 'string', default: '128' },
    out: { type: 'string', default: 'bench/results/structured.json' },
  },
});
const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const evalSeqlen = Number(values['eval-seqlen']);
const evalWindows = Number(values['eval-windows']);

async function quality(model: CausalLM) {
  const tokens = model.tokenizer.encode(wikitext2Text(resolveDataDir(), 'test'));
  const result = await perplexity(model, tokens, { seqlen: evalSeqlen, maxWindows: evalWindows });
  return { ppl: result.perplexity, windows: result.windows, seqlen: evalSeqlen };
}

/** Prefill tokens/s on one 128-token window and decode tokens/s (full recompute per token: the engine has no KV cache). */
async function speed(model: CausalLM) {
  const window = Array.from({ length: 128 }, (_, i) => (i * 37) % model.config.vocabSize);
  await model.logits([window.slice(0, 8)]);
  let started = performance.now();
  await model.finalHidden([window]);
  const prefill = 128 / ((performance.now() - started) / 1000);
  started = performance.now();
  for (let n = 16; n < 24; n++) await model.logits([window.slice(0, n)]);
  const decode = 8 / ((performance.now() - started) / 1000);
  return { prefillTokensPerSecond: prefill, decodeTokensPerSecondNoKvCache: decode };
}

const rows: Record<string, unknown>[] = [];
const dense = await loadModel(values.model!);
rows.push({ method: 'dense', ratio: 0, ...(await quality(dense)), ...(await speed(dense)), bytes: fs.statSync(values.model!).size });
console.log(JSON.stringify(rows.at(-1)));
for (const ratio of values.ratios!.split(',').map(Number)) {
  for (const method of values.methods!.split(',')) {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), `topiary-bench-${method}-`));
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', path.join(repoRoot, 'src/cli/main.ts'), 'prune', '--model', values.model!, '--method', method, '--ratio', String(ratio),
        '--calib', 'wikitext2', '--nsamples', values.nsamples!, '--seqlen', values.seqlen!, '--out', out, '--json'],
      { encoding: 'utf8', cwd: repoRoot },
    );
    if (run.status !== 0) throw new Error(`${method} ${ratio}: ${run.stderr}`);
    const summary = JSON.parse(run.stdout) as { format: string; seconds: number; peak_rss_mb: number; achievedRatio: number; bytes: number };
    const pruned = await loadModel(summary.format === 'gguf' ? path.join(out, 'model.gguf') : out);
    rows.push({
      method,
      ratio,
      achievedRatio: summary.achievedRatio,
      pruneSeconds: summary.seconds,
      peakRssMb: summary.peak_rss_mb,
      format: summary.format,
      bytes: summary.bytes,
      calibration: `wikitext2 valid, ${values.nsamples}×${values.seqlen}, seed 0`,
      ...(await quality(pruned)),
      ...(await speed(pruned)),
    });
    console.log(JSON.stringify(rows.at(-1)));
    fs.rmSync(out, { recursive: true, force: true });
  }
}
fs.writeFileSync(values.out!, JSON.stringify({ model: values.model, rows }, null, 1) + '\n');
