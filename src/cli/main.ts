#!/usr/bin/env node
/**
 * The `topiary` command: argument parsing and error reporting only; every command is a thin call
 * into the library.
 */
import * as os from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { getBackend } from '../backend/index.js';
import type { CalibrationRequest } from '../data/calibration.js';
import { TopiaryError, UsageError } from '../util/errors.js';
import { evalCommand } from './commands/eval.js';
import { tasksEvalCommand } from './commands/tasks-eval.js';
import { reportCommand } from './commands/report.js';
import { compareCommand } from './commands/compare.js';
import { generateCommand } from './commands/generate.js';
import { inspectCommand } from './commands/inspect.js';
import { exportCommand } from './commands/export.js';
import { speedCommand } from './commands/speed.js';
import { parseNumber, pruneCommand, resolveWhatToPrune } from './commands/prune.js';
import { FAMILIES } from '../model/families/index.js';
import { METHODS } from '../prune/methods/index.js';
import { SPARSITY_PROFILES } from '../prune/budgets.js';
import { REFINERS } from '../prune/refine.js';
import { STRUCTURED_METHODS } from '../prune/structured/index.js';
import { DEFAULT_MAX_SHARD_SIZE, parseShardSize } from '../formats/safetensors.js';

const COMMON_OPTIONS = `PATH (and --model) may be a Hugging Face Hub id ORG/NAME[@REVISION]: read from the local Hugging
Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), and what it lacks
downloaded into it ($HF_TOKEN, $HF_ENDPOINT honoured; never with HF_HUB_OFFLINE=1).

Common options:
  --threads N    BLAS threads (default: all cores; at most 4 × cores)
  --data-dir DIR data folder (default: $TOPIARY_DATA_DIR, else ../shared/data beside the checkout)
  -h, --help     this help
`;

