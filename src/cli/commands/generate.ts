import { generate } from '../../model/generate.js';
import { loadModel } from '../../model/load.js';
import { createRng } from '../../util/random.js';
import { UsageError } from '../../util/errors.js';

export interface GenerateArgs {
  model: string;
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  seed: number;
}

export async function generateCommand(args: GenerateArgs): Promise<void> {
  const model = await loadModel(args.model);
  const tokenizer = model.tokenizer;
  const prompt = tokenizer.encode(args.prompt);
  if (prompt.length === 0) prompt.push(model.config.bosTokenId ?? 0);
  const context = model.config.maxPositionEmbeddings;
  if (prompt.length + args.maxNewTokens > context) {
    model.source.close();
    throw new UsageError(`--max-new-tokens ${args.maxNewTokens} after a ${prompt.length}-token prompt exceeds the model's context of ${context} tokens`);
  }
  const rng = createRng(args.seed);
  process.stdout.write(args.prompt);
  let printed = '';
  const produced: number[] = [];
  // Decode the whole continuation each time and print the new part: a token can end mid-character.
  await generate(model, prompt, {
    maxNewTokens: args.maxNewTokens,
    temperature: args.temperature,
    random: () => rng.next(),
    onToken(token) {
      produced.push(token);
      const text = tokenizer.decode(produced);
      if (text.startsWith(printed) && !text.endsWith('\uFFFD')) {
        process.stdout.write(text.slice(printed.length));
        printed = text;
      }
    },
  });
  const text = tokenizer.decode(produced);
  process.stdout.write((text.startsWith(printed) ? text.slice(printed.length) : '') + '\n');
  model.source.close();
}
