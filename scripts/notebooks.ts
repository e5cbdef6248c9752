// npm run notebooks [-- files...] [--in-place] [--timeout s] [--out dir] [-p KEY=VALUE]... [--echo] [--kernel name]
// Executes notebooks headlessly in the project kernel, in order, stopping at the first failure, which is printed as
// ONE line (notebook, cell, first source line, error) with a non-zero exit code.
import * as fs from 'fs';
import * as path from 'path';
import { killAllKernels } from '../lib/jupyter/kernel';
import { PROJECT_ROOT } from '../lib/paths';
import { DEFAULT_OUT_DIR, NotebookRunError, runNotebook } from '../lib/jupyter/runner';
import { envOf, SETTINGS } from '../lib/config';

const USAGE = `usage: npm run notebooks -- [notebook.ipynb...] [--in-place] [--out DIR] [--timeout SECONDS] [-p KEY=VALUE]... [--echo] [--kernel NAME]
  default notebooks: notebooks/*.ipynb in name order; executed copies go to out/notebooks/ unless --in-place.
  --timeout  per-cell limit (default 1800); -p sets a notebook parameter (an env var of the kernel), e.g. -p TRAIN_LIMIT=2000
  --echo     print the cells' stdout/stderr while they run`;

interface Args {
  files: string[];
  inPlace: boolean;
  outDir: string;
  timeoutSec: number;
  env: Record<string, string>;
  echo: boolean;
  kernel?: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { files: [], inPlace: false, outDir: DEFAULT_OUT_DIR, timeoutSec: 1800, env: {}, echo: false };
  const value = (i: number, flag: string) => {
    if (i >= argv.length) throw new Error(`${flag} needs a value\n${USAGE}`);
    return argv[i];
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--in-place') a.inPlace = true;
    else if (arg === '--echo') a.echo = true;
    else if (arg === '--out') a.outDir = path.resolve(value(++i, arg));
    else if (arg === '--kernel') a.kernel = value(++i, arg);
    else if (arg === '--timeout') {
      const v = value(++i, arg);
      a.timeoutSec = Number(v);
      if (!(a.timeoutSec > 0)) throw new Error(`--timeout: expected a positive number of seconds, got "${v}"`);
    } else if (arg === '-p' || arg === '--param') {
      const v = value(++i, arg);
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(v);
      if (!m) throw new Error(`${arg}: expected KEY=VALUE, got "${v}"`);
      a.env[m[1]] = m[2];
    } else if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (arg.startsWith('-')) throw new Error(`unknown option ${arg}\n${USAGE}`);
    else a.files.push(path.resolve(arg));
  }
  if (a.files.length === 0) {
    const dir = path.join(PROJECT_ROOT, 'notebooks');
    a.files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.ipynb')).sort().map((f) => path.join(dir, f)) : [];
    if (a.files.length === 0) throw new Error(`no notebooks given and none in ${dir}`);
  }
  for (const f of a.files) if (!fs.existsSync(f)) throw new Error(`${f}: no such notebook`);
  return a;
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
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
        recordEnv: Object.keys(SETTINGS).map(envOf), // the experiment's settings, wherever they were set
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
