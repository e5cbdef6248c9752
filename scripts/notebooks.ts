// npm run notebooks [-- files...] [--in-place] [--timeout s] [--out dir] [-p KEY=VALUE]... [--echo] [--kernel name]
// Executes notebooks headlessly in the project kernel, in order, stopping at the first failure, which is printed as
// ONE line (notebook, cell, first source line, error) with a non-zero exit code.
import * as fs from 'fs';
import * as path from 'path';
import { killAllKernels } from '../lib/jupyter/kernel';
import { parseCli, UsageError } from '../lib/util/cli';
import { PROJECT_ROOT, userPath } from '../lib/settings/paths';
import { DEFAULT_OUT_DIR, NotebookRunError, runNotebook } from '../lib/jupyter/runner';
import { envOf, SETTINGS } from '../lib/settings/config';
import { CONTEXT_SETTINGS } from '../lib/settings/context';

const CLI = {
  usage: 'npm run notebooks -- [notebook.ipynb...] [options]',
  notes: [
    'Default notebooks: notebooks/*.ipynb in name order; executed copies go to out/notebooks/ unless --in-place.',
    'Example: npm run notebooks -- -p TRAIN_LIMIT=2000 -p EPOCHS=5   (the settings of `npm start -- --help`).',
  ],
  options: {
    'in-place': { type: 'boolean', help: 'write outputs into the notebooks themselves' },
    out: { type: 'string', arg: 'dir', help: 'where executed copies go', default: 'out/notebooks' },
    timeout: { type: 'string', arg: 'seconds', help: 'per-cell limit', default: '1800' },
    param: { type: 'string', short: 'p', multiple: true, arg: 'KEY=VALUE', help: 'a notebook parameter (an env var of the kernel)' },
    echo: { type: 'boolean', help: "print the cells' stdout/stderr while they run" },
    kernel: { type: 'string', arg: 'name', help: 'kernelspec under jupyter/kernels (default: the notebook\'s own)' },
  },
  positionals: true,
} as const;

interface Args {
  files: string[];
  inPlace: boolean;
  outDir: string;
  timeoutSec: number;
  env: Record<string, string>;
  echo: boolean;
  kernel?: string;
}

function readArgs(): Args {
  const { values, positionals } = parseCli(CLI);
  const timeoutSec = Number(values.timeout);
  if (!(timeoutSec > 0)) throw new UsageError(`--timeout: expected a positive number of seconds, got "${values.timeout}"`);
  const env: Record<string, string> = {};
  for (const v of values.param ?? []) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(v);
    if (!m) throw new UsageError(`-p: expected KEY=VALUE, got "${v}"`);
    env[m[1]] = m[2];
  }
  let files = positionals.map((f) => userPath(f));
  if (files.length === 0) {
    const dir = path.join(PROJECT_ROOT, 'notebooks');
    files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.ipynb')).sort().map((f) => path.join(dir, f)) : [];
    if (files.length === 0) throw new UsageError(`no notebooks given and none in ${dir}`);
  }
  for (const f of files) if (!fs.existsSync(f)) throw new UsageError(`${f}: no such notebook`);
  return {
    files, env, timeoutSec, inPlace: Boolean(values['in-place']), echo: Boolean(values.echo), kernel: values.kernel,
    outDir: values.out === 'out/notebooks' ? DEFAULT_OUT_DIR : userPath(values.out!),
  };
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = readArgs();
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 2;
  }
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    // first signal: stop cleanly (shutdown_request, kill, save the partial notebook); second: kill at once
    if (++signals > 1) {
      killAllKernels();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    console.error(`\n${sig}: stopping, shutting the kernel down…`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const t0 = Date.now();
  for (const file of args.files) {
    try {
      const r = await runNotebook(file, {
        inPlace: args.inPlace,
        outFile: path.join(args.outDir, path.basename(file)),
        timeoutSec: args.timeoutSec,
        env: args.env,
        baseEnv: process.env,
        // the experiment's settings, wherever they were set (not where things are, nor the backend)
        recordEnv: Object.keys(SETTINGS).filter((k) => !(CONTEXT_SETTINGS as readonly string[]).includes(k)).map(envOf),
        kernelName: args.kernel,
        signal: controller.signal,
        log: (line) => console.error(line),
        onStream: args.echo ? (name, text) => (name === 'stderr' ? process.stderr : process.stdout).write(text) : undefined,
      });
      console.error(`ok ${path.relative(process.cwd(), file)} → ${path.relative(process.cwd(), r.outFile)} (${r.seconds.toFixed(1)} s)`);
    } catch (err) {
      const msg = err instanceof NotebookRunError ? err.message : `${path.relative(process.cwd(), file)}: ${(err as Error).message}`;
      if (err instanceof NotebookRunError && err.outFile) console.error(`(partial outputs in ${path.relative(process.cwd(), err.outFile)})`);
      console.error(msg.split('\n')[0]);
      return controller.signal.aborted ? 130 : 1;
    }
  }
  console.error(`all ${args.files.length} notebook(s) ran in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`notebooks: ${(err as Error).stack ?? err}`);
    killAllKernels();
    process.exit(1);
  },
);
