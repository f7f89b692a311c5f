/**
 * magnitude-sp: a unit is worth the total magnitude Σ|W| of every weight it owns (a kv group: its q,
 * k, v rows and o columns; an MLP channel: its gate and up rows and down column). No calibration
 * statistics decide anything; no compensation. Every layer loses the same share.
 */
import { groupChannels, selectColumns } from './geometry.js';
import type { StructuredMethod } from './method.js';
import { columnSums, rowSums } from './scores.js';

export const magnitudeSp: StructuredMethod = {
  name: 'magnitude-sp',
  description: 'structured magnitude: removes the kv groups and MLP channels with the smallest total |W|',
  addsBias: false,
  options: {},
  needs: () => [],
  allocation: () => 'uniform',
  layerShare: () => 0,
  invalidOptions: () => null,
  async score({ weights, geometry: g }) {
    const { q, k, v, o, gate, up, down } = weights.linears;
    const qRows = rowSums(q.weight, q.outFeatures, q.inFeatures);
    const kRows = rowSums(k.weight, k.outFeatures, k.inFeatures);
    const vRows = rowSums(v.weight, v.outFeatures, v.inFeatures);
    const oCols = columnSums(o.weight, o.outFeatures, o.inFeatures);
    const groups = Float64Array.from({ length: g.groups }, (_, group) => {
      let sum = 0;
      for (const c of groupChannels(g, group)) sum += qRows[c]! + oCols[c]!;
      for (let i = 0; i < g.headDim; i++) sum += kRows[group * g.headDim + i]! + vRows[group * g.headDim + i]!;
      return sum;
    });
    const gateRows = rowSums(gate.weight, gate.outFeatures, gate.inFeatures);
    const upRows = rowSums(up.weight, up.outFeatures, up.inFeatures);
    const downCols = columnSums(down.weight, down.outFeatures, down.inFeatures);
    const channels = Float64Array.from({ length: g.channels }, (_, c) => gateRows[c]! + upRows[c]! + downCols[c]!);
    return { groups, channels };
  },
  async compensate({ weights }, projection, kept) {
    return { linear: selectColumns(weights.linears[projection], kept), report: {} };
  },
};
