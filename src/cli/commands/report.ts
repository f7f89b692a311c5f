import * as path from 'node:path';
import { buildReportHtml } from '../../report/html.js';
import { readRuns } from '../../report/runs.js';
import { writeFileContentAtomic } from '../../util/atomic.js';
import { checkOutputFile } from '../../util/output.js';

export interface ReportArgs {
  runs: string[];
  baseline?: string;
  out: string;
}

export function reportCommand(args: ReportArgs): void {
  const out = path.resolve(args.out);
  checkOutputFile(out);
  const runs = readRuns(args.runs, args.baseline);
  const html = buildReportHtml(runs);
  writeFileContentAtomic(out, html);
  process.stdout.write(`wrote ${out} (${runs.length} run${runs.length === 1 ? '' : 's'}, ${(html.length / 1024).toFixed(0)} KiB)\n`);
}
