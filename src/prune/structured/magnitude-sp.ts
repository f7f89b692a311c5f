/**
 * magnitude-sp: a unit is worth the total magnitude Σ|W| of every weight it owns (a kv group: its q,
 * k, v rows and output-projection columns; an MLP channel: its gate and up rows, or its plain up
 * row, and its down column). No calibration statistics decide anything; no compensation. Every
 * layer loses the same share. Data-free: the run reads no calibration data and runs no forward
 * pass.
 */
import { channelRows, groupChannels, groupRows, selectColumns, type OwnedRows } from './geometry.js';
import type { StructuredMethod } from './method.js';
import { columnSums, rowSums } from './scores.js';

export const magnitudeSp: StructuredMethod = {
  name: 'magnitude-sp',
  description: 'structured magnitude: removes the kv groups and MLP channels with the smallest total |W|',
  addsBias: false,
  dataFree: true,
  options: {},
  needs: () => [],
  allocation: () => 'uniform',
  layerShare: () => 0,
  invalidOptions: () => null,
  async score({ weights, projections, geometry: g }) {
    const rowMagnitudes = new Map<string, Float64Array>();
    const ownedMagnitude = (owned: OwnedRows[]) =>
      owned.reduce((sum, { role, rows }) => {
        const lin = weights.linears[role]!;
        if (!rowMagnitudes.has(role)) rowMagnitudes.set(role, rowSums(lin.weight, lin.outFeatures, lin.inFeatures));
        const magnitudes = rowMagnitudes.get(role)!;
        return rows.reduce((s, r) => s + magnitudes[r]!, sum);
      }, 0);
    const { o, down } = projections;
    const oCols = columnSums(o.weight, o.outFeatures, o.inFeatures);
    const downCols = columnSums(down.weight, down.outFeatures, down.inFeatures);
    const groups = Float64Array.from({ length: g.groups }, (_, group) => groupChannels(g, group).reduce((sum, c) => sum + oCols[c]!, ownedMagnitude(groupRows(g, group))));
    const channels = Float64Array.from({ length: g.channels }, (_, c) => ownedMagnitude(channelRows(g, c)) + downCols[c]!);
    return { groups, channels };
  },
  async compensate({ projections }, projection, kept) {
    return { linear: selectColumns(projections[projection], kept), report: {} };
  },
};
