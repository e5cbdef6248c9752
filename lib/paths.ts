// Where the project keeps what it downloads and computes. Everything under data/ is gitignored.
import * as path from 'path';

/** The project root (the folder holding package.json). */
export const PROJECT_ROOT = path.resolve(__dirname, '..');

/** data/ by default; `DATA_DIR` moves all downloads, caches, runs and benchmarks elsewhere. */
export function dataDir(...parts: string[]): string {
  return path.join(process.env.DATA_DIR ? path.resolve(process.env.DATA_DIR) : path.join(PROJECT_ROOT, 'data'), ...parts);
}
