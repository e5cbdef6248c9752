// Where the project keeps what it downloads and computes. Everything under data/ is gitignored.
import * as path from 'path';

/** The project root (the folder holding package.json). */
export const PROJECT_ROOT = path.resolve(__dirname, '..');

/**
 * A path the user typed (a flag, an env var, an image file): relative to the folder they typed it in. npm runs
 * scripts from the project root and keeps the caller's folder in INIT_CWD (`npm --prefix <project> start` from
 * elsewhere); outside npm that is the current folder.
 */
export function userPath(p: string): string {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), p);
}

/** data/ by default; `DATA_DIR` moves all downloads, caches, runs and benchmarks elsewhere. */
export function dataDir(...parts: string[]): string {
  return path.join(process.env.DATA_DIR ? userPath(process.env.DATA_DIR) : path.join(PROJECT_ROOT, 'data'), ...parts);
}
