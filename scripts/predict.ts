// `npm run predict -- a.png b.jpg ...`: label images with a saved model — the current one, or --model <id|folder>
// (env MODEL; saved models live in MODELS_DIR, default models/). Which model was loaded is said on stderr. Each file is
// prepared as the model says (lib/model/predict.ts predictImage: a CIFAR-10 model reduces PNG/JPEG to 32x32 as CIFAR-10
// images are; a model trained on your folder decodes any of its formats and resizes with its fit), and gets its top-3
// classes, named by the model's own class names. A bad file gets one clear error line and the others still run; the exit code is 1 if any failed.
import { initBackend } from '../lib/engine/backend';
import { parseCli, runCli, UsageError } from '../lib/util/cli';
import { loadSavedModel } from '../lib/experiment/saved-model';
import { resolveConfig } from '../lib/settings/config';
import { predictImage } from '../lib/model/predict';
import { userPath } from '../lib/settings/paths';

const CLI = {
  usage: 'npm run predict -- <image file>... [--model ID|DIR]',
  notes: ['Paths are relative to the folder you run from. Exit status 1 when any image failed.'],
  options: { model: { type: 'string', arg: 'id|dir', help: 'the saved model: current (default), a model id, or a model folder (env MODEL)' } },
  positionals: true,
} as const;

async function main(): Promise<number> {
  const { values, positionals } = parseCli(CLI);
  const { config } = resolveConfig([], process.env, ['models', 'model']);
  if (!positionals.length) throw new UsageError('no image files given (see --help)');
  await initBackend({ log: () => {} });
  const { model, metadata, line } = await loadSavedModel({ models: config.models, model: values.model ?? config.model }, userPath('.'));
  console.error(line);
  let failed = 0;
  for (const file of positionals) {
    try {
      const { top } = await predictImage(model, metadata, userPath(file));
      console.log(`${file}: ${top.map((t) => `${t.name} ${(100 * t.probability).toFixed(1)}%`).join(', ')}`);
    } catch (err) {
      failed++;
      console.error(`error: ${(err as Error).message}`);
    }
  }
  model.dispose();
  return failed ? 1 : 0;
}

if (require.main === module) runCli(main);
