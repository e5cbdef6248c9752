// Where the project writes (DATA_DIR: caches and the run log; MODELS_DIR: the saved models) is checked before
// any work starts, and a write that fails late never throws finished work away: caches and logs are best-effort
// (one note, the run goes on), and the places that must be written are checked up front.
import * as fs from 'fs';
import * as path from 'path';

/** Why files cannot be created in `dir` (it is created when missing), or undefined when they can. */
export function unwritableReason(dir: string): string | undefined {
  try {
    if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) return 'not a folder';
    fs.mkdirSync(dir, { recursive: true });
    const probe = path.join(dir, `.write-probe-${process.pid}-${Date.now()}`);
    fs.writeFileSync(probe, '');
    fs.rmSync(probe);
    return undefined;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reasons: Record<string, string> = {
      EROFS: 'read-only file system', EACCES: 'permission denied', EPERM: 'permission denied',
      ENOENT: 'it cannot be created there', ENOTDIR: 'a parent is not a folder', ENOSPC: 'no space left',
    };
    return reasons[e.code ?? ''] ?? e.code ?? e.message.split('\n')[0];
  }
}

/** Throw one line naming the folder and the setting that chose it, when it cannot be written. */
export function requireWritable(dir: string, setting: string): void {
  const why = unwritableReason(dir);
  if (why) throw new Error(`${setting} ${dir} is not writable (${why}): choose a writable folder`);
}

const noted = new Set<string>();

/**
 * Run a best-effort write (cache entry, log file). When it fails, say so once per `what` and carry on: the
 * values computed are still in memory and the run continues. Returns whether the write happened.
 */
export function bestEffortWrite(what: string, write: () => void, note: (line: string) => void = (l) => console.warn(l)): boolean {
  try {
    write();
    return true;
  } catch (err) {
    if (!noted.has(what)) {
      noted.add(what);
      const e = err as NodeJS.ErrnoException;
      note(`note: ${what} not saved (${e.code ?? e.message.split('\n')[0]}${e.path ? ` at ${e.path}` : ''}); continuing without it`);
    }
    return false;
  }
}
