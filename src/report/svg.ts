/**
 * The report's charts as inline SVG strings: a heatmap, a line chart and stacked bars. Small and
 * static on purpose — the report must open anywhere, offline, with nothing to load.
 */

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Viridis, sampled at 9 stops and interpolated linearly: t ∈ [0, 1] → "rgb(…)". */
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
] as const;

export function viridis(t: number): string {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [VIRIDIS[i]!, VIRIDIS[i + 1]!];
  return `rgb(${a.map((v, k) => Math.round(v + (b[k]! - v) * f)).join(',')})`;
}

/** Colours for series, distinguishable and colour-blind friendly (Okabe–Ito). */
export const SERIES_COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#F0E442', '#000000'];

const FONT = 'font-family="system-ui, sans-serif" font-size="11"';

export interface HeatmapSpec {
  rowLabels: string[];
  columnLabels: string[];
  /** values[row][column]; undefined draws an empty cell. */
  values: (number | undefined)[][];
  /** Maps a value to [0, 1] on the colour ramp. */
  scale: (value: number) => number;
  format: (value: number) => string;
  /** Legend ticks: values to label along the colour bar. */
  legendTicks: number[];
  title: string;
}

export function heatmap(spec: HeatmapSpec): string {
  const cellW = 36;
  const cellH = Math.max(12, Math.min(22, Math.floor(540 / Math.max(1, spec.rowLabels.length))));
  const left = 58;
  const top = 34;
  const width = Math.max(left + spec.columnLabels.length * cellW + 90, left + spec.title.length * 6.4);
  const height = top + spec.rowLabels.length * cellH + 10;
  const parts: string[] = [];
  parts.push(`<text x="${left}" y="12" font-weight="600">${escapeXml(spec.title)}</text>`);
  spec.columnLabels.forEach((label, c) => {
    parts.push(`<text x="${left + c * cellW + cellW / 2}" y="${top - 6}" text-anchor="middle">${escapeXml(label)}</text>`);
  });
  spec.rowLabels.forEach((label, r) => {
    parts.push(`<text x="${left - 6}" y="${top + r * cellH + cellH / 2 + 4}" text-anchor="end">${escapeXml(label)}</text>`);
    spec.columnLabels.forEach((column, c) => {
      const value = spec.values[r]?.[c];
      const fill = value === undefined ? '#eee' : viridis(spec.scale(value));
      const tip = `${label} ${column}: ${value === undefined ? 'not pruned' : spec.format(value)}`;
      parts.push(
        `<rect class="cell" x="${left + c * cellW}" y="${top + r * cellH}" width="${cellW - 1}" height="${cellH - 1}" fill="${fill}"><title>${escapeXml(tip)}</title></rect>`,
      );
    });
  });
  // Colour bar with ticks.
  const barX = left + spec.columnLabels.length * cellW + 16;
  const barHeight = Math.max(60, spec.rowLabels.length * cellH - 2);
  const steps = 24;
  for (let s = 0; s < steps; s++) {
    parts.push(`<rect x="${barX}" y="${top + barHeight - ((s + 1) * barHeight) / steps}" width="12" height="${barHeight / steps + 0.5}" fill="${viridis((s + 0.5) / steps)}"/>`);
  }
  for (const tick of spec.legendTicks) {
    const y = top + barHeight - spec.scale(tick) * barHeight;
    parts.push(`<line x1="${barX + 12}" x2="${barX + 16}" y1="${y}" y2="${y}" stroke="#333"/><text x="${barX + 18}" y="${y + 4}">${escapeXml(spec.format(tick))}</text>`);
  }
  return `<svg class="chart heatmap" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${Math.max(height, top + barHeight + 10)}" ${FONT}>${parts.join('')}</svg>`;
}

export interface Series {
  name: string;
  points: [number, number][];
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** A horizontal reference line (the dense model). */
  reference?: { value: number; label: string };
  logY?: boolean;
  formatX: (x: number) => string;
  formatY: (y: number) => string;
}

function niceTicks(min: number, max: number, count: number): number[] {
  if (min === max) return [min];
  const step0 = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= step0)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** 1-2-5 ticks per decade between lo and hi (only powers of ten when the range spans many decades). */
function logTicks(lo: number, hi: number): number[] {
  const decades = Math.log10(hi / lo);
  const mantissas = decades > 3 ? [1] : decades > 1 ? [1, 2, 5] : [1, 1.5, 2, 3, 5, 7];
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of mantissas) {
      const t = m * 10 ** e;
      if (t >= lo && t <= hi) ticks.push(t);
    }
  }
  return ticks;
}

