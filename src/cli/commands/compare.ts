import { compareRuns, formatComparison } from '../../report/compare.js';
import { readRuns } from '../../report/runs.js';

export interface CompareArgs {
  runs: string[];
  baseline?: string;
  json: boolean;
}

export function compareCommand(args: CompareArgs): void {
  const comparison = compareRuns(readRuns(args.runs, args.baseline));
  if (args.json) {
    const rows = comparison.rows.map((row) => ({
      run: row.run.dir,
      label: row.run.label,
      baseline: row.run.baseline,
      values: Object.fromEntries(comparison.columns.map((column, c) => [column.key, row.cells[c]!.value ?? null])),
    }));
    process.stdout.write(JSON.stringify({ columns: comparison.columns, rows }) + '\n');
    return;
  }
  process.stdout.write(formatComparison(comparison) + '\n');
}
