// Where the project keeps what it downloads and computes. Everything under data/ is gitignored.
import * as path from 'path';

/** The project root (the folder holding package.json). */
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..');

/**
 * A path the user typed (a flag, an env var, an image file): relative to the folder they typed it in. npm runs
 * scripts from the project root and keeps the caller's folder in INIT_CWD (`npm --prefix <project> start` from
 * elsewhere); outside npm that is the current folder.
 */
export function userPath(p: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.INIT_CWD ?? process.cwd(), p);
}

/**
 * data/ by default; `DATA_DIR` (`--data-dir`) moves all downloads, caches, runs and benchmarks elsewhere. The folder
 * is the runtime context's (lib/settings/context.ts), resolved once per process.
 */
export function dataDir(...parts: string[]): string {
  // Required here: context.ts imports this module.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { runtimeContext } = require('./context') as typeof import('./context');
  return path.join(runtimeContext().dataDir, ...parts);
}

/** The saved models' folder: the `models` setting (flag --models, env MODELS_DIR), else models/ in the project. */
export function modelsDir(setting: string | null | undefined): string {
  return setting ? userPath(setting) : path.join(PROJECT_ROOT, 'models');
}
