// `npm run predict -- a.png b.jpg ...`: label images with the saved classifier (models/cifar10, or --model DIR /
// env MODEL_DIR). Each file is decoded (PNG via pngjs, JPEG via jpeg-js; the format is read from the bytes, not the
// name), reduced to 32x32 as CIFAR-10 images are (area averaging; bilinear when enlarging), and gets its top-3
// classes. A bad file gets one clear error line and the others still run; the exit code is 1 if any failed.
import { initBackend } from '../lib/backend';
import { parseCli, runCli, UsageError } from '../lib/cli';
import { loadModel, MODEL_DIR } from '../lib/model';
import { predictFile } from '../lib/predict';
import { userPath } from '../lib/paths';

const CLI = {
  usage: 'npm run predict -- <image.png|jpg>... [--model DIR]',
  notes: ['Paths are relative to the folder you run from. Exit status 1 when any image failed.'],
  options: { model: { type: 'string', arg: 'dir', help: 'the saved classifier (env MODEL_DIR)' } },
  positionals: true,
} as const;

async function main(): Promise<number> {
  const { values, positionals } = parseCli(CLI);
  const dir = values.model ? userPath(values.model) : MODEL_DIR;
  if (!positionals.length) throw new UsageError('no image files given (see --help)');
  await initBackend({ log: () => {} });
  const { model, metadata } = await loadModel(dir);
  let failed = 0;
  for (const file of positionals) {
    try {
      const { top } = predictFile(model, metadata.classNames, userPath(file));
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
