/**
 * Child process of bench/versions.ts: prefill speed of ONE source tree, timed with that tree's own
 * model code and native addon (imported from TREE, not from this checkout), so that two versions of
 * Topiary are compared on the same window. Loads MODEL, sets the thread count, runs
 * `windowNll([window])` once to warm up (reading and dequantizing the weights) and once timed.
 * `windowNll` is the evaluation path of `topiary eval`, present in every version compared.
 * Prints one JSON line: { tokensPerSecond, seconds, tokensPerCpuSecond, cpuSeconds, backend }, the CPU
 * time being the whole process's (every thread) during the timed call.
 *
 *   node --import tsx bench/versions-prefill.ts TREE MODEL WINDOW_JSON THREADS
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

const [tree, modelPath, windowFile, threads] = process.argv.slice(2);
if (threads === undefined) throw new Error('usage: bench/versions-prefill.ts TREE MODEL WINDOW_JSON THREADS');
// Typed by this checkout's modules; the tree's loadModel, getBackend and windowNll have the same shape.
const importFromTree = (file: string) => import(pathToFileURL(path.join(tree!, file)).href);
const { loadModel } = (await importFromTree('src/model/load.ts')) as typeof import('../src/model/load.js');
const { describeBackend, getBackend } = (await importFromTree('src/backend/index.ts')) as typeof import('../src/backend/index.js');

const window = JSON.parse(fs.readFileSync(windowFile!, 'utf8')) as number[];
const backend = getBackend();
backend.setThreads(Number(threads));
const model = await loadModel(modelPath!, { backend });
await model.windowNll([window]);
const started = performance.now();
const cpuStarted = process.cpuUsage();
await model.windowNll([window]);
const cpu = process.cpuUsage(cpuStarted);
const seconds = (performance.now() - started) / 1000;
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
model.source.close();
process.stdout.write(JSON.stringify({ tokensPerSecond: window.length / seconds, seconds, tokensPerCpuSecond: window.length / cpuSeconds, cpuSeconds, backend: describeBackend(backend) }) + '\n');