/** Each command's help; `prune`'s lists are generated from the method and family registries. */
const HELP: Record<string, () => string> = {
  inspect: () => `topiary inspect PATH [--json]
      Architecture, sizes (per layer for uneven models), parameter count, dtypes and format of a
      model: a Hugging Face folder, a folder prune wrote (model.gguf inside), a .gguf file, a
      llama2.c checkpoint, or a Hugging Face Hub id ORG/NAME[@REVISION].
`,
  generate: () => `topiary generate --model PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--seed S]
      Generate text (temperature 0 = greedy).
`,
  eval: () => `topiary eval --model PATH --dataset wikitext2|c4|text:FILE [--seqlen N] [--max-windows K]
       [--data-dir DIR] [--out FILE] [--json]
      Perplexity over non-overlapping windows of N tokens (default 2048; C4 stops
      after 256 windows as in SparseGPT/Wanda). --out also writes the JSON result
      (name it RUN_DIR/eval-wikitext2.json for topiary report).
topiary eval --model PATH --tasks arc_easy,piqa,...|all [--limit N] [--out FILE] [--data-dir DIR] [--json]
      Zero-shot accuracy scored as lm-evaluation-harness does (acc, acc_norm, stderr). Tasks:
      boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, rte, social_iqa.
      --limit N scores N items spread evenly through each file; --out writes the JSON result
      (name it RUN_DIR/eval-tasks.json for topiary report).
`,
  speed: () => `topiary speed --model PATH [--prompt-tokens 512] [--new-tokens 64] [--engine topiary|llama.cpp]
       [--runs 3] [--threads N] [--json]
      Prefill and decode tokens/s of a model: the prompt (seeded random token ids) into an empty
      KV cache, then greedy decoding one token at a time; each phase timed after a warm-up, median
      of the runs, with the kernel and the load average beside it. --engine llama.cpp runs a GGUF
      file (or a prune folder's model.gguf) in node-llama-cpp's llama.cpp with the same threads.
`,
  report: () => `topiary report RUN_DIR... --out report.html [--baseline DIR]
      One self-contained HTML page comparing runs (folders written by prune, with eval*.json
      results — the JSON of eval --json/--out); a folder with only eval results is the dense
      baseline.
`,
  export: () => `topiary export --model PATH --to gguf --quant F32|F16|Q8_0|Q4_0|Q4_K --out FILE [--json]
      Writes any model Topiary reads (Hugging Face folder, .gguf, llama2.c checkpoint, a folder prune
      wrote, uneven structured results included) as one GGUF file llama.cpp runs, under llama.cpp's
      architecture for the family (deci for LLaMA-block models with per-layer sizes). Matrices take
      the --quant type (ggml's reference quantizers); norms, biases and other 1-D tensors stay F32,
      and a matrix whose rows are not whole blocks falls back as llama.cpp's quantize does (Q4_K →
      Q5_0 for rows not a multiple of 256; any type → F16 for rows not a multiple of 32). Where
      llama.cpp cannot run the model as Topiary does, says why before any work. FILE is written
      atomically and may not be inside the model's folder.
`,
  compare: () => `topiary compare RUN_DIR... [--baseline DIR] [--json]
      The report's results table in the terminal.
`,
  prune: () => {
    const methodLines = (methods: readonly { name: string; description: string; options: Readonly<Record<string, string>> }[]) =>
      methods
        .map((m) => {
          const options = Object.entries(m.options).map(([key, help]) => `          ${key}=${help}`);
          return [`      ${m.name}: ${m.description}`, ...(options.length ? options : ['          (no options)'])].join('\n');
        })
        .join('\n');
    const fixedHeads = FAMILIES.filter((f) => f.structure?.attention.fixedHeads).flatMap((f) => f.modelTypes).join(', ');
    const families = FAMILIES.map((f) => `      ${f.modelTypes.join(', ')}: ${f.linears.map((l) => l.role).join(',')}`).join('\n');
    return `topiary prune --model PATH --method NAME (--sparsity P | --pattern N:M | --ratio R) --out DIR
        [--permute] [--calib c4|wikitext2|text:FILE|tokens:FILE] [--save-calibration FILE]
        [--nsamples N] [--seqlen L] [--seed S] [--layers ROLE,...] [--targets NAME,...] [--ignore NAME,...]
        [--option KEY=VALUE ...] [--batch-windows B] [--dtype F32|F16|BF16] [--save-format dense|sparse]
        [--max-shard-size SIZE]
        [--sparsity-profile uniform|owl|alphapruning] [--refine dsnot] [--resume] [--overwrite] [--json]
topiary prune --model PATH --recipe FILE --out DIR [other options as above]
  Prunes without retraining, block by block on calibration windows, and writes the pruned model
  and topiary.json to DIR: a Hugging Face folder (config.json, model.safetensors, tokenizer) when
  every block keeps the same shapes and no bias was added, else DIR/model.gguf (llama.cpp runs it).
  --save-format sparse (unstructured and N:M) stores the pruned matrices compressed as
  compressed-tensors does (llm-compressor, vLLM): sparse-24-bitmask for 2:4, else sparse-bitmask,
  the kept values in --dtype and one bit per weight; Topiary reads such folders like dense ones.
  --max-shard-size SIZE caps the tensor bytes of each safetensors file of a Hugging Face folder,
  as transformers' max_shard_size does (5GB, 500MB, 200KB: powers of 10; or a whole number of
  bytes): past it the weights go to model-0000k-of-0000n.safetensors shards, in transformers'
  split, with model.safetensors.index.json; a tensor larger than SIZE has a shard of its own.
  DIR must be new, empty or an earlier Topiary run; --overwrite allows other files there
  (Topiary's own file names are replaced). Ctrl-C keeps the finished blocks: the same command
  with --resume continues.

  Unstructured and N:M (--sparsity P in [0, 1), or --pattern N:M such as 2:4):
${methodLines(METHODS)}
  --sparsity-profile spreads --sparsity P unevenly over the layers (not for N:M patterns); the run
  still prunes exactly floor(P·N) of the N weights of the pruned matrices, each layer's target and
  score go to topiary.json. Its options are given with --option too:
${methodLines(SPARSITY_PROFILES)}
  --refine, after any unstructured or N:M method (same zeros, same pattern; options by --option):
${methodLines(REFINERS)}
  Structured (--ratio R: the share of the decoder blocks' parameters removed, as whole kv groups,
  MLP channels and, for comp, whole blocks; ${fixedHeads} keep their heads. flap's global
  structure needs GGUF's deci layout (llama, mistral), elsewhere give structure=ul-um; flap and
  comp add biases, which need GGUF where the family's output projections have none):
${methodLines(STRUCTURED_METHODS)}

  --layers takes the roles of the model's family (default: all of them):
${families}
  --targets / --ignore (unstructured and N:M) take comma-separated entries as llm-compressor does:
      a module path (model.layers.3.self_attn.q_proj; a containing module such as model.layers.3
      selects every linear layer in it), re:REGEX matched from the start of the path (Python's
      re.match), or a class name (Linear; Conv1D for gpt2). A layer is pruned when its role is in
      --layers, a target matches it and no ignore entry does; a target matching nothing, a --layers
      role no target reaches, or an empty selection is refused.
  --recipe FILE: an llm-compressor recipe (YAML, or JSON if FILE ends in .json) with one
      SparseGPTModifier or WandaPruningModifier (stages *_stage, groups *_modifiers); its keys
      sparsity (number or one per layer), mask_structure ("0:0" or "N:M"), targets, ignore,
      block_size, dampening_frac, sparsity_profile, owl_m, owl_lmbda replace --method, --sparsity/
      --pattern, --targets, --ignore and options blocksize, damp; unknown keys are refused, and so is
      a flag that sets what the recipe sets. Profiles other than uniform are not available yet.
  --calib tokens:FILE reuses windows saved by --save-calibration FILE (JSON, or .npy int32 when
      FILE ends in .npy; .npy int32/int64 [windows, seqlen] and plain JSON lists of lists are read).
  magnitude and magnitude-sp read no calibration data and run no forward pass (output errors are
  recorded as not measured).
  Defaults: --calib c4 --nsamples 128 --seqlen min(2048, context) --seed 0 --batch-windows 4 --dtype F32
  --save-format dense --max-shard-size 5GB.
`;
  },
};

