// `npm start`: the whole experiment, headless — the same lib/experiment steps notebooks 02-06 run in cells:
// CIFAR-10 -> regime (given, or the best that fits the time budget) -> cached features/activations -> the sweep
// (frozen) -> training -> evaluation (validation, test 0-999 exact, full test) -> the saved model, made current ->
// a summary. Every run lands in the experiment log (data/runs/).
//
// Smoke run:  npm start -- --train-limit 2000 --val-limit 500 --test-limit 1000 --epochs 3 --sweep-epochs 2
// Options come from flags or the matching env vars (TRAIN_LIMIT, BACKBONES, ...); `npm start -- --help` lists them.
import { helpText, resolveConfig } from '../lib/settings/config';
import { initRuntimeContext } from '../lib/settings/context';
import { runExperiment } from '../lib/experiment/experiment';
import { summaryText } from '../lib/experiment/summary';
import { terminateFeaturePool } from '../lib/features/features';
import { exitOnInterrupt, InterruptedError } from '../lib/util/cancel';

const USAGE = 'npm start -- [options]   (each also settable by its env var; flags win)';

async function main(): Promise<void> {
  const startedAt = Date.now();
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText(USAGE));
    return;
  }
  // Every value parsed and validated here, before any data is loaded: a bad one costs a second, not minutes.
  const { config, sources } = resolveConfig(argv);
  initRuntimeContext(process.env, config); // the folders and backend (--data-dir, CIFAR10_DIR, ...), once, for lib/
  const result = await runExperiment(config, { sources, startedAt });
  console.log(summaryText(result));
  await terminateFeaturePool();
}

// Ctrl-C, SIGTERM (and npm's, through `exec` in package.json) outside a running step: one `interrupted:` line, 130/143.
exitOnInterrupt('npm start');
main().catch(async (err) => {
  // Set before awaiting anything: idle worker threads are unref'd, so the event loop can drain during the cleanup
  // below and end the process on its own — with this code, never with 0.
  // Ctrl-C stops the running step between batches (finished feature chunks stay cached): 130, as a shell expects.
  const code = err instanceof InterruptedError ? 130 : 1;
  process.exitCode = code;
  console.error(`${code === 130 ? 'interrupted' : 'error'}: ${err instanceof Error ? err.message : String(err)}`);
  await terminateFeaturePool().catch(() => {});
  process.exit(code);
});
