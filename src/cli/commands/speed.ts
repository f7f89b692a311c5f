import { backendKernel, describeBackend, getBackend } from '../../backend/index.js';
import { ggufFileOf, llamaCppSpeed, loadAverage, openLlamaCpp, topiarySpeed, type EngineSpeed, type SpeedSettings } from '../../eval/speed.js';
import { loadModel } from '../../model/load.js';
import { UsageError } from '../../util/errors.js';
import { createRng } from '../../util/random.js';

export interface SpeedArgs {
  model: string;
  engine: 'topiary' | 'llama.cpp';
  promptTokens: number;
  newTokens: number;
  /** Default: the backend's (all cores). */
  threads?: number;
  runs: number;
  json: boolean;
}

/**
 * The prompt: seeded pseudo-random token ids, so that every engine and every run of a dense model
 * does the same work whatever text a model was trained on (the cost of a forward pass does not
 * depend on which tokens it reads).
 */
function syntheticPrompt(vocabSize: number, tokens: number): number[] {
  const rng = createRng(0);
  return Array.from({ length: tokens }, () => rng.int(vocabSize));
}

export async function speedCommand(args: SpeedArgs): Promise<void> {
  const model = await loadModel(args.model);
  try {
    const ggufFile = args.engine === 'llama.cpp' ? ggufFileOf(model) : undefined;
    const context = model.config.maxPositionEmbeddings;
    if (args.promptTokens + args.newTokens > context) {
      throw new UsageError(`--prompt-tokens ${args.promptTokens} plus --new-tokens ${args.newTokens} exceeds the model's context of ${context} tokens`);
    }
    const backend = getBackend();
    const settings: SpeedSettings = { promptTokens: args.promptTokens, decodeTokens: args.newTokens, threads: args.threads ?? backend.info.threads, runs: args.runs };
    const prompt = syntheticPrompt(model.config.vocabSize, args.promptTokens);
    const loadBefore = loadAverage();
    let speed: EngineSpeed;
    let kernel: string;
    let positions: number;
    if (args.engine === 'topiary') {
      const measured = await topiarySpeed(model, prompt, settings);
      speed = measured;
      kernel = backendKernel(backend);
      positions = measured.cachedPositions;
    } else {
      const { llama, info } = await openLlamaCpp();
      try {
        speed = await llamaCppSpeed(llama, ggufFile!, prompt, prompt.at(-1)!, settings);
      } finally {
        await llama.dispose();
      }
      kernel = `llama.cpp ${info.release} (${info.build}): ${info.systemInfo.replace(/[\s|]+$/, '')}`;
      positions = args.promptTokens + speed.decoded.length;
    }
    const report = {
      model: args.model,
      engine: args.engine,
      threads: settings.threads,
      kernel,
      prompt_tokens: args.promptTokens,
      new_tokens: speed.decoded.length,
      positions,
      runs: args.runs,
      prefill_tokens_per_s: speed.prefillTokensPerSecond.wall,
      decode_tokens_per_s: speed.decodeTokensPerSecond.wall,
      // The CPU clock may tick too coarsely for a tiny model's phases: those figures are then left out.
      ...(Number.isFinite(speed.prefillTokensPerSecond.cpu) ? { prefill_tokens_per_cpu_s: speed.prefillTokensPerSecond.cpu } : {}),
      ...(Number.isFinite(speed.decodeTokensPerSecond.cpu) ? { decode_tokens_per_cpu_s: speed.decodeTokensPerSecond.cpu } : {}),
      load_average_1min: { before: loadBefore, after: loadAverage() },
      ...(args.engine === 'topiary' ? { backend: describeBackend(backend) } : {}),
    };
    if (!Number.isFinite(report.prefill_tokens_per_s) || !Number.isFinite(report.decode_tokens_per_s)) {
      throw new UsageError('the phases ran too fast to time; raise --prompt-tokens or --new-tokens');
    }
    if (args.json) {
      process.stdout.write(JSON.stringify(report) + '\n');
      return;
    }
    const runs = args.runs === 1 ? '1 run' : `median of ${args.runs} runs`;
    const perCpuSecond = (value: number | undefined) => (value === undefined ? '' : ` (${value.toFixed(1)} per CPU second)`);
    process.stdout.write(
      `${args.model} on ${args.engine}, ${settings.threads} thread${settings.threads === 1 ? '' : 's'}, ${kernel}\n` +
        `prefill ${args.promptTokens} tokens: ${report.prefill_tokens_per_s.toFixed(1)} tokens/s${perCpuSecond(report.prefill_tokens_per_cpu_s)}\n` +
        `decode ${report.new_tokens} tokens: ${report.decode_tokens_per_s.toFixed(1)} tokens/s${perCpuSecond(report.decode_tokens_per_cpu_s)}\n` +
        `${runs}; load average ${loadBefore} before, ${report.load_average_1min.after} after\n`,
    );
  } finally {
    model.source.close();
  }
}
