// One argument-parsing style for the project's command-line tools (predict, notebooks, report, bench*, demo,
// export:keras, browser-check): Node's util.parseArgs, a declared option table from which `--help`/`-h` is
// generated, and one-line errors with exit status 2 for bad usage. (`npm start` has its own, richer schema:
// lib/settings/config.ts.)
import * as path from 'path';
import { parseArgs } from 'util';
import { exitOnInterrupt, InterruptedError } from './cancel';

export interface CliOption {
  type: 'string' | 'boolean';
  short?: string;
  /** May be given several times (values collected in a list). */
  multiple?: boolean;
  default?: string | boolean;
  /** Shown as `--name <arg>` in the help. */
  arg?: string;
  help: string;
}

export interface CliSpec<O extends Record<string, CliOption>> {
  /** First help line, e.g. "npm run predict -- <image>... [options]". */
  usage: string;
  /** Lines after the option table (examples, notes). */
  notes?: readonly string[];
  options: O;
  /** Whether positional arguments are accepted (named in the usage line). */
  positionals?: boolean;
}

type Values<O extends Record<string, CliOption>> = {
  [K in keyof O]: O[K]['type'] extends 'boolean' ? boolean : O[K]['multiple'] extends true ? string[] : string | undefined;
};

/** Thrown for bad usage: the tool prints its message and exits 2. */
export class UsageError extends Error {}

export function helpOf<O extends Record<string, CliOption>>(spec: CliSpec<O>): string {
  const rows = Object.entries(spec.options).map(([name, o]) => [
    `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` <${o.arg ?? 'value'}>` : ''}`,
    `${o.help}${o.default !== undefined && o.default !== false && o.default !== '' ? ` (default ${o.default})` : ''}${o.multiple ? ' (repeatable)' : ''}`,
  ]);
  rows.push(['-h, --help', 'show this help']);
  const w = Math.max(...rows.map((r) => r[0].length));
  return [`usage: ${spec.usage}`, '', ...rows.map(([a, b]) => `  ${a.padEnd(w)}  ${b}`), ...(spec.notes?.length ? ['', ...spec.notes] : [])].join('\n');
}

/**
 * Parse `argv` against the spec. `--help`/`-h` prints the help and exits 0; an unknown option, a missing value or
 * an unexpected positional throws a UsageError naming it.
 */
export function parseCli<O extends Record<string, CliOption>>(spec: CliSpec<O>, argv: string[] = process.argv.slice(2)): { values: Values<O>; positionals: string[] } {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpOf(spec));
    process.exit(0);
  }
  try {
    const options = Object.fromEntries(
      Object.entries(spec.options).map(([k, o]) => [
        k,
        // parseArgs rejects keys that are present but undefined
        Object.fromEntries(Object.entries({ type: o.type, short: o.short, multiple: o.multiple, default: o.default }).filter(([, v]) => v !== undefined)),
      ]),
    );
    const r = parseArgs({ args: argv, options: options as any, allowPositionals: spec.positionals ?? false, strict: true });
    return { values: r.values as Values<O>, positionals: r.positionals };
  } catch (err) {
    // Node's messages are multi-line and mention parseArgs; keep the first clause and point at --help.
    const msg = (err as Error).message.split('\n')[0].replace(/\. To specify a positional argument.*$/, '').replace(/^Unknown option/, 'unknown option');
    throw new UsageError(`${msg} (see --help)`);
  }
}

/**
 * Run a tool's main: usage errors exit 2, other errors 1, each as one `error:` line; SIGINT/SIGTERM end it with one
 * `interrupted:` line and 130/143 (lib/util/cancel.ts exitOnInterrupt), as does an operation stopped by SIGINT.
 */
export function runCli(main: () => Promise<number | void>, what = `npm run ${path.basename(process.argv[1] ?? 'script', '.ts')}`): void {
  exitOnInterrupt(what);
  main().then(
    (code) => process.exit(code ?? 0),
    (err) => {
      if (err instanceof InterruptedError) {
        console.error(`interrupted: ${err.message.split('\n')[0]}`);
        process.exit(130);
      }
      console.error(`error: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      process.exit(err instanceof UsageError ? 2 : 1);
    },
  );
}
