#!/usr/bin/env node
// Runs the compiled CLI; `npm run setup` (or `npm run build`) compiles it into dist/.
import { existsSync } from 'node:fs';
const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('topiary: not built yet: run `npm run setup` in the topiary checkout first\n');
  process.exit(1);
}
await import(main.href);