const USAGE = () => `Usage: topiary <command> [options]   (topiary <command> --help for one command)

Commands:
${Object.values(HELP)
  .map((help) => help())
  .join('')}
${COMMON_OPTIONS}`;

const COMMON: ParseArgsConfig['options'] = {
  threads: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  'data-dir': { type: 'string' },
};

/**
 * More BLAS threads than this only oversubscribe the cores; a bound also keeps a typo such as
 * --threads 100000 from asking the thread pool for memory it cannot have.
 */
const MAX_THREADS = os.availableParallelism() * 4;

/** Parses a command's options; `positionals` says whether it takes operands (inspect, report, compare). */
function parse(args: string[], options: ParseArgsConfig['options'], positionals = false) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
  } catch (error) {
    // node:util's messages can span lines (e.g. for "--seqlen -5"); ours are one line.
    throw new UsageError((error as Error).message.split('\n').map((line) => line.trim()).join(' '));
  }
  if (!positionals && parsed.positionals.length > 0) throw new UsageError(`unexpected argument "${parsed.positionals[0]}"`);
  return parsed;
}

function integer(value: unknown, flag: string, fallback?: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) {
    if (fallback === undefined) throw new UsageError(`${flag} is required`);
    return fallback;
  }
  const parsed = parseNumber(value);
  if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`${flag} must be an integer ${range}, got "${String(value)}"`);
  }
  return parsed;
}

function number(value: unknown, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = parseNumber(value);
  if (!Number.isFinite(parsed)) throw new UsageError(`${flag} must be a number, got "${String(value)}"`);
  return parsed;
}

