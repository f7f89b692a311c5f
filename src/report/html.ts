/**
 * `topiary report`: one self-contained HTML page comparing runs — the results table against the
 * dense baseline, perplexity and accuracy against sparsity, per-layer × per-matrix heatmaps of
 * sparsity and reconstruction error, per-layer times and each run's settings. Everything is
 * inline (CSS, SVG, a few lines of script); nothing is fetched when the page opens.
 */
import { compareRuns, formatDelta, formatValue, type Column, type Comparison } from './compare.js';
import type { Run } from './runs.js';
import type { BlockReport } from '../prune/record.js';
import { escapeXml as esc, heatmap, lineChart, stackedBars, type Series } from './svg.js';

const ROLE_ORDER = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px 32px; color: #222; max-width: 1500px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #666; font-size: 12px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f6f6; font-weight: 600; }
tr.baseline td { background: #f3f7fb; }
.delta { display: block; font-size: 11px; }
.better { color: #1a7f37; } .worse { color: #c62828; } .same { color: #888; }
.norm { display: block; font-size: 11px; color: #777; }
.charts { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
.run { border: 1px solid #e4e4e4; border-radius: 6px; padding: 8px 16px 16px; margin: 16px 0; }
table.settings td, table.settings th { text-align: left; font-size: 12px; }
code { font-size: 12px; }
label.toggle { font-size: 12px; color: #444; }
`;

/** Shows acc_norm instead of acc in the table where a task reports it. */
const SCRIPT = `
document.getElementById('show-norm').addEventListener('change', function (event) {
  var useNorm = event.target.checked;
  document.querySelectorAll('td[data-acc]').forEach(function (cell) {
    var value = useNorm && cell.dataset.norm ? cell.dataset.norm : cell.dataset.acc;
    cell.querySelector('.value').textContent = value;
  });
});
`;

function deltaClass(column: Column, value: number | undefined, base: number | undefined): string {
  if (value === undefined || base === undefined || column.kind === 'sparsity') return 'same';
  const diff = value - base;
  if (Math.abs(diff) < 1e-12) return 'same';
  const better = column.kind === 'perplexity' ? diff < 0 : diff > 0;
  return better ? 'better' : 'worse';
}

function resultsTable(comparison: Comparison): string {
  const { columns, rows } = comparison;
  const base = rows.find((row) => row.run.baseline);
  const head = `<tr><th>run</th>${columns.map((c) => `<th>${esc(c.kind === 'accuracy' ? `${c.label} %` : c.kind === 'sparsity' ? 'sparsity %' : c.label)}</th>`).join('')}</tr>`;
  const body = rows
    .map((row) => {
      const cells = columns
        .map((column, c) => {
          const cell = row.cells[c]!;
          const baseValue = base?.cells[c]!.value;
          const delta = row === base ? '' : formatDelta(column, cell.value, baseValue);
          const deltaHtml = delta ? `<span class="delta ${deltaClass(column, cell.value, baseValue)}">${esc(delta)}</span>` : '';
          const shown = formatValue(column, cell.value);
          if (column.kind !== 'accuracy') return `<td><span class="value">${esc(shown)}</span>${deltaHtml}</td>`;
          const norm = cell.norm !== undefined ? formatValue(column, cell.norm) : '';
          const tip = cell.stderr != null ? ` title="± ${(cell.stderr * 100).toFixed(2)} (stderr)"` : '';
          return `<td data-acc="${esc(shown)}"${norm ? ` data-norm="${esc(norm)}"` : ''}${tip}><span class="value">${esc(shown)}</span>${deltaHtml}${norm ? `<span class="norm">norm ${esc(norm)}</span>` : ''}</td>`;
        })
        .join('');
      return `<tr class="${row.run.baseline ? 'baseline' : ''}"><td>${esc(row.run.label)}${row.run.baseline ? ' <em>(baseline)</em>' : ''}</td>${cells}</tr>`;
    })
    .join('\n');
  return `<table class="results">${head}\n${body}</table>`;
}

/** One chart per perplexity dataset and one for mean accuracy: value against sparsity, a line per method. */
function sparsityCharts(comparison: Comparison): string[] {
  const charts: string[] = [];
  const base = comparison.rows.find((row) => row.run.baseline);
  comparison.columns.forEach((column, c) => {
    if (column.kind === 'sparsity' || (column.kind === 'accuracy' && column.key !== 'mean')) return;
    const byMethod = new Map<string, [number, number][]>();
    for (const row of comparison.rows) {
      const value = row.cells[c]!.value;
      if (!row.run.prune || value === undefined) continue;
      const name = row.run.prune.target.includes(':') ? `${row.run.prune.method} ${row.run.prune.target}` : row.run.prune.method;
      byMethod.set(name, [...(byMethod.get(name) ?? []), [row.run.prune.sparsity, value]]);
    }
    const baseValue = base?.cells[c]!.value;
    const points = [...byMethod.values()].reduce((n, p) => n + p.length, 0) + (baseValue !== undefined ? 1 : 0);
    if (points < 2 || byMethod.size === 0) return;
    // Unstructured series start from the dense model at sparsity 0; N:M runs stay single points.
    const series: Series[] = [...byMethod].map(([name, pts]) => ({
      name,
      points: baseValue !== undefined && !name.includes(':') ? [[0, baseValue], ...pts] : pts,
    }));
    const perplexity = column.kind === 'perplexity';
    charts.push(
      lineChart({
        title: perplexity ? `${column.label} against sparsity` : 'Mean accuracy against sparsity',
        xLabel: 'sparsity of the pruned matrices (%)',
        yLabel: perplexity ? `${column.label} (log scale)` : 'mean accuracy (%)',
        series,
        ...(baseValue !== undefined ? { reference: { value: baseValue, label: `dense ${formatValue(column, baseValue)}` } } : {}),
        logY: perplexity,
        formatX: (x) => `${(x * 100).toFixed(0)}`,
        formatY: (y) => (perplexity ? (y >= 100 ? y.toFixed(0) : y.toPrecision(3)) : (y * 100).toFixed(1)),
      }),
    );
  });
  return charts;
}

/** Shared colour scale for relative errors across runs: log10 between the smallest and largest positive error. */
function errorScale(runs: readonly Run[]): { scale: (v: number) => number; ticks: number[] } {
  const errors = runs.flatMap((run) => run.prune?.layers.flatMap((l) => l.matrices.map((m) => m.relativeError ?? 0)) ?? []).filter((e) => e > 0);
  if (errors.length === 0) return { scale: () => 0, ticks: [0] };
  let lo = Math.floor(Math.log10(Math.min(...errors)));
  let hi = Math.ceil(Math.log10(Math.max(...errors)));
  if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
  const ticks = Array.from({ length: hi - lo + 1 }, (_, i) => 10 ** (lo + i));
  return { scale: (v) => (v <= 0 ? 0 : (Math.log10(v) - lo) / (hi - lo)), ticks };
}

function matrixGrid(run: Run, pick: (m: { sparsity: number; relativeError: number | null }) => number | null): { roles: string[]; values: (number | undefined)[][] } {
  const layers = run.prune!.layers;
  const present = new Set(layers.flatMap((l) => l.matrices.map((m) => m.role)));
  const roles = [...ROLE_ORDER.filter((r) => present.has(r)), ...[...present].filter((r) => !ROLE_ORDER.includes(r))];
  const values = layers.map((layer) => roles.map((role) => {
    const matrix = layer.matrices.find((m) => m.role === role);
    return matrix ? (pick(matrix) ?? undefined) : undefined;
  }));
  return { roles, values };
}

function settingsTable(run: Run): string {
  const prune = run.prune!;
  const s = prune.settings;
  const env = prune.environment;
  const rows: [string, unknown][] = [
    ['model', s.model],
    ['method', `${prune.method}${s.methodOptions && Object.keys(s.methodOptions as object).length ? ` ${JSON.stringify(s.methodOptions)}` : ''}`],
    ['target', prune.target],
    ['sparsity profile', s.sparsityProfile],
    ['refine', s.refine],
    ['pruned layers', Array.isArray(s.roles) ? (s.roles as string[]).join(', ') : s.roles],
    ['calibration', s.calibration ? JSON.stringify(s.calibration) : undefined],
    ['total time', `${prune.seconds.toFixed(1)} s`],
    ['peak memory', prune.peakRssMb !== undefined ? `${prune.peakRssMb} MiB` : undefined],
    ['backend', typeof env.backend === 'object' && env.backend ? JSON.stringify(env.backend) : env.backend],
    ['machine', [env.cpu, env.cores !== undefined ? `${String(env.cores)} cores` : undefined, env.platform].filter(Boolean).join(', ')],
    ['topiary', env.topiary],
    ['files', run.files.join(', ')],
  ];
  return `<table class="settings">${rows
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td><code>${esc(String(v))}</code></td></tr>`)
    .join('')}</table>`;
}

/** The scores a layer budget was mapped from (OWL's outlier ratio, AlphaPruning's α per matrix and their mean). */
function budgetScores(layers: readonly BlockReport[]): string {
  const profile = layers.find((l) => l.budget)!.budget!.profile;
  const detailKeys = [...new Set(layers.flatMap((l) => Object.keys(l.budget?.details ?? {})))];
  const values = layers.map((l) => [l.budget?.score, ...detailKeys.map((key) => l.budget?.details[key])]);
  const finite = values.flat().filter((v): v is number => v !== undefined);
  const low = Math.min(...finite);
  const high = Math.max(...finite);
  const scale = (v: number) => (high > low ? (v - low) / (high - low) : 0.5);
  return heatmap({
    title: profile === 'owl' ? 'OWL outlier ratio per layer (%)' : profile === 'alphapruning' ? 'AlphaPruning: Hill α of WᵀW (layer mean, per matrix)' : `${profile} score per layer`,
    rowLabels: layers.map((l) => `layer ${l.layer}`),
    columnLabels: [profile === 'alphapruning' ? 'mean' : 'score', ...detailKeys.map((key) => key.replace(/^alpha\./, ''))],
    values,
    scale,
    format: (v) => v.toPrecision(3),
    legendTicks: [low, high],
  });
}

function runSection(run: Run, errors: ReturnType<typeof errorScale>): string {
  const layers = run.prune!.layers;
  const layerLabels = layers.map((l) => String(l.layer));
  const sparsity = matrixGrid(run, (m) => m.sparsity);
  const error = matrixGrid(run, (m) => m.relativeError);
  // A layer budget (--sparsity-profile) adds the layer's target beside its matrices and a chart of the scores behind it.
  const budgeted = layers.some((l) => l.budget);
  const measured = layers.some((l) => l.matrices.some((m) => m.relativeError !== null));
  const charts = [
    heatmap({
      title: budgeted ? 'Sparsity per layer × matrix (target: the layer budget)' : 'Sparsity per layer × matrix',
      rowLabels: layerLabels.map((l) => `layer ${l}`),
      columnLabels: budgeted ? ['target', ...sparsity.roles] : sparsity.roles,
      values: budgeted ? sparsity.values.map((row, i) => [layers[i]!.budget?.sparsity, ...row]) : sparsity.values,
      scale: (v) => v,
      format: (v) => `${(v * 100).toFixed(1)}%`,
      legendTicks: [0, 0.25, 0.5, 0.75, 1],
    }),
    ...(budgeted ? [budgetScores(layers)] : []),
    measured
      ? heatmap({
          title: 'Relative output error ‖X(W−Ŵ)ᵀ‖²/‖XWᵀ‖²',
          rowLabels: layerLabels.map((l) => `layer ${l}`),
          columnLabels: error.roles,
          values: error.values,
          scale: errors.scale,
          format: (v) => v.toExponential(1),
          legendTicks: errors.ticks,
        })
      : `<p class="note">Relative output error not measured: ${esc(run.prune!.method)} decides from the weights alone and ran no calibration pass.</p>`,
    stackedBars({
      title: 'Time per layer',
      categories: layerLabels,
      stacks: [
        { name: 'statistics', values: layers.map((l) => l.statisticsSeconds) },
        { name: 'prune', values: layers.map((l) => l.pruneSeconds) },
        { name: 'forward', values: layers.map((l) => l.forwardSeconds) },
      ],
      yLabel: 'seconds',
      format: (v) => (v >= 10 ? v.toFixed(0) : v.toPrecision(2)),
    }),
  ];
  return `<section class="run"><h3>${esc(run.label)}</h3><div class="charts">${charts.join('')}</div>${settingsTable(run)}</section>`;
}

export function buildReportHtml(runs: readonly Run[], generatedAt = new Date()): string {
  const comparison = compareRuns(runs);
  const charts = sparsityCharts(comparison);
  const errors = errorScale(runs);
  const pruned = runs.filter((run) => run.prune);
  const hasNorm = comparison.rows.some((row) => row.cells.some((cell) => cell.norm !== undefined));
  const limits = [...new Set(runs.flatMap((run) => run.tasks.map((t) => t.n)))];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Topiary report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${CSS}</style></head>
<body>
<h1>Topiary report</h1>
<p class="meta">${runs.length} run${runs.length === 1 ? '' : 's'} · generated ${esc(generatedAt.toISOString())}</p>
<h2>Results</h2>
<p class="meta">Differences are against the baseline (perplexity: lower is better; accuracy in percentage points, higher is better).
Accuracies are lm-evaluation-harness acc; hover a cell for its standard error${limits.length ? ` · items per task: ${esc(limits.join(', '))}` : ''}.
</p>
${hasNorm ? '<p><label class="toggle"><input type="checkbox" id="show-norm"> show acc_norm instead of acc where the task reports it</label></p>' : ''}
${resultsTable(comparison)}
${charts.length ? `<h2>Against sparsity</h2><div class="charts">${charts.join('')}</div>` : ''}
${pruned.length ? `<h2>Layers, matrices and times</h2>${pruned.map((run) => runSection(run, errors)).join('\n')}` : ''}
${hasNorm ? `<script>${SCRIPT}</script>` : ''}
</body></html>
`;
}
