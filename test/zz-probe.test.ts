import * as path from 'node:path';
import { test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import { exportGguf, ggufUnsupported } from '../src/export/gguf-writer.js';
import { loadModel } from '../src/model/load.js';
import { familyModels, readReference, withByteTokenizer } from './family-models.js';
import { tempDir } from './helpers.js';
import { assertLlamaCppAgrees, nodeLlamaCpp } from './llama-cpp.js';

test('probe', async () => {
  const lib = (await nodeLlamaCpp())!;
  const { dir, models } = await familyModels();
  for (const m of models) {
    const model = await loadModel(withByteTokenizer(dir, m.name), { backend: getBackend() });
    const why = ggufUnsupported(model);
    if (why) { console.log(m.name, 'UNSUPPORTED:', why); continue; }
    const file = path.join(tempDir(), `${m.name}.gguf`);
    try {
      const r = exportGguf(model, file, { dtype: 'F32' });
      const tokens = readReference(dir, m.name).inputIds[0]!;
      await assertLlamaCppAgrees(lib, file, tokens);
      console.log(m.name, 'OK', r.architecture, r.warnings.length);
    } catch (e) { console.log(m.name, 'FAIL', (e as Error).message.split('\n')[0]); }
  }
});