function required(value: unknown, flag: string): string {
  if (typeof value !== 'string' || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

async function run(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE());
    return;
  }
  const commands: Record<string, () => Promise<void>> = {
    async inspect() {
      const { values, positionals } = parse(rest, {}, true);
      if (positionals.length !== 1) throw new UsageError('inspect takes one model path');
      await inspectCommand(positionals[0]!, values.json === true);
    },
    async generate() {
      const { values } = parse(rest, {
        model: { type: 'string' },
        prompt: { type: 'string' },
        'max-new-tokens': { type: 'string' },
        temperature: { type: 'string' },
        seed: { type: 'string' },
      });
      applyThreads(values.threads);
      await generateCommand({
        model: required(values.model, '--model'),
        prompt: typeof values.prompt === 'string' ? values.prompt : '',
        maxNewTokens: integer(values['max-new-tokens'], '--max-new-tokens', 64),
        temperature: number(values.temperature, '--temperature', 0),
        seed: integer(values.seed, '--seed', 0, 0),
      });
    },
    async eval() {
      const { values } = parse(rest, {
        model: { type: 'string' },
        dataset: { type: 'string' },
        seqlen: { type: 'string' },
        'max-windows': { type: 'string' },
        tasks: { type: 'string' },
        limit: { type: 'string' },
        out: { type: 'string' },
      });
      applyThreads(values.threads);
      if (typeof values.tasks === 'string') {
        await tasksEvalCommand({
          model: required(values.model, '--model'),
          tasks: values.tasks,
          ...(values.limit !== undefined ? { limit: integer(values.limit, '--limit') } : {}),
          ...(typeof values['data-dir'] === 'string' ? { dataDir: values['data-dir'] } : {}),
          ...(typeof values.out === 'string' ? { out: values.out } : {}),
          json: values.json === true,
        });
        return;
      }
      await evalCommand({
        model: required(values.model, '--model'),
        dataset: typeof values.dataset === 'string' ? values.dataset : 'wikitext2',
        seqlen: integer(values.seqlen, '--seqlen', 2048, 2),
        ...(values['max-windows'] !== undefined ? { maxWindows: integer(values['max-windows'], '--max-windows') } : {}),
        ...(typeof values['data-dir'] === 'string' ? { dataDir: values['data-dir'] } : {}),
        ...(typeof values.out === 'string' ? { out: values.out } : {}),
        json: values.json === true,
      });
    },
    async speed() {
      const { values } = parse(rest, {
        model: { type: 'string' },
        'prompt-tokens': { type: 'string' },
        'new-tokens': { type: 'string' },
        engine: { type: 'string' },
        runs: { type: 'string' },
      });
      const engine = typeof values.engine === 'string' ? values.engine : 'topiary';
      if (engine !== 'topiary' && engine !== 'llama.cpp') throw new UsageError(`--engine must be topiary or llama.cpp, got "${engine}"`);
      applyThreads(values.threads);
      await speedCommand({
        model: required(values.model, '--model'),
        engine,
        promptTokens: integer(values['prompt-tokens'], '--prompt-tokens', 512),
        newTokens: integer(values['new-tokens'], '--new-tokens', 64),
        ...(values.threads !== undefined ? { threads: integer(values.threads, '--threads', undefined, 1, MAX_THREADS) } : {}),
        runs: integer(values.runs, '--runs', 3),
        json: values.json === true,
      });
    },
    async report() {
      const { values, positionals } = parse(rest, { out: { type: 'string' }, baseline: { type: 'string' } }, true);
      reportCommand({
        runs: positionals,
        out: required(values.out, '--out'),
        ...(typeof values.baseline === 'string' ? { baseline: values.baseline } : {}),
      });
    },
    async compare() {
      const { values, positionals } = parse(rest, { baseline: { type: 'string' } }, true);
      compareCommand({ runs: positionals, ...(typeof values.baseline === 'string' ? { baseline: values.baseline } : {}), json: values.json === true });
    },
    async export() {
      const { values } = parse(rest, { model: { type: 'string' }, to: { type: 'string' }, quant: { type: 'string' }, out: { type: 'string' } });
      applyThreads(values.threads);
      await exportCommand({
        model: required(values.model, '--model'),
        to: required(values.to, '--to'),
        quant: required(values.quant, '--quant'),
        out: required(values.out, '--out'),
        json: values.json === true,
      });
    },
    async prune() {
      const { values } = parse(rest, {
        model: { type: 'string' },
        method: { type: 'string' },
        sparsity: { type: 'string' },
        pattern: { type: 'string' },
        ratio: { type: 'string' },
        permute: { type: 'boolean' },
        calib: { type: 'string' },
        'save-calibration': { type: 'string' },
        nsamples: { type: 'string' },
        seqlen: { type: 'string' },
        seed: { type: 'string' },
        layers: { type: 'string' },
        targets: { type: 'string' },
        ignore: { type: 'string' },
        recipe: { type: 'string' },
        option: { type: 'string', multiple: true },
        'batch-windows': { type: 'string' },
        dtype: { type: 'string' },
        'save-format': { type: 'string' },
        'max-shard-size': { type: 'string' },
        'sparsity-profile': { type: 'string' },
        refine: { type: 'string' },
        out: { type: 'string' },
        resume: { type: 'boolean' },
        overwrite: { type: 'boolean' },
      });
      applyThreads(values.threads);
      const dtype = typeof values.dtype === 'string' ? values.dtype.toUpperCase() : 'F32';
      if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new UsageError(`--dtype must be F32, F16 or BF16, got "${dtype}"`);
      const saveFormat = values['save-format'] ?? 'dense';
      if (saveFormat !== 'dense' && saveFormat !== 'sparse') throw new UsageError(`--save-format must be dense or sparse, got "${String(saveFormat)}"`);
      const shardSize = values['max-shard-size'];
      const maxShardSize = typeof shardSize === 'string' ? parseShardSize(shardSize) : DEFAULT_MAX_SHARD_SIZE;
      if (maxShardSize === undefined) throw new UsageError(`--max-shard-size must be a size such as 5GB, 500MB or 200KB, or a whole number of bytes, got "${String(shardSize)}"`);
      await pruneCommand(
        {
          model: required(values.model, '--model'),
          ...resolveWhatToPrune({
            method: values.method as string | undefined,
            sparsity: values.sparsity,
            pattern: values.pattern,
            ratio: values.ratio,
            options: (values.option as string[] | undefined) ?? [],
            permute: values.permute === true,
            layers: values.layers as string | undefined,
            targets: values.targets as string | undefined,
            ignore: values.ignore as string | undefined,
            recipe: values.recipe as string | undefined,
            sparsityProfile: values['sparsity-profile'] as string | undefined,
          }),
          ...(typeof values.refine === 'string' ? { refine: values.refine } : {}),
          calibration: calibrationOptions(values),
          ...(typeof values['data-dir'] === 'string' ? { dataDir: values['data-dir'] } : {}),
          out: required(values.out, '--out'),
          resume: values.resume === true,
          overwrite: values.overwrite === true,
          batchWindows: integer(values['batch-windows'], '--batch-windows', 4),
          dtype,
          saveFormat,
          maxShardSize,
        },
        values.json === true,
      );
    },
  };
  const handler = commands[command];
  if (!handler) throw new UsageError(`unknown command "${command}" (try: topiary --help)`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(HELP[command]!() + '\n' + COMMON_OPTIONS);
    return;
  }
  await handler();
}

/** --calib, --nsamples, --seqlen, --seed and --save-calibration, shared by every pruning method (defaults: prepareCalibration's). */
function calibrationOptions(values: Record<string, unknown>): CalibrationRequest {
  return {
    ...(typeof values.calib === 'string' ? { corpus: values.calib } : {}),
    ...(values.nsamples !== undefined ? { nsamples: integer(values.nsamples, '--nsamples') } : {}),
    ...(values.seqlen !== undefined ? { seqlen: integer(values.seqlen, '--seqlen', undefined, 2) } : {}),
    seed: integer(values.seed, '--seed', 0, 0),
    ...(typeof values['save-calibration'] === 'string' ? { save: values['save-calibration'] } : {}),
  };
}

function applyThreads(value: unknown): void {
  if (value !== undefined) getBackend().setThreads(integer(value, '--threads', undefined, 1, MAX_THREADS));
}

// Output piped into `head` and the like: a closed pipe ends the command quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

run(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof TopiaryError) {
    process.stderr.write(`topiary: ${error.message}\n`);
    process.exitCode = error.exitCode;
    return;
  }
  // Anything else is a bug in Topiary, not bad input: say so, with the stack for the report.
  process.stderr.write(`topiary: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 70;
});
