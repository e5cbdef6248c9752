// Child processes for the native installer. Their output (pip, npm, node-gyp: hundreds of lines) goes to
// install.log, never to the terminal; a failure becomes one line that names the first real error.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/** A failure whose message is a complete, one-line, user-facing reason. */
export class InstallError extends Error {}

/** install.log, appended to by us and, through the same file descriptor, by every child process. */
export class InstallLog {
  readonly fd: number;

  constructor(readonly file: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.fd = fs.openSync(file, 'w+'); // read back too: since() finds the error in a failed command's output
  }

  write(text: string | Buffer): void {
    if (typeof text === 'string') fs.writeSync(this.fd, text);
    else fs.writeSync(this.fd, text);
  }

  get size(): number {
    return fs.fstatSync(this.fd).size;
  }

  /** What was written since `offset` (its last 64 KiB: enough to find the error in a compiler or pip run). */
  since(offset: number): string {
    const end = this.size;
    const start = Math.max(offset, end - 65536);
    const buf = Buffer.alloc(end - start);
    fs.readSync(this.fd, buf, 0, buf.length, start);
    return buf.toString('utf8');
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

// The first line that looks like the cause: pip's "ERROR: ...", a compiler's "fatal error: ...", the linker's
// "ld: cannot find -l...", npm's "npm error ...". gyp's trailer ("gyp ERR! stack", "gyp ERR! cwd", ...) only repeats
// that a command failed, so it is skipped.
const ERROR_LINE = /^ERROR:|fatal error|\berror:|\bld: |^npm (?:error|ERR!)|^gyp ERR! (?!stack|System|command|cwd|node -v|node-gyp -v|not ok|configure error|build error)/i;

export function errorLine(output: string): string | undefined {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines.find((l) => ERROR_LINE.test(l)) ?? lines[lines.length - 1];
}

let active: ChildProcess | undefined;

/** Stop the child that is running now (the installer was interrupted). */
export function killActiveChild(): void {
  if (active && active.exitCode === null) active.kill('SIGTERM');
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the child after this long (0: no limit; downloads are bounded by pip's and npm's own timeouts). */
  timeoutMs?: number;
  /** Also return stdout (it still goes to the log). */
  captureStdout?: boolean;
}

/** Run `cmd args`, output into the log; resolve with stdout when captured, reject with a one-line InstallError. */
export function run(log: InstallLog, what: string, cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  log.write(`\n$ ${[cmd, ...args].join(' ')}${opts.cwd ? `    # in ${opts.cwd}` : ''}\n`);
  const start = log.size;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', opts.captureStdout ? 'pipe' : log.fd, log.fd],
    });
    active = child;
    let stdout = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      log.write(chunk);
    });
    let timedOut = false;
    const timer = opts.timeoutMs ? setTimeout(() => ((timedOut = true), child.kill('SIGKILL')), opts.timeoutMs) : undefined;
    let settled = false;
    const finish = (err?: InstallError) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      active = undefined;
      if (err) reject(err);
      else resolve(stdout);
    };
    child.on('error', (err) => finish(new InstallError(`${what}: cannot run ${cmd}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) return finish();
      const why = timedOut ? `timed out after ${Math.round(opts.timeoutMs! / 1000)} s` : errorLine(log.since(start)) ?? `exit ${code ?? signal}`;
      finish(new InstallError(`${what} failed: ${why.length > 200 ? `${why.slice(0, 199)}…` : why}`));
    });
  });
}
