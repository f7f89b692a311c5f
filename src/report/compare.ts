/**
 * The comparison both `topiary report` (HTML) and `topiary compare` (terminal) show: one row per
 * run, columns for sparsity, each perplexity dataset and each task's accuracy, and the mean
 * accuracy, with differences against the dense baseline.
 */
import { TASKS } from '../eval/tasks/index.js';
import type { Run } from './runs.js';
import { formatTable } from './table.js';

export interface Column {
  key: string;
  label: string;
  kind: 'sparsity' | 'perplexity' | 'accuracy';
}

export interface Cell {
  value: number | undefined;
  /** Normalized accuracy where the harness reports one. */
  norm?: number;
  stderr?: number | null;
}

export interface Comparison {
  columns: Column[];
  rows: { run: Run; cells: Cell[] }[];
}

const MEAN = 'mean';

function taskOrder(name: string): number {
  const i = TASKS.findIndex((task) => task.name === name);
  return i < 0 ? TASKS.length : i;
}

export function compareRuns(runs: readonly Run[]): Comparison {
  const datasets = [...new Set(runs.flatMap((run) => run.perplexities.map((p) => p.dataset)))];
  const tasks = [...new Set(runs.flatMap((run) => run.tasks.map((t) => t.task)))].sort((a, b) => taskOrder(a) - taskOrder(b));
  const columns: Column[] = [
    { key: 'sparsity', label: 'sparsity', kind: 'sparsity' },
    ...datasets.map((d): Column => ({ key: `ppl:${d}`, label: `${d} ppl`, kind: 'perplexity' })),
    ...tasks.map((t): Column => ({ key: `task:${t}`, label: t, kind: 'accuracy' })),
    ...(tasks.length > 1 ? [{ key: 'mean', label: MEAN, kind: 'accuracy' } as Column] : []),
  ];
  const rows = runs.map((run) => {
    // The last result wins when a run holds the same dataset or task twice (a re-run).
    const ppl = new Map(run.perplexities.map((p) => [p.dataset, p.perplexity]));
    const acc = new Map(run.tasks.map((t) => [t.task, t]));
    const cells = columns.map((column): Cell => {
      if (column.kind === 'sparsity') return { value: run.prune?.sparsity ?? 0 };
      if (column.kind === 'perplexity') return { value: ppl.get(column.key.slice(4)) };
      if (column.key === 'mean') {
        const values = tasks.map((t) => acc.get(t)?.metrics.acc?.value);
        return { value: values.every((v) => v !== undefined) ? values.reduce((a, b) => a! + b!, 0)! / values.length : undefined };
      }
      const result = acc.get(column.key.slice(5));
      return {
        value: result?.metrics.acc?.value,
        ...(result?.metrics.acc_norm ? { norm: result.metrics.acc_norm.value } : {}),
        ...(result?.metrics.acc ? { stderr: result.metrics.acc.stderr } : {}),
      };
    });
    return { run, cells };
  });
  return { columns, rows };
}

export function formatValue(column: Column, value: number | undefined): string {
  if (value === undefined) return '—';
  if (column.kind === 'perplexity') return value >= 1000 ? value.toExponential(2) : value.toFixed(2);
  return (value * 100).toFixed(column.kind === 'sparsity' ? 1 : 2);
}

/** Difference from the baseline in the column's unit (percentage points for accuracies). */
export function formatDelta(column: Column, value: number | undefined, base: number | undefined): string {
  if (value === undefined || base === undefined || column.kind === 'sparsity') return '';
  const delta = column.kind === 'perplexity' ? value - base : (value - base) * 100;
  if (Math.abs(delta) < 0.005) return '±0';
  return `${delta > 0 ? '+' : '−'}${Math.abs(delta) >= 1000 ? Math.abs(delta).toExponential(1) : Math.abs(delta).toFixed(2)}`;
}

/** The terminal table of `topiary compare`. */
export function formatComparison(comparison: Comparison): string {
  const { columns, rows } = comparison;
  const base = rows.find((row) => row.run.baseline);
  const header = ['run', ...columns.map((c) => (c.kind === 'accuracy' ? `${c.label} acc%` : c.kind === 'sparsity' ? 'sparsity%' : c.label))];
  const body = rows.map((row) => [
    row.run.baseline ? `${row.run.label} (baseline)` : row.run.label,
    ...columns.map((column, c) => {
      const value = row.cells[c]!.value;
      const delta = row === base ? '' : formatDelta(column, value, base?.cells[c]!.value);
      return formatValue(column, value) + (delta ? ` (${delta})` : '');
    }),
  ]);
  return formatTable(header, body, ['left', ...columns.map(() => 'right' as const)]);
}
