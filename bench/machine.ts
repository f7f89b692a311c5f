/** What every benchmark states beside its numbers: the machine, its load, and the BLAS kernel. */
import * as os from 'node:os';
import { describeBackend, getBackend } from '../src/backend/index.js';

export function machineDescription(): Record<string, unknown> {
  return {
    date: new Date().toISOString(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    backend: describeBackend(getBackend()),
    openblasEnvironment: {
      OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? null,
      OPENBLAS_L2_SIZE: process.env.OPENBLAS_L2_SIZE ?? null,
    },
    // Other processes share the cores: read every number beside the load it ran under.
    loadAverage1min: Number(os.loadavg()[0]!.toFixed(2)),
  };
}

/** Prints rows as an aligned text table. */
export function printTable(headers: string[], rows: (string | number)[][]): void {
  const cells = [headers, ...rows.map((row) => row.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  for (const [index, row] of cells.entries()) {
    process.stdout.write(row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ') + '\n');
    if (index === 0) process.stdout.write(widths.map((w) => '-'.repeat(w)).join('  ') + '\n');
  }
}