export function lineChart(spec: LineChartSpec): string {
  const width = 560;
  const height = 320;
  const margin = { left: 64, right: 150, top: 28, bottom: 44 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const ys = [...spec.series.flatMap((s) => s.points.map((p) => p[1])), ...(spec.reference ? [spec.reference.value] : [])];
  const xs = spec.series.flatMap((s) => s.points.map((p) => p[0]));
  const ty = (v: number) => (spec.logY ? Math.log10(v) : v);
  let [yMin, yMax] = [Math.min(...ys.map(ty)), Math.max(...ys.map(ty))];
  if (yMin === yMax) [yMin, yMax] = [yMin - 1, yMax + 1];
  const pad = (yMax - yMin) * 0.08;
  [yMin, yMax] = [yMin - pad, yMax + pad];
  let [xMin, xMax] = [Math.min(0, ...xs), Math.max(...xs)];
  if (xMin === xMax) xMax = xMin + 1;
  const sx = (x: number) => margin.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y: number) => margin.top + plotH - ((ty(y) - yMin) / (yMax - yMin)) * plotH;
  const parts: string[] = [];
  parts.push(`<text x="${margin.left}" y="16" font-weight="600">${escapeXml(spec.title)}</text>`);
  parts.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#bbb"/>`);
  for (const x of niceTicks(xMin, xMax, 6)) {
    parts.push(`<line x1="${sx(x)}" x2="${sx(x)}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#eee"/>`);
    parts.push(`<text x="${sx(x)}" y="${margin.top + plotH + 14}" text-anchor="middle">${escapeXml(spec.formatX(x))}</text>`);
  }
  const yTicks = spec.logY ? logTicks(10 ** yMin, 10 ** yMax) : niceTicks(yMin, yMax, 5);
  for (const y of yTicks) {
    parts.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eee"/>`);
    parts.push(`<text x="${margin.left - 6}" y="${sy(y) + 4}" text-anchor="end">${escapeXml(spec.formatY(y))}</text>`);
  }
  parts.push(`<text x="${margin.left + plotW / 2}" y="${height - 6}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  if (spec.reference) {
    const y = sy(spec.reference.value);
    parts.push(`<line class="reference" x1="${margin.left}" x2="${margin.left + plotW}" y1="${y}" y2="${y}" stroke="#555" stroke-dasharray="5 4"/>`);
    parts.push(`<text x="${margin.left + plotW + 6}" y="${y + 4}" fill="#555">${escapeXml(spec.reference.label)}</text>`);
  }
  spec.series.forEach((series, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length]!;
    const points = [...series.points].sort((a, b) => a[0] - b[0]);
    const d = points.map((p, k) => `${k === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ');
    parts.push(`<path class="series" d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const [x, y] of points) {
      parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="4" fill="${color}"><title>${escapeXml(`${series.name}: ${spec.formatX(x)}, ${spec.formatY(y)}`)}</title></circle>`);
    }
    const ly = margin.top + 10 + i * 16;
    parts.push(`<rect x="${margin.left + plotW + 8}" y="${ly + (spec.reference ? 14 : 0) - 8}" width="10" height="10" fill="${color}"/>`);
    parts.push(`<text x="${margin.left + plotW + 22}" y="${ly + (spec.reference ? 14 : 0) + 1}">${escapeXml(series.name)}</text>`);
  });
  return `<svg class="chart line-chart" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ${FONT}>${parts.join('')}</svg>`;
}

export interface StackedBarsSpec {
  title: string;
  categories: string[];
  stacks: { name: string; values: number[] }[];
  yLabel: string;
  format: (value: number) => string;
}

export function stackedBars(spec: StackedBarsSpec): string {
  const barW = Math.max(8, Math.min(28, Math.floor(480 / Math.max(1, spec.categories.length))));
  const margin = { left: 56, right: 130, top: 28, bottom: 40 };
  const plotW = spec.categories.length * barW;
  const plotH = 180;
  const width = margin.left + plotW + margin.right;
  const height = margin.top + plotH + margin.bottom;
  const totals = spec.categories.map((_, i) => spec.stacks.reduce((sum, s) => sum + (s.values[i] ?? 0), 0));
  const max = Math.max(...totals, 1e-9);
  const ticks = niceTicks(0, max, 4);
  const sy = (v: number) => margin.top + plotH - (v / Math.max(max, ticks[ticks.length - 1]!)) * plotH;
  const parts: string[] = [`<text x="${margin.left}" y="16" font-weight="600">${escapeXml(spec.title)}</text>`];
  for (const t of ticks) {
    parts.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${margin.left - 6}" y="${sy(t) + 4}" text-anchor="end">${escapeXml(spec.format(t))}</text>`);
  }
  spec.categories.forEach((category, i) => {
    let base = 0;
    spec.stacks.forEach((stack, s) => {
      const value = stack.values[i] ?? 0;
      const y0 = sy(base);
      const y1 = sy(base + value);
      parts.push(
        `<rect class="bar" x="${margin.left + i * barW + 1}" y="${y1.toFixed(1)}" width="${barW - 2}" height="${Math.max(0, y0 - y1).toFixed(1)}" fill="${SERIES_COLORS[s % SERIES_COLORS.length]}"><title>${escapeXml(`${category} ${stack.name}: ${spec.format(value)}`)}</title></rect>`,
      );
      base += value;
    });
    if (spec.categories.length <= 40 || i % 5 === 0) {
      parts.push(`<text x="${margin.left + i * barW + barW / 2}" y="${margin.top + plotH + 14}" text-anchor="middle">${escapeXml(category)}</text>`);
    }
  });
  parts.push(`<text x="${margin.left + plotW / 2}" y="${height - 6}" text-anchor="middle">layer</text>`);
  parts.push(`<text transform="translate(14 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  spec.stacks.forEach((stack, s) => {
    const y = margin.top + 8 + s * 16;
    parts.push(`<rect x="${margin.left + plotW + 10}" y="${y - 8}" width="10" height="10" fill="${SERIES_COLORS[s % SERIES_COLORS.length]}"/>`);
    parts.push(`<text x="${margin.left + plotW + 24}" y="${y + 1}">${escapeXml(stack.name)}</text>`);
  });
  return `<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ${FONT}>${parts.join('')}</svg>`;
}
